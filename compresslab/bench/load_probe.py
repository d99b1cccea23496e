"""Model load time and peak RSS, each measured in a fresh child process: parent and child.

Peak RSS is a high-water mark for the whole process, so measuring several models in the
benchmark process would report the largest one (or the teacher) for all of them. A child that
loads one model and runs one b1 x s128 inference gives a clean number per model.

Two runtimes: an ONNX file on ONNX Runtime (the default), or, with ``runtime="openvino"``, an
OpenVINO IR (or a plain ONNX file) read by ``openvino.Core().read_model`` and compiled on CPU, as
the deploy stage's IR is deployed (then ``load_s`` is read + compile).

Parent: `probe_load(path, threads)` starts this very file as the child, by path, and returns
its JSON. Child: `main()`. This file imports only the standard library at module level, and
numpy/onnxruntime/openvino inside functions; anything from `compresslab` is imported inside the
parent's function only, so the child never imports the `compresslab` package (which pulls in torch
and transformers) and its baseline is what a deployment pays: an interpreter with its runtime.
It also holds `make_session` and `openvino_config`, the one place where benchmark sessions and
OpenVINO compilations are configured, so the probe loads models as `OrtRunner` and
`OpenVinoRunner` do.

The module's name differs from every name `compresslab.bench` exports: a submodule named like a
function of its package (`bench/probe_load.py` beside `bench.probe_load()`) rebinds the package
attribute to the module once anything imports it (tests/unit/test_package_names.py).

    python path/to/load_probe.py --onnx PATH --threads N [--provider P] [--seq 128]
    python path/to/load_probe.py --openvino PATH --threads N [--precision-hint f32|bf16|default]

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
RUNTIMES: tuple[str, ...] = ("ort", "openvino")


def openvino_config(threads: int, hint: str = "default", sparse_rate: float | None = None) -> dict[str, Any]:
    """The CPU compile properties of every benchmark OpenVINO model (``OpenVinoRunner`` and the probe's child).

    ``hint``: the precision already resolved for this model and CPU (``openvino_runner.resolve_precision``);
    ``default`` sets no ``INFERENCE_PRECISION_HINT`` so OpenVINO picks (bf16 on AVX512_BF16/AMX CPUs).
    ``sparse_rate``: ``CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE``, set only when given. Lives here, standard
    library only, because the child runs without compresslab."""
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if hint != "default":
        config["INFERENCE_PRECISION_HINT"] = hint
    if sparse_rate is not None:
        config["CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"] = sparse_rate
    return config


def precision_name(value: Any) -> str:
    """OpenVINO's element type (``<Type: 'float32'>``, ``bf16``) as ``f32`` / ``bf16`` / ``f16``."""
    get = getattr(value, "get_type_name", None)  # an ov.Type: "f32" / "bf16"
    s = str(get() if callable(get) else value).lower()
    s = s.split("'")[1] if s.count("'") >= 2 else s  # "<type: 'float32'>"
    names = {"float32": "f32", "f32": "f32", "bfloat16": "bf16", "bf16": "bf16", "float16": "f16", "f16": "f16"}
    return names.get(s, s)


def model_bytes(path: str | Path) -> int:
    """Bytes the runtime loads: an IR's ``.xml`` plus its ``.bin`` (``export.size.artifact_bytes`` cannot be
    imported in the child), else the file itself."""
    p = Path(path)
    weights = p.with_suffix(".bin")
    return p.stat().st_size + (weights.stat().st_size if p.suffix == ".xml" and weights.is_file() else 0)


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
    import numpy  # noqa: F401  before the baseline (the batch's numpy is not model)
    import onnxruntime  # noqa: F401  imported before the baseline so it is not counted as model

    baseline = _peak_rss_mb()
    session, load_s = make_session(onnx, threads, provider)
    batch = _probe_batch(seq, vocab_size)
    names = [i.name for i in session.get_inputs()]
    t0 = time.perf_counter()
    session.run(None, {n: batch[n] for n in names})
    first_ms = (time.perf_counter() - t0) * 1e3
    return _record(onnx, Path(onnx).stat().st_size, threads, seq, load_s, first_ms, baseline,
                   runtime="ort", provider=session.get_providers()[0])


def _probe_batch(seq: int, vocab_size: int) -> dict[str, Any]:
    """The one (1, seq) int64 batch both runtimes run: seeded ids below ``vocab_size``, no padding."""
    import numpy as np

    ids = np.random.default_rng(0).integers(0, vocab_size, size=(1, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _record(model: str, size: int, threads: int, seq: int, load_s: float, first_ms: float, baseline: float,
            **runtime: Any) -> dict[str, Any]:
    """The probe's JSON line, the same keys for every runtime (``runtime`` adds its own: provider, precision)."""
    return {"model": str(Path(model).resolve()), "bytes": size, **runtime, "threads": threads, "shape": [1, seq],
            "load_s": load_s, "first_run_ms": first_ms, "baseline_rss_mb": baseline, "peak_rss_mb": _peak_rss_mb()}


def probe_openvino(model: str, threads: int, hint: str, sparse_rate: float | None, seq: int,
                   vocab_size: int) -> dict[str, Any]:
    """Read one IR (or plain ONNX file) with OpenVINO, compile it on CPU with the bench's properties, run one
    (1, seq) inference, and report time, memory and the precision it compiled as."""
    import numpy  # noqa: F401  before the baseline (the batch's numpy is not model)
    import openvino as ov  # imported before the baseline so it is not counted as model

    if not Path(model).is_file():
        raise FileNotFoundError(f"no OpenVINO model at {model}")
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    core = ov.Core()
    read = core.read_model(model)
    compiled = core.compile_model(read, "CPU", openvino_config(threads, hint, sparse_rate))
    load_s = time.perf_counter() - start
    batch = _probe_batch(seq, vocab_size)
    feed = {p.get_any_name(): batch[p.get_any_name()].astype(p.get_element_type().to_dtype(), copy=False)
            for p in read.inputs}
    request = compiled.create_infer_request()
    t0 = time.perf_counter()
    request.infer(feed)
    first_ms = (time.perf_counter() - t0) * 1e3
    return _record(model, model_bytes(model), threads, seq, load_s, first_ms, baseline, runtime="openvino",
                   provider="OpenVINO CPU", precision_hint=hint,
                   precision=precision_name(compiled.get_property("INFERENCE_PRECISION_HINT")))


def probe_load(
    onnx_path: str | Path,
    threads: int | None,
    *,
    provider: str = "CPUExecutionProvider",
    runtime: str = "ort",
    precision_hint: str = "default",
    sparse_rate: float | None = None,
    seq: int = 128,
    vocab_size: int | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Load time and peak RSS of one model, measured in a fresh child process.

    ``runtime="ort"``: an ONNX file on ONNX Runtime's ``provider``. ``runtime="openvino"``: an IR (or plain ONNX
    file) compiled on OpenVINO's CPU with :func:`openvino_config` (``precision_hint`` and ``sparse_rate`` as the
    bench's runner compiled it). Returns the child's JSON: load_s, first_run_ms (one (1, seq) inference),
    baseline_rss_mb (interpreter + the runtime), peak_rss_mb, bytes, threads, provider, and for OpenVINO
    runtime and precision (as compiled). Raises ValueError for an unknown runtime, RuntimeError carrying the
    child's stderr when it fails.
    """
    from compresslab.bench.env import resolve_threads  # inside: the child must not import compresslab

    if runtime not in RUNTIMES:
        raise ValueError(f"load probe runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    cmd = [sys.executable, str(PROBE_SCRIPT), "--threads", str(resolve_threads(threads)), "--seq", str(seq)]
    if runtime == "ort":
        cmd += ["--onnx", str(onnx_path), "--provider", provider]
    else:
        cmd += ["--openvino", str(onnx_path), "--precision-hint", precision_hint]
        if sparse_rate is not None:
            cmd += ["--sparse-rate", str(sparse_rate)]
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
    parser = argparse.ArgumentParser(description="Load time and peak RSS of one model.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--onnx", help="path of the .onnx model to load on ONNX Runtime")
    which.add_argument("--openvino", help="path of the IR (.xml) or ONNX file to compile on OpenVINO CPU")
    parser.add_argument("--threads", type=int, required=True, help="intra-op threads")
    parser.add_argument("--provider", default="CPUExecutionProvider")
    parser.add_argument("--precision-hint", default="default", help="OpenVINO INFERENCE_PRECISION_HINT")
    parser.add_argument("--sparse-rate", type=float, default=None, help="CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE")
    parser.add_argument("--seq", type=int, default=PROBE_SEQ, help="sequence length of the probe")
    parser.add_argument("--vocab-size", type=int, default=PROBE_VOCAB, help="bound of random ids")
    args = parser.parse_args(argv)
    if args.openvino:
        result = probe_openvino(args.openvino, args.threads, args.precision_hint, args.sparse_rate, args.seq,
                                args.vocab_size)
    else:
        result = probe(args.onnx, args.threads, args.provider, args.seq, args.vocab_size)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
