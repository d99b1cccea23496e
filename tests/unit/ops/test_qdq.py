"""ops/qdq: per-tensor / per-channel symmetric int8 weights (zero point 0, Δ = max|w|/127), the levels
they use, exact zeros, and the straight-through gradient."""

from __future__ import annotations

import pytest
import torch

from compresslab.ops.qdq import fake_quant_weight, symmetric_scale, weight_codes


def _w(seed: int = 0, shape=(8, 16)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_per_tensor_scale_is_max_abs_over_127_and_the_extremes_hit_plus_minus_127():
    w = _w()
    s = symmetric_scale(w)
    assert s.dim() == 0 and float(s) == pytest.approx(float(w.abs().max()) / 127, rel=1e-7)
    q = weight_codes(w, s)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127 and int(q.min()) >= -127  # -128 never used
    w_hat = fake_quant_weight(w, s)
    torch.testing.assert_close(w_hat, q.float() * s, rtol=0, atol=0)  # ŵ = q·Δ, zero point 0
    assert float((w_hat - w).abs().max()) <= float(s) / 2 + 1e-7  # round to nearest: error within Δ/2
    assert len(torch.unique(q)) <= 255


def test_per_channel_scales_are_per_output_row():
    w = _w(1) * torch.linspace(0.1, 3, 8)[:, None]  # rows of very different ranges
    s = symmetric_scale(w, per_channel=True)
    assert s.shape == (8,)
    torch.testing.assert_close(s, w.abs().amax(1) / 127)
    q = weight_codes(w, s)
    assert torch.equal(q.abs().amax(1).long(), torch.full((8,), 127))  # every row uses its full range
    torch.testing.assert_close(fake_quant_weight(w, s), q.float() * s[:, None], rtol=0, atol=0)


def test_zeros_stay_exactly_zero_and_an_all_zero_tensor_is_exact():
    w = _w(2)
    w[w.abs() < 0.8] = 0.0  # a pruned tensor
    for per_channel in (False, True):
        w_hat = fake_quant_weight(w, symmetric_scale(w, per_channel))
        assert bool((w_hat[w == 0] == 0).all())
    z = torch.zeros(4, 4)
    s = symmetric_scale(z)
    assert float(s) > 0 and torch.equal(fake_quant_weight(z, s), z)


def test_round_half_to_even_as_onnx_quantize_linear():
    s = torch.tensor(1.0)
    w = torch.tensor([[0.5, 1.5, 2.5, -0.5, -1.5, 127.0]])
    assert weight_codes(w, s).tolist() == [[0, 2, 2, 0, -2, 127]]
    assert fake_quant_weight(w, s).tolist() == [[0.0, 2.0, 2.0, 0.0, -2.0, 127.0]]


@pytest.mark.parametrize("per_channel", [False, True])
def test_straight_through_gradient_is_the_identity_inside_the_range(per_channel):
    w = _w(3).requires_grad_(True)
    g = torch.randn(8, 16)
    (fake_quant_weight(w, symmetric_scale(w, per_channel)) * g).sum().backward()
    torch.testing.assert_close(w.grad, g)  # Δ = max|w|/127: no weight is outside the range, none clipped
