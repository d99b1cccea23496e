"""Per-round b32xs128 latency of a few OpenVINO IRs, interleaved: does the machine switch speed state mid-run?

    ROUNDS=120 python benchmarks/latency_states.py a=<ir.xml> b=<ir.xml> ... dense_nncf=<ir.xml>

Prints, per IR, p10/p50/p90 and the first 20 round times, then the speedup over the IR named ``dense_nncf``
per round (p10/p50/p90) and split by the base's state (a round is "fast" when the base took under 0.93x its
median). Used once in session 29 (RESULTS.md, compound on avx512_bf16) to show a VM switching between two
speed states; nothing is written. 2 threads, precision as compiled by default. It takes the timing lock (waits for
training) and prints the other processes' CPU use over the rounds: the states it shows are only meaningful at ~0.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from compresslab.bench.machine_load import LoadMeter, timing_window
from compresslab.bench.openvino_runner import OpenVinoRunner

BASE = "dense_nncf"


def main(argv: list[str]) -> None:
    paths = dict(a.split("=", 1) for a in argv)
    if BASE not in paths:
        raise SystemExit(f"name one IR {BASE}=<path>: the base of the per-round speedups")
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(1000, 20000, (32, 128)).astype(np.int64),
            "attention_mask": np.ones((32, 128), np.int64), "token_type_ids": np.zeros((32, 128), np.int64)}
    runners = {k: OpenVinoRunner(p, 2, "default") for k, p in paths.items()}
    for r in runners.values():
        for _ in range(5):
            r.run(feed)
    t: dict[str, list[float]] = {k: [] for k in runners}
    with timing_window("latency_states: OpenVINO IRs, per round"):
        meter = LoadMeter(what="latency_states rounds")
        for _ in range(int(os.environ.get("ROUNDS", 60))):
            for k, r in runners.items():
                t0 = time.perf_counter()
                r.run(feed)
                t[k].append(1e3 * (time.perf_counter() - t0))
        print("machine load over the rounds:", meter.lap(min_s=0.0))
    for k, v in t.items():
        a = np.array(v)
        print(f"{k:12s} p10 {np.percentile(a, 10):6.1f} p50 {np.median(a):6.1f} p90 {np.percentile(a, 90):6.1f} "
              f"min {a.min():6.1f} max {a.max():6.1f}")
        print("   first 20:", " ".join(f"{x:.0f}" for x in a[:20]))
    base = np.array(t[BASE])
    fast = base < np.median(base) * 0.93
    print("rounds in the fast state:", int(fast.sum()), "of", len(base))
    for k, v in t.items():
        r = base / np.array(v)
        print(f"speedup vs {BASE} per round {k:12s} p10 {np.percentile(r, 10):.2f} p50 {np.median(r):.2f} "
              f"p90 {np.percentile(r, 90):.2f}  fast-state {np.median(r[fast]) if fast.any() else float('nan'):.2f}  "
              f"slow-state {np.median(r[~fast]) if (~fast).any() else float('nan'):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
