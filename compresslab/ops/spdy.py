"""Search for per-module compression levels under a latency budget (ZipLM §4.3-4.4, SPDY).

* :func:`spdy_search` — SPDY's random-coefficient search around the DP, scored by a callback.
* :class:`LatencyTable` — the additive latency model ``T = t_0 + sum_modules t_type(size)``.
* :func:`fit_fixed_costs` / :class:`FixedCostFit` — whole-model correction of a one-layer table:
  a fixed cost per *present* module and one scale, fitted by least squares (issue #13).

No timing happens here: the tables are measured elsewhere (``bench/``) and passed in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compresslab.ops.knapsack import _check_tables, solve_dp

__all__ = [
    "FixedCostFit",
    "LatencyTable",
    "SearchResult",
    "fit_fixed_costs",
    "isotonic_non_decreasing",
    "spdy_search",
]


@dataclass(frozen=True)
class SearchResult:
    """Best coefficients found by :func:`spdy_search`, their DP choice and its score."""

    coefs: tuple[float, ...]
    choice: tuple[int, ...]
    score: float
    num_evaluations: int


def spdy_search(
    score_fn: Callable[[tuple[int, ...]], float],
    times: Sequence[Sequence[float]],
    errors: Sequence[Sequence[float]],
    budget: float,
    num_random: int = 100,
    tries_per_round: int = 100,
    num_buckets: int = 10000,
    seed: int = 0,
) -> SearchResult:
    """SPDY: tune per-module coefficients ``c`` so the DP's choice minimizes ``score_fn``.

    The layer-wise errors ignore interactions between layers; ``score_fn`` (e.g. calibration loss
    of the stitched model; lower is better) measures them. ``num_random`` draws of
    ``c ~ U[0,1]^n``, then local search re-sampling ``ceil(0.1 n), ..., 1`` coordinates,
    ``tries_per_round`` tries per round, until a round fails to improve. Scores are cached per
    choice, so repeated choices cost nothing.
    """
    _check_tables(times, errors)
    if num_random < 1 or tries_per_round < 0:
        raise ValueError(
            f"need num_random >= 1 and tries_per_round >= 0, got {num_random}, {tries_per_round}"
        )
    rng = np.random.default_rng(seed)
    n = len(times)
    cache: dict[tuple[int, ...], float] = {}

    def evaluate(c: np.ndarray) -> tuple[tuple[int, ...], float]:
        choice = solve_dp(times, errors, budget, c, num_buckets).choice
        if choice not in cache:
            cache[choice] = float(score_fn(choice))
        return choice, cache[choice]

    best_c, best_choice, best_score = np.ones(n), (), math.inf
    for _ in range(num_random):
        c = rng.random(n)
        choice, score = evaluate(c)
        if score < best_score:
            best_c, best_choice, best_score = c, choice, score
    for k in range(math.ceil(0.1 * n), 0, -1):
        improved = True
        while improved:
            improved = False
            for _ in range(tries_per_round):
                c = best_c.copy()
                c[rng.choice(n, size=k, replace=False)] = rng.random(k)
                choice, score = evaluate(c)
                if score < best_score:
                    best_c, best_choice, best_score, improved = c, choice, score, True
                    break
    return SearchResult(tuple(float(x) for x in best_c), best_choice, best_score, len(cache))


def isotonic_non_decreasing(values: Sequence[float]) -> np.ndarray:
    """Least-squares non-decreasing fit (pool adjacent violators).

    Measured latencies are noisy and tile effects make them non-monotone; the DP should never
    see a smaller module priced above a larger one.
    """
    pools: list[list[float]] = []  # [sum, count] of each pooled block
    for v in values:
        pools.append([float(v), 1.0])
        while len(pools) > 1 and pools[-2][0] / pools[-2][1] > pools[-1][0] / pools[-1][1]:
            s, cnt = pools.pop()
            pools[-1][0] += s
            pools[-1][1] += cnt
    return (
        np.concatenate([np.full(int(cnt), s / cnt) for s, cnt in pools]) if pools else np.zeros(0)
    )


LATENCY_TABLE_VERSION = 1


def _normalize(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


@dataclass
class LatencyTable:
    """Additive latency model of one inference environment (seconds).

    ``module_times[type][size]`` is the time of one module of that type (e.g. ``"attention"`` by
    remaining heads, ``"ffn"`` by remaining width); ``t(0) = 0`` unless measured. ``base_time``
    (``t_0``) covers everything not modelled per module. ``fingerprint`` names the environment
    (hardware, runtime version, batch x seq); a table is only valid where it matches.
    """

    base_time: float
    module_times: dict[str, dict[int, float]]
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.base_time):
            raise ValueError(f"base_time must be finite, got {self.base_time!r}")
        if not self.module_times:
            raise ValueError("module_times must have at least one module type")
        fixed: dict[str, dict[int, float]] = {}
        for kind, table in self.module_times.items():
            entries = {int(size): float(t) for size, t in table.items()}
            if any(size < 0 for size in entries) or not all(
                math.isfinite(t) and t >= 0 for t in entries.values()
            ):
                raise ValueError(
                    f"{kind!r}: sizes must be >= 0 and times finite and >= 0, got {table!r}"
                )
            entries.setdefault(0, 0.0)
            fixed[str(kind)] = dict(sorted(entries.items()))
        self.module_times = fixed
        self.fingerprint = _normalize(self.fingerprint)

    @classmethod
    def from_dense(
        cls,
        dense_time: float,
        module_times: Mapping[str, Mapping[int, float]],
        num_modules: Mapping[str, int],
        fingerprint: Mapping[str, Any],
    ) -> LatencyTable:
        """``t_0 = T_dense - sum_types num_modules[type] * t_type(full size)``."""
        if set(num_modules) != set(module_times):
            raise ValueError(
                f"num_modules keys {sorted(num_modules)} must equal "
                f"module types {sorted(module_times)}"
            )
        full = sum(
            num_modules[k] * float(t[max(int(s) for s in t)]) for k, t in module_times.items()
        )
        tables = {k: {int(s): float(v) for s, v in t.items()} for k, t in module_times.items()}
        return cls(float(dense_time) - full, tables, dict(fingerprint))

    def sizes(self, kind: str) -> list[int]:
        """Sizes with a time entry for this module type, ascending."""
        if kind not in self.module_times:
            raise ValueError(f"unknown module type {kind!r}; known: {sorted(self.module_times)}")
        return list(self.module_times[kind])

    def time(self, kind: str, size: int) -> float:
        """Time of one module of type ``kind`` at ``size``."""
        if int(size) not in self.module_times.get(kind, {}):
            raise ValueError(f"no latency for {kind!r} at size {size}; allowed: {self.sizes(kind)}")
        return self.module_times[kind][int(size)]

    def predict(self, config: Mapping[str, Sequence[int]]) -> float:
        """``t_0 + sum`` of module times; ``config`` maps type to per-layer sizes."""
        return self.base_time + sum(
            self.time(kind, s) for kind, sizes in config.items() for s in sizes
        )

    def smoothed(self) -> LatencyTable:
        """A copy whose times are non-decreasing in size for every module type."""
        tables = {}
        for kind, table in self.module_times.items():
            fit = isotonic_non_decreasing(list(table.values()))
            tables[kind] = {size: float(t) for size, t in zip(table, fit, strict=True)}
        return LatencyTable(self.base_time, tables, dict(self.fingerprint))

    def linear_in_size(self) -> tuple[LatencyTable, dict[str, tuple[float, float]]]:
        """A copy whose entries ``s > 0`` lie on one line per module type, and the lines.

        Each type's ``(intercept, slope)`` (seconds, seconds per unit of size) is the ordinary
        least-squares line through its entries ``s > 0``; an entry becomes ``max(0, intercept +
        slope * s)``; ``t(0)`` stays 0 and ``base_time`` is kept. A type with fewer than two sizes
        above 0 is left as it is (line ``(t, 0.0)`` through its one entry, or ``(0.0, 0.0)``).

        Why: a module's FLOPs are linear in its heads or width, and the one-layer probes' deviations
        from that line are a few percent of timing noise and tile effects that whole-model timings
        do not reproduce. A search that minimises error under a budget picks exactly the sizes
        whose probes came out low (the winner's curse), so its structures run slower than the raw
        table predicts; on the line nothing is cheap by chance (``LatencyModel.LINEAR``).
        """
        tables: dict[str, dict[int, float]] = {}
        lines: dict[str, tuple[float, float]] = {}
        for kind, table in self.module_times.items():
            pts = [(s, t) for s, t in table.items() if s > 0]
            if len(pts) < 2:
                tables[kind], lines[kind] = dict(table), ((pts[0][1], 0.0) if pts else (0.0, 0.0))
                continue
            x, y = np.asarray([s for s, _ in pts], dtype=np.float64), np.asarray([t for _, t in pts])
            slope, intercept = np.polyfit(x, y, 1)
            lines[kind] = (float(intercept), float(slope))
            tables[kind] = {s: (0.0 if s == 0 else max(0.0, float(intercept + slope * s))) for s in table}
        return LatencyTable(self.base_time, tables, dict(self.fingerprint)), lines

    def matches(self, fingerprint: Mapping[str, Any]) -> bool:
        """True when ``fingerprint`` names the same environment (all keys and values equal)."""
        return _normalize(dict(fingerprint)) == self.fingerprint

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (sizes become string keys, as JSON requires)."""
        return {
            "version": LATENCY_TABLE_VERSION,
            "base_time": self.base_time,
            "module_times": {
                k: {str(s): t for s, t in v.items()} for k, v in self.module_times.items()
            },
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        """Inverse of :meth:`to_dict`; rejects unknown versions and keys."""
        if data.get("version") != LATENCY_TABLE_VERSION:
            raise ValueError(
                f"unsupported latency table version {data.get('version')!r}; "
                f"expected {LATENCY_TABLE_VERSION}"
            )
        extra = set(data) - {"version", "base_time", "module_times", "fingerprint"}
        if extra:
            raise ValueError(f"unknown latency table keys {sorted(extra)}")
        tables = {
            k: {int(s): float(t) for s, t in v.items()} for k, v in data["module_times"].items()
        }
        return cls(float(data["base_time"]), tables, dict(data.get("fingerprint", {})))

    def to_json(self) -> str:
        """Serialize to a JSON string."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LatencyTable:
        """Parse a string written by :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class FixedCostFit:
    """Whole-model latency model built on a one-layer table (seconds)::

        T(config) = base_time + sum_kinds sum_layers [s > 0] * (fixed[kind] + scale * t_kind(s))

    ``t_kind(s)`` is the one-layer probe's entry. A module with nothing left (``s = 0``) pays
    neither its fixed cost nor any time, so emptying a layer's attention saves ``fixed["attention"]``
    on top of its size-dependent time. :meth:`apply` folds the model into an ordinary
    :class:`LatencyTable`, so the DP and every other consumer use it unchanged.
    """

    base_time: float
    fixed: dict[str, float]
    scale: float

    def __post_init__(self) -> None:
        values = [self.base_time, self.scale, *self.fixed.values()]
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"fitted latency terms must be finite and >= 0, got base_time="
                             f"{self.base_time!r}, fixed={self.fixed!r}, scale={self.scale!r}")

    def apply(self, table: LatencyTable) -> LatencyTable:
        """``table`` with every entry ``s > 0`` replaced by ``fixed[kind] + scale * t(s)`` (``t(0)`` stays 0)."""
        missing = sorted(set(table.module_times) - set(self.fixed))
        if missing:
            raise ValueError(f"the fit has no fixed cost for module type(s) {missing}; "
                             f"it was fitted for {sorted(self.fixed)}")
        tables = {kind: {s: (0.0 if s == 0 else self.fixed[kind] + self.scale * t) for s, t in entries.items()}
                  for kind, entries in table.module_times.items()}
        return LatencyTable(self.base_time, tables, dict(table.fingerprint))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (seconds)."""
        return {"base_time": self.base_time, "fixed": dict(self.fixed), "scale": self.scale}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FixedCostFit:
        """Inverse of :meth:`to_dict`."""
        return cls(float(data["base_time"]), {str(k): float(v) for k, v in data["fixed"].items()},
                   float(data["scale"]))


def fit_fixed_costs(table: LatencyTable, configs: Sequence[Mapping[str, Sequence[int]]],
                    measured: Sequence[float], *, fit_scale: bool = True) -> FixedCostFit:
    """Least-squares fit of :class:`FixedCostFit` to whole-model times of a few configurations.

    ``configs[p]`` maps every module type of ``table`` to per-layer sizes (as
    :meth:`LatencyTable.predict` takes them); ``measured[p]`` is that model's time in seconds.
    The model is linear in ``(base_time, fixed[kind]..., scale)``: one row per point holds
    ``1``, the number of present modules of each kind and the summed one-layer times. Rows are
    divided by the measured time, so the fit minimises *relative* error (speedup targets are
    ratios), with every term bounded at >= 0 (``scipy.optimize.lsq_linear``).

    Why this form: with the scale fixed at 1, a fixed cost per present module equals a change of
    ``t_0`` whenever every module is present, so it could not explain why shrunk (but present)
    layers run slower than the one-layer table says; one shared scale is the one extra freedom
    that does. Separate scales per kind are not identifiable from uniform shrinks (both kinds
    shrink together), and the fixed costs are only identifiable from points where a kind is
    removed everywhere: include them (see ``bench.latency_table.calibration_points``).
    ``fit_scale=False`` keeps the scale at 1 and fits the rest: for a table whose only non-zero
    size per kind is the full one (nothing to scale: the fixed cost absorbs it), where no point
    with every module present differs from the dense model.

    Raises ValueError when the points are too few or cannot separate the terms (rank-deficient),
    when a time is not positive and finite, or when a configuration lacks a module type or uses
    a size the table has no entry for.
    """
    kinds = sorted(table.module_times)
    n_terms = len(kinds) + (2 if fit_scale else 1)
    if len(configs) != len(measured):
        raise ValueError(f"need one measured time per configuration, got {len(configs)} and {len(measured)}")
    if len(configs) < n_terms:
        raise ValueError(f"fitting base_time, one fixed cost per module type ({kinds})"
                         f"{' and a scale' if fit_scale else ''} needs >= {n_terms} whole-model timings, "
                         f"got {len(configs)}")
    y = np.asarray(measured, dtype=np.float64)
    if not np.all(np.isfinite(y) & (y > 0)):
        raise ValueError(f"measured times must be finite and > 0 seconds, got {list(measured)}")
    rows = []
    for p, config in enumerate(configs):
        if set(config) != set(kinds):
            raise ValueError(f"configuration {p} has module types {sorted(config)}; the table has {kinds}")
        present = [sum(1 for s in config[k] if int(s) > 0) for k in kinds]
        summed = sum(table.time(k, s) for k in kinds for s in config[k])  # ValueError: size not in the table
        rows.append([1.0, *present, summed])
    design, summed = np.asarray(rows)[:, :n_terms], np.asarray(rows)[:, -1]
    if np.linalg.matrix_rank(design) < n_terms:
        raise ValueError(
            "the calibration points cannot separate base_time, the fixed costs and the scale: include the "
            "dense model, one model per module type with that type removed in every layer, and at least one "
            f"uniform shrink with every module present (got {len(configs)} points of rank "
            f"{np.linalg.matrix_rank(design)} < {n_terms})")
    from scipy.optimize import lsq_linear  # scipy loads only when a table is calibrated

    # a fixed scale of 1 moves the summed table times to the measured side
    target = np.ones_like(y) if fit_scale else (y - summed) / y
    sol = lsq_linear(design / y[:, None], target, bounds=(0.0, np.inf), method="bvls")
    base, *fixed = (float(v) for v in sol.x[:len(kinds) + 1])
    return FixedCostFit(base, dict(zip(kinds, fixed, strict=True)), float(sol.x[-1]) if fit_scale else 1.0)
