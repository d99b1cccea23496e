"""FakeQuantLinear: dynamic QAT forward, freeze to ŵ, save/load round trip through the config stamp."""

import pytest
import torch
from torch import nn

import compresslab
from compresslab.models.tiny import tiny_model
from compresslab.ops.quant import dequantize, quant_params, quantize
from compresslab.models.quantized import (FakeQuantLinear, average_bits, freeze_all, quantize_modules,
                                       quantized_modules, stamp_quant)
from compresslab.targets import select_modules


def test_dynamic_forward_equals_fake_quant_and_freeze_keeps_it():
    lin = nn.Linear(64, 8)
    fq = FakeQuantLinear.from_linear(lin, 3, 32)
    x = torch.randn(5, 64)
    p = quant_params(lin.weight, 3, 32)
    ref = nn.functional.linear(x, dequantize(quantize(lin.weight, p), p), lin.bias)
    torch.testing.assert_close(fq(x), ref, rtol=0, atol=1e-6)
    fq.freeze()
    torch.testing.assert_close(fq(x), ref, rtol=0, atol=1e-6)
    assert torch.equal(fq.codes(), quantize(lin.weight, p))
    fq.freeze()  # idempotent
    assert torch.equal(fq.codes(), quantize(lin.weight, p))


def test_gradients_reach_the_float_weight():
    fq = FakeQuantLinear.from_linear(nn.Linear(32, 4), 2, 16)
    fq(torch.randn(3, 32)).sum().backward()
    assert fq.weight.grad is not None and fq.weight.grad.abs().sum() > 0


def test_save_load_round_trip(tmp_path):
    model = tiny_model()
    names = list(select_modules(model))
    specs = {n: {"bits": (2, 3, 4, 8)[i % 4], "block_size": 16} for i, n in enumerate(names)}
    quantize_modules(model, specs)
    with pytest.raises(ValueError, match="freeze_all"):
        stamp_quant(model)
    freeze_all(model)
    model.eval()
    x = {"input_ids": torch.randint(5, 60, (2, 12)), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    ref = model(**x).logits
    compresslab.save(model, tmp_path / "ck")
    back = compresslab.load(tmp_path / "ck")
    assert set(quantized_modules(back)) == set(names)
    assert all(m.frozen for m in quantized_modules(back).values())
    torch.testing.assert_close(back(**x).logits, ref, rtol=0, atol=1e-6)
    for n, m in quantized_modules(back).items():
        assert torch.equal(m.codes(), quantized_modules(model)[n].codes())
    assert 2 < average_bits(back, names) < 8


def test_bad_specs_fail_before_any_swap():
    model = tiny_model()
    names = list(select_modules(model))
    specs = {names[0]: {"bits": 4, "block_size": 16}, names[1]: {"bits": 4, "block_size": 7}}
    with pytest.raises(ValueError, match="block_size=7"):
        quantize_modules(model, specs)
    assert not quantized_modules(model)
    with pytest.raises(ValueError, match="not an nn.Linear"):
        quantize_modules(model, {"bert.embeddings": {"bits": 4, "block_size": 16}})
