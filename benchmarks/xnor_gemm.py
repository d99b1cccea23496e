"""Bit-packed XNOR-popcount GEMM vs fp32 GEMM vs ONNX Runtime int8 MatMulInteger (issue 11), kernel level.

    python -m benchmarks.xnor_gemm --rounds 30          # the measurement, on a quiet machine: results/xnor_gemm.json
    python -m benchmarks.xnor_gemm --rounds 2 --small --force --out /tmp/xnor.json   # smoke (void timings)

Shapes: all-MiniLM-L6-v2's six encoder Linears per layer at b32 x s128 (M = 4096 activation rows):
q, k, v, o are 384 -> 384 (one shape, timed once and counted 4x in the layer sum), ffn_in
384 -> 1536, ffn_out 1536 -> 384. Methods, all on the same thread count, timed in ONE process,
interleaved (every round calls every method on every shape in turn), after warm-up rounds:

- ``torch_fp32``: ``torch.matmul(x, W.T)``; ``numpy_fp32``: ``x @ W.T`` (OpenBLAS, limited by threadpoolctl);
- ``ort_int8``: a one-node ONNX graph, ``MatMulInteger(uint8 activation, int8 weight initializer,
  activation zero point)`` -> int32, ORT CPU session built by ``compresslab.bench.load_probe.make_session``;
  ``ort_int8_incl_quant``: ``DynamicQuantizeLinear`` of the fp32 activation first (what dynamic int8 runs);
- ``xnor``: :func:`compresslab.ops.xnor.xnor_gemm` on pre-packed signs; ``pack``: ``pack_signs`` of the
  activation alone; ``xnor_incl_pack``: packing plus the GEMM.

Every method produces the raw accumulator only: no bias, no scale (alpha), no dequantization. Before
timing, each result is checked (xnor against the fp32 matmul of the signs, int8 against an integer
reference on the first rows). Headline ratios use the layer sum (per round: 4 x qkvo + ffn_in +
ffn_out, then the median over rounds); ``fp32`` is the faster of torch and numpy, ``int8`` is
``ort_int8``. The timing refuses to start when the 1-minute load average is above ``--max-load``
unless ``--force`` (then ``load.warning`` is true and the figures are void). It runs in a timing
window: it waits for a running training (then refuses; ``--force`` times at once) and records other
processes' CPU use before and during every round in ``meta.machine_load`` (``busy``: void).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "xnor_gemm.json"
THREADS = 2
BATCH, SEQ = 32, 128
# name -> (K in, N out, count per layer); all-MiniLM-L6-v2: hidden 384, FFN 1536, 6 layers
SHAPES = {"qkvo": (384, 384, 4), "ffn_in": (384, 1536, 1), "ffn_out": (1536, 384, 1)}
# --small: a smoke configuration (hidden 96 is not a multiple of 64, so the pad path runs too)
SMALL_ROWS = 64
SMALL_SHAPES = {"qkvo": (96, 96, 4), "ffn_in": (96, 384, 1), "ffn_out": (384, 96, 1)}
METHODS = ("torch_fp32", "numpy_fp32", "ort_int8", "ort_int8_incl_quant", "pack", "xnor", "xnor_incl_pack")
EXTRA_ISA = ("popcnt", "avx2", "avx512f", "avx512_vpopcntdq", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")
NOTE = "kernel-level only; no end-to-end speed claim"
# Idle worker threads must sleep, not spin: on 2 cores, OpenBLAS's threads (spinning ~2**28 cycles
# after a call) or torch's OpenMP threads left spinning by one method steal a core from the next
# (measured here: a 64x96x96 torch matmul took 16 ms right after a numpy one, 0.02 ms alone).
# ORT's sessions already turn spinning off (load_probe.make_session). Set before numpy/torch load.
NO_SPIN_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}


def _int8_graph(path: Path, w_q, a_zero_point: int | None) -> None:
    """One-node MatMulInteger graph, B = int8 (K, N) initializer. With ``a_zero_point`` the input is the
    uint8 activation; without it, a DynamicQuantizeLinear of the fp32 activation feeds it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = w_q.shape
    inits = [numpy_helper.from_array(np.ascontiguousarray(w_q), "B")]
    if a_zero_point is not None:
        inputs = [helper.make_tensor_value_info("A", TensorProto.UINT8, ["M", k])]
        inits.append(numpy_helper.from_array(np.array(a_zero_point, dtype=np.uint8), "a_zp"))
        nodes = [helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"])]
    else:
        inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", k])]
        nodes = [helper.make_node("DynamicQuantizeLinear", ["X"], ["A", "a_scale", "a_zp"]),
                 helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"])]
    out = [helper.make_tensor_value_info("Y", TensorProto.INT32, ["M", n])]
    graph = helper.make_graph(nodes, "int8_matmul", inputs, out, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the project supports (>= 1.20)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _build(m: int, k: int, n: int, threads: int, work: Path, rng) -> tuple[dict[str, Callable[[], Any]], dict]:
    """The timed callables for one (M, K, N) shape, each checked once for correctness; and the int8 check."""
    import numpy as np
    import torch

    from compresslab.bench.load_probe import make_session
    from compresslab.ops.xnor import pack_signs, xnor_gemm

    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    w_t = np.ascontiguousarray(w.T)  # (K, N), what x @ W.T reads
    x_torch, w_t_torch = torch.from_numpy(x), torch.from_numpy(w_t)
    # int8: symmetric per-tensor weights, asymmetric uint8 activations (ORT's dynamic quantization scheme)
    w_q = np.clip(np.round(w_t / (np.abs(w).max() / 127)), -127, 127).astype(np.int8)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255
    zp = int(np.clip(np.round(-lo / scale), 0, 255))
    x_q = np.clip(np.round(x / scale) + zp, 0, 255).astype(np.uint8)
    _int8_graph(work / f"int8_{k}x{n}.onnx", w_q, zp)
    _int8_graph(work / f"int8q_{k}x{n}.onnx", w_q, None)
    s8, _ = make_session(work / f"int8_{k}x{n}.onnx", threads, "CPUExecutionProvider")
    s8q, _ = make_session(work / f"int8q_{k}x{n}.onnx", threads, "CPUExecutionProvider")
    x_packed, w_packed = pack_signs(x), pack_signs(w)

    fns: dict[str, Callable[[], Any]] = {
        "torch_fp32": lambda: torch.matmul(x_torch, w_t_torch),
        "numpy_fp32": lambda: x @ w_t,
        "ort_int8": lambda: s8.run(None, {"A": x_q})[0],
        "ort_int8_incl_quant": lambda: s8q.run(None, {"X": x})[0],
        "pack": lambda: pack_signs(x),
        "xnor": lambda: xnor_gemm(x_packed, w_packed, k, threads=threads),
        "xnor_incl_pack": lambda: xnor_gemm(pack_signs(x), w_packed, k, threads=threads),
    }
    # checks: every method computes what it claims before anything is timed
    ref_fp32 = fns["torch_fp32"]().numpy()
    np.testing.assert_allclose(fns["numpy_fp32"](), ref_fp32, rtol=1e-3, atol=1e-2 * np.sqrt(k))
    signs = lambda a: np.where(a >= 0, 1.0, -1.0).astype(np.float32)  # noqa: E731  exact for K < 2**24
    ref_xnor = (torch.from_numpy(signs(x)) @ torch.from_numpy(signs(w)).T).numpy().astype(np.int32)
    if not (np.array_equal(fns["xnor"](), ref_xnor) and np.array_equal(fns["xnor_incl_pack"](), ref_xnor)):
        raise RuntimeError(f"xnor_gemm differs from the float sign matmul at K={k}, N={n}")
    # int8: not exact on every CPU. Without VNNI, MLAS's u8s8 kernel adds pairs of u8*s8 products in
    # int16 with saturation (vpmaddubsw), so a few sums clip; the repo's dynamic int8 (reduce_range
    # off) deploys that same kernel. A mismatch beyond a sliver means a broken graph, not saturation.
    rows = min(m, 64)
    ref_int8 = (x_q[:rows].astype(np.int64) - zp) @ w_q.astype(np.int64)
    diff = np.abs(fns["ort_int8"]()[:rows].astype(np.int64) - ref_int8)
    check = {"rows_checked": rows, "exact_fraction": float((diff == 0).mean()), "max_abs_diff": int(diff.max()),
             "max_abs_ref": int(np.abs(ref_int8).max())}
    if check["exact_fraction"] < 0.99:
        raise RuntimeError(f"ORT MatMulInteger differs from the integer reference at K={k}, N={n}: {check}")
    if fns["ort_int8_incl_quant"]().shape != (m, n):
        raise RuntimeError("DynamicQuantizeLinear + MatMulInteger returned the wrong shape")
    return fns, check


def _isa() -> dict[str, Any]:
    import numpy as np

    from compresslab.bench.env import cpu_flags

    flags = cpu_flags()
    out: dict[str, Any] = {"flags": {f: f in flags for f in EXTRA_ISA}}
    try:  # numpy's SIMD dispatch decides how fast bitwise_count is
        from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_features__

        out["numpy_simd"] = {"baseline": list(__cpu_baseline__),
                             "found": sorted(f for f, ok in __cpu_features__.items() if ok)}
    except ImportError:
        out["numpy_simd"] = None
    out["numpy_blas"] = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas")
    return out


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds (after warm-up)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=THREADS, help="threads for every method (default 2)")
    ap.add_argument("--small", action="store_true", help="tiny shapes (M=64, hidden 96) for a smoke run")
    ap.add_argument("--max-load", type=float, default=0.5, help="refuse to time above this 1-min load average")
    ap.add_argument("--force", action="store_true", help="time anyway when loaded; the result is flagged")
    ap.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS}; --small needs --out)")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.warmup < 0 or a.threads < 1:
        ap.error("--rounds and --threads must be >= 1, --warmup >= 0")
    if a.small and a.out is None:
        ap.error("--small is a smoke run: give --out (it never writes results/)")
    load_before = os.getloadavg()  # before any heavy import: importing torch itself raises the load
    loaded = load_before[0] > a.max_load
    if loaded and not a.force:
        print(f"refusing to time: 1-min load average {load_before[0]:.2f} > {a.max_load} "
              f"(something else is running; rerun on a quiet machine, or --force for a flagged run)",
              file=sys.stderr)
        return 2

    if "numpy" in sys.modules or "torch" in sys.modules:  # too late for the no-spin settings to apply
        print("warning: numpy/torch were imported before the thread settings; run as "
              "python -m benchmarks.xnor_gemm", file=sys.stderr)
    spin_env = {k: os.environ.setdefault(k, v) for k, v in NO_SPIN_ENV.items()}

    import numpy as np
    from threadpoolctl import threadpool_limits

    from compresslab.bench.env import hardware_fingerprint
    from compresslab.bench.latency import summarize
    from compresslab.bench.machine_load import timing_window
    from compresslab.cli import setup_process
    from compresslab.manifest import git_sha, library_versions

    sys.path.insert(0, str(ROOT))  # run as `python -m benchmarks.xnor_gemm`: the sibling module is not importable
    from _results import ResultsFile

    results = ResultsFile(a.out or RESULTS)  # stamps meta.machine_load (the timing window below)

    setup_process(a.threads, 0)  # torch threads and seed
    m = SMALL_ROWS if a.small else BATCH * SEQ
    shapes = SMALL_SHAPES if a.small else SHAPES
    rng = np.random.default_rng(0)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xnor-gemm-") as tmp, threadpool_limits(limits=a.threads):
        built = {name: _build(m, k, n, a.threads, Path(tmp), rng) for name, (k, n, _) in shapes.items()}
        fns = {name: b[0] for name, b in built.items()}
        times: dict[str, dict[str, list[float]]] = {s: {meth: [] for meth in METHODS} for s in shapes}
        # the timing lock and the load before and during (per round: a burst is not diluted)
        # --force: no wait for a running training either (time at once, marked busy)
        with timing_window("xnor gemm kernels", wait_s=0 if a.force else None,
                           allow_busy=True if a.force else None) as window:
            for r in range(a.warmup + a.rounds):
                with window.span(f"round {r}"):
                    for s in shapes:
                        for meth in METHODS:  # A B C ... every round, every shape
                            t0 = time.perf_counter()
                            fns[s][meth]()
                            dt = time.perf_counter() - t0
                            if r >= a.warmup:
                                times[s][meth].append(dt)
    load_after = os.getloadavg()

    per_shape: dict[str, Any] = {}
    for s, (k, n, count) in shapes.items():
        st = {meth: summarize(times[s][meth], BATCH if not a.small else 1) for meth in METHODS}
        p50 = {meth: v["p50_ms"] for meth, v in st.items()}
        fp32 = min(p50["torch_fp32"], p50["numpy_fp32"])
        per_shape[s] = {
            "m": m, "k": k, "n": n, "count_per_layer": count,
            "ms": {meth: {"p50": v["p50_ms"], "p90": v["p90_ms"], "mean": v["mean_ms"], "n": v["n"]}
                   for meth, v in st.items()},
            "speedup_vs_fp32": _ratio(fp32, p50["xnor"]),
            "speedup_vs_int8": _ratio(p50["ort_int8"], p50["xnor"]),
            "incl_pack_speedup_vs_fp32": _ratio(fp32, p50["xnor_incl_pack"]),
            "incl_pack_speedup_vs_int8_incl_quant": _ratio(p50["ort_int8_incl_quant"], p50["xnor_incl_pack"]),
            "int8_check": built[s][1],
            "xnor_check": "exact (equals the fp32 matmul of the signs)",
        }
    # one layer = the six Linears: per round, the count-weighted sum over shapes; then median / p90
    layer_times = {meth: [sum(cnt * times[s][meth][i] for s, (_, _, cnt) in shapes.items())
                          for i in range(a.rounds)] for meth in METHODS}
    layer = {meth: summarize(v, 1) for meth, v in layer_times.items()}
    lp50 = {meth: v["p50_ms"] for meth, v in layer.items()}
    fp32_name = min(("torch_fp32", "numpy_fp32"), key=lambda k_: lp50[k_])
    result = {
        "xnor_gemm_speedup_vs_fp32": _ratio(lp50[fp32_name], lp50["xnor"]),
        "xnor_gemm_speedup_vs_int8": _ratio(lp50["ort_int8"], lp50["xnor"]),
        "xnor_gemm_incl_pack_speedup_vs_fp32": _ratio(lp50[fp32_name], lp50["xnor_incl_pack"]),
        "xnor_gemm_incl_pack_speedup_vs_int8_incl_quant": _ratio(lp50["ort_int8_incl_quant"],
                                                                 lp50["xnor_incl_pack"]),
        "fp32_reference": fp32_name,
        "layer_ms": {meth: {"p50": v["p50_ms"], "p90": v["p90_ms"], "mean": v["mean_ms"]} for meth, v in layer.items()},
        "per_shape": per_shape,
        "note": NOTE,
        "caveats": [
            "raw accumulators only: no bias, no alpha / dequantization scale, no activation function",
            "fp32 = the faster of torch.matmul and numpy @ on the layer sum; int8 = ORT MatMulInteger on a "
            "pre-quantized uint8 activation (incl_quant: DynamicQuantizeLinear of the fp32 activation too)",
            "xnor = numpy bitwise_xor + bitwise_count over uint64 words on pre-packed signs "
            "(incl_pack: pack_signs of the fp32 activation too); weights are packed once, untimed",
            "qkvo is one shape timed once per round and counted 4x in the layer sum",
            "ORT int8 without VNNI saturates some int16 pair sums (see per_shape.*.int8_check); timed as deployed",
        ],
        "load": {"max_load": a.max_load, "before": list(load_before), "after": list(load_after),
                 "warning": loaded, "after_includes_this_run": True},
        "meta": {
            "git_sha": git_sha(), "versions": library_versions(), "hardware": hardware_fingerprint(a.threads),
            "isa": _isa(), "threads": a.threads, "thread_env": spin_env, "rows_m": m,
            "batch": None if a.small else BATCH, "seq": None if a.small else SEQ,
            "shapes": {s: {"k": k, "n": n, "count_per_layer": c} for s, (k, n, c) in shapes.items()},
            "rounds": a.rounds, "warmup": a.warmup, "order": "interleaved: every round, every shape, methods in "
            + " ".join(METHODS), "small": a.small, "wall_s": round(time.perf_counter() - t_start, 1),
            "command": "python -m benchmarks.xnor_gemm " + " ".join(argv if argv is not None else sys.argv[1:]),
        },
    }
    out = a.out or RESULTS
    results.write(result)
    print(f"{'shape':8} {'method':20} {'p50 ms':>9} {'p90 ms':>9}")
    for s, d in per_shape.items():
        for meth in METHODS:
            print(f"{s:8} {meth:20} {d['ms'][meth]['p50']:9.3f} {d['ms'][meth]['p90']:9.3f}")
    for meth in METHODS:
        print(f"{'layer':8} {meth:20} {lp50[meth]:9.3f} {layer[meth]['p90_ms']:9.3f}")
    print(f"layer speedup xnor vs fp32 ({fp32_name}): {result['xnor_gemm_speedup_vs_fp32']:.2f}x, "
          f"vs ORT int8: {result['xnor_gemm_speedup_vs_int8']:.2f}x; incl. packing: "
          f"{result['xnor_gemm_incl_pack_speedup_vs_fp32']:.2f}x / "
          f"{result['xnor_gemm_incl_pack_speedup_vs_int8_incl_quant']:.2f}x (vs int8 incl. quantization)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
          + ("  WARNING: loaded machine, timings void" if loaded else ""))
    print(f"wrote {out}  ({NOTE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
