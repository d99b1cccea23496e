"""What every peer worker shares (``compresslab.bench.external`` runs them in their own venvs): reading the
spec, the dev batches and writing the answer; interleaved timing (A B A B ..., after warm-up, medians) of
the models of ONE process; real-length throughput; an error as one line (``error_text``, compresslab's own,
loaded from its file). Imports numpy only: each venv has its own packages, none of compresslab's.

Files (the spec is written by the peer's module, e.g. ``benchmarks/peers/torch_venv.py``, and completed with
``out`` and ``work`` by ``compresslab.bench.external.run_worker``):
  spec["batches"]: an ``.npz`` with ``b<i>__<input name>`` arrays, the dev batches in scoring order
  (the exact batches compresslab's ``predict`` makes), ``count`` their number;
  spec["out"]: the worker's JSON answer; logits go to ``spec["work"]/logits.npz`` as ``b<i>`` arrays.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

Run = Callable[[Mapping[str, np.ndarray]], Any]


def _failure() -> Any:
    """compresslab/failure.py loaded from its file: it imports the standard library only (tests/unit/test_layers:
    the ground floor), where importing the compresslab package would import what this venv lacks."""
    spec = importlib.util.spec_from_file_location(
        "compresslab_failure", Path(__file__).resolve().parents[3] / "compresslab" / "failure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


error_text = _failure().error_text  # ``Type: message``, never ``Type: `` with nothing after it


def read_spec(argv: list[str]) -> dict[str, Any]:
    if len(argv) != 1:
        raise SystemExit(f"usage: {sys.argv[0]} SPEC.json")
    with open(argv[0]) as f:
        return json.load(f)


def write_out(spec: Mapping[str, Any], out: Mapping[str, Any]) -> None:
    with open(spec["out"], "w") as f:
        json.dump(out, f, indent=2, default=str)


def load_batches(path: str) -> list[dict[str, np.ndarray]]:
    """The dev batches of the spec, in order (``b<i>__<name>`` keys)."""
    z = np.load(path)
    out: dict[int, dict[str, np.ndarray]] = {}
    for key in z.files:
        i, name = key[1:].split("__", 1)
        out.setdefault(int(i), {})[name] = z[key]
    return [out[i] for i in sorted(out)]


def save_logits(path: str, logits: list[np.ndarray]) -> None:
    np.savez(path, **{f"b{i}": np.asarray(x, dtype=np.float32) for i, x in enumerate(logits)})


def random_feeds(batch: int, seq: int, vocab: int, names: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    """Full-length random token ids (the fixed-shape latency input every runner of ours times)."""
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(1, vocab, size=(batch, seq), dtype=np.int64),
             "attention_mask": np.ones((batch, seq), dtype=np.int64),
             "token_type_ids": np.zeros((batch, seq), dtype=np.int64)}
    return {k: v for k, v in feeds.items() if k in names}


def summary(times_s: list[float], batch: int) -> dict[str, Any]:
    ms = sorted(t * 1e3 for t in times_s)
    p50 = statistics.median(ms)
    return {"p50_ms": p50, "p90_ms": ms[min(len(ms) - 1, int(0.9 * len(ms)))], "runs": len(ms),
            "throughput_per_s": batch / (p50 / 1e3)}


def interleaved(models: Mapping[str, Run], feeds: Mapping[str, np.ndarray], batch: int, *, warmup: int,
                runs: int) -> dict[str, dict[str, Any]]:
    """``warmup`` calls of each model, then ``runs`` rounds of one call of each, in turn; name -> summary."""
    for run in models.values():
        for _ in range(warmup):
            run(feeds)
    times: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(max(1, runs)):
        for name, run in models.items():
            t0 = time.perf_counter()
            run(feeds)
            times[name].append(time.perf_counter() - t0)
    return {n: summary(t, batch) for n, t in times.items()}


def real_lengths(models: Mapping[str, Run], batches: list[Mapping[str, np.ndarray]], *,
                 rounds: int) -> dict[str, dict[str, Any]]:
    """Sentences per second over the dev batches as padded for scoring (dynamic padding), interleaved
    batch by batch; the best of ``rounds`` passes (the first pass also warms up new shapes)."""
    n = sum(len(b["input_ids"]) for b in batches)
    best: dict[str, float] = {name: float("inf") for name in models}
    for _ in range(max(1, rounds)):
        spent = {name: 0.0 for name in models}
        for b in batches:
            for name, run in models.items():
                t0 = time.perf_counter()
                run(b)
                spent[name] += time.perf_counter() - t0
        best = {k: min(best[k], spent[k]) for k in best}
    return {k: {"sentences_per_s": n / v, "sentences": n, "rounds": rounds} for k, v in best.items()}


def versions(names: list[str]) -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing package is recorded, not fatal
            out[name] = "missing"
    return out
