"""HAWQ-V3's integer program (``ops/knapsack.solve_milp``; ALGORITHMS.md §1.8 test 5): the optimum equals
brute-force enumeration on small random instances, couplings hold, infeasible budgets say the smallest
achievable value of each cost."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from compresslab.ops.knapsack import InfeasibleBudgetError, coupling_classes, solve_milp


def _maps(n: int, width: int, groups):
    """Every choice map that respects the coupling groups."""
    for choice in itertools.product(range(width), repeat=n):
        if all(len({choice[j] for j in g}) <= 1 for g in groups):
            yield choice


def _total(table, choice) -> float:
    return float(sum(table[j][s] for j, s in enumerate(choice)))


def _brute_force(errors, costs, limits, groups):
    best, best_choice = math.inf, None
    for choice in _maps(len(errors), len(errors[0]), groups):
        if all(_total(costs[c], choice) <= limits[c] for c in limits):
            obj = _total(errors, choice)
            if obj < best:
                best, best_choice = obj, choice
    return best, best_choice


def _instance(seed: int):
    rng = np.random.default_rng(seed)
    n, width = int(rng.integers(1, 9)), int(rng.integers(2, 4))
    errors = rng.random((n, width)).tolist()
    names = ["bits", "latency"][: int(rng.integers(1, 3))]
    costs = {"bits": (rng.integers(1, 5, size=(n, 1)) * np.array([2, 4, 8][:width])).astype(float).tolist()}
    costs["latency"] = rng.random((n, width)).tolist()
    groups = []
    if seed % 2 and n >= 2:  # half the instances couple a random pair or triple
        groups = [rng.choice(n, size=min(n, int(rng.integers(2, 4))), replace=False).tolist()]
    limits = {}
    for c in names:
        lo = sum(min(t) for t in costs[c])
        hi = sum(max(t) for t in costs[c])
        limits[c] = float(lo + rng.uniform(-0.1, 0.8) * (hi - lo))  # sometimes below the minimum
    return errors, costs, limits, groups


@pytest.mark.parametrize("seed", range(40))
def test_milp_equals_brute_force(seed: int) -> None:
    errors, costs, limits, groups = _instance(seed)
    best, _ = _brute_force(errors, costs, limits, groups)
    if math.isinf(best):
        with pytest.raises(InfeasibleBudgetError):
            solve_milp(errors, costs, limits, groups)
        return
    sol = solve_milp(errors, costs, limits, groups)
    assert sol.status == "optimal"
    assert sol.objective == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert sol.objective == pytest.approx(_total(errors, sol.choice), rel=1e-12)
    for c in costs:  # every table totalled, limited ones met
        assert sol.costs[c] == pytest.approx(_total(costs[c], sol.choice), rel=1e-12)
    for c, lim in limits.items():
        assert sol.costs[c] <= lim + 1e-9
    for g in groups:
        assert len({sol.choice[j] for j in g}) == 1


@pytest.mark.parametrize("scale", [1e-12, 1.0, 1e9])
def test_objective_and_cost_magnitudes_do_not_change_the_optimum(scale: float) -> None:
    # tiny errors (HAWQ's sensitivity x error can be ~1e-10) must not hide under the solver's absolute gap;
    # byte-sized costs (~1e8) must not loosen the limit by its feasibility tolerance
    rng = np.random.default_rng(7)
    errors = (rng.random((8, 3)) * scale).tolist()
    numel = rng.integers(1, 50, size=8) * 1_000_000
    costs = {"bytes": (numel[:, None] * np.array([2, 4, 8]) / 8).tolist()}
    limits = {"bytes": float(numel.sum() * 4.3 / 8)}
    best, choice = _brute_force(errors, costs, limits, [])
    sol = solve_milp(errors, costs, limits)
    assert sol.choice == choice
    assert sol.objective == pytest.approx(best, rel=1e-9)


def test_couplings_force_one_choice_and_cost_optimum() -> None:
    errors = [[5.0, 0.0], [0.0, 5.0]]  # uncoupled optimum (1, 0) has objective 0
    costs = {"bits": [[2.0, 4.0], [2.0, 4.0]]}
    free = solve_milp(errors, costs, {"bits": 8.0})
    assert free.choice == (1, 0) and free.objective == 0.0
    tied = solve_milp(errors, costs, {"bits": 8.0}, groups=[[0, 1]])
    assert tied.choice[0] == tied.choice[1] and tied.objective == 5.0


def test_overlapping_groups_merge() -> None:
    assert coupling_classes(5, [[0, 2], [2, 4]]) == [[0, 2, 4], [1], [3]]
    sol = solve_milp([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], {"c": [[1.0, 1.0]] * 3}, {"c": 3.0},
                     groups=[[0, 1], [1, 2]])
    assert len(set(sol.choice)) == 1 and sol.choice == (1, 1, 1)


def test_infeasible_budget_reports_the_smallest_achievable_value() -> None:
    costs = {"bits": [[2.0, 4.0], [6.0, 12.0]]}
    with pytest.raises(InfeasibleBudgetError, match="below the smallest achievable 8") as err:
        solve_milp([[1.0, 0.0], [1.0, 0.0]], costs, {"bits": 7.5})
    assert err.value.smallest == {"bits": 8.0}
    assert isinstance(err.value, ValueError)


def test_smallest_respects_couplings() -> None:
    # alone each module is cheapest at a different choice (1 + 1 = 2); coupled the best is min(1+9, 9+1) = 10
    costs = {"latency": [[1.0, 9.0], [9.0, 1.0]]}
    with pytest.raises(InfeasibleBudgetError) as err:
        solve_milp([[0.0, 0.0], [0.0, 0.0]], costs, {"latency": 5.0}, groups=[[0, 1]])
    assert err.value.smallest == {"latency": 10.0}
    assert solve_milp([[0.0, 0.0], [0.0, 0.0]], costs, {"latency": 5.0}).costs["latency"] == 2.0


def test_limits_achievable_alone_but_not_together() -> None:
    # choice 0 is small in bits but slow, choice 1 the reverse: either limit alone is met, both are not
    costs = {"bits": [[2.0, 8.0]], "latency": [[8.0, 2.0]]}
    with pytest.raises(InfeasibleBudgetError, match="together") as err:
        solve_milp([[0.0, 0.0]], costs, {"bits": 4.0, "latency": 4.0})
    assert err.value.smallest == {"bits": 2.0, "latency": 2.0}


def test_limit_met_exactly_is_feasible() -> None:
    # all-3-bit on modules with these sizes sums to exactly the limit in integers but not in float order
    numel = [0.1, 0.2, 0.3]
    costs = {"avg": [[n * 2, n * 3] for n in numel]}
    sol = solve_milp([[1.0, 0.0]] * 3, costs, {"avg": 0.6 * 3})
    assert sol.choice == (1, 1, 1)


@pytest.mark.parametrize("errors, costs, limits, groups, match", [
    ([], {}, {}, (), "at least one module"),
    ([[1.0], []], {}, {}, (), "at least one choice"),
    ([[1.0, math.nan]], {}, {}, (), "finite"),
    ([[1.0, 2.0]], {"b": [[1.0]]}, {"b": 1.0}, (), "1 values for 2 choices"),
    ([[1.0, 2.0]], {"b": [[1.0, 2.0], [1.0, 2.0]]}, {"b": 1.0}, (), "one list per module"),
    ([[1.0, 2.0]], {"b": [[1.0, math.inf]]}, {"b": 1.0}, (), "finite"),
    ([[1.0, 2.0]], {"b": [[1.0, 2.0]]}, {"bytes": 1.0}, (), "no cost table"),
    ([[1.0, 2.0]], {"b": [[1.0, 2.0]]}, {"b": math.nan}, (), "finite number"),
    ([[1.0, 2.0], [1.0, 2.0, 3.0]], {}, {}, [[0, 1]], "same number of choices"),
    ([[1.0, 2.0]], {}, {}, [[0, 3]], "not a module index"),
])
def test_bad_tables_raise(errors, costs, limits, groups, match) -> None:
    with pytest.raises(ValueError, match=match):
        solve_milp(errors, costs, limits, groups)


def test_a_map_within_the_solvers_tolerance_over_the_limit_is_cut_off() -> None:
    # keeping the small module at 32 bits costs (200 + 32) / 101; a limit 1e-6 below it is violated by less
    # than HiGHS' feasibility tolerance on the scaled row, yet it must not be returned
    costs = {"avg": [[200 / 101, 3200 / 101], [2 / 101, 32 / 101]]}
    at = (200 + 32) / 101
    assert solve_milp([[1.0, 0.0], [1.0, 0.0]], costs, {"avg": at}).choice == (0, 1)
    sol = solve_milp([[1.0, 0.0], [1.0, 0.0]], costs, {"avg": at - 1e-6})
    assert sol.choice == (0, 0) and sol.costs["avg"] <= at - 1e-6
