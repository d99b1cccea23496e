"""Choose one level per module to minimise summed error under a summed-cost budget (a knapsack).

:func:`solve_dp` is the dynamic program over discretized cost buckets that ZipLM (§4.3) runs on
latency; any per-module choice with additive cost and additive error (bit widths under a size
budget) fits the same shape.

:func:`solve_milp` is the exact integer program of HAWQ-V3 (Yao et al. 2021, §3.3; ALGORITHMS.md
§1.6): one binary per (module, choice), any number of additive cost limits at once (bits, bytes,
latency), and coupled modules that must take the same choice. It solves with
``scipy.optimize.milp`` (HiGHS branch and bound), without discretizing costs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

_MAX_CUTS = 100  # re-solves allowed to cut off maps HiGHS accepted within its feasibility tolerance

__all__ = ["DPSolution", "InfeasibleBudgetError", "MILPSolution", "coupling_classes", "solve_dp", "solve_milp"]


@dataclass(frozen=True)
class DPSolution:
    """The chosen level index per module, its objective ``sum c_j e_j`` and its (real) time."""

    choice: tuple[int, ...]
    objective: float
    time: float


def _check_tables(times: Sequence[Sequence[float]], errors: Sequence[Sequence[float]]) -> None:
    if len(times) == 0 or len(times) != len(errors):
        raise ValueError(
            f"need one time list and one error list per module, got {len(times)} and {len(errors)}"
        )
    for j, (t, e) in enumerate(zip(times, errors, strict=True)):
        if len(t) == 0 or len(t) != len(e):
            raise ValueError(
                f"module {j}: times ({len(t)}) and errors ({len(e)}) must be non-empty, same length"
            )
        if not all(math.isfinite(x) and x >= 0 for x in t):
            raise ValueError(f"module {j}: times must be finite and >= 0, got {list(t)}")
        if not all(math.isfinite(x) for x in e):
            raise ValueError(f"module {j}: errors must be finite, got {list(e)}")


def solve_dp(
    times: Sequence[Sequence[float]],
    errors: Sequence[Sequence[float]],
    budget: float,
    coefs: Sequence[float] | None = None,
    num_buckets: int = 10000,
    rounding: Literal["ceil", "round"] = "ceil",
) -> DPSolution:
    """Minimize ``sum_j c_j * errors[j][s_j]`` subject to ``sum_j times[j][s_j] <= budget``.

    Times are discretized into ``num_buckets`` buckets of width ``budget / num_buckets``.
    ``rounding="ceil"`` (default) rounds every time up, so the returned choice never exceeds the
    budget in the model (at the cost of at most ``n_modules`` buckets of slack); ``"round"``
    matches the SPDY reference and may overshoot by up to ``n_modules / 2`` buckets.
    """
    _check_tables(times, errors)
    n = len(times)
    c = np.ones(n) if coefs is None else np.asarray(coefs, dtype=np.float64)
    if c.shape != (n,) or not np.all(np.isfinite(c)):
        raise ValueError(f"coefs must be {n} finite numbers, got {coefs!r}")
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be a positive finite time, got {budget!r}")
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    if rounding not in ("ceil", "round"):
        raise ValueError(f"rounding must be 'ceil' or 'round', got {rounding!r}")
    unit = budget / num_buckets
    quantize = (lambda x: np.ceil(x - 1e-9)) if rounding == "ceil" else np.round
    buckets = [quantize(np.asarray(t, dtype=np.float64) / unit).astype(np.int64) for t in times]

    best = np.full(
        num_buckets + 1, np.inf
    )  # best[tau]: min objective of modules so far using tau buckets
    best[0] = 0.0
    pick = np.full((n, num_buckets + 1), -1, dtype=np.int32)  # level reaching best[tau] at module j
    for j in range(n):
        new = np.full_like(best, np.inf)
        for s, (tb, e) in enumerate(zip(buckets[j], errors[j], strict=True)):
            if tb > num_buckets:
                continue
            cand = np.full_like(best, np.inf)
            cand[tb:] = best[: num_buckets + 1 - tb] + c[j] * e
            better = cand < new
            new[better] = cand[better]
            pick[j, better] = s
        if not np.isfinite(new).any():
            min_time = sum(min(t) for t in times)
            raise ValueError(
                f"budget {budget:g} is infeasible: the fastest choice takes {min_time:g}"
            )
        best = new
    tau = int(np.argmin(best))
    choice = [0] * n
    for j in range(n - 1, -1, -1):
        s = int(pick[j, tau])
        choice[j] = s
        tau -= int(buckets[j][s])
    objective = float(sum(c[j] * errors[j][s] for j, s in enumerate(choice)))
    return DPSolution(
        tuple(choice), objective, float(sum(times[j][s] for j, s in enumerate(choice)))
    )


class InfeasibleBudgetError(ValueError):
    """No choice map meets the limits. ``smallest[c]`` is the smallest achievable value of cost
    ``c`` alone (over every choice map that respects the couplings, ignoring the other limits);
    ``limits`` are the limits that were asked for (same units)."""

    def __init__(self, message: str, smallest: Mapping[str, float], limits: Mapping[str, float] | None = None):
        super().__init__(message)
        self.smallest: dict[str, float] = dict(smallest)
        self.limits: dict[str, float] = dict(limits or {})


@dataclass(frozen=True)
class MILPSolution:
    """The chosen index per module, its objective ``Σ_j errors[j][choice[j]]``, the total of every
    cost table at that choice (``costs[c]``, same units as the table), and the solver status
    (``"optimal"``; ``"limit"`` if HiGHS stopped on a limit with a feasible, maybe suboptimal, map)."""

    choice: tuple[int, ...]
    objective: float
    costs: dict[str, float] = field(default_factory=dict)
    status: str = "optimal"


def _check_milp_input(errors: Sequence[Sequence[float]], costs: Mapping[str, Sequence[Sequence[float]]],
                      limits: Mapping[str, float]) -> None:
    n = len(errors)
    if n == 0:
        raise ValueError("need at least one module (errors is empty)")
    for j, e in enumerate(errors):
        if len(e) == 0:
            raise ValueError(f"module {j}: needs at least one choice (errors[{j}] is empty)")
        if not all(math.isfinite(x) for x in e):
            raise ValueError(f"module {j}: errors must be finite, got {list(e)}")
    for c, table in costs.items():
        if len(table) != n:
            raise ValueError(f"cost {c!r}: needs one list per module ({n}), got {len(table)}")
        for j, (t, e) in enumerate(zip(table, errors, strict=True)):
            if len(t) != len(e):
                raise ValueError(f"cost {c!r}, module {j}: {len(t)} values for {len(e)} choices")
            if not all(math.isfinite(x) for x in t):
                raise ValueError(f"cost {c!r}, module {j}: values must be finite, got {list(t)}")
    for c, lim in limits.items():
        if c not in costs:
            raise ValueError(f"limit {c!r} has no cost table; costs given: {sorted(costs)}")
        if not (isinstance(lim, (int, float)) and math.isfinite(lim)):
            raise ValueError(f"limit {c!r} must be a finite number, got {lim!r}")


def coupling_classes(n: int, groups: Sequence[Sequence[int]]) -> list[list[int]]:
    """Partition of ``range(n)`` into classes that must take one choice: the connected components
    of ``groups`` (overlapping groups merge), singletons for uncoupled modules; classes are ordered
    by their first member and list members in increasing order. ValueError for an index outside
    ``[0, n)``."""
    parent = list(range(n))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for g in groups:
        members = list(g)
        for j in members:
            if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < n:
                raise ValueError(f"coupling group {members}: {j!r} is not a module index in [0, {n})")
        for a in members[1:]:
            parent[root(int(a))] = root(int(members[0]))
    classes: dict[int, list[int]] = {}
    for j in range(n):
        classes.setdefault(root(j), []).append(j)
    return list(classes.values())


def solve_milp(errors: Sequence[Sequence[float]], costs: Mapping[str, Sequence[Sequence[float]]],
               limits: Mapping[str, float], groups: Sequence[Sequence[int]] = ()) -> MILPSolution:
    """Minimise ``Σ_j errors[j][s_j]`` subject to ``Σ_j costs[c][j][s_j] <= limits[c]`` for every
    limited cost ``c``, with ``s_j`` equal across each coupling group (HAWQ-V3 §3.3's ILP).

    ``errors[j][s]``: the objective term of choice ``s`` for module ``j`` (any finite number).
    ``costs[c][j][s]``: additive cost ``c`` of that choice, in ``c``'s own unit (bits, bytes, seconds,
    ...); a cost without a limit is only totalled in the solution. ``groups``: lists of module indices
    that take the same choice index (overlapping groups merge; members need the same choice count).

    Exact (no bucketing): HiGHS with a zero relative gap; coupled modules are merged into one
    variable set, each cost row is scaled to unit magnitude and the objective shifted and scaled to
    [0, 1], so the remaining absolute gap (HiGHS' ``mip_abs_gap``, 1e-6) is relative to the largest
    error spread. The returned map is checked against every limit in float64 sums (a limit is met
when the total exceeds it by at most 1e-9 of the cost's magnitude, float64 summation order); a map
that HiGHS accepted within its own feasibility tolerance but that is over a limit is cut off and
the program re-solved, so limits hold exactly.

    Raises ValueError on malformed tables (shapes, non-finite values, a limit without a cost, a bad
    group), :class:`InfeasibleBudgetError` when no map meets all limits (``smallest`` gives each
    cost's minimum alone), RuntimeError if the solver fails otherwise.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    _check_milp_input(errors, costs, limits)
    n = len(errors)
    classes = coupling_classes(n, groups)
    for cl in classes:
        if len({len(errors[j]) for j in cl}) > 1:
            raise ValueError(f"coupled modules {cl} have {[len(errors[j]) for j in cl]} choices; coupled modules "
                             "take the same choice index, so they need the same number of choices")
    width = [len(errors[cl[0]]) for cl in classes]
    # class-level tables: a coupled class is one module whose terms are its members' sums
    err = [np.sum([np.asarray(errors[j], dtype=np.float64) for j in cl], axis=0) for cl in classes]
    cst = {c: [np.sum([np.asarray(costs[c][j], dtype=np.float64) for j in cl], axis=0) for cl in classes]
           for c in costs}
    smallest = {c: float(sum(t.min() for t in cst[c])) for c in cst}

    def slack(c: str) -> float:  # float64 sums of the same terms in another order differ by ulps
        return 1e-9 * max(1.0, float(sum(np.abs(t).max() for t in cst[c])), abs(float(limits[c])))

    over = [c for c in limits if smallest[c] > limits[c] + slack(c)]
    if over:
        raise InfeasibleBudgetError(
            "; ".join(f"cost {c!r}: limit {limits[c]:g} is below the smallest achievable {smallest[c]:g}"
                      for c in over), smallest, limits)

    offsets = np.cumsum([0, *width])
    nvar = int(offsets[-1])
    obj = np.concatenate([e - e.min() for e in err])
    scale = obj.max()
    obj = obj / scale if scale > 0 else obj
    one = np.zeros((len(classes), nvar))  # Σ_s x_{k,s} = 1: exactly one choice per class
    for k in range(len(classes)):
        one[k, offsets[k]:offsets[k + 1]] = 1.0
    constraints = [LinearConstraint(one, 1.0, 1.0)]
    for c, lim in limits.items():
        row = np.concatenate(cst[c])
        mag = float(np.abs(row).max()) or 1.0  # unit-magnitude rows keep HiGHS' tolerances relative
        constraints.append(LinearConstraint(row[None, :] / mag, -np.inf, (lim + slack(c)) / mag))
    # HiGHS accepts rows violated by up to ~1e-6 (absolute, scaled units), so a map just over a limit can come
    # back; such a map is cut off exactly (Σ of its own binaries <= #classes − 1) and the program re-solved
    for _ in range(_MAX_CUTS):
        res = milp(obj, constraints=constraints, integrality=np.ones(nvar), bounds=Bounds(0, 1),
                   options={"mip_rel_gap": 0.0})
        if res.status == 2:
            raise InfeasibleBudgetError(
                f"no choice map meets all limits together ({dict(limits)}), although each is achievable alone; "
                f"smallest achievable: {smallest}", smallest, limits)
        if res.x is None or res.status not in (0, 1):
            raise RuntimeError(f"scipy.optimize.milp failed (status {res.status}): {res.message}")
        picked = [int(offsets[k]) + int(np.argmax(res.x[offsets[k]:offsets[k + 1]])) for k in range(len(classes))]
        choice = [0] * n
        for k, cl in enumerate(classes):
            for j in cl:
                choice[j] = picked[k] - int(offsets[k])
        totals = {c: float(sum(costs[c][j][s] for j, s in enumerate(choice))) for c in costs}
        if all(totals[c] <= lim + slack(c) for c, lim in limits.items()):
            break
        cut = np.zeros((1, nvar))
        cut[0, picked] = 1.0
        constraints.append(LinearConstraint(cut, -np.inf, len(classes) - 1))
    else:
        raise RuntimeError(f"scipy.optimize.milp kept returning maps over a limit within its tolerance after "
                           f"{_MAX_CUTS} exact cuts; please report this instance")
    objective = float(sum(errors[j][s] for j, s in enumerate(choice)))
    return MILPSolution(tuple(choice), objective, totals, "optimal" if res.status == 0 else "limit")
