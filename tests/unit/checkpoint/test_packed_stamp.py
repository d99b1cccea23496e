"""A packed file records the config stamp it was written with, and load compares config.json with it:
an edit that still fits the weights (BiBERT's attention mode: the weights do not record it) would
otherwise load silently and change the predictions. Files written before the stamp was recorded
still load, with a log line."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import compresslab
from compresslab.checkpoint.packed import NBITS, stamp_diff
from compresslab.checkpoint.packed_binary import BINARY, BINARY_FILE
from compresslab.models.binary import BINARY_KEY, binarize_model, freeze_binary
from compresslab.models.loading import CheckpointError
from compresslab.models.tiny import tiny_model


def _binary():
    model = tiny_model("bert")
    binarize_model(model)
    freeze_binary(model)
    return model.eval()


def _set_attention(ck, mode: str) -> None:
    cfg = json.loads((ck / "config.json").read_text())
    cfg[BINARY_KEY]["attention"] = mode
    (ck / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("packed_only", [True, False])
def test_an_edited_attention_mode_is_refused_naming_the_entry(tmp_path, packed_only):
    ck = compresslab.save(_binary(), tmp_path / "ck", formats=["packed_binary"])
    if packed_only:
        (ck / "model.safetensors").unlink()
    with safe_open(str(ck / BINARY_FILE), framework="pt") as f:
        assert json.loads(f.metadata()["stamp"])["attention"] == "bool"
    _set_attention(ck, "softmax")  # fits the weights: without the check it loads and predicts differently
    with pytest.raises(CheckpointError, match=r"compresslab_binary does not match.*attention: 'softmax' in "
                                              r"config\.json, 'bool' in the file"):
        compresslab.load(ck)
    _set_attention(ck, "bool")
    compresslab.load(ck)


def test_a_file_without_the_recorded_stamp_still_loads(tmp_path, caplog):
    model = _binary()
    x = {"input_ids": torch.randint(5, 60, (2, 9), generator=torch.Generator().manual_seed(0))}
    ck = compresslab.save(model, tmp_path / "ck", formats=["packed_binary"])
    (ck / "model.safetensors").unlink()
    path = ck / BINARY_FILE
    with safe_open(str(path), framework="pt") as f:  # rewrite it as the writer did before the stamp
        meta = {k: v for k, v in f.metadata().items() if k != "stamp"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), meta)
    with caplog.at_level(logging.INFO, logger="compresslab.checkpoint.packed"):
        loaded = compresslab.load(ck)
    assert "not checked" in caplog.text
    with torch.no_grad():
        assert torch.equal(loaded(**x).logits, model(**x).logits)


def test_every_packed_format_records_its_stamp():
    from compresslab.models.quantized import QUANT_KEY, freeze_all, quantize_modules

    model = tiny_model("bert")
    quantize_modules(model, {"bert.encoder.layer.0.output.dense": {"bits": 3, "block_size": 32}})
    freeze_all(model)
    _, meta = NBITS.encode(model)
    assert json.loads(meta["stamp"]) == json.loads(json.dumps(getattr(model.config, QUANT_KEY)))
    _, meta = BINARY.encode(_binary())
    assert json.loads(meta["stamp"])["attention"] == "bool"
    assert stamp_diff({"a": 1, "b": [1]}, {"a": 1, "b": [2], "c": 0}) == [
        "b: [2] in config.json, [1] in the file", "c: 0 in config.json, '<absent>' in the file"]
