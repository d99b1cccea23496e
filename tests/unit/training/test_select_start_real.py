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
