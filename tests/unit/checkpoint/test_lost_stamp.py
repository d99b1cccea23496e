"""A compressed checkpoint whose config.json lost (or garbled) its compresslab_* stamp: a clear
CheckpointError, never a plain float model built from the ``±α`` / ``q·Δ`` weights.

Without the stamp ``compresslab.load`` takes the plain Hugging Face path, where transformers drops
the frozen modules' extra tensors (``weight_alpha``, ``weight_scale``, ...) as "unexpected keys":
the model then ran with float activations and softmax attention and predicted differently."""

from __future__ import annotations

import json

import pytest
import torch

import compresslab
from compresslab.models.binary import BINARY_KEY, binarize_model, freeze_binary
from compresslab.models.loading import CheckpointError
from compresslab.models.qdq import QDQ_KEY, freeze_qdq, quantize_qdq
from compresslab.models.quantized import QUANT_KEY, freeze_all, quantize_modules
from compresslab.models.tiny import tiny_model
from compresslab.targets import select_modules


def _binary():
    model = tiny_model("bert")
    binarize_model(model, ties="plus")
    freeze_binary(model)
    return model.eval(), BINARY_KEY


def _quant():
    model = tiny_model("bert")
    quantize_modules(model, {n: {"bits": 4, "block_size": 16, "group_rows": 1} for n in select_modules(model)})
    freeze_all(model)
    return model.eval(), QUANT_KEY


def _qdq():
    model = tiny_model("bert")
    quantize_qdq(model, list(select_modules(model)), per_channel=True)
    with torch.no_grad():
        model.eval()(input_ids=torch.randint(5, 60, (2, 9), generator=torch.Generator().manual_seed(0)))
    freeze_qdq(model)
    return model.eval(), QDQ_KEY


def _edit(ck, fn):
    cfg = json.loads((ck / "config.json").read_text())
    fn(cfg)
    (ck / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("build", [_binary, _quant, _qdq], ids=["binary", "quant", "qdq"])
def test_a_dense_file_whose_config_lost_its_stamp_raises(tmp_path, build):
    model, key = build()
    ck = compresslab.save(model, tmp_path / "ck")
    assert json.loads((ck / "config.json").read_text())[key]
    _edit(ck, lambda c: c.pop(key))  # e.g. the original model's config.json copied over it
    with pytest.raises(CheckpointError, match=f"no {key}.*config.json saved with these weights"):
        compresslab.load(ck)


def test_a_plain_checkpoint_with_unrelated_extra_keys_still_loads(tmp_path):
    """Only compresslab's frozen-module tensors are refused: other unexpected keys (an MLM head in a
    pretrained BERT file, say) stay transformers' business."""
    from safetensors.torch import load_file, save_file

    model = tiny_model("bert")
    ck = compresslab.save(model, tmp_path / "ck")
    state = load_file(ck / "model.safetensors")
    state["cls.predictions.bias"] = torch.zeros(64)
    save_file(state, ck / "model.safetensors", metadata={"format": "pt"})
    compresslab.load(ck)


@pytest.mark.parametrize("stamp, match", [
    ("yes", "must be an object"),
    ({"embeddings": [], "attention": "bool", "frozen": True}, r"lacks \['linears'\]"),
    ({"linears": "bert.pooler.dense", "embeddings": [], "attention": "bool", "frozen": True},
     "linears must be a list of module names"),
])
def test_a_garbled_binary_stamp_names_the_setting(tmp_path, stamp, match):
    model, _ = _binary()
    ck = compresslab.save(model, tmp_path / "ck", formats=["packed_binary"])
    _edit(ck, lambda c: c.update({BINARY_KEY: stamp}))
    with pytest.raises(CheckpointError, match=f"does not fit the model it builds.*{BINARY_KEY}.*{match}"):
        compresslab.load(ck)
