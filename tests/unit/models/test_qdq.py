"""models/qdq: the QDQLinear swap, the activation observer (moving average, then frozen), freezing,
the config stamp and an exact save / reload."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compresslab.models.qdq import (QDQLinear, QDQ_KEY, apply_qdq, freeze_qdq, is_qdq, observe, qdq_modules,
                                    quantize_qdq, stamp_qdq)
from compresslab.models.tiny import tiny_model
from compresslab.ops.qdq import symmetric_scale
from compresslab.targets import select_modules


def _x(seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(seed))


def test_observer_tracks_a_moving_average_then_stays_fixed_once_frozen():
    lin = QDQLinear.from_linear(nn.Linear(16, 8), averaging_constant=0.5)
    lin(_x(0))
    lo0, hi0 = float(lin.input_quant.activation_post_process.min_val), float(
        lin.input_quant.activation_post_process.max_val)
    x1 = _x(1, 3.0)
    lin(x1)
    obs = lin.input_quant.activation_post_process
    assert float(obs.min_val) == pytest.approx(lo0 + 0.5 * (float(x1.min()) - lo0))  # EMA with momentum 0.5
    assert float(obs.max_val) == pytest.approx(hi0 + 0.5 * (float(x1.max()) - hi0))
    # uint8 affine qparams of the observed range (0 kept inside it)
    lo, hi = min(float(obs.min_val), 0.0), max(float(obs.max_val), 0.0)
    assert float(lin.input_quant.scale) == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert int(lin.input_quant.zero_point) == round(-lo / ((hi - lo) / 255))
    observe(lin, False)
    scale = lin.input_quant.scale.clone()
    lin(_x(2, 10.0))  # far outside the range: clipped, the range does not move
    assert torch.equal(lin.input_quant.scale, scale)


def test_forward_is_uint8_input_times_int8_weight():
    torch.manual_seed(0)
    lin = QDQLinear.from_linear(nn.Linear(16, 8))
    x = _x(3)
    y = lin(x)
    fq = lin.input_quant
    x_hat = torch.fake_quantize_per_tensor_affine(x, float(fq.scale), int(fq.zero_point), 0, 255)
    s = symmetric_scale(lin.weight)
    w_hat = torch.round(lin.weight / s).clamp(-128, 127) * s
    torch.testing.assert_close(y, x_hat @ w_hat.T + lin.bias)
    assert len(torch.unique(torch.round(x_hat / fq.scale))) <= 256


def test_freeze_puts_weights_on_the_grid_and_stamp_needs_it(tmp_path):
    model = tiny_model()
    names = list(select_modules(model))
    quantize_qdq(model, names)
    assert is_qdq(model) and list(qdq_modules(model)) == names
    with pytest.raises(ValueError, match="freeze_qdq"):
        stamp_qdq(model)
    with pytest.raises(ValueError, match="not plain nn.Linear"):
        quantize_qdq(model, names[:1])
    freeze_qdq(model)
    for m in qdq_modules(model).values():
        assert torch.equal(m.dequantized(), m.weight.detach()) and int(m.codes().min()) >= -127  # on the grid
        assert not bool(m.input_quant.observer_enabled)
    stamp_qdq(model)
    assert model.config.__dict__[QDQ_KEY][names[0]] == {"per_channel": False}


def test_saved_model_reloads_with_the_same_outputs(tmp_path):
    from compresslab.checkpoint import load, save

    model = tiny_model()
    quantize_qdq(model, list(select_modules(model)), per_channel=True)
    x = {"input_ids": torch.randint(5, 60, (3, 9), generator=torch.Generator().manual_seed(0)),
         "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    model.eval()
    with torch.no_grad():
        model(**x)  # observe once
    freeze_qdq(model)
    with torch.no_grad():
        ref = model(**x).logits
    save(model, tmp_path / "ck")
    back = load(tmp_path / "ck")
    mods = qdq_modules(back)
    assert len(mods) == len(qdq_modules(model)) and all(m.frozen and m.per_channel for m in mods.values())
    with torch.no_grad():
        torch.testing.assert_close(back(**x).logits, ref, rtol=0, atol=0)


def test_apply_qdq_rebuilds_frozen_modules():
    model = tiny_model()
    name = next(iter(select_modules(model)))
    apply_qdq(model, {name: {"per_channel": False}})
    m = model.get_submodule(name)
    assert isinstance(m, QDQLinear) and m.frozen
