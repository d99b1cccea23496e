"""Where a run directory keeps its dense teacher as ONNX: the fp32 export every stage compares with, and the
ORT dynamic int8 of it that the bench stage times (``ort_int8``, what a user gets from ORT without us).

Light to import (no torch, no onnxruntime): the pipeline's face re-exports both for benchmark scripts, which
read finished run directories and never hold a run's state.
"""

from __future__ import annotations

from pathlib import Path

from compresslab.manifest import RunManifest


def teacher_onnx(run_dir: Path, manifest: RunManifest) -> Path:
    """The dense teacher's fp32 ONNX file of the run in ``run_dir`` (``manifest``: that run's manifest), as the
    export stage recorded it: ``export.teacher_fp32`` when a torch pass other than the teacher's changed the model
    (the dense reference, the teacher or the input model where no pass made one, then has its own export under
    ``<run_dir>/export/teacher/``), else ``export.fp32``, the run's own export under ``<run_dir>/export/`` (its model
    is the dense reference). Reads the manifest only: the file is not checked. KeyError when the manifest has no
    export record (the run stopped before its export stage)."""
    sec = manifest.data["export"]
    return run_dir / sec.get("teacher_fp32", sec["fp32"])["path"]


def teacher_int8(run_dir: Path, manifest: RunManifest) -> Path:
    """The dense teacher's ORT dynamic int8: its export, fused first when it is not (``export.optimize=false``),
    quantized by the recipe ZipLM's ``ort_int8`` runtime times (:data:`~compresslab.bench.latency_runtimes.ORT_INT8_ARGS`:
    one call of ORT's quantizer, i.e. ``ort_int8_dynamic`` with ``embeddings: per_tensor``), in
    ``bench/teacher_int8/model.onnx`` (outside ``export/``, whose folders keep optimum's layout). Quantized on every
    bench run: a few seconds, and never stale after a rerun of the export. Never the ``int8`` pipeline's own file:
    that one carries our rewrites (block-wise word embeddings by default since 2026-12-05; the outlier split when
    asked), and this cell is what a user gets without us (benchmarks/backends.py and compound.py take it from here
    for the same reason).

    Returns ``<run_dir>/bench/teacher_int8/model.onnx`` (written, replacing an earlier one). KeyError as
    :func:`teacher_onnx`; an error of ORT's optimizer or quantizer as they raise it, for a graph they cannot take."""
    import tempfile

    from compresslab.bench.latency_runtimes import ORT_INT8_ARGS
    from compresslab.export.ort_quant import ensure_fused, quantize_dynamic_int8, read_export_config

    out = run_dir / "bench" / "teacher_int8" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    teacher = teacher_onnx(run_dir, manifest)
    with tempfile.TemporaryDirectory(prefix="compresslab-fuse-") as work:  # as ort_int8_dynamic does (optimize=true)
        src, _ = ensure_fused(teacher, read_export_config(teacher.parent), work)
        quantize_dynamic_int8(src, out, **ORT_INT8_ARGS)
    return out
