"""Issue #12: reproducible artifact bytes.

Saving the same model twice gives the same bytes (dense, sparse int8 and packed n-bit safetensors:
their metadata keys are sorted), so the artifact hashes a manifest records are reproducible.
"""

from __future__ import annotations

import json

import pytest
import torch

from compresslab.manifest import safetensors_bytes


def _header(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n])


@pytest.mark.case(name="model.sparse.safetensors / model.packed.safetensors saved twice", kind="own", bad_input=False,
                  expected="identical bytes (metadata keys sorted), readable by safetensors")
def test_safetensors_bytes_are_reproducible(tmp_path, observe):
    from safetensors.torch import load as st_load

    from compresslab.checkpoint.sparse_int8 import SPARSE_FILE, read_sparse_state, save_sparse
    from compresslab.models.tiny import tiny_model

    model = tiny_model("bert")
    blobs = set()
    for i in range(6):  # safetensors' metadata HashMap order is random per save
        blobs.add((save_sparse(model, tmp_path / f"s{i}")).read_bytes())
    assert len(blobs) == 1
    data = blobs.pop()
    meta = _header(data)["__metadata__"]
    assert list(meta) == sorted(meta)
    state = read_sparse_state(tmp_path / "s0" / SPARSE_FILE)
    assert torch.allclose(state["classifier.weight"], model.state_dict()["classifier.weight"])
    tensors = {"b": torch.arange(5.0), "a": torch.ones(3, dtype=torch.int8)}
    many = {safetensors_bytes(tensors, {k: k for k in "zyxwvutsrq"}) for _ in range(8)}
    assert len(many) == 1
    back = st_load(many.pop())
    assert torch.equal(back["b"], tensors["b"]) and torch.equal(back["a"], tensors["a"])
    observe(f"6 saves of model.sparse.safetensors: 1 distinct byte string; metadata keys {list(meta)}")


def test_packed_and_dense_checkpoints_are_reproducible(tmp_path):
    from compresslab.checkpoint import save
    from compresslab.checkpoint.packed import NBITS
    from compresslab.models.quantized import freeze_all, quantize_modules
    from compresslab.models.tiny import tiny_model
    from compresslab.targets import select_modules

    model = tiny_model("bert")
    dense = {save(model, tmp_path / f"d{i}").joinpath("model.safetensors").read_bytes() for i in range(3)}
    assert len(dense) == 1
    q = tiny_model("bert")
    quantize_modules(q, {n: {"bits": 4, "block_size": 16} for n in select_modules(q)})
    freeze_all(q)
    packed = {NBITS.save(q, tmp_path / f"p{i}").read_bytes() for i in range(4)}
    assert len(packed) == 1
