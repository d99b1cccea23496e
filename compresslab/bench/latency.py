"""Latency measurement: warm-up, interleaved runners, medians and p90 (MEASURE.md "Speed").

Models are timed in one process and interleaved (A B C A B C ...) so that noise from a shared
machine (other jobs, frequency scaling, thermal drift) lands on every model alike and cancels
in the ratios; medians and p90 are reported because means are dragged by stragglers.

Interleaving does not save a timing from a machine that is *busy* (torch was 35x off beside a
training): every measurement runs in a :func:`~compresslab.bench.machine_load.timing_window`, which
waits for training to finish (or refuses), measures other processes' CPU use before and during,
and returns it as ``machine_load`` (``busy: true`` and a loud warning when the timing is void).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from compresslab.bench.machine_load import spread, timing_window
from compresslab.bench.runners import Runner
from compresslab.manifest import shape_key  # also this module's name: callers import it from here

Clock = Callable[[], float]

log = logging.getLogger(__name__)

# Ids are drawn from [0, DEFAULT_VOCAB) when no runner states its vocabulary size (an ONNX file
# does not say it plainly): every real BERT-family vocabulary, and our tiny test models, are
# larger, and latency does not depend on which ids are fed.
DEFAULT_VOCAB = 100


def make_inputs(
    batch: int, seq: int, vocab_size: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random but valid encoder inputs: ids in [0, vocab), all-ones mask, zero segment ids."""
    if batch < 1 or seq < 1 or vocab_size < 1:
        raise ValueError(f"batch, seq and vocab_size must be >= 1, got {(batch, seq, vocab_size)}")
    shape = (batch, seq)
    return {
        "input_ids": rng.integers(0, vocab_size, size=shape, dtype=np.int64),
        "attention_mask": np.ones(shape, dtype=np.int64),
        "token_type_ids": np.zeros(shape, dtype=np.int64),
    }


