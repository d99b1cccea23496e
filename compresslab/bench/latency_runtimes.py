"""The runtimes a ZipLM latency table and its speedup checks can time (``TableSettings.runtime``), and the file
each one times for an export of the model.

``ort`` (the fused fp32 export on ONNX Runtime), ``ort_int8`` (it quantized as ``ort_int8_dynamic`` deploys it, with ORT's own embedding tables),
``openvino`` (the plain export on OpenVINO's CPU plugin at its default precision) and ``openvino_int8`` (our int8
IR of the plain export). :func:`fastest_runtime` picks one of several by timing the dense model. Used by
:mod:`compresslab.bench.latency_table` and :mod:`compresslab.pruning.speedup`; ``s`` below is a
:class:`~compresslab.bench.latency_table.TableSettings` (read here for its runtime, threads, provider and shape).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from compresslab.bench.env import resolve_threads

log = logging.getLogger(__name__)

# What a table can be measured on (TableSettings.runtime). ZipLM's speedup is a ratio on one runtime, and it does
# not carry over whole: on Zen 4 a 2.5x shrink measured on ORT fp32 ran 2.30x faster than the dense model as int8
# IRs on OpenVINO (benchmarks/RESULTS.md, compound on avx512_bf16), so a pipeline that deploys there prices there.
# And which runtime is fastest depends on the ISA: on AVX2 without VNNI, ORT's dynamic int8 ran RTE's teacher 1.8x
# faster than the OpenVINO int8 IR (RESULTS.md, RTE on AVX2); on Zen 4 the IR wins. See fastest_runtime.
RUNTIMES: tuple[str, ...] = ("ort", "ort_int8", "openvino", "openvino_int8")
# what ort_int8 times: ORT's quantizer in one call, as ort_int8_dynamic quantizes the MatMuls (QInt8 weights,
# per-call uint8 activations, every op type ORT quantizes) but with ORT's own one-scale embedding tables (the pass's
# embeddings: per_tensor; its default blockwise tables run at the same speed), with these arguments; in the cache
# key of its tables
ORT_INT8_ARGS: dict[str, Any] = {"per_channel": True, "reduce_range": False}
ORT_INT8_RECIPE = "export.ort_quant.quantize_dynamic_int8 " + json.dumps(ORT_INT8_ARGS, sort_keys=True)
# fastest_runtime keeps the first listed candidate unless another is faster by more than this fraction, so one
# config does not flip between runtimes (and tables, and models) on timing noise when two are close
RUNTIME_MARGIN = 0.05


def reads_plain(runtime: str) -> bool:
    """Whether ``runtime`` reads the plain export (OpenVINO) rather than ORT's fused graph (com.microsoft ops)."""
    return runtime.startswith("openvino")


