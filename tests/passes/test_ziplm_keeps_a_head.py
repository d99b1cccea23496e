"""ZipLM and structured_l1 never remove every attention head (trial 47, finding 1).

With no head in any layer no token sees another, so a [CLS]-pooled classifier gives every input the same
output: a 2-layer RoBERTa pruned to ``[{ffn: 0, heads: 0}, {ffn: 0, heads: 0}]`` at 2x was reported "met".
The search keeps at least one head in the model, the reachability check prices that floor (a target only
reachable by emptying the model is refused before any Hessian, naming the largest reachable speedup), and a
layer left with no head and no FFN neuron (a skip) is stated in the metrics, the log and the report.

Timing is the synthetic table of the tiny BERT (1 ms base, 1 ms per head, 0.05 ms per FFN neuron, grid 16;
2 layers of 4 heads and 64 neurons: T_dense = 15.4 ms). Removing everything would give 15.4x; keeping one
head gives at most 15.4 / 2 = 7.70x; structured_l1 keeps one per layer (uniform): 15.4 / 3 = 5.13x.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from compresslab.models.adapters import get_adapter
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.passes.structured_l1 import StructuredL1
from compresslab.report.render import Document, to_markdown
from compresslab.report.targets import speedup_targets
from compresslab.testing import synthetic_latency_table, tiny_context, tiny_task
from compresslab.types import PassContext

torch.set_num_threads(1)

TINY = dict(batch=2, seq=16, threads=1, ffn_grid=16, latency_warmup=0, latency_runs=2, check_runs=2,
            num_calibration=32, max_retries=0)


def _ctx(tmp_path: Path) -> PassContext:
    ctx = tiny_context(tiny_tokenizer(tmp_path / "tok"), tmp_path, task=tiny_task(32, 4, 4))
    ctx.step_dir = tmp_path / "step"
    return ctx


@pytest.fixture
def fake_timing(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The synthetic table; speedup checks pop from ``script`` (default: always fast enough)."""
    import compresslab.pruning.reachable as reachable
    import compresslab.pruning.speedup as st

    state: dict[str, Any] = {"script": []}
    monkeypatch.setattr(st, "build_latency_table", lambda *a, **k: synthetic_latency_table())
    monkeypatch.setattr(reachable, "cached_latency_table", lambda *a, **k: synthetic_latency_table())  # preflight's

    def measure(*a: Any, **k: Any) -> dict[str, float]:
        s = state["script"].pop(0) if state["script"] else 100.0
        return {"speedup": s, "dense_ms": 10.0, "candidate_ms": 10.0 / s}

    monkeypatch.setattr(st, "measure_speedup", measure)
    return state


def _ziplm(**kw: Any):
    from compresslab.passes.ziplm import ZipLM

    return ZipLM(**{**TINY, **kw})


def _heads(model: torch.nn.Module) -> int:
    return sum(s["heads"] for s in get_adapter(model).structure())


# ------------------------------------------------------------------ the search


def test_the_dp_keeps_the_least_error_structure_with_a_head() -> None:
    """Heads cost little error here, so the plain DP empties every attention module; the search returns the
    least-error structure with a head left instead (checked against every structure of the tiny model)."""
    table = synthetic_latency_table()[0]
    model = tiny_model("bert")

    def err(kind: str, removed: int) -> float:  # removing heads is nearly free, removing neurons is not
        return 0.01 * removed if kind == "attention" else (removed / 16) ** 2

    dbs = {(i, kind): SimpleNamespace(level=lambda r, kind=kind: SimpleNamespace(error=err(kind, r)))
           for i in range(2) for kind in ("attention", "ffn")}
    solve = _ziplm().solver(model, dbs, table)
    budget = 2.0e-3  # two heads' time: the plain DP spends it on FFN neurons (16 + 16) and keeps no head
    choice = solve(budget)
    assert sum(choice["heads"]) >= 1, choice

    def cost(h: tuple[int, int], f: tuple[int, int]) -> tuple[float, float]:
        t = sum(table.time("attention", x) for x in h) + sum(table.time("ffn", x) for x in f)
        return t, sum(err("attention", 4 - x) for x in h) + sum(err("ffn", 64 - x) for x in f)

    best = min((cost(h, f)[1], h, f) for h in itertools.product(range(5), repeat=2)
               for f in itertools.product(range(0, 65, 16), repeat=2)
               if sum(h) >= 1 and cost(h, f)[0] <= budget * (1 + 1e-9))
    assert cost(tuple(choice["heads"]), tuple(choice["ffn"]))[1] == pytest.approx(best[0])
    assert sorted(choice["heads"]) == [0, 1] and sorted(choice["ffn"]) == [0, 16]  # one head + 16 neurons


# ------------------------------------------------------------------ the reachability check


