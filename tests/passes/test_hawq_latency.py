"""hawq's ``latency_limit`` (issue #10): validated at settings time, the table measured (here: a fake
timer) or read from this machine's cache before any Hessian work, the chosen map within the limit, an
infeasible limit named with the smallest achievable, and the record of where the table came from."""

from __future__ import annotations

import math

import pytest

import compresslab.bench.nbits_latency as nl
from compresslab.models.tiny import tiny_model
from compresslab.ops.knapsack import InfeasibleBudgetError
from compresslab.passes.hawq import Hawq

FAST = dict(hessian={"batches": 2, "batch_size": 8, "probes_per_batch": 4, "min_probes": 4, "eigen_batches": 1,
                     "eigen_iters": 5}, block_size=16, recovery={"steps": 0}, latency={"threads": 1})
PER = {2: 3.0, 4: 1.0, 8: 1.5, 32: 2.0}  # fake time per weight and deployed width (2-bit slower than fp32)


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import compresslab.bench.machine_load as ml
    from compresslab.testing import FakeCpu

    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=0.0))
    monkeypatch.setattr(ml, "PROBE_S", 0.0)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list:
    """A fake timer: K*N*PER[width] ns per entry; records each call."""
    calls: list = []

    def measure(entries, s):
        calls.append((list(entries), s))
        return {e: e[0] * e[1] * PER[e[3]] * 1e-9 for e in entries}, {"entries_ms": {}}

    monkeypatch.setattr(nl, "measure_entries", measure)
    return calls


def _time(bits: dict[str, int], shapes: dict[str, tuple[int, int]]) -> float:
    """The fake table summed at a map (3 bits run as 4)."""
    return sum(shapes[n][0] * shapes[n][1] * PER[{3: 4}.get(b, b)] * 1e-9 for n, b in bits.items())


@pytest.mark.parametrize("value", [0, -0.5, math.nan, math.inf])
def test_latency_limit_must_be_a_positive_finite_fraction(value) -> None:
    with pytest.raises(ValueError, match="latency_limit must be a positive finite number .*fraction of the all-fp32"):
        Hawq(latency_limit=value)


@pytest.mark.parametrize("value", [True, "0.8"])
def test_latency_limit_of_the_wrong_type_is_said_as_one(value) -> None:
    with pytest.raises(ValueError, match=f"^hawq.latency_limit must be a number or null, got {value!r}$"):
        Hawq(latency_limit=value)


