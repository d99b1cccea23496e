"""Interleaved latency of several forward functions in one process, on CUDA (events) or CPU.

Per ``../shared/MEASURE.md``: every runner is warmed up first, then timed in rounds A B C, B C A,
... (the order rotates each round so no runner always follows the same one), and medians and p90
are reported. On CUDA a sample is ``inner`` back-to-back forwards between two CUDA events after a
``synchronize`` (so queued work from the previous runner is not billed), divided by ``inner``; on
CPU it is ``time.perf_counter`` around the same calls. Pure torch + stdlib.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class Runner:
    """One thing to time: ``fn()`` runs one forward on prepared inputs (no arguments)."""

    name: str
    fn: Callable[[], Any]
    peak_mem_bytes: int | None = field(default=None)


def percentile(samples: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default method).

    Raises ValueError on an empty list or q outside [0, 100].
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """``{"p50_ms", "p90_ms", "mean_ms", "min_ms", "n"}`` of per-forward milliseconds."""
    return {"p50_ms": percentile(samples_ms, 50), "p90_ms": percentile(samples_ms, 90),
            "mean_ms": sum(samples_ms) / len(samples_ms), "min_ms": min(samples_ms), "n": len(samples_ms)}


def _sample_ms(fn: Callable[[], Any], inner: int, cuda: bool) -> float:
    """Milliseconds per call of ``fn``, averaged over ``inner`` back-to-back calls."""
    if cuda:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / inner
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) * 1e3 / inner


def time_interleaved(runners: list[Runner], *, warmup: int, rounds: int, inner: int,
                     cuda: bool) -> dict[str, list[float]]:
    """Per runner, ``rounds`` samples (ms per forward), taken interleaved with rotating order.

    Warm-up also records each runner's peak CUDA memory (``Runner.peak_mem_bytes``) on CUDA.
    Raises ValueError on non-positive ``rounds``/``inner`` or duplicate names, before any run.
    """
    if rounds < 1 or inner < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1, inner >= 1, warmup >= 0; got {rounds}, {inner}, {warmup}")
    names = [r.name for r in runners]
    if len(set(names)) != len(names):
        raise ValueError(f"runner names must be unique: {names}")
    for r in runners:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(warmup):
            r.fn()
        if cuda:
            torch.cuda.synchronize()
            r.peak_mem_bytes = torch.cuda.max_memory_allocated()
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        k = i % len(runners)
        for r in runners[k:] + runners[:k]:
            out[r.name].append(_sample_ms(r.fn, inner, cuda))
    return out
