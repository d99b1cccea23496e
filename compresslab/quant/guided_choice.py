"""The choice step of guided int8 (``quant/guided_int8.py``): one choice per weight MatMul under a time budget.

:func:`choose_fp32` is the two-way case (int8 or fp32): an exact 0/1 knapsack by branch and bound with a
deterministic tie rule. :func:`choose` adds per-token int8 as a third choice: a multiple-choice knapsack,
exact through ``ops/knapsack.solve_milp`` (HAWQ-V3's integer program), reducing to :func:`choose_fp32`
where only fp32 is offered.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

from compresslab.validate import is_number

log = logging.getLogger(__name__)


class Choice(str, Enum):
    """What a weight MatMul becomes: per-call dynamic int8 (ORT's), int8 with per-token activations, or fp32."""

    INT8 = "int8"
    PER_TOKEN = "per_token"
    FP32 = "fp32"


@dataclass(frozen=True)
class Selection:
    """The fp32 set chosen by :func:`choose_fp32`: its summed benefit and cost, and the budget."""

    chosen: tuple[str, ...]
    benefit: float
    cost: float
    budget: float


def choose_fp32(benefit: Mapping[str, float], cost: Mapping[str, float], budget: float) -> Selection:
    """The set maximising summed ``benefit`` with summed ``cost`` <= ``budget`` (exact 0/1 knapsack).

    Ties (within 1e-9 relative) go to the cheaper set, then to the lexicographically smaller
    sorted name tuple, so the answer is deterministic. Nodes with benefit <= 0 are never chosen.
    """
    if set(benefit) != set(cost):
        raise ValueError(f"benefit and cost must name the same nodes; differ on {sorted(set(benefit) ^ set(cost))}")
    for name in benefit:
        if not math.isfinite(benefit[name]):
            raise ValueError(f"benefit of {name} must be finite, got {benefit[name]}")
        if not (math.isfinite(cost[name]) and cost[name] >= 0):
            raise ValueError(f"cost of {name} must be finite and >= 0, got {cost[name]}")
    if not (math.isfinite(budget) and budget >= 0):
        raise ValueError(f"budget must be finite and >= 0, got {budget!r}")
    useful = sorted((n for n in benefit if benefit[n] > 0 and cost[n] <= budget),
                    key=lambda n: (-benefit[n] / cost[n] if cost[n] > 0 else -math.inf, n))
    b = [float(benefit[n]) for n in useful]
    c = [float(cost[n]) for n in useful]
    tol = 1e-9 * max(1.0, sum(b))
    ctol = 1e-12 * max(1.0, budget)
    best: list[Any] = [0.0, 0.0, ()]  # benefit, cost, sorted names

    def better(vb: float, vc: float, names: tuple[str, ...]) -> bool:
        if vb > best[0] + tol:
            return True
        if vb < best[0] - tol:
            return False
        if vc < best[1] - ctol:
            return True
        return vc <= best[1] + ctol and names < best[2]

    def bound(k: int, room: float) -> float:  # fractional relaxation over items k.. (ratio order)
        total = 0.0
        for j in range(k, len(b)):
            if c[j] <= room:
                room -= c[j]
                total += b[j]
            else:
                return total + b[j] * room / c[j]
        return total

    def search(k: int, vb: float, vc: float, picked: tuple[int, ...]) -> None:
        names = tuple(sorted(useful[i] for i in picked))
        if better(vb, vc, names):
            best[:] = [vb, vc, names]
        if k == len(b):
            return
        ub = vb + bound(k, budget - vc)
        if ub < best[0] - tol or (ub <= best[0] + tol and vc > best[1] + ctol):
            return
        if vc + c[k] <= budget + ctol:
            search(k + 1, vb + b[k], vc + c[k], picked + (k,))
        search(k + 1, vb, vc, picked)

    search(0, 0.0, 0.0, ())
    return Selection(best[2], best[0], best[1], float(budget))


@dataclass(frozen=True)
class MixedSelection:
    """One choice per node (:func:`choose`): the nodes not left per-call int8, the summed benefit and cost."""

    choice: Mapping[str, Choice]  # name -> PER_TOKEN or FP32; a node not named stays per-call int8
    benefit: float
    cost: float
    budget: float

    def names(self, option: Choice) -> tuple[str, ...]:
        return tuple(sorted(n for n, o in self.choice.items() if o is option))

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((n, o.value) for n, o in self.choice.items()))


