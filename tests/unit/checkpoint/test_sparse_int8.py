"""model.sparse.safetensors: bitmask + int8 for pruned linears; reload exact; sizes from the file."""

from __future__ import annotations

import pytest
import torch

from compresslab.checkpoint.sparse_int8 import (
    SPARSE_FILE, encode, load_sparse_into, quantize_rows, read_sparse_state, save_sparse, sparse_size_bytes)
from compresslab.models.tiny import tiny_model
from compresslab.targets import select_modules


def _pruned(sparsity: float = 0.8):
    model = tiny_model("bert")
    with torch.no_grad():
        for m in select_modules(model).values():
            w = m.weight
            w[w.abs() < w.abs().flatten().kthvalue(int(sparsity * w.numel())).values] = 0
    return model


def _expected(model) -> dict[str, torch.Tensor]:
    """What a reload must give: targeted and embedding weights quantize-dequantized, the rest as is."""
    out = {}
    targets = {f"{n}.weight" for n in select_modules(model)}
    embs = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    for k, v in model.state_dict().items():
        if k in targets or k in embs:
            q, s = quantize_rows(v)
            v = q.float() * s[:, None]
        out[k] = v
    return out


def test_save_reload_is_exactly_the_quantized_model(tmp_path):
    model = _pruned()
    path = save_sparse(model, tmp_path / "ck")
    assert path.name == SPARSE_FILE and (tmp_path / "ck" / "config.json").is_file()
    state = read_sparse_state(path)
    for k, v in _expected(model).items():
        assert torch.equal(state[k], v), k
    fresh = load_sparse_into(tiny_model("bert", seed=5), path)
    for n, m in select_modules(model).items():  # the zero pattern survives exactly
        assert torch.equal(fresh.get_submodule(n).weight == 0, m.weight == 0)
    ids = torch.tensor([[2, 7, 9, 3]])
    torch.testing.assert_close(fresh(input_ids=ids).logits, model(input_ids=ids).logits, atol=0.05, rtol=0.05)


def test_sizes_come_from_the_written_bytes(tmp_path):
    model = _pruned(0.8)
    sizes = sparse_size_bytes(model)
    assert sizes["sparse_int8"]["total"] == save_sparse(model, tmp_path).stat().st_size
    assert sizes["sparse_int8"]["encoder"] < sizes["int8"]["encoder"] < sizes["fp32"]["encoder"]
    assert sizes["sparse_int8"]["total"] < sizes["int8"]["total"] < sizes["fp32"]["total"]
    enc_params = sum(p.numel() for n, p in model.named_parameters() if ".encoder.layer." in n)
    assert sizes["fp32"]["encoder"] == 4 * enc_params


def test_bad_mode_and_foreign_file(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(ValueError, match="allowed: fp32, int8, sparse_int8"):
        encode(tiny_model("bert"), "int4")
    save_file({"a": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a compresslab.sparse_int8"):
        read_sparse_state(tmp_path / "x.safetensors")