@pytest.mark.parametrize("kw, match", [
    ({"bits": 4, "latency_limit": 0.8}, "nothing to allocate"),
    ({"allocate": "random", "latency_limit": 0.8}, "allocate=random is the control at an average-bits budget"),
    ({"avg_bits": None}, "no budget"),
    ({"size_bytes": -3}, "size_bytes must be a positive finite number"),
    ({"latency": {"runs": 0}}, "latency.runs"),
    ({"latency": {"accuracy_level": 9}}, "latency.accuracy_level"),
    ({"latency": {"batchez": 2}}, "batchez"),
])
def test_bad_budget_settings_fail_at_construction(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Hawq(**kw)


def test_latency_limit_alone_or_with_other_budgets_is_accepted() -> None:
    assert Hawq(avg_bits=None, latency_limit=0.8).latency_limit == 0.8
    h = Hawq(avg_bits=4, size_bytes=1000, latency_limit=1)
    assert (h.avg_bits, h.size_bytes, h.latency_limit) == (4.0, 1000.0, 1.0)


def test_the_allocation_meets_the_latency_limit_and_records_the_table(tiny_ctx, fake: list) -> None:
    model = tiny_model()
    from compresslab.targets import select_modules

    shapes = {n: (m.in_features, m.out_features) for n, m in select_modules(model).items()}
    fp32 = _time({n: 32 for n in shapes}, shapes)
    ctx = tiny_ctx()
    res = Hawq(avg_bits=None, latency_limit=0.6, **FAST).apply(model, ctx)
    lat = res.metrics["latency"]
    assert lat["source"] == "measured" and lat["limit"] == 0.6 and lat["unit"] == "s"
    assert lat["fp32_total_s"] == pytest.approx(fp32) and lat["limit_s"] == pytest.approx(0.6 * fp32)
    # the chosen map's time from the table, at the widths the pass reports, within the limit
    assert _time(res.metrics["bits"], shapes) <= 0.6 * fp32 * (1 + 1e-9)
    assert lat["predicted_s"] == pytest.approx(_time(res.metrics["bits"], shapes))
    assert lat["predicted_relative"] <= 0.6 + 1e-9
    assert lat["fingerprint"]["threads"] == 1 and "cpu.model" in lat["fingerprint"]
    assert res.metrics["allocation"]["budget"] == {"latency": pytest.approx(0.6 * fp32)}
    # the deployed widths are what was timed: every entry once, fp32 included though not in every choices
    assert len(fake) == 1 and {e[3] for e in fake[0][0]} == {2, 4, 8, 32}
    # a second run on this machine reads the cache
    res2 = Hawq(avg_bits=None, latency_limit=0.6, **FAST).apply(tiny_model(), ctx)
    assert len(fake) == 1 and res2.metrics["latency"]["source"] == "cached"
    assert res2.metrics["bits"] == res.metrics["bits"]


def test_latency_and_average_bits_together(tiny_ctx, fake: list) -> None:
    model = tiny_model()
    res = Hawq(avg_bits=3.0, latency_limit=0.7, **FAST).apply(model, tiny_ctx())
    assert res.metrics["avg_bits"] <= 3.0 + 1e-9 and res.metrics["latency"]["predicted_relative"] <= 0.7 + 1e-9
    assert set(res.metrics["allocation"]["budget"]) == {"avg_bits", "latency"}


# PER makes 2 bits the slowest width: the free 3-bit map (some 2-bit Linears) takes 1.28x the fp32 time
@pytest.mark.parametrize("limit, binds", [(0.55, True), (0.7, True), (2.0, False)])
def test_the_record_prices_the_map_without_the_limit(tiny_ctx, fake: list, limit: float, binds: bool) -> None:
    """With another budget beside the limit, the record holds the map the limit displaced: the same
    program without it (a relaxation: objective never higher; the same when its map meets the limit)."""
    from compresslab.targets import select_modules

    model = tiny_model()
    shapes = {n: (m.in_features, m.out_features) for n, m in select_modules(model).items()}
    fp32 = _time({n: 32 for n in shapes}, shapes)
    lat = Hawq(avg_bits=3.0, latency_limit=limit, **FAST).apply(model, tiny_ctx()).metrics["latency"]
    free = lat["without_limit"]
    assert free["avg_bits"] <= 3.0 + 1e-9
    assert free["predicted_s"] == pytest.approx(_time(free["bits"], shapes))
    assert free["predicted_relative"] == pytest.approx(free["predicted_s"] / fp32)
    assert free["objective"] <= lat["objective"] * (1 + 1e-9) + 1e-12
    assert (free["predicted_relative"] > limit) == binds
    if not binds:  # the free map is feasible under the limit: same optimum
        assert lat["objective"] == pytest.approx(free["objective"], rel=1e-9, abs=1e-12)
    else:  # the limit binds: the chosen map is within it and the free one is not
        assert lat["predicted_relative"] <= limit + 1e-9 < free["predicted_relative"]


def test_no_without_limit_record_when_the_limit_is_the_only_budget(tiny_ctx, fake: list) -> None:
    lat = Hawq(avg_bits=None, latency_limit=0.6, **FAST).apply(tiny_model(), tiny_ctx()).metrics["latency"]
    assert "without_limit" not in lat and lat["objective"] >= 0


def test_an_infeasible_limit_names_the_smallest_achievable_before_the_hessian(tiny_ctx, fake: list,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Hawq, "_sensitivity", lambda *a, **k: pytest.fail("the Hessian ran for an infeasible budget"))
    # fastest width everywhere is 4 bits (PER[4] = 1.0 vs fp32 2.0): the smallest achievable is 0.5
    with pytest.raises(InfeasibleBudgetError,
                       match=r"latency_limit=0\.3 .* is below the smallest achievable 0\.5 "
                             r".*choices=\[2, 3, 4, 8, 32\]"):
        Hawq(avg_bits=None, latency_limit=0.3, **FAST).apply(tiny_model(), tiny_ctx())
    # only fp32 and 2 bits: 2 bits is slower than fp32 here, so fp32 everywhere (1.0) is the least
    with pytest.raises(InfeasibleBudgetError, match=r"smallest achievable 1 "):
        Hawq(avg_bits=None, latency_limit=0.9, choices=[2, 32], **FAST).apply(tiny_model(), tiny_ctx())
    # each alone is achievable, together not: avg_bits 2 forces 2 bits (1.5x fp32) under a limit of 0.6
    with pytest.raises(InfeasibleBudgetError, match="achievable alone but not together"):
        Hawq(avg_bits=2.0, latency_limit=0.6, **FAST).apply(tiny_model(), tiny_ctx())
