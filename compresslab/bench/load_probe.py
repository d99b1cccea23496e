"""Model load time and peak RSS, each measured in a fresh child process: parent and child.

Peak RSS is a high-water mark for the whole process, so measuring several models in the
benchmark process would report the largest one (or the teacher) for all of them. A child that
loads one ONNX model and runs one b1 x s128 inference gives a clean number per model.

Parent: `probe_load(onnx_path, threads)` starts this very file as the child, by path, and returns
its JSON. Child: `main()`. This file imports only the standard library at module level, and
numpy/onnxruntime inside functions; anything from `compresslab` is imported inside the parent's
function only, so the child never imports the `compresslab` package (which pulls in torch and
transformers) and its baseline is what a deployment pays: an interpreter with onnxruntime.
It also holds `make_session`, the one place where benchmark sessions are configured, so the probe
and `OrtRunner` load models identically.

The module's name differs from every name `compresslab.bench` exports: a submodule named like a
function of its package (`bench/probe_load.py` beside `bench.probe_load()`) rebinds the package
attribute to the module once anything imports it (tests/unit/test_package_names.py).

    python path/to/load_probe.py --onnx PATH --threads N [--provider P] [--seq 128]

prints one JSON line: {"load_s", "first_run_ms", "baseline_rss_mb", "peak_rss_mb", ...};
`baseline_rss_mb` is the peak before the model is loaded, so the model's share is the difference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

PROBE_SEQ = 128
PROBE_VOCAB = 100  # ids below this are valid for every BERT-family vocabulary
PROBE_SCRIPT = Path(__file__).resolve()  # the child is this very file, run by path


def make_session(onnx_path: str | Path, threads: int, provider: str) -> tuple[Any, float]:
    """An ORT session as benchmarks use it, and the seconds its creation took.

    Full graph optimization because the canonical denominator is the *fused* ONNX model
    (MEASURE.md "Speed"); one inter-op thread because encoder graphs are a chain and more only
    adds contention. A GPU provider keeps CPU as fallback for ops it lacks, but a session whose
    first provider is not `provider` is refused: a "CUDA" number measured on CPU would be a lie.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider not in available:
        raise ValueError(f"provider {provider!r} is not available; available: {available}")
    if not Path(onnx_path).is_file():
        raise FileNotFoundError(f"no ONNX model at {onnx_path}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Interleaved timing runs several sessions in turn; an idle session's intra-op threads would
    # otherwise keep spinning and steal the cores from the one being timed (measured here: b1
    # fp32 54 -> 33 ms, int8 34 -> 20 ms with two sessions on 2 cores).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [provider]
    if provider != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")
    start = time.perf_counter()
    session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
    load_s = time.perf_counter() - start
    if session.get_providers()[0] != provider:  # ORT falls back to CPU silently
        raise RuntimeError(f"ONNX Runtime did not use {provider!r} (session providers: "
                           f"{session.get_providers()}); check the CUDA/cuDNN install")
    return session, load_s


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux keeps ``ru_maxrss`` across fork+exec, so a child started by a
    1.7 GB parent would report the parent's peak; ``VmHWM`` belongs to the new address space."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 2)
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 2)


def probe(onnx: str, threads: int, provider: str, seq: int, vocab_size: int) -> dict[str, Any]:
    """Load one model, run one (1, seq) inference, and report time and memory."""
    import numpy as np
    import onnxruntime  # noqa: F401  imported before the baseline so it is not counted as model

    baseline = _peak_rss_mb()
    session, load_s = make_session(onnx, threads, provider)
    ids = np.random.default_rng(0).integers(0, vocab_size, size=(1, seq), dtype=np.int64)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}
    names = [i.name for i in session.get_inputs()]
    t0 = time.perf_counter()
    session.run(None, {n: batch[n] for n in names})
    first_ms = (time.perf_counter() - t0) * 1e3
    return {
        "model": str(Path(onnx).resolve()),
        "bytes": Path(onnx).stat().st_size,
        "provider": session.get_providers()[0],
        "threads": threads,
        "shape": [1, seq],
        "load_s": load_s,
        "first_run_ms": first_ms,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": _peak_rss_mb(),
    }


def probe_load(
    onnx_path: str | Path,
    threads: int | None,
    *,
    provider: str = "CPUExecutionProvider",
    seq: int = 128,
    vocab_size: int | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Load time and peak RSS of one ONNX model, measured in a fresh child process.

    Returns the child's JSON: load_s, first_run_ms (one (1, seq) inference), baseline_rss_mb
    (interpreter + onnxruntime), peak_rss_mb, bytes, threads, provider. Raises RuntimeError
    carrying the child's stderr when it fails.
    """
    from compresslab.bench.env import resolve_threads  # inside: the child must not import compresslab

    cmd = [sys.executable, str(PROBE_SCRIPT), "--onnx", str(onnx_path),
           "--threads", str(resolve_threads(threads)), "--provider", provider, "--seq", str(seq)]
    if vocab_size is not None:
        cmd += ["--vocab-size", str(vocab_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"load probe failed for {onnx_path} (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return json.loads(lines[-1])


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry of the child process; prints one JSON line on stdout."""
    parser = argparse.ArgumentParser(description="Load time and peak RSS of one ONNX model.")
    parser.add_argument("--onnx", required=True, help="path of the .onnx model to load")
    parser.add_argument("--threads", type=int, required=True, help="intra-op threads")
    parser.add_argument("--provider", default="CPUExecutionProvider")
    parser.add_argument("--seq", type=int, default=PROBE_SEQ, help="sequence length of the probe")
    parser.add_argument("--vocab-size", type=int, default=PROBE_VOCAB, help="bound of random ids")
    args = parser.parse_args(argv)
    result = probe(args.onnx, args.threads, args.provider, args.seq, args.vocab_size)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