def test_a_target_only_reachable_by_emptying_the_model_is_refused_before_any_work(
        tmp_path: Path, fake_timing: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """10x: removing everything gives 15.4x (the old check let it through and the model came out empty); with
    one head kept the most is 7.70x, named in the refusal, before any Hessian."""
    import compresslab.passes.ziplm as zl

    monkeypatch.setattr(zl, "collect_hessians", lambda *a, **k: pytest.fail("Hessians before the target check"))
    for kw in ({"speedup": 10.0}, {"speedup": 2.0, "family": [10.0]}, {"speedup": 10.0, "mode": "gradual"}):
        with pytest.raises(ValueError, match=r"\[10\.0\] are not reachable .* largest reachable speedup is 7\.70x"):
            _ziplm(**kw).apply(tiny_model("bert"), _ctx(tmp_path))


def test_structured_l1_refuses_what_only_an_empty_model_reaches(tmp_path: Path, fake_timing: dict) -> None:
    """Uniform layers keep a head each: at most 15.4 / 3 = 5.13x. 6x used to come out with no head at all."""
    with pytest.raises(ValueError, match=r"largest reachable speedup is 5\.13x"):
        StructuredL1(speedup=6.0, **TINY).apply(tiny_model("bert"), _ctx(tmp_path))
    model = tiny_model("bert")
    res = StructuredL1(speedup=5.0, **TINY).apply(model, _ctx(tmp_path))
    assert res.structure == {"heads": [1, 1], "ffn": [0, 0]} and _heads(model) == 2


# ------------------------------------------------------------------ whole passes near the floor


@pytest.mark.filterwarnings("ignore:only .* calibration tokens")
@pytest.mark.parametrize("mode", ["oneshot", "gradual"])
def test_near_the_floor_a_head_stays_and_the_skipped_layer_is_stated(
        tmp_path: Path, fake_timing: dict, caplog: pytest.LogCaptureFixture, mode: str) -> None:
    """7.5x leaves room for one head only (budget 1.05 ms): one layer keeps it, the other is emptied (a skip),
    stated in the metrics and the log. The model's output still depends on its input."""
    model = tiny_model("bert")
    ctx = _ctx(tmp_path)
    with caplog.at_level(logging.WARNING):
        res = _ziplm(speedup=7.5, family=[3.0, 7.5], mode=mode).apply(model, ctx)
    assert res.structure["ffn"] == [0, 0] and sorted(res.structure["heads"]) == [0, 1]
    skipped = [i for i, h in enumerate(res.structure["heads"]) if h == 0]
    assert res.metrics["skipped_layers"] == skipped and res.metrics["family"]["7.5x"]["skipped_layers"] == skipped
    assert res.metrics["family"]["3x"]["skipped_layers"] == []
    assert f"layer(s) {skipped} keep no attention head and no FFN neuron" in caplog.text
    batch = {k: v for k, v in next(ctx.calibration_batches(8)).items() if k != "labels"}
    with torch.no_grad():
        logits = model(**batch).logits
    assert not torch.allclose(logits, logits[:1].expand_as(logits), atol=1e-6)  # not one constant output


@pytest.mark.filterwarnings("ignore:only .* calibration tokens", "ignore:.*target missed")
def test_tightening_stops_at_the_fastest_structure_with_a_head(tmp_path: Path, fake_timing: dict) -> None:
    """Measured short three times at 7x: the budget tightens to the one-head floor, never below it (where the
    old loop emptied the model), and the miss is reported as a miss."""
    fake_timing["script"] = [5.0, 5.0, 5.0, 5.0]
    model = tiny_model("bert")
    res = _ziplm(speedup=7.0, max_retries=3).apply(model, _ctx(tmp_path))
    att = res.metrics["attempts"]
    assert len(att) == 2 and att[1]["budget_ms"] < att[0]["budget_ms"] and att[1]["budget_ms"] >= 1.0
    assert not res.metrics["met_target"] and _heads(model) == 1


# ------------------------------------------------------------------ the report


def test_the_report_names_skipped_layers() -> None:
    metrics = {"target_speedup": 3.0, "predicted_speedup": 3.1, "measured_speedup": 3.2, "shape": [32, 128],
               "met_target": True, "retries": 0, "skipped_layers": [1, 4], "latency_table": {"model": "linear"}}
    doc = Document("t", [])
    doc.blocks += speedup_targets({"steps": [{"index": 1, "name": "ziplm", "result": {"metrics": metrics}}]})
    assert "| layers skipped (no head, no FFN neuron left) | 1, 4 |" in to_markdown(doc)


# ------------------------------------------------------------------ the API takes the same path


@pytest.mark.filterwarnings("ignore:only .* calibration tokens")
def test_the_api_refuses_the_empty_model_and_keeps_a_head(tiny_tok: Any, fake_timing: dict) -> None:
    import compresslab
    from compresslab.testing import tiny_sentiment

    data = [(e.text_a, ["neg", "pos"][e.label]) for e in tiny_sentiment(48, 0)]
    kw = dict(data=data, max_length=32, batch_size=8, progress=False)
    with pytest.raises(ValueError, match=r"largest reachable speedup is 7\.70x"):
        compresslab.compress(tiny_model("bert"), tiny_tok, [{"name": "ziplm", **TINY, "speedup": 10.0}], **kw)
    r = compresslab.compress(tiny_model("bert"), tiny_tok, [{"name": "ziplm", **TINY, "speedup": 7.5}], **kw)
    try:
        assert _heads(r.model) == 1
        assert len(r.metrics["steps"][0]["metrics"]["skipped_layers"]) == 1
    finally:
        r.close()
