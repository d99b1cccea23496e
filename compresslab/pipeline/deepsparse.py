"""The optional DeepSparse part of the bench stage (see :mod:`compresslab.bench.deepsparse_backend`).

It times, in one worker process and interleaved: ``ort_fp32`` (the canonical denominator), the
dense teacher and the compressed model on DeepSparse in fp32, and both again as static int8 QDQ.
The compressed model's DeepSparse files are scored on dev by the same compiled engines. A model whose
export is already int8 QDQ (the ``int8_qat`` pass) is timed and scored as that very file
(``deepsparse_int8``), not re-quantized.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from compresslab.export.matmul_integer import FORMAT_NOTE
from compresslab.failure import error_text
from compresslab.manifest import RunManifest
from compresslab.pipeline.settings import DeepSparseSettings
from compresslab.pipeline.stage_files import record_files, recorded
from compresslab.pipeline.state import RunState
from compresslab.pipeline.teacher_files import teacher_onnx

log = logging.getLogger(__name__)


def _unfused(fused_path: Path) -> Path:
    p = fused_path.with_name("model_unfused.onnx")
    return p if p.is_file() else fused_path


def _quantized(state: RunState, src: Path, dst: Path, s: DeepSparseSettings, run_dir: Path, fmt: str,
               manifest: RunManifest) -> Path:
    """``src`` (fp32) as static int8 in ``fmt`` in ``dst`` (``matmulinteger`` rewrites the ``qdq`` file, made here
    too); kept across resumes while its sha256 is recorded (checked at the resume's start), recorded (and saved)
    when written."""
    from compresslab.bench.deepsparse_backend import quantize_qdq_for_deepsparse

    if fmt == "matmulinteger":
        qdq = _quantized(state, src, dst.with_name(dst.name.replace(fmt, "qdq")), s, run_dir, "qdq", manifest)
        return _integer(qdq, dst, run_dir, manifest)
    if not recorded(manifest, run_dir, dst, "bench"):
        ctx = state.context(run_dir, dst.parent)
        batches = list(ctx.calibration_batches(s.num_calibration, batch_size=32,
                                                setting="bench.deepsparse.num_calibration"))
        quantize_qdq_for_deepsparse(src, dst, batches, per_channel=s.per_channel, op_types=list(s.op_types),
                                    quant_format=fmt)
        record_files(manifest, run_dir, "bench", [dst])
        manifest.save()
    return dst


def _integer(qdq: Path, dst: Path, run_dir: Path, manifest: RunManifest) -> Path:
    """The QDQ graph ``qdq`` in SparseML's MatMulInteger form (:mod:`compresslab.export.matmul_integer`) in ``dst``;
    kept and recorded as :func:`_quantized` keeps its files."""
    from compresslab.export.matmul_integer import qdq_to_matmul_integer

    if not recorded(manifest, run_dir, dst, "bench"):
        dst.parent.mkdir(parents=True, exist_ok=True)
        qdq_to_matmul_integer(qdq, dst)
        record_files(manifest, run_dir, "bench", [dst])
        manifest.save()
    return dst


def _score(state: RunState, logits: np.ndarray) -> dict[str, Any]:
    """Eval-split metrics of one engine's logits, plus agreement with (and McNemar vs) the torch teacher."""
    from compresslab.data.metrics import compute_metrics
    from compresslab.data.tasks import TaskKind
    from compresslab.eval.evaluate import Scored, compare
    from compresslab.pipeline.evaluate import teacher_scored

    spec = state.task.spec
    labels = np.array([e.label for e in state.eval_examples])
    preds = logits[:, 0] if spec.kind == TaskKind.REGRESSION else logits.argmax(-1)
    return compare(Scored(compute_metrics(spec, preds, labels), preds, labels), teacher_scored(state), spec)


def _named(prefix: str, fmt: str, formats: list[str]) -> str:
    """``prefix`` for the first listed format (the headline), ``prefix_<fmt>`` for the others."""
    return prefix if formats and fmt == formats[0] else f"{prefix}_{fmt}"


def _qat_name(fmt: str, formats: list[str]) -> str:
    """The runner name of a QAT model's int8 file in ``fmt``: that of the dense teacher's file in the same format
    with ``deepsparse_dense_`` -> ``deepsparse_``; the QDQ export, always timed, is ``deepsparse_int8_qdq`` when
    ``qdq`` is not a listed format, ``deepsparse_int8`` when none is."""
    return _named("deepsparse_int8", fmt, formats) if fmt in formats or formats else "deepsparse_int8"


def deepsparse(state: RunState, run_dir: Path, manifest: RunManifest, threads: int) -> dict[str, Any]:
    """The ``bench.deepsparse`` section; ``{"skipped": reason}`` when disabled or unavailable.

    Latency is keyed runner -> shape like every other latency table (``bench.latency.speedups``).
    """
    from compresslab.bench.deepsparse_backend import (DeepSparseBench, DeepSparseUnavailable, by_runner, check_python,
                                                      find_python, static_inputs)
    from compresslab.bench.latency import speedups
    from compresslab.data.tasks import TaskKind

    s = state.settings.bench.deepsparse
    if not s.enabled:
        return {"skipped": "bench.deepsparse.enabled is false"}
    try:
        python = find_python(s.python)
        version = check_python(python)
    except DeepSparseUnavailable as e:
        if s.enabled is True:
            raise
        return {"skipped": error_text(e, typed=False)}
    seq = s.seq
    teacher_fused = teacher_onnx(run_dir, manifest)
    final_fp32 = _unfused(run_dir / manifest.data["export"]["fp32"]["path"])
    out_dir = run_dir / "export" / "deepsparse"
    models = {"ort_fp32": (str(teacher_fused), "ort"),
              "deepsparse_dense_fp32": (str(_unfused(teacher_fused)), "deepsparse")}
    same = final_fp32.resolve() == _unfused(teacher_fused).resolve()
    formats = list(s.int8_formats) if s.int8 else []
    for f in formats:
        models[_named("deepsparse_dense_int8", f, formats)] = (
            str(_quantized(state, _unfused(teacher_fused), out_dir / f"dense_int8_{f}.onnx", s, run_dir, f, manifest)),
            "deepsparse")
    qat = bool(manifest.data["export"]["fp32"].get("qdq"))  # an int8 QAT export is already the sparse int8 file
    if qat:  # its own codes, never re-quantized: as exported (QDQ) and, asked for, in MatMulInteger form. Each
        # file is named by its format as the dense teacher's are, so deepsparse_int8<x> pairs with
        # deepsparse_dense_int8<x> (a QDQ model beside a MatMulInteger teacher read as "sparsity is slower")
        for f in [f for f in formats if f != "qoperator"] + ([] if "qdq" in formats else ["qdq"]):
            path = final_fp32 if f == "qdq" else _integer(final_fp32, out_dir / "model_int8_matmulinteger.onnx",
                                                           run_dir, manifest)
            models[_qat_name(f, formats)] = (str(path), "deepsparse")
    elif not same:
        models["deepsparse_fp32"] = (str(final_fp32), "deepsparse")
        for f in formats:
            models[_named("deepsparse_int8", f, formats)] = (
                str(_quantized(state, final_fp32, out_dir / f"model_int8_{f}.onnx", s, run_dir, f, manifest)),
                "deepsparse")
    scored = [k for k in models if k.startswith("deepsparse") and (same or "dense" not in k)]
    inputs = None
    if state.task.spec.kind != TaskKind.EMBEDDING and s.score:
        inputs = static_inputs(state.eval_examples, state.tokenizer, seq, state.task.spec.kind)
    job = DeepSparseBench(models=models, score=scored, batches=s.batches, seq=seq, threads=threads,
                          vocab_size=int(getattr(state.model.config, "vocab_size", 30522)), warmup=s.warmup,
                          runs=s.runs, min_time_s=s.min_time_s, max_runs=s.max_runs)
    # one worker process times every engine (compiles included): say what, before it runs quietly for minutes
    log.info("bench: DeepSparse %s timing %s at batch %s x %d tokens in one worker process", version,
             ", ".join(models), "/".join(map(str, s.batches)), seq)
    res = job.run(python, inputs)
    latency = by_runner(res["latency"])
    scores = {k: _score(state, v) for k, v in res.pop("logits").items()}
    return {"python": str(python), "deepsparse_version": version, "versions": res["versions"], "seq": seq,
            "files": {k: str(Path(p).resolve().relative_to(run_dir.resolve())) for k, (p, _) in models.items()},
            "latency": latency, "speedups": speedups(latency, "ort_fp32"),
            "compile_s": res["compile_s"], "scores": scores,
            "notes": ["DeepSparse runs static shapes (batch x seq compiled per engine) and the plain unfused "
                      "graph. " + (f"The int8 files of the {'dense teacher' if qat else 'dense teacher and of the model'}"
                                   f" are static int8 exports (formats: {', '.join(formats)}; the first has no "
                                   "suffix), MatMuls only, calibrated on train." if formats else "No int8 files "
                                   "(bench.deepsparse.int8 is false)."),
                      "ort_fp32 here is the same fused teacher file, timed in the DeepSparse worker process "
                      "interleaved with the DeepSparse engines."] +
                     ([f"The model's int8 files are the run's own int8 QAT codes, never re-quantized: "
                       f"{_qat_name('qdq', formats)} is its export as "
                       "written (QDQ, int8 per-tensor symmetric weights, uint8 activations, export/model.onnx), "
                       "which DeepSparse runs in float" +
                       (", and the matmulinteger file the same codes in the form it runs with int8 kernels"
                        if "matmulinteger" in formats else "") + "." +
                       (" No qoperator file of a QAT model: QLinearMatMul needs output scales the QAT graph "
                        "does not have (calibrating them would make another model)." if "qoperator" in formats
                        else "")] if qat else []) +
                     ([f"matmulinteger: {FORMAT_NOTE}."] if "matmulinteger" in formats else [])}
