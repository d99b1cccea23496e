"""Bit widths per Linear from Hessian sensitivity under a budget (HAWQ-V2/V3's integer program,
Q-BERT's rank rule) and the random control at equal average bits.

Objective (HAWQ-V2, Dong et al. 2020, §3; HAWQ-V3, Yao et al. 2021, §3.3; ALGORITHMS.md §1.6):

    minimise  Σ_i  s_i · ‖Q_{b_i}(W_i) − W_i‖²        s_i = sensitivity (e.g. Tr(H_i)/n_i)

over one width ``b_i`` per module from ``choices`` (1–8 bits, or 32 = keep fp32, whose error is 0),
subject to any of

* average bits  Σ nᵢbᵢ / Σ nᵢ ≤ ``avg_bits``   (over the modules given; fp32 counts as 32),
* nominal size  Σ nᵢbᵢ / 8 ≤ ``size_bytes``     (weights only: no scales, no zero points),
* latency       Σ latencyᵢ(bᵢ) ≤ ``latency_limit`` (a table measured on this hardware),

and couplings (modules that must share a width, e.g. Q/K/V of a layer: :func:`qkv_groups`), and
pins (``pinned``: modules whose width the caller fixed, e.g. hawq's ``rules``; they stay in every
budget's sums, so they use up part of it, and a coupled group with a pinned member takes its width:
:func:`expand_pins`). The program is solved exactly by :func:`compresslab.ops.knapsack.solve_milp`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from torch import Tensor, nn

from compresslab.ops.knapsack import InfeasibleBudgetError, coupling_classes, solve_milp
from compresslab.ops.quant import MAX_BITS, MIN_BITS, check_group, quant_error

FP32 = 32  # the "keep fp32" choice
DEFAULT_CHOICES = (2, 3, 4, 8, FP32)
METHODS = ("ilp", "rank")


@dataclass
class Allocation:
    """One width per module (``bits[name]``; 32 = kept fp32) and what it costs.

    ``objective``: Σ sensitivity × error at the chosen widths (the error's unit times the
    sensitivity's). ``avg_bits``: Σ nᵢbᵢ / Σ nᵢ. ``size_bytes``: Σ nᵢbᵢ / 8 (nominal weight bytes).
    ``latency``: Σ of the latency table at the chosen widths (its unit), None without a table.
    ``method``: ``"ilp"`` or ``"rank"``. ``budget``: the limits asked for (keys ``avg_bits``,
    ``size_bytes``, ``latency``). ``status``: ``"optimal"``, ``"limit"`` (solver stopped early,
    feasible) or ``"rank"`` (the rule's map; no optimality claim). ``couple``: coupled names.
    ``pinned``: name -> width of every module whose width was fixed rather than chosen (the caller's
    pins and the members of coupled groups they pinned, :func:`expand_pins`).
    """

    bits: dict[str, int]
    objective: float
    avg_bits: float
    size_bytes: float
    latency: float | None
    method: str
    budget: dict[str, float] = field(default_factory=dict)
    status: str = "optimal"
    couple: list[list[str]] = field(default_factory=list)
    pinned: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (plain dicts, lists, numbers and strings)."""
        return asdict(self)


def check_choices(choices: Sequence[int], what: str = "choices") -> tuple[int, ...]:
    """``choices`` sorted ascending; ValueError (naming ``what``) unless every entry is an integer
    in [1, 8] or 32 (fp32), with no repeats and at least one entry."""
    if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence):
        raise ValueError(f"{what}={choices!r}: must be a list of widths, e.g. {list(DEFAULT_CHOICES)}")
    vals = tuple(choices)
    if not vals:
        raise ValueError(f"{what} is empty: give widths in [{MIN_BITS}, {MAX_BITS}] or {FP32} (keep fp32)")
    for b in vals:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not (MIN_BITS <= b <= MAX_BITS or b == FP32):
            raise ValueError(f"{what}={list(vals)!r}: {b!r} is not an allowed width; weight bits must be an "
                             f"integer in [{MIN_BITS}, {MAX_BITS}], or {FP32} to keep fp32")
    if len(set(vals)) != len(vals):
        raise ValueError(f"{what}={list(vals)!r} repeats a width")
    return tuple(sorted(int(b) for b in vals))


def _positive(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{what}={value!r}: must be a positive finite number")
    return float(value)


def _table(name: str, row: Mapping[int, float], ch: tuple[int, ...], what: str) -> list[float]:
    """``row[b]`` for every width (errors of fp32 are 0 when absent), finite and >= 0."""
    out = []
    for b in ch:
        if b not in row:
            if what == "errors" and b == FP32:
                out.append(0.0)
                continue
            raise ValueError(f"{what}[{name!r}] has no entry for {b} bits; it needs one per choice {list(ch)}")
        v = float(row[b])
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{what}[{name!r}][{b}] = {row[b]!r}: must be finite and >= 0")
        out.append(v)
    return out


def _name_groups(couple: Sequence[Sequence[str]], names: list[str]) -> list[list[int]]:
    index = {n: i for i, n in enumerate(names)}
    groups = []
    for g in couple:
        if isinstance(g, str):
            raise ValueError(f"couple must be a list of name lists, got the string {g!r} as a group")
        missing = [n for n in g if n not in index]
        if missing:
            raise ValueError(f"couple names {missing} that are not among the allocated modules")
        groups.append([index[n] for n in g])
    return groups


def expand_pins(pinned: Mapping[str, int] | None, names: Sequence[str], couple: Sequence[Sequence[str]] = (),
                choices: Sequence[int] | None = None) -> dict[str, int]:
    """``pinned`` (name -> width) spread over the couplings: a coupled group (overlapping groups merge)
    with a pinned member pins every member to that width. Returned in ``names`` order ({} for None).

    ValueError for a pinned name not among ``names``, a width that is not in ``choices`` (when given;
    otherwise not an integer in [1, 8] or 32), and a coupled group whose members are pinned to
    different widths (naming them and their widths)."""
    if not pinned:
        return {}
    ch = check_choices(choices) if choices is not None else None
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in pinned if n not in index]
    if missing:
        raise ValueError(f"pinned names {missing} that are not among the allocated modules")
    for n, b in pinned.items():
        ok = (not isinstance(b, bool) and isinstance(b, (int, np.integer))
              and (int(b) in ch if ch is not None else (MIN_BITS <= b <= MAX_BITS or b == FP32)))
        if not ok:
            allowed = (f"one of choices={list(ch)}" if ch is not None
                       else f"an integer in [{MIN_BITS}, {MAX_BITS}] or {FP32}")
            raise ValueError(f"pinned width {b!r} of {n} is not {allowed}")
    out: dict[str, int] = {}
    for cl in coupling_classes(len(names), _name_groups(couple, list(names))):
        widths = {names[j]: int(pinned[names[j]]) for j in cl if names[j] in pinned}
        if len(set(widths.values())) > 1:
            raise ValueError(f"coupled modules {[names[j] for j in cl]} share one width, but are pinned to different "
                             f"widths {widths}")
        if widths:
            out.update({names[j]: next(iter(widths.values())) for j in cl})
    return {n: out[n] for n in names if n in out}


def _pin_note(pins: Mapping[str, int]) -> str:
    """The pins, for an infeasible-budget message ('' without pins)."""
    if not pins:
        return ""
    shown = ", ".join(f"{n}: {b}" for n, b in list(pins.items())[:10])
    more = f", and {len(pins) - 10} more" if len(pins) > 10 else ""
    return (f"; {len(pins)} module(s) are pinned ({{{shown}{more}}}) and the smallest achievable value counts them "
            "at their pinned widths: lower or drop the pins (rules), or raise the budget")


def _restrict(rows: list[np.ndarray], allowed: list[list[int]]) -> list[np.ndarray]:
    """Each module's row of a per-width table cut to its allowed width indices."""
    return [r[a] for r, a in zip(rows, allowed, strict=True)]


def _infeasible_message(smallest: Mapping[str, float], asked: Mapping[str, float]) -> str:
    """Each limit below its smallest achievable value, in the limit's own unit (the latency in the
    table's: the sum over modules of the table at their widths, e.g. seconds)."""
    label = {"avg_bits": "average bits", "size_bytes": "size in bytes", "latency": "latency limit"}
    unit = {"latency": " (the sum of the latency table over the modules, in the table's unit; the least any "
                       "allowed map of widths reaches)"}
    over = [f"{label[k]} {asked[k]:g} is below the smallest achievable {smallest[k]:g}{unit.get(k, '')}"
            for k in asked if smallest[k] > asked[k] * (1 + 1e-9)]
    if over:
        return "; ".join(over)
    return (f"the budgets {dict(asked)} are each achievable alone but not together "
            f"(smallest achievable: {dict(smallest)})")


def allocate_bits(sensitivity: Mapping[str, float], errors: Mapping[str, Mapping[int, float]],
                  numel: Mapping[str, int], *, choices: Sequence[int] = DEFAULT_CHOICES,
                  avg_bits: float | None = None, size_bytes: float | None = None,
                  latency: Mapping[str, Mapping[int, float]] | None = None, latency_limit: float | None = None,
                  couple: Sequence[Sequence[str]] = (), method: str = "ilp",
                  pinned: Mapping[str, int] | None = None) -> Allocation:
    """One width per module minimising Σ sensitivity × error under the given budgets.

    ``sensitivity[name]`` >= 0 (HAWQ-V2's average trace Tr(H)/n, or Q-BERT's Ω; any unit: only
    ratios matter, scaling every value by c > 0 leaves the map unchanged). ``errors[name][b]``:
    ‖Q_b(W) − W‖² (:func:`errors_table`), one per width in ``choices`` (32 may be omitted: 0).
    ``numel[name]``: the weight's element count. Budgets (at least one): ``avg_bits`` in bits per
    weight over these modules (fp32 counts as 32), ``size_bytes`` nominal bytes Σ nᵢbᵢ/8,
    ``latency_limit`` in the unit of ``latency`` (per module, per width, measured on this machine;
    every module and width). ``couple``: lists of names that must share a width. ``pinned``: name ->
    width from ``choices`` fixed by the caller (e.g. hawq's ``rules``); a coupled group with a pinned
    member takes its width (:func:`expand_pins`). Pinned modules keep their width and stay in every
    budget (average, size, latency are over all modules), so the others share what is left.

    ``method="ilp"`` (default): HAWQ-V3's integer program (Yao et al. 2021, §3.3), solved exactly.
    ``method="rank"``: Q-BERT's rule (Shen et al. 2020, §3.2) with two widths, ``hi = max(choices)``
    and ``lo = min(choices)``: with exactly two choices they are the two given (``(2, 3)`` is MP
    2/3); with more, the widths in between are never used (32 in ``choices`` makes ``hi`` fp32), so
    pass the two you mean. Modules (a coupled group as one unit, ranked by the numel-weighted mean
    of its sensitivities) are sorted by sensitivity, descending, ties in input order; the first k
    get ``hi`` and the rest ``lo``, with k the largest prefix length whose map meets every budget.
    Pinned modules (and their coupled groups) keep their width and are not ranked. Errors enter only
    the reported objective.

    Raises ValueError for widths outside 1–8 / 32 (naming ``choices``), missing or non-finite
    table entries, negative sensitivity, no budget, ``latency_limit`` without a ``latency`` table,
    an unknown method or coupled name, a pin that :func:`expand_pins` refuses (unknown name, width
    not in ``choices``, a coupled group pinned to two widths); :class:`InfeasibleBudgetError` (a
    ValueError) when no map meets the budgets, saying the smallest achievable value of each with
    the pins counted (``smallest`` in the same keys as ``Allocation.budget``) and naming the pins.
    """
    ch = check_choices(choices)
    if method not in METHODS:
        raise ValueError(f"method={method!r}: choose one of {list(METHODS)}")
    names = list(sensitivity)
    if not names:
        raise ValueError("sensitivity is empty: nothing to allocate")
    tables: list[tuple[str, Mapping[str, Any]]] = [("errors", errors), ("numel", numel)]
    if latency is not None:
        tables.append(("latency", latency))
    for what, table in tables:
        missing = [n for n in names if n not in table]
        extra = [n for n in table if n not in sensitivity]
        if missing or extra:
            raise ValueError(f"{what} must have the same modules as sensitivity: missing {missing}, extra {extra}")
    for n in names:
        s = sensitivity[n]
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"sensitivity[{n!r}] = {s!r}: must be finite and >= 0 (a negative trace or "
                             "eigenvalue estimate must be made non-negative upstream, e.g. |mean| + std)")
        if isinstance(numel[n], bool) or not isinstance(numel[n], (int, np.integer)) or numel[n] < 1:
            raise ValueError(f"numel[{n!r}] = {numel[n]!r}: must be a positive integer")
    avg_bits = _positive(avg_bits, "avg_bits")
    size_bytes = _positive(size_bytes, "size_bytes")
    latency_limit = _positive(latency_limit, "latency_limit")
    if latency_limit is not None and latency is None:
        raise ValueError("latency_limit needs a latency table for this hardware (module -> bits -> time): "
                         "measure every module at every width on this machine; never reuse another machine's")
    if avg_bits is None and size_bytes is None and latency_limit is None:
        raise ValueError("no budget: give avg_bits, size_bytes, or latency_limit with a latency table")
    groups = _name_groups(couple, names)
    pins = expand_pins(pinned, names, couple, ch)

    n_total = sum(int(numel[n]) for n in names)
    width = np.asarray(ch, dtype=np.float64)
    err = [np.asarray(_table(n, errors[n], ch, "errors")) for n in names]
    objective = [float(sensitivity[n]) * e for n, e in zip(names, err, strict=True)]
    costs: dict[str, list[np.ndarray]] = {"avg_bits": [int(numel[n]) * width / n_total for n in names],
                                          "size_bytes": [int(numel[n]) * width / 8 for n in names]}
    if latency is not None:
        costs["latency"] = [np.asarray(_table(n, latency[n], ch, "latency")) for n in names]
    asked = {k: v for k, v in (("avg_bits", avg_bits), ("size_bytes", size_bytes), ("latency", latency_limit))
             if v is not None}

    # a pinned module has one choice, its width (index into ch); the others every width
    allowed = [[ch.index(pins[n])] if n in pins else list(range(len(ch))) for n in names]
    if method == "ilp":
        try:
            sol = solve_milp(_restrict(objective, allowed), {c: _restrict(t, allowed) for c, t in costs.items()},
                             asked, groups)
        except InfeasibleBudgetError as e:
            raise InfeasibleBudgetError(_infeasible_message(e.smallest, asked) + _pin_note(pins), e.smallest,
                                        asked) from None
        choice, status = tuple(allowed[j][s] for j, s in enumerate(sol.choice)), sol.status
    else:
        fixed = {j: allowed[j][0] for j, n in enumerate(names) if n in pins}
        choice = _rank_choice(names, sensitivity, numel, groups, ch, costs, asked, fixed, pins)
        status = "rank"
    totals = {c: float(sum(t[j][s] for j, s in enumerate(choice))) for c, t in costs.items()}
    return Allocation(
        bits={n: ch[s] for n, s in zip(names, choice, strict=True)},
        objective=float(sum(objective[j][s] for j, s in enumerate(choice))),
        avg_bits=float(sum(int(numel[n]) * ch[s] for n, s in zip(names, choice, strict=True)) / n_total),
        size_bytes=float(sum(int(numel[n]) * ch[s] for n, s in zip(names, choice, strict=True)) / 8),
        latency=totals.get("latency"), method=method, budget=asked, status=status,
        couple=[[names[j] for j in g] for g in groups], pinned=pins)