def summarize(times_s: Sequence[float], batch: int) -> dict[str, float | int]:
    """p50/p90/mean in ms, n, throughput (sentences/s = batch / p50) and spread ((p90 - p50) / p50:
    repeated runs that spread widely say the machine was not quiet) of per-call times."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no timings to summarize")
    p50 = float(np.percentile(ms, 50))
    p90 = float(np.percentile(ms, 90))
    return {
        "p50_ms": p50,
        "p90_ms": p90,
        "spread": spread(p50, p90),
        "mean_ms": float(ms.mean()),
        "n": int(ms.size),
        "throughput": batch / (p50 / 1e3) if p50 > 0 else float("inf"),
    }


def _vocab_size(runners: Mapping[str, Runner], vocab_size: int | None) -> int:
    """Explicit size wins; else the smallest bound valid for every runner.

    A runner that does not declare its vocabulary (an ONNX file) only trusts DEFAULT_VOCAB.
    """
    if vocab_size is not None:
        return vocab_size
    declared = [getattr(r, "vocab_size", None) for r in runners.values()]
    return min(v if v else DEFAULT_VOCAB for v in declared)


def _runner_info(runner: Runner) -> dict[str, Any]:
    info = getattr(runner, "info", None)
    if callable(info):
        return dict(info())
    return {"threads": getattr(runner, "threads", None)}


def settle(runner: Runner) -> None:
    """Busy-wait ``runner.settle_s`` seconds (untimed) after one of its calls, when it declares one.

    A runtime whose worker threads keep spinning after its call returns steals a core from whatever
    runs next: PyTorch's OpenMP workers (libgomp spins ~300k pauses before sleeping) made the ONNX
    Runtime cell timed right after ``torch_fp32`` 1.20x / 1.23x slower at b1xs128 / b4xs32 on 2 cores
    (benchmarks/results/slot_bias.json; 1.02x at b32xs128). The wait spins rather than sleeps: in an
    exploratory run a 50 ms sleep between calls made every cell slower (an idle core costs more)."""
    s = float(getattr(runner, "settle_s", 0.0) or 0.0)
    if s > 0:
        end = time.perf_counter() + s
        while time.perf_counter() < end:
            pass


def _check(runners: Mapping[str, Runner], **positive: float) -> None:
    if not runners:
        raise ValueError("runners is empty; pass at least one named runner")
    for name, value in positive.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def measure_latency(
    runners: Mapping[str, Runner],
    shapes: Sequence[tuple[int, int]],
    *,
    warmup: int,
    runs: int,
    min_time_s: float = 0.0,
    seed: int = 0,
    vocab_size: int | None = None,
    max_runs: int | None = None,
    clock: Clock = time.perf_counter,
    keep_times: bool = False,
    log_as: str | None = None,
) -> dict[str, Any]:
    """Time every runner on every (batch, seq) shape, interleaved, after warm-up.

    Per shape: inputs are built once (same arrays for all runners), each runner is called
    `warmup` times, then `runs` rounds call A, B, C, ... in turn. Rounds continue past `runs`
    until the shape's timed calls add up to `min_time_s` (so fast models get enough samples), capped at
    `max_runs` (default 10 x runs). `clock` is injectable so tests can use fake time.
    Runs in a timing window (joins the caller's when there is one).

    Returns {"settings": {...}, "runners": {name: info}, "results": {name: {"b1xs128":
    {p50_ms, p90_ms, spread, mean_ms, n, throughput}}}, "machine_load": {busy, reasons, ...}}.
    ``keep_times``: each shape's entry also holds ``times_ms``, the per-round times in round order
    (element i of every runner is from the same round): what :func:`paired_speedup` reads.
    ``log_as`` (e.g. ``"bench"``): log a line as each shape starts (what is timed, how many rounds at least) and one
    as it ends (its time, rounds and medians), so a stage that times for minutes is seen working; never a line per
    call (a log must stay readable). None: silent (a latency table's many small timings have their own bar).
    Raises ValueError for bad settings, MachineBusyError when training holds the lock past the wait.
    """
    _check(runners, warmup=warmup, min_time_s=min_time_s)
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    cap = max(runs, max_runs if max_runs is not None else 10 * runs)
    vocab = _vocab_size(runners, vocab_size)
    rng = np.random.default_rng(seed)
    results: dict[str, dict[str, Any]] = {name: {} for name in runners}
    with timing_window("latency") as window:
        for i_shape, (batch_size, seq) in enumerate(shapes, 1):
            key = shape_key(int(batch_size), int(seq))
            inputs = make_inputs(int(batch_size), int(seq), vocab, rng)
            started = clock()
            if log_as:
                log.info("%s: timing %s (shape %d of %d): %s, interleaved, %d warm-up call(s) each, then at least "
                         "%d round(s)%s", log_as, key, i_shape, len(shapes), ", ".join(runners), warmup, runs,
                         f" (up to {cap}, until {min_time_s:g} s are timed)" if min_time_s > 0 else "")
            with window.span(key):
                for runner in runners.values():
                    for _ in range(warmup):
                        runner.run(inputs)
                        settle(runner)
                times: dict[str, list[float]] = {name: [] for name in runners}
                timed = 0.0  # seconds inside timed calls: the settles do not count toward min_time_s
                rounds = 0
                while rounds < runs or (rounds < cap and timed < min_time_s):
                    for name, runner in runners.items():
                        t0 = clock()
                        runner.run(inputs)
                        times[name].append(clock() - t0)
                        timed += times[name][-1]
                        settle(runner)
                    rounds += 1
            for name in runners:
                results[name][key] = summarize(times[name], int(batch_size))
                if keep_times:
                    results[name][key]["times_ms"] = [round(1e3 * t, 4) for t in times[name]]
            if log_as:
                log.info("%s: %s timed in %.0f s, %d round(s); p50 %s", log_as, key, clock() - started, rounds,
                         ", ".join(f"{name} {results[name][key]['p50_ms']:.3g} ms" for name in runners))
        window.note_spread(results)
    return {
        "settings": {"warmup": warmup, "runs": runs, "min_time_s": min_time_s, "max_runs": cap,
                     "seed": seed, "vocab_size": vocab, "order": "interleaved"},
        "runners": {name: _runner_info(r) for name, r in runners.items()},
        "results": results,
        "machine_load": window.record(),
    }


def speedups(
    results: Mapping[str, Any], denominator: str = "ort_fp32"
) -> dict[str, dict[str, float]]:
    """Speedup of every runner vs `denominator` per shape: p50(denominator) / p50(runner).

    Accepts the dict returned by `measure_latency` (or its "results" part). Ratios use medians
    only, as MEASURE.md asks; > 1 means faster than the denominator.
    """
    table = results.get("results", results)
    if denominator not in table:
        raise KeyError(f"denominator {denominator!r} not measured; runners are {sorted(table)}")
    base = table[denominator]
    out: dict[str, dict[str, float]] = {}
    for name, per_shape in table.items():
        out[name] = {
            shape: base[shape]["p50_ms"] / stats["p50_ms"]
            for shape, stats in per_shape.items()
            if shape in base and stats["p50_ms"] > 0
        }
    return out


def paired_speedup(base_ms: Sequence[float], model_ms: Sequence[float]) -> float:
    """Median over rounds of ``base_ms[i] / model_ms[i]``: the speedup of a model over a base timed in the same
    interleaved rounds (:func:`measure_latency` with ``keep_times``).

    Why beside the ratio of medians: when the machine switches speed state during a run (seen on shared
    VMs: every runner 15-30% slower for a stretch), the two medians can fall in different states and their
    ratio is then off by up to that much. The calls of one round are adjacent, so they mostly share a state
    and the paired median is the ratio in the state most rounds were in (the ratio itself can differ
    between states: that is not removed). ValueError when the lists differ in length or are empty, or a
    time is not positive."""
    a = np.asarray(base_ms, dtype=np.float64)
    b = np.asarray(model_ms, dtype=np.float64)
    if a.size == 0 or a.shape != b.shape:
        raise ValueError(f"paired_speedup needs two equal, non-empty lists of round times; got {a.size} and {b.size}")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("paired_speedup: every time must be positive")
    return float(np.median(a / b))


def measure_real_lengths(
    runners: Mapping[str, Runner],
    batches: Sequence[dict[str, np.ndarray]],
    *,
    rounds: int,
    warmup_rounds: int = 1,
    clock: Clock = time.perf_counter,
    log_as: str | None = None,
) -> dict[str, Any]:
    """Throughput over real dev batches (dynamic padding, so shapes vary), interleaved by batch.

    For each round and each batch, every runner runs that batch in turn. A warm-up round is
    discarded first because ORT and torch allocate per new shape. Per runner: `total_wall_s`
    (median over rounds of the time for all batches), `sentences_per_s` (sentences / that
    median), and `p50_ms` per batch (median over rounds, in batch order). Runs in a timing
    window; the result carries its `machine_load`. ``log_as``: a line as it starts and one per round (each round
    runs every batch on every runner), as :func:`measure_latency`'s per shape.
    """
    _check(runners, warmup_rounds=warmup_rounds)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not batches:
        raise ValueError("batches is empty; pass the tokenized dev batches")
    sizes = [int(b["input_ids"].shape[0]) for b in batches]
    seqs = [int(b["input_ids"].shape[1]) for b in batches]
    # times[name][round][batch_index] in seconds
    times = {name: np.zeros((rounds, len(batches))) for name in runners}
    with timing_window("real-length throughput") as window, window.span("real_length"):
        started = clock()
        if log_as:
            log.info("%s: timing real-length throughput: %d dev batch(es) of %d sentences on %s, interleaved, "
                     "%d warm-up and %d timed round(s)", log_as, len(batches), sum(sizes), ", ".join(runners),
                     warmup_rounds, rounds)
        for _ in range(warmup_rounds):
            for batch in batches:
                for runner in runners.values():
                    runner.run(batch)
                    settle(runner)
        for r in range(rounds):
            for i, batch in enumerate(batches):
                for name, runner in runners.items():
                    t0 = clock()
                    runner.run(batch)
                    times[name][r, i] = clock() - t0
                    settle(runner)
            if log_as:
                log.info("%s: real-length round %d of %d done (%.0f s so far)", log_as, r + 1, rounds,
                         clock() - started)
    n_sentences = sum(sizes)
    results: dict[str, Any] = {}
    for name, t in times.items():
        wall = float(np.median(t.sum(axis=1)))
        results[name] = {
            "total_wall_s": wall,
            "sentences_per_s": n_sentences / wall if wall > 0 else float("inf"),
            "p50_ms": [float(v) for v in np.median(t, axis=0) * 1e3],
        }
    return {
        "settings": {"rounds": rounds, "warmup_rounds": warmup_rounds, "n_batches": len(batches),
                     "n_sentences": n_sentences, "mean_padded_len": float(np.mean(seqs)),
                     "max_padded_len": max(seqs), "order": "interleaved by batch"},
        "runners": {name: _runner_info(r) for name, r in runners.items()},
        "results": results,
        "machine_load": window.record(),
    }


def real_length_speedups(
    results: Mapping[str, Any], denominator: str = "ort_fp32"
) -> dict[str, float]:
    """Throughput ratio of every runner vs `denominator` from `measure_real_lengths` output."""
    table = results.get("results", results)
    if denominator not in table:
        raise KeyError(f"denominator {denominator!r} not measured; runners are {sorted(table)}")
    base = table[denominator]["sentences_per_s"]
    return {name: stats["sentences_per_s"] / base for name, stats in table.items()}
