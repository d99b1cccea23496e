"""Level search under a latency budget (ZipLM §4.7 tests 5, 6): the knapsack DP (``ops/knapsack``) vs
brute force, SPDY search, latency table."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from compresslab.ops.knapsack import solve_dp
from compresslab.ops.spdy import LatencyTable, isotonic_non_decreasing, spdy_search


def _brute_force(times, errors, budget, coefs=None) -> float:
    coefs = coefs if coefs is not None else [1.0] * len(times)
    best = np.inf
    for choice in itertools.product(*(range(len(t)) for t in times)):
        if sum(times[j][s] for j, s in enumerate(choice)) <= budget:
            best = min(best, sum(coefs[j] * errors[j][s] for j, s in enumerate(choice)))
    return best


def _instance(
    rng: np.random.Generator, n: int, levels: int = 4
) -> tuple[list[list[float]], list[list[float]]]:
    # level 0 is dense (slow, exact); deeper levels are faster and worse, like a real database
    times = [
        sorted(rng.integers(0, 12, size=levels).astype(float).tolist(), reverse=True)
        for _ in range(n)
    ]
    errors = [sorted(rng.random(levels).tolist()) for _ in range(n)]
    return times, errors


@pytest.mark.parametrize("seed", range(12))
def test_dp_equals_brute_force_on_exact_buckets(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 7))  # 1..6 modules x 4 levels
    times, errors = _instance(rng, n)
    budget = float(rng.integers(sum(min(t) for t in times), sum(max(t) for t in times) + 1)) or 1.0
    coefs = rng.random(n).tolist() if seed % 2 else None
    # integer times and one bucket per time unit: discretization is exact
    sol = solve_dp(times, errors, budget, coefs, num_buckets=int(budget))
    assert sol.objective == pytest.approx(_brute_force(times, errors, budget, coefs), abs=1e-12)
    assert sol.time == sum(times[j][s] for j, s in enumerate(sol.choice)) <= budget
    c = coefs or [1.0] * n
    assert sol.objective == pytest.approx(
        sum(c[j] * errors[j][s] for j, s in enumerate(sol.choice))
    )


@pytest.mark.parametrize("seed", range(6))
def test_dp_with_real_valued_times_respects_budget(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 6
    times = [sorted((rng.random(4) * 3).tolist(), reverse=True) for _ in range(n)]
    errors = [sorted(rng.random(4).tolist()) for _ in range(n)]
    budget = 0.5 * (sum(min(t) for t in times) + sum(max(t) for t in times))
    num_buckets = 1000
    sol = solve_dp(times, errors, budget, num_buckets=num_buckets)
    assert sol.time <= budget * (1 + 1e-9)
    # ceil rounding loses at most one bucket per module: as good as a tighter budget's optimum
    assert _brute_force(times, errors, budget) - 1e-12 <= sol.objective
    assert sol.objective <= _brute_force(times, errors, budget - n * budget / num_buckets) + 1e-12
    rounded = solve_dp(times, errors, budget, num_buckets=num_buckets, rounding="round")
    assert rounded.time <= budget + n * budget / num_buckets / 2 + 1e-9


def test_dp_rejects_infeasible_budgets_and_bad_tables() -> None:
    with pytest.raises(ValueError, match="infeasible"):
        solve_dp([[5.0, 3.0], [4.0, 2.0]], [[0.0, 1.0], [0.0, 1.0]], budget=4.0)
    with pytest.raises(ValueError, match="same length"):
        solve_dp([[1.0, 0.5]], [[0.0]], budget=1.0)
    with pytest.raises(ValueError, match="budget"):
        solve_dp([[1.0]], [[0.0]], budget=0.0)
    with pytest.raises(ValueError, match="coefs"):
        solve_dp([[1.0]], [[0.0]], budget=1.0, coefs=[1.0, 2.0])
    with pytest.raises(ValueError, match="rounding"):
        solve_dp([[1.0]], [[0.0]], budget=1.0, rounding="floor")  # type: ignore[arg-type]


def test_spdy_search_finds_the_true_optimum_when_layer_errors_are_miscalibrated() -> None:
    rng = np.random.default_rng(7)
    times, errors = _instance(rng, 4)
    budget = 0.5 * (sum(min(t) for t in times) + sum(max(t) for t in times))
    hidden = [
        5.0,
        0.2,
        1.0,
        3.0,
    ]  # the real loss weighs modules differently from the layer-wise errors

    def score(choice: tuple[int, ...]) -> float:
        return sum(hidden[j] * errors[j][s] for j, s in enumerate(choice))

    res = spdy_search(
        score, times, errors, budget, num_random=30, tries_per_round=20, num_buckets=200
    )
    assert res.score == pytest.approx(_brute_force(times, errors, budget, hidden))
    assert res.score == score(res.choice)
    assert sum(times[j][s] for j, s in enumerate(res.choice)) <= budget
    assert len(res.coefs) == 4 and 1 <= res.num_evaluations
    again = spdy_search(
        score, times, errors, budget, num_random=30, tries_per_round=20, num_buckets=200
    )
    assert again == res  # seeded, so reproducible


def test_spdy_local_search_improves_on_its_start() -> None:
    rng = np.random.default_rng(9)
    times, errors = _instance(rng, 6)
    budget = 0.5 * (sum(min(t) for t in times) + sum(max(t) for t in times))
    hidden = [5.0, 0.2, 1.0, 3.0, 0.5, 2.0]

    def score(choice: tuple[int, ...]) -> float:
        return sum(hidden[j] * errors[j][s] for j, s in enumerate(choice))

    start = spdy_search(
        score, times, errors, budget, num_random=1, tries_per_round=0, num_buckets=200
    )
    searched = spdy_search(
        score, times, errors, budget, num_random=1, tries_per_round=30, num_buckets=200
    )
    assert searched.score < start.score
    assert searched.score == pytest.approx(_brute_force(times, errors, budget, hidden))


def test_isotonic_fit_is_monotone_and_least_squares() -> None:
    np.testing.assert_allclose(isotonic_non_decreasing([1.0, 3.0, 2.0, 4.0]), [1.0, 2.5, 2.5, 4.0])
    np.testing.assert_allclose(isotonic_non_decreasing([3.0, 2.0, 1.0]), [2.0, 2.0, 2.0])
    rng = np.random.default_rng(0)
    noisy = np.linspace(0, 1, 40) + 0.2 * rng.standard_normal(40)
    fit = isotonic_non_decreasing(noisy)
    assert np.all(np.diff(fit) >= 0) and fit.sum() == pytest.approx(
        noisy.sum()
    )  # PAV keeps the mean
    from scipy.optimize import isotonic_regression

    np.testing.assert_allclose(fit, isotonic_regression(noisy).x, atol=1e-12)


def _table() -> LatencyTable:
    rng = np.random.default_rng(1)
    widths = list(range(0, 3073, 256))
    ffn = {
        w: 1e-3 * w / 3072 + (2e-4 * rng.random() if w else 0.0) for w in widths
    }  # noisy, non-monotone
    att = {h: 1e-4 * h + 5e-5 * (h % 3 == 1) for h in range(1, 13)}  # t(0) left out: defaults to 0
    return LatencyTable.from_dense(
        0.03, {"attention": att, "ffn": ffn}, {"attention": 12, "ffn": 12}, {"device": "cpu"}
    )


def test_latency_table_smoothing_is_monotone_and_keeps_zero() -> None:
    table = _table()
    assert any(
        np.diff(list(table.module_times["ffn"].values())) < 0
    )  # the raw data is not monotone
    smooth = table.smoothed()
    for kind in ("attention", "ffn"):
        assert smooth.sizes(kind) == table.sizes(kind) and smooth.time(kind, 0) == 0.0
        assert np.all(np.diff(list(smooth.module_times[kind].values())) >= 0)
    assert smooth.base_time == table.base_time and smooth.fingerprint == table.fingerprint


def test_latency_table_prediction_base_time_and_json_round_trip() -> None:
    table = _table()
    dense = {"attention": [12] * 12, "ffn": [3072] * 12}
    assert table.predict(dense) == pytest.approx(0.03)  # t_0 is defined so the dense model is exact
    cfg = {"attention": [12, 0, 5] + [12] * 9, "ffn": [256, 3072, 0] + [1024] * 9}  # held out
    truth = 0.03 - 12 * (table.time("attention", 12) + table.time("ffn", 3072))
    truth += sum(table.time("attention", h) for h in cfg["attention"]) + sum(
        table.time("ffn", w) for w in cfg["ffn"]
    )
    assert table.predict(cfg) == pytest.approx(truth)
    again = LatencyTable.from_json(table.to_json())
    assert again == table and again.predict(cfg) == table.predict(cfg)
    assert table.matches({"device": "cpu"}) and not table.matches({"device": "cuda"})
    assert not table.matches({"device": "cpu", "batch": 1})
    with pytest.raises(ValueError, match="allowed"):
        table.predict({"ffn": [100]})
    with pytest.raises(ValueError, match="unknown module type"):
        table.predict({"conv": [1]})
    with pytest.raises(ValueError, match="version"):
        LatencyTable.from_dict({**table.to_dict(), "version": 99})
    with pytest.raises(ValueError, match=">= 0"):
        LatencyTable(0.0, {"ffn": {8: -1.0}})