def _rank_choice(names: list[str], sensitivity: Mapping[str, float], numel: Mapping[str, int],
                 groups: list[list[int]], ch: tuple[int, ...], costs: Mapping[str, list[np.ndarray]],
                 asked: Mapping[str, float], fixed: Mapping[int, int] | None = None,
                 pins: Mapping[str, int] | None = None) -> tuple[int, ...]:
    """Q-BERT's two-width prefix rule (see :func:`allocate_bits`): indices into the sorted ``ch``,
    0 (``lo = min``) for the tail, ``len(ch) − 1`` (``hi = max``) for the prefix. ``fixed``: module
    index -> choice index of the pinned modules (whole coupled groups), kept and not ranked."""
    lo, hi = 0, len(ch) - 1
    fixed = dict(fixed or {})
    units = [u for u in coupling_classes(len(names), groups) if not any(j in fixed for j in u)]
    unit_sens = [sum(float(sensitivity[names[j]]) * int(numel[names[j]]) for j in u)
                 / sum(int(numel[names[j]]) for j in u) for u in units]
    order = sorted(range(len(units)), key=lambda u: -unit_sens[u])  # stable: ties keep input order
    seen: dict[str, list[float]] = {c: [] for c in asked}
    for k in range(len(units), -1, -1):
        choice = [fixed.get(j, lo) for j in range(len(names))]
        for u in order[:k]:
            for j in units[u]:
                choice[j] = hi
        totals = {c: float(sum(costs[c][j][s] for j, s in enumerate(choice))) for c in asked}
        if all(totals[c] <= lim * (1 + 1e-9) for c, lim in asked.items()):
            return tuple(choice)
        for c in asked:
            seen[c].append(totals[c])
    smallest = {c: min(v) for c, v in seen.items()}
    raise InfeasibleBudgetError(_infeasible_message(smallest, asked) + " (over the rank rule's prefix maps)"
                                + _pin_note(pins or {}), smallest, asked)


