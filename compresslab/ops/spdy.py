"""Search for per-module compression levels under a latency budget (ZipLM §4.3-4.4, SPDY).

* :func:`solve_dp` — the knapsack-style dynamic program over discretized time buckets.
* :func:`spdy_search` — SPDY's random-coefficient search around the DP, scored by a callback.
* :class:`LatencyTable` — the additive latency model ``T = t_0 + sum_modules t_type(size)``.

No timing happens here: the tables are measured elsewhere (``bench/``) and passed in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "DPSolution",
    "LatencyTable",
    "SearchResult",
    "isotonic_non_decreasing",
    "solve_dp",
    "spdy_search",
]


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
