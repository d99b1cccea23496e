"""Choose one level per module to minimise summed error under a summed-cost budget (a knapsack).

:func:`solve_dp` is the dynamic program over discretized cost buckets that ZipLM (§4.3) runs on
latency; any per-module choice with additive cost and additive error (bit widths under a size
budget) fits the same shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["DPSolution", "solve_dp"]


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