def synthetic_feeds(seq: int, vocab: int) -> list[dict[str, Any]]:
    """Calibration batches for an int8 IR that is only timed: random ids (below ``vocab`` and 64), full masks.

    The kernels OpenVINO picks depend on which ops are quantized, not on the ranges calibrated, so
    the probes' IRs time as the deployed IR (calibrated on real text) does."""
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(0, min(64, vocab), size=(2, seq), dtype=np.int64)
    return [{"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}]


def as_deployed(onnx: str | Path, s: Any, vocab: int) -> Path:
    """The file ``s.runtime`` times for an export of the model: the fused export itself (``ort``; pass the fused
    file), its ORT dynamic int8 (``ort_int8``: ``<stem>_int8.onnx`` beside it, :data:`ORT_INT8_RECIPE`), the plain
    export itself (``openvino``; pass the plain file, see :func:`reads_plain`) or our int8 IR of it
    (``openvino_int8``; :func:`~compresslab.export.openvino_int8.ours_int8_ir` with its default recipe,
    calibrated on :func:`synthetic_feeds`) in the folder ``<stem>_int8/``."""
    onnx = Path(onnx)
    if s.runtime in ("ort", "openvino"):
        return onnx
    if s.runtime == "ort_int8":
        from compresslab.export.ort_quant import quantize_dynamic_int8

        out = onnx.with_name(f"{onnx.stem}_int8.onnx")
        quantize_dynamic_int8(onnx, out, **ORT_INT8_ARGS)
        return out
    from compresslab.export.openvino_int8 import ours_int8_ir

    xml, _ = ours_int8_ir(onnx, onnx.with_name(f"{onnx.stem}_int8"), synthetic_feeds(s.seq, vocab))
    return xml


def make_runner(path: str | Path, s: Any, vocab_size: int | None = None) -> Any:
    """A timing runner for ``path`` on ``s.runtime`` (ORT: ``s.provider``; OpenVINO: its default precision)."""
    threads = resolve_threads(s.threads)
    if not reads_plain(s.runtime):
        from compresslab.bench.runners import OrtRunner

        return OrtRunner(path, threads, s.provider, vocab_size=vocab_size)
    from compresslab.bench.openvino_runner import OpenVinoRunner

    return OpenVinoRunner(path, threads, "default", vocab_size=vocab_size, binary=False)


def fastest_runtime(files: dict[str, Path], s: Any, *, runs: int | None = None,
                    vocab_size: int | None = None) -> dict[str, Any]:
    """Which runtime runs the dense model fastest: ``files`` maps each candidate runtime (:data:`RUNTIMES`), in the
    user's order, to the dense model's file it deploys (:func:`as_deployed`); each is timed at ``s.batch`` x
    ``s.seq`` in interleaved rounds (MEASURE.md "Speed"), so a speedup target is priced where the best dense
    baseline runs (MEASURE.md ``best_dense``). The first candidate stays chosen unless another's median is lower by
    more than :data:`RUNTIME_MARGIN` (then the lowest median wins): timing noise between two close runtimes does not
    flip one config's choice. Returns ``{"chosen": runtime, "b<B>xs<S>_ms": {runtime: median ms}, "margin": f,
    "busy": bool, "machine_load": {...}}``; ``busy`` (the choice may be wrong) is logged loudly, not raised, and the
    load record lets run reports flag it. Raises ValueError for fewer than two candidates or an unknown runtime."""
    if len(files) < 2 or any(rt not in RUNTIMES for rt in files):
        raise ValueError(f"fastest_runtime needs two or more of {list(RUNTIMES)}, got {sorted(files)}")
    p50, load = _medians({rt: make_runner(f, replace(s, runtime=rt), vocab_size=vocab_size) for rt, f in files.items()},
                         s, runs)
    key = f"b{s.batch}xs{s.seq}"
    ms = {rt: round(float(p50[rt]), 3) for rt in files}
    first, fastest = next(iter(ms)), min(ms, key=ms.__getitem__)
    chosen = fastest if ms[fastest] < ms[first] * (1 - RUNTIME_MARGIN) else first
    busy = bool(load["busy"])
    why = ("fastest" if chosen == fastest else
           f"kept: listed first, and {fastest} is not more than {RUNTIME_MARGIN:.0%} faster")
    (log.warning if busy else log.info)("latency runtime: %s for the dense model at %s (%s: %s)%s", chosen, key, why,
                                        ", ".join(f"{rt} {t:.1f} ms" for rt, t in ms.items()),
                                        " -- the machine was busy: the choice may be wrong" if busy else "")
    return {"chosen": chosen, f"{key}_ms": ms, "margin": RUNTIME_MARGIN, "busy": busy, "machine_load": load}


def measure_speedup(dense_onnx: str | Path, candidate_onnx: str | Path, s: Any,
                    runs: int | None = None, vocab_size: int | None = None) -> dict[str, float]:
    """Measured speedup of ``candidate_onnx`` over ``dense_onnx`` at batch x seq on ``s.runtime``: interleaved
    rounds after warm-up, ratio of medians (MEASURE.md "Speed"); ``busy`` when the machine was."""
    p50, load = _medians({"dense": make_runner(dense_onnx, s, vocab_size=vocab_size),
                          "candidate": make_runner(candidate_onnx, s, vocab_size=vocab_size)}, s, runs)
    return {"speedup": p50["dense"] / p50["candidate"], "dense_ms": p50["dense"], "candidate_ms": p50["candidate"],
            "busy": load["busy"]}


def _medians(runners: dict[str, Any], s: Any, runs: int | None) -> tuple[dict[str, float], dict[str, Any]]:
    """Median ms of each runner at ``s.batch`` x ``s.seq`` (interleaved, ``runs`` or ``s.runs`` rounds after
    ``s.warmup``), and the machine_load record of that timing."""
    from compresslab.bench.latency import measure_latency

    lat = measure_latency(runners, [(s.batch, s.seq)], warmup=s.warmup, runs=runs or s.runs)
    key = f"b{s.batch}xs{s.seq}"
    return {n: lat["results"][n][key]["p50_ms"] for n in runners}, lat["machine_load"]
