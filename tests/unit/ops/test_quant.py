"""Property tests of the group-wise n-bit quantizer (ALGORITHMS.md §1.8.4, integer zero point)."""

import itertools

import pytest
import torch

from compresslab.ops.quant import check_group, dequantize, fake_quant, quant_error, quant_params, quantize


@pytest.mark.parametrize("bits,block,rows", [(2, 16, 1), (3, 32, 1), (4, 64, 1), (8, 16, 1), (3, 64, 4), (4, 64, 8)])
def test_error_bound_and_level_count(bits, block, rows):
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(bits)) * 0.05
    p = quant_params(w, bits, block, rows)
    q = quantize(w, p)
    w_hat = dequantize(q, p)
    assert int(q.max()) <= 2 ** bits - 1
    bound = p.expand(p.scale) / 2
    assert torch.all((w_hat - w).abs() <= bound * (1 + 1e-6))
    for gi, gj in itertools.product(range(16 // rows), range(128 // block)):
        group = w_hat[gi * rows:(gi + 1) * rows, gj * block:(gj + 1) * block]
        assert group.unique().numel() <= 2 ** bits
    # group min and max within Δ/2 (not exact with an integer zero point)
    g = w[:rows, :block]
    gh = w_hat[:rows, :block]
    assert abs(float(gh.max() - g.max())) <= float(p.scale[0, 0]) / 2 + 1e-7


def test_integer_zero_point_and_fp16_scale():
    w = torch.randn(8, 64) * 0.1
    p = quant_params(w, 4, 32)
    assert p.zero_point.dtype == torch.uint8
    assert torch.equal(p.scale, p.scale.half().float())  # storable in 16 bits exactly
    # exact reconstruction formula (q - z) * scale
    q = quantize(w, p)
    ref = (q.float() - p.zero_point.float().repeat_interleave(32, 1)) * p.scale.repeat_interleave(32, 1)
    assert torch.equal(dequantize(q, p), ref)


def test_idempotent_codes_after_dequantize():
    w = torch.randn(8, 64)
    p = quant_params(w, 3, 16)
    q = quantize(w, p)
    assert torch.equal(quantize(dequantize(q, p), p), q)


def test_row_groups_equal_per_row_when_block_is_k():
    w = torch.randn(6, 32)
    whole = dequantize(quantize(w, p := quant_params(w, 4, 32, 1)), p)
    for i in range(6):
        r = w[i:i + 1]
        pr = quant_params(r, 4, 32)
        assert torch.equal(whole[i:i + 1], dequantize(quantize(r, pr), pr))


def test_zero_block_is_exact():
    w = torch.zeros(4, 32)
    w[0, :16] = torch.randn(16)
    p = quant_params(w, 2, 16)
    assert torch.equal(dequantize(quantize(w, p), p)[1:], torch.zeros(3, 32))


def test_more_bits_less_error():
    w = torch.randn(32, 64)
    errs = [quant_error(w, b, 64) for b in (2, 3, 4, 8)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < errs[0] / 100


def test_ste_gradient_is_identity():
    w = torch.randn(4, 32, requires_grad=True)
    up = torch.randn(4, 32)
    (fake_quant(w, 2, 16) * up).sum().backward()
    assert torch.equal(w.grad, up)


@pytest.mark.parametrize("bits", [0, 9, 2.5, True])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits"):
        quant_params(torch.randn(4, 32), bits, 16)


def test_block_must_divide():
    with pytest.raises(ValueError, match="does not divide its input dimension K=48"):
        check_group((4, 48), 32)
    with pytest.raises(ValueError, match="group_rows"):
        check_group((6, 32), 32, 4)