def errors_table(weights: Mapping[str, Tensor], choices: Sequence[int] = DEFAULT_CHOICES, block_size: int = 64,
                 group_rows: int = 1) -> dict[str, dict[int, float]]:
    """``{name: {b: ‖Q_b(W) − W‖²}}`` (squared Frobenius norm, the weight's unit squared; 0 for 32)
    with the deployed quantizer of :mod:`compresslab.ops.quant` (blocks of ``block_size`` input
    columns × ``group_rows`` output rows). ValueError for bad choices, a weight that is not 2-D, or
    a block that does not divide its shape (naming the module)."""
    ch = check_choices(choices)
    out: dict[str, dict[int, float]] = {}
    for name, w in weights.items():
        if w.dim() != 2:
            raise ValueError(f"{name}: weight must be 2-D (out, in), got shape {tuple(w.shape)}")
        check_group(w.shape, block_size, group_rows, name)
        out[name] = {b: 0.0 if b == FP32 else quant_error(w, b, block_size, group_rows) for b in ch}
    return out


def random_allocation(numel: Mapping[str, int], *, avg_bits: float, choices: Sequence[int] = DEFAULT_CHOICES,
                      seed: int, couple: Sequence[Sequence[str]] = (), tol: float = 0.05,
                      pinned: Mapping[str, int] | None = None) -> dict[str, int]:
    """The control of the Hessian allocation: a seeded random map whose average bits lie in
    ``[avg_bits − tol, avg_bits]``.

    It solves the same integer program as :func:`allocate_bits` with the objective replaced by
    i.i.d. uniform [0, 1) weights per (module, width) drawn from ``numpy.random.default_rng(seed)``,
    and the average-bits budget pinned from both sides. The map is thus random and feasible, but not
    uniform over all feasible maps (the solver returns the optimum of a random linear objective).
    To match a Hessian allocation exactly, pass its achieved ``Allocation.avg_bits`` as ``avg_bits``.
    Same seed and inputs -> same map. ``pinned`` (name -> width from ``choices``; :func:`expand_pins`
    spreads it over ``couple``): those modules keep their width and count in the average, as in
    :func:`allocate_bits`, so a control at equal average bits honours the same pins. Without pins
    the map is the one this function returned before pins existed (the same draws).

    Raises ValueError for bad choices, a negative or non-finite ``tol``, an unknown coupled name, a
    pin :func:`expand_pins` refuses; :class:`InfeasibleBudgetError` if no map (with the couplings and
    pins) lands in the window: widen ``tol``.
    """
    ch = check_choices(choices)
    avg = _positive(avg_bits, "avg_bits")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol={tol!r}: must be finite and >= 0 (bits)")
    names = list(numel)
    if not names:
        raise ValueError("numel is empty: nothing to allocate")
    for n in names:
        if isinstance(numel[n], bool) or not isinstance(numel[n], (int, np.integer)) or numel[n] < 1:
            raise ValueError(f"numel[{n!r}] = {numel[n]!r}: must be a positive integer")
    groups = _name_groups(couple, names)
    pins = expand_pins(pinned, names, couple, ch)
    n_total = sum(int(numel[n]) for n in names)
    width = np.asarray(ch, dtype=np.float64)
    bits = [int(numel[n]) * width / n_total for n in names]
    rng = np.random.default_rng(seed)
    weights = [rng.random(len(ch)) for _ in names]  # drawn for every module and width: pins leave the draws as is
    allowed = [[ch.index(pins[n])] if n in pins else list(range(len(ch))) for n in names]
    bits = _restrict(bits, allowed)
    try:
        sol = solve_milp(_restrict(weights, allowed), {"avg_bits": bits, "neg_avg_bits": [-b for b in bits]},
                         {"avg_bits": avg, "neg_avg_bits": -(avg - tol)}, groups)
    except InfeasibleBudgetError as e:
        least, most = e.smallest["avg_bits"], -e.smallest["neg_avg_bits"]
        raise InfeasibleBudgetError(
            f"no map has average bits in [{avg - tol:g}, {avg:g}] (achievable range [{least:g}, {most:g}] with these "
            f"widths, couplings and pins; the window may also fall between achievable values: widen tol)"
            + _pin_note(pins), {"avg_bits": least}, {"avg_bits": avg}) from None
    return {n: ch[allowed[j][s]] for j, (n, s) in enumerate(zip(names, sol.choice, strict=True))}


def qkv_groups(model: nn.Module) -> list[list[str]]:
    """``[[q, k, v], ...]``: the qualified names of each encoder layer's query/key/value Linears
    (layers whose heads were all removed are skipped), for ``couple=`` (HAWQ-V3's fused-QKV
    coupling). UnsupportedArchitectureError for a model without an adapter."""
    from compresslab.models.adapters import get_adapter

    return [[view.names["q"], view.names["k"], view.names["v"]]
            for view in get_adapter(model).layers() if view.q is not None]


__all__ = ["Allocation", "DEFAULT_CHOICES", "FP32", "METHODS", "allocate_bits", "check_choices", "errors_table",
           "expand_pins", "qkv_groups", "random_allocation"]
