"""A checkpoint loaded back and saved again is the same files, byte for byte, for every kind a step writes.

A resumed run restores its finished steps from their checkpoints and exports (or saves) what it loaded; an
uninterrupted run never loads its model back. Loading must therefore add nothing to the model that a save
writes: transformers-5 configs have no ``pruned_heads``, and the loader once set ``pruned_heads = {}`` on
every model it rebuilt from a stamp (shrunk, n-bit, QDQ, binary), so a resumed hawq_mp3 run's deployed
``config.json`` gained a line the uninterrupted run's lacks."""

from __future__ import annotations

import pytest
import torch

import compresslab
from compresslab.models.adapters import get_adapter
from compresslab.models.binary import binarize_model, freeze_binary
from compresslab.models.qdq import freeze_qdq, quantize_qdq
from compresslab.models.quantized import freeze_all, quantize_modules
from compresslab.models.structure import shrink_ffn, shrink_heads
from compresslab.models.tiny import tiny_model
from compresslab.targets import select_modules


def _plain(model):
    return model


def _shrunk(model):  # ZipLM / structured pruning: compresslab_structure
    shrink_heads(get_adapter(model).layer(0), [1, 3])
    shrink_ffn(get_adapter(model).layer(1), range(24))
    return model


def _nbits(model):  # hawq: compresslab_quant
    quantize_modules(model, {n: {"bits": 4, "block_size": 16, "group_rows": 1} for n in select_modules(model)})
    freeze_all(model)
    return model


def _qdq(model):  # int8 QAT: compresslab_qdq
    quantize_qdq(model, list(select_modules(model)), per_channel=True)
    with torch.no_grad():
        model.eval()(input_ids=torch.randint(5, 60, (2, 9), generator=torch.Generator().manual_seed(0)))
    freeze_qdq(model)
    return model


def _binary(model):  # BiBERT: compresslab_binary
    binarize_model(model, ties="plus")
    freeze_binary(model)
    return model


@pytest.mark.parametrize("build", [_plain, _shrunk, _nbits, _qdq, _binary],
                         ids=["plain", "shrunk", "nbits", "qdq", "binary"])
def test_load_then_save_writes_the_same_files(tmp_path, build):
    # as in a run: the source model is loaded (compresslab.load), a pass changes it in memory, its step saves it
    source = compresslab.load(compresslab.save(tiny_model("bert"), tmp_path / "source"))
    first = compresslab.save(build(source).eval(), tmp_path / "first")
    loaded = compresslab.load(first)
    again = compresslab.save(loaded, tmp_path / "again")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    # what the export writes beside the graph (export/config.json, copied into an ONNX step's dir) is this config
    assert loaded.config.to_json_string() == compresslab.load(again).config.to_json_string()
    assert "pruned_heads" not in loaded.config.to_dict()
