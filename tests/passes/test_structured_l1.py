"""structured_l1 (ZipLM's magnitude baseline): uniform per-layer L1 removal to a speedup target.

Timing is synthetic (a fixed latency table and a scripted measurement) so the test is exact;
the candidate is still exported with parity by the shared machinery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from compresslab.models.adapters import get_adapter
from compresslab.checkpoint import load, save
from compresslab.models.structure import shrink_heads
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.passes.structured_l1 import StructuredL1, head_l1, neuron_l1
from compresslab.testing import synthetic_latency_table, tiny_context, tiny_task
from compresslab.types import PassContext

torch.set_num_threads(1)


def _ctx(tmp_path: Path) -> PassContext:
    """The shared toy context (compresslab.testing), 32 train sentences."""
    ctx = tiny_context(tiny_tokenizer(tmp_path / "tok"), tmp_path, task=tiny_task(32, 4, 4))
    ctx.step_dir = tmp_path / "step"
    return ctx


@pytest.fixture
def fake_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    import compresslab.pruning.speedup as st

    monkeypatch.setattr(st, "build_latency_table", lambda *a, **k: synthetic_latency_table())
    monkeypatch.setattr(st, "measure_speedup", lambda *a, **k: {"speedup": 9.0, "dense_ms": 9.0, "candidate_ms": 1.0})


def _pass(**kw: Any) -> StructuredL1:
    base = dict(batch=2, seq=16, threads=1, ffn_grid=16, latency_runs=2, check_runs=2, num_calibration=16)
    return StructuredL1(**{**base, **kw})


def test_uniform_structure_keeps_the_largest(tmp_path: Path, fake_timing: None) -> None:
    ctx = _ctx(tmp_path)
    model = tiny_model("bert", initializer_range=0.3)
    lv = get_adapter(model).layer(0)
    heads_rank, neuron_rank = head_l1(lv).argsort(descending=True), neuron_l1(lv).argsort(descending=True)
    o_cols, w2 = lv.o.weight.detach().clone(), lv.ffn_out.weight.detach().clone()
    res = _pass(speedup=2.0, family=[3.0]).apply(model, ctx)
    s = res.structure
    assert len(set(s["heads"])) == 1 and len(set(s["ffn"])) == 1  # the same fraction in every layer
    # T_dense = 1 + 2 (4 + 3.2) = 15.4 ms; 2x needs modules <= 6.7 ms. Up to f = 0.625 the layers keep
    # 2 heads + 32 neurons (2 x 3.6 ms, over); just past it, 1 head + 16 neurons (2 x 1.8 ms) fits
    assert s == {"heads": [1, 1], "ffn": [16, 16]} and res.metrics["predicted_speedup"] >= 2.0
    assert res.metrics["structure_before"] == {"heads": [4, 4], "ffn": [64, 64]}  # drawn by the report's plot
    lv = get_adapter(model).layer(0)
    kept = sorted(heads_rank[:1].tolist())
    d = lv.head_size
    torch.testing.assert_close(lv.o.weight, torch.cat([o_cols[:, h * d:(h + 1) * d] for h in kept], 1))
    torch.testing.assert_close(lv.ffn_out.weight, w2[:, sorted(neuron_rank[:16].tolist())])  # no refit
    out = save(model, tmp_path / "saved", ctx.tokenizer)
    batch = {k: v for k, v in next(ctx.calibration_batches(8)).items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(load(out)(**batch).logits, model(**batch).logits, atol=1e-5, rtol=0)
    assert load(ctx.run_dir / "family" / "step" / "3x") is not None


def test_bad_inputs(tmp_path: Path, fake_timing: None) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        _pass(speedup=0.9)
    with pytest.raises(ValueError, match="fraction_steps"):
        _pass(fraction_steps=0)
    model = tiny_model("bert")
    shrink_heads(get_adapter(model).layer(0), [0, 1])
    with pytest.raises(ValueError, match="uniform"):
        _pass().apply(model, _ctx(tmp_path))
    with pytest.raises(ValueError, match="largest reachable speedup"):
        _pass(speedup=20.0).apply(tiny_model("bert"), _ctx(tmp_path))