def choose(benefits: Mapping[str, Mapping[str, float]], costs: Mapping[str, Mapping[str, float]],
           budget: float) -> MixedSelection:
    """One choice per node maximising summed benefit with summed cost <= ``budget`` (a multiple-choice
    knapsack; per-call int8 is the free choice of benefit 0).

    ``benefits[name][choice]`` and ``costs[name][choice]`` for the choices other than int8 (``"fp32"``,
    ``"per_token"``). A choice with benefit <= 0 or a cost over the budget is not offered. Where only fp32
    is offered, this is :func:`choose_fp32` (its exact search and tie rule); otherwise the exact integer
    program of ``ops/knapsack.solve_milp``. Raises ValueError on mismatched names or choices, or values that
    are not finite.
    """
    from compresslab.ops.knapsack import solve_milp

    if set(benefits) != set(costs):
        raise ValueError(f"benefits and costs must name the same nodes; differ on {sorted(set(benefits) ^ set(costs))}")
    if not (is_number(budget) and math.isfinite(budget) and budget >= 0):
        raise ValueError(f"budget must be finite and >= 0, got {budget!r}")
    offered: dict[str, list[Choice]] = {}
    for name in sorted(benefits):
        opts = [Choice(o) for o in benefits[name]]
        if Choice.INT8 in opts or set(benefits[name]) != set(costs[name]):
            raise ValueError(f"{name}: benefits and costs must give the same choices other than int8, got "
                             f"{sorted(benefits[name])} and {sorted(costs[name])}")
        for o in benefits[name]:
            b, c = benefits[name][o], costs[name][o]
            if not (is_number(b) and is_number(c) and math.isfinite(b) and math.isfinite(c) and c >= 0):
                raise ValueError(f"{name} {o}: benefit must be finite and cost finite and >= 0, got "
                                 f"{benefits[name][o]!r} and {costs[name][o]!r}")
        b, c = benefits[name], costs[name]
        ok = [o for o in opts if b[o.value] > 0 and c[o.value] <= budget]

        def dominated(o: Choice) -> bool:  # another choice as good for no more cost (ties: the cheaper, then order)
            return any(p is not o and b[p.value] >= b[o.value] and c[p.value] <= c[o.value]
                       and (c[p.value], list(Choice).index(p)) < (c[o.value], list(Choice).index(o)) for p in ok)

        offered[name] = sorted((o for o in ok if not dominated(o)), key=list(Choice).index)
    if all(set(v) <= {Choice.FP32} for v in offered.values()):
        fp32 = [n for n in sorted(benefits) if Choice.FP32.value in benefits[n]]
        sel = choose_fp32({n: float(benefits[n]["fp32"]) for n in fp32}, {n: float(costs[n]["fp32"]) for n in fp32},
                          budget)
        return MixedSelection({n: Choice.FP32 for n in sel.chosen}, sel.benefit, sel.cost, float(budget))
    names = [n for n in offered if offered[n]]
    errors = [[0.0] + [-float(benefits[n][o.value]) for o in offered[n]] for n in names]
    cost = [[0.0] + [float(costs[n][o.value]) for o in offered[n]] for n in names]
    sol = solve_milp(errors, {"seconds": cost}, {"seconds": float(budget)})
    if sol.status != "optimal":
        log.warning("guided int8: the choice program stopped at a solver limit; its map is feasible, maybe not optimal")
    choice = {n: offered[n][k - 1] for n, k in zip(names, sol.choice) if k > 0}
    return MixedSelection(choice, float(sum(benefits[n][o.value] for n, o in choice.items())),
                          float(sum(costs[n][o.value] for n, o in choice.items())), float(budget))
