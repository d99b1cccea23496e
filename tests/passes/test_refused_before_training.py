"""Refusals that depend only on the settings, the task's kind or the model's shapes come before any step runs.

HAWQ's budgets (avg_bits under ``rules``' pins, ``latency_limit`` on the n-bit table) are checked on the model the
step will be given, in the preflight: they were refused "before the Hessian", but after finetune and every earlier
step. The n-bit table the preflight measures is the step's own (cached, else kept on the pass): a run that goes on
times it once. Guided int8 on an embedding task is refused by the pass's data check, not after the export.
(ZipLM's and structured_l1's: tests/unit/pipeline/test_planned_preflight.py.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import compresslab
import compresslab.bench.nbits_latency as nl
from compresslab.models.tiny import tiny_model
from compresslab.passes.hawq import Hawq
from compresslab.registry import available_passes, get_pass
from compresslab.testing import tiny_sentiment

FAST = dict(hessian={"batches": 2, "batch_size": 8, "probes_per_batch": 4, "min_probes": 4, "eigen_batches": 1,
                     "eigen_iters": 5}, block_size=16, recovery={"steps": 0}, latency={"threads": 1, "seq": 32})
PER = {2: 3.0, 4: 1.0, 8: 1.5, 32: 2.0}  # fake time per weight and deployed width (as tests/passes/test_hawq_latency)


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import compresslab.bench.machine_load as ml
    from compresslab.testing import FakeCpu

    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=0.0))
    monkeypatch.setattr(ml, "PROBE_S", 0.0)


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> list:
    """A fake n-bit timer (K*N*PER[width] ns per entry); one item per timing."""
    calls: list = []

    def measure(entries: Any, s: Any) -> Any:
        calls.append(list(entries))
        return {e: e[0] * e[1] * PER[e[3]] * 1e-9 for e in entries}, {"entries_ms": {}}

    monkeypatch.setattr(nl, "measure_entries", measure)
    return calls


@pytest.fixture
def no_step_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in available_passes():
        monkeypatch.setattr(get_pass(name), "apply", lambda *a, **k: pytest.fail("a step ran before the check"))


@pytest.mark.parametrize("hawq,match", [
    ({"avg_bits": 2.5, "rules": {"ffn_in": 32}}, r"average bits 2\.5 is below the smallest achievable .*pinned"),
    ({"avg_bits": None, "latency_limit": 0.3}, r"latency_limit=0\.3 .* is below the smallest achievable 0\.5"),
    ({"avg_bits": 2.0, "latency_limit": 0.6}, "achievable alone but not together"),
])
def test_an_infeasible_budget_is_refused_before_finetune(tiny_tok: Any, timed: list, no_step_runs: None,
                                                         hawq: dict, match: str) -> None:
    data = [(e.text_a, ["neg", "pos"][e.label]) for e in tiny_sentiment(48, 0)]
    with pytest.raises(ValueError, match=rf"step 'hawq': hawq: .*{match}"):
        compresslab.compress(tiny_model(), tiny_tok, [{"name": "finetune", "preset": "smoke"},
                                                      {"name": "hawq", **FAST, **hawq}],
                             data=data, max_length=32, batch_size=8, progress=False)


@pytest.mark.filterwarnings("ignore:Hessian trace not converged")
def test_the_table_the_preflight_timed_is_the_steps_own(tiny_ctx: Any, timed: list,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from compresslab.api import build_steps
    from compresslab.pipeline.preflight import check_planned

    steps = build_steps([{"name": "hawq", **FAST, "avg_bits": None, "latency_limit": 0.8}])
    check_planned(SimpleNamespace(cache_dir=None), steps, tiny_model())  # feasible: no error, one timing
    assert len(timed) == 1
    ctx = tiny_ctx()
    ctx.cache_dir = None  # as compress() runs: nothing cached on disk
    res = steps[0].pass_.apply(tiny_model(), ctx)
    assert len(timed) == 1 and res.metrics["latency"]["limit"] == 0.8


def test_guided_int8_on_an_embedding_task_is_refused_by_its_data_check() -> None:
    """Guided int8 keeps the fp32 graph's predictions; a bare encoder has none. Its refusal came from run_outputs,
    after the export and the int8 probes; it depends on the task's kind alone, so the data check (before any
    model is loaded) says it."""
    from compresslab.data.schema import TaskNotSupportedError
    from compresslab.passes.ort_int8_dynamic import OrtInt8Dynamic
    from compresslab.testing import tiny_embedding_task, tiny_task

    with pytest.raises(TaskNotSupportedError, match=r"fp32_fallback=guided .* is an embedding task .* fp32_fallback: "
                                                    r"none"):
        OrtInt8Dynamic(fp32_fallback="guided").check(tiny_embedding_task(32, 8, 8))
    OrtInt8Dynamic(fp32_fallback="guided").check(tiny_task(32, 8, 8))
    OrtInt8Dynamic().check(tiny_embedding_task(32, 8, 8))
