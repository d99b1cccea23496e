"""Step 0 of a recovery's checkpoint selection is scored for real on every recovering pass (no patched scorer):
the model before the first step must be scoreable in eval mode, including int8 QAT's fake-quant model whose
activation observers have seen no batch yet, and hawq's n-bit model."""

from __future__ import annotations

import math

import pytest

from compresslab.models.tiny import tiny_model
from compresslab.registry import build_pass


@pytest.mark.parametrize("name, kw", [
    ("layer_drop", {"keep": [0]}),
    ("magnitude", {"sparsity": 0.5, "mode": "oneshot"}),
    ("int8_qat", {}),
    ("hawq", {"bits": 4, "avg_bits": None, "block_size": 32}),
])
def test_step_0_is_scored_for_real(name, kw, tiny_ctx) -> None:
    p = build_pass(name, **kw, recovery={"steps": 2, "hardness": 0.0, "lr": 1e-3, "select_every": 2})
    res = p.apply(tiny_model("bert", seed=0), tiny_ctx())
    records = [res.metrics, *(v for v in res.metrics.values() if isinstance(v, dict))]
    sel = next(r["selection"] for r in records if isinstance(r.get("selection"), dict))
    assert [h["step"] for h in sel["history"]] == [0, 2]
    assert all(math.isfinite(h["score"]) for h in sel["history"])


def test_a_check_scores_the_ranges_it_keeps_not_validation_fitted_ones() -> None:
    """int8 QAT's observers would fit the validation batches during a check, whose buffers are then put back: the
    score was of ranges not kept. With ``num_calibration=0`` a step-0 check scored validation-fitted ranges and,
    winning, left the model with uncalibrated ones (scale 1, zero point 0): a review found it, session 40."""
    import torch
    from torch import nn
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver

    from compresslab.training.select import BestOnValidation

    torch.manual_seed(0)
    model = nn.Sequential(FakeQuantize(MovingAverageMinMaxObserver, quant_min=0, quant_max=255), nn.Linear(4, 1))
    x = torch.randn(64, 4) * 0.05  # small values: uncalibrated ranges (scale 1) round them all to 0

    def score(m: nn.Module) -> float:
        with torch.no_grad():
            return -float((m(x) - model[1](x)).abs().mean())  # 0 = the fake-quant input changes nothing

    select = BestOnValidation(score, every=1, last_step=1, include_start=True)
    select.on_step_begin(0, model)
    kept = nn.Sequential(FakeQuantize(MovingAverageMinMaxObserver, quant_min=0, quant_max=255), nn.Linear(4, 1))
    kept.load_state_dict(select.best_state)
    kept[0].disable_observer()
    assert select.history[0]["score"] == pytest.approx(score(kept))  # the score is of the state kept
    assert bool(model[0].observer_enabled.item())  # the observer's flag is back as it was
