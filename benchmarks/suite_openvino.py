"""The OpenVINO twin of each of our pipeline cells (issue 14: ``bench.backends=[ort,openvino]``; Intel-CPU
users pick OpenVINO): the same model on OpenVINO's CPU plugin at its default precision, so the report can
say, per model, which runtime is faster.

Which file OpenVINO runs is decided as the deploy stage decides it (``compresslab.pipeline.deploy``):
OpenVINO reads neither ORT's fused graph (``com.microsoft`` Attention, SkipLayerNormalization) nor ORT's
dynamic int8 form (MatMulInteger / DynamicQuantizeLinear). So:

* a deployed file OpenVINO reads (plain fp32, a QDQ int8 graph): that very file;
* a fused fp32 file: its plain twin ``model_unfused.onnx`` (the same weights, unfused);
* ORT dynamic int8: our static QDQ calibration of the run's plain fp32 export, on the suite's calibration
  examples (``deploy.int8=ours``; the IR is its own artifact, scored and timed as such);
* anything else OpenVINO cannot read (MatMulNBits): the cell's error says so, exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .artifacts import Artifact

SUFFIX = "_openvino"
_ORT_DYNAMIC_INT8 = frozenset({"MatMulInteger", "DynamicQuantizeLinear", "ConvInteger"})


def cell_name(pipeline: str) -> str:
    return f"{pipeline}{SUFFIX}"


def openvino_artifact(pipeline_cell: Mapping[str, Any], work: Path,
                      calibration: Sequence[Mapping[str, Any]]) -> Artifact:
    """The OpenVINO artifact of a finished pipeline cell (see the module docstring). Raises ValueError when
    the pipeline cell did not finish, OpenVINO is missing, or no form of the file is readable by OpenVINO."""
    from compresslab.bench.openvino_runner import openvino_missing_reason, plain_export, unreadable_ops
    from compresslab.manifest import read_json

    if pipeline_cell.get("status") != "finished":
        raise ValueError(f"its pipeline cell did not finish: {pipeline_cell.get('error')}")
    if (why := openvino_missing_reason()) is not None:
        raise ImportError(why)
    a = Artifact.from_dict(dict(pipeline_cell["artifact"]))
    if a.backend == "openvino":
        return Artifact(a.file, "openvino", "default", {"source": "the pipeline's deployed IR"})
    own = plain_export(a.file)
    bad = unreadable_ops(own)
    if not bad:
        return Artifact(own, "openvino", "default",
                        {"source": "the deployed file" if own == a.file else
                         f"the plain twin {own.name} of the deployed fused {a.file.name}"})
    # ORT's dynamic int8 form (of the fused or the plain graph): OpenVINO gets our QDQ of the plain fp32 export.
    # Anything else (a 4-bit MatMulNBits model) has no form OpenVINO reads.
    if not set(bad) & _ORT_DYNAMIC_INT8 or any(b.endswith("MatMulNBits") for b in bad):
        raise ValueError(f"OpenVINO cannot read {a.file.name} (ops {', '.join(bad)}) and the run has no plain or "
                         "QDQ form of it: not run on OpenVINO")
    from compresslab.export.openvino_int8 import ours_int8_ir

    run_dir = Path(pipeline_cell["run_dir"])
    run_dir = run_dir if run_dir.is_absolute() else Path(__file__).resolve().parents[1] / run_dir
    fp32 = plain_export(run_dir / read_json(run_dir / "manifest.json")["export"]["fp32"]["path"])
    xml, q = ours_int8_ir(fp32, work / "openvino", calibration)
    return Artifact(xml, "openvino", "default", {
        "source": f"our static QDQ calibration ({sum(len(f['input_ids']) for f in calibration)} train examples) of "
                  f"the run's plain fp32 export {fp32.name}: the deployed {a.file.name} is ORT's dynamic int8 form "
                  f"({', '.join(sorted(set(bad) & _ORT_DYNAMIC_INT8))}), which OpenVINO does not read "
                  "(deploy.int8=ours)",
        "quantization": q})


def faster_runtime(systems: Mapping[str, Mapping[str, Any]], pipelines: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per pipeline: its ORT and OpenVINO b32 p50 (ms), which is faster and by how much (slower / faster),
    and both scores; ``faster`` is None with ``why`` when either was not timed."""
    out: dict[str, dict[str, Any]] = {}
    for p in pipelines:
        o, v = systems.get(p) or {}, systems.get(cell_name(p)) or {}
        row: dict[str, Any] = {"ort_ms_b32": o.get("latency_ms_b32"), "openvino_ms_b32": v.get("latency_ms_b32"),
                               "ort_score": o.get("score"), "openvino_score": v.get("score"),
                               "ort_backend": o.get("backend"), "faster": None, "ratio": None}
        if row["ort_ms_b32"] is None or row["openvino_ms_b32"] is None:
            row["why"] = "; ".join(f"{n}: {s.get('error') or 'not timed'}" for n, s in ((p, o), (cell_name(p), v))
                                   if s.get("latency_ms_b32") is None)
        else:
            a, b = row["ort_ms_b32"], row["openvino_ms_b32"]
            row["faster"] = "openvino" if b < a else "ort" if a < b else "tie"
            row["ratio"] = round(max(a, b) / min(a, b), 3)
        out[p] = row
    return out
