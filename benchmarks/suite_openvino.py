"""The OpenVINO twin of each of our pipeline cells (issue 14: ``bench.backends=[ort,openvino]``; Intel-CPU
users pick OpenVINO): the same model on OpenVINO's CPU plugin at its default precision, so the report can
say, per model, which runtime is faster.

Which file OpenVINO runs is decided as the deploy stage decides it (``compresslab.pipeline.deploy``):
OpenVINO reads neither ORT's fused graph (``com.microsoft`` Attention, SkipLayerNormalization) nor ORT's
dynamic int8 form (MatMulInteger / DynamicQuantizeLinear). So:

* a deployed file OpenVINO reads (plain fp32, a QDQ int8 graph): that very file;
* a fused fp32 file: its plain twin ``model_unfused.onnx`` (the same weights, unfused);
* ORT dynamic int8: our int8 IR of the run's plain fp32 export, made as ``deploy.int8=ours`` makes it
  (``ours_int8_ir_chosen``: one IR per SmoothQuant strength of suite.yaml ``openvino_smooth_alpha``,
  deploy.smooth_alpha's default grid unless set; the highest VALIDATION agreement with the task's teacher
  kept), on the suite's calibration examples, with the MatMuls of the Linear modules ``keep_fp32`` selects
  (suite.yaml ``openvino_keep_fp32``; ``deploy.keep_fp32``'s vocabulary, e.g. ``ffn_out``) left in fp32.
  The cell key holds the grid, the validation examples' hash and ``RECIPE``, so a cell built by an older
  recipe is built anew. Its planned method is whose torch model it is (``suite_method.pipeline_model_method``:
  the int8 pipeline's block-wise embeddings are an ORT-file rewrite, so on ``+pipeline=int8`` that is the
  teacher's, a peer's), and it is ours even on the shared teacher (``+pipeline=int8``) whenever our
  recipe chose or changed something (:func:`method_of`): SmoothQuant, our pass, changed the weights before
  ORT's quantizer saw them, its strength was chosen by our search on validation (as
  ``fp32_fallback: guided`` is ours, ``suite_method``), or one of the recipe's graph rewrites applied (the word
  table as per-row int8, Q.K^T's QDQ pairs moved before the head split, the float path of unquantized inputs);
* anything else OpenVINO cannot read (MatMulNBits): the cell's error says so, exactly.

Each of our int8 pipelines also gets ``<pipeline>_openvino_nncf``: NNCF PTQ (``nncf.quantize``) of the
same plain fp32 export on the same calibration examples, the other candidate of ``deploy.int8=auto``. Both
are shown, side by side, on dev; none is chosen on dev. Its method is its pipeline's torch model's, by issue
14's rule (a peer's tool on our model is ours when our pass changed the model first: the same rule that makes
``ziplm_int8``, ORT's quantizer on our ZipLM model, ours); its tool names NNCF, and on the unchanged
teacher (``+pipeline=int8``, whose torch model is the teacher) no such cell is made: that is the
``nncf_ptq_int8`` peer. (Issue 9's deploy manifest is stricter: there NNCF's IR is ``method: "peer"`` unless our pass chose what it quantizes.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from compresslab.export.openvino_int8 import RECIPE  # in the cell key: cells of an older recipe are rebuilt

from .artifacts import Artifact
from .suite_method import OURS

SUFFIX = "_openvino"
NNCF_SUFFIX = "_openvino_nncf"
_ORT_DYNAMIC_INT8 = frozenset({"MatMulInteger", "DynamicQuantizeLinear", "ConvInteger"})


def cell_name(pipeline: str) -> str:
    return f"{pipeline}{SUFFIX}"


def nncf_cell_name(pipeline: str) -> str:
    return f"{pipeline}{NNCF_SUFFIX}"


def pipeline_of(cell: str) -> str | None:
    """The pipeline an OpenVINO cell is made from (``ziplm_int8_openvino_nncf`` -> ``ziplm_int8``), else None."""
    for suffix in (NNCF_SUFFIX, SUFFIX):
        if cell.endswith(suffix) and len(cell) > len(suffix):
            return cell.removesuffix(suffix)
    return None


def _run_dir(pipeline_cell: Mapping[str, Any]) -> Path:
    run_dir = Path(pipeline_cell["run_dir"])
    return run_dir if run_dir.is_absolute() else Path(__file__).resolve().parents[1] / run_dir


def quantized_export(pipeline_cell: Mapping[str, Any]) -> int:
    """Quantize/DequantizeLinear nodes in a finished pipeline run's export of its final torch model: 0 for an fp32
    model; more when a torch pass (``int8_qat``) quantized it, so there is no fp32 model for NNCF's PTQ. An
    export that cannot be read counts 0 (building the cell then says why)."""
    from compresslab.export.openvino_int8 import already_quantized

    try:
        return already_quantized(_plain_fp32(_run_dir(pipeline_cell)))
    except (OSError, KeyError, ValueError):
        return 0


def _plain_fp32(run_dir: Path) -> Path:
    """The run's plain (unfused) fp32 export of its final model."""
    from compresslab.bench.openvino_runner import plain_export
    from compresslab.manifest import read_json

    return plain_export(run_dir / read_json(run_dir / "manifest.json")["export"]["fp32"]["path"])


def _final_torch_model(run_dir: Path) -> Any:
    """The run's last torch checkpoint (the model its ONNX-stage passes quantized): names Linear modules."""
    from compresslab.checkpoint import load
    from compresslab.manifest import read_json

    steps = [s for s in read_json(run_dir / "manifest.json")["steps"] if s.get("stage") == "torch"]
    if not steps:
        raise ValueError(f"{run_dir}: no torch step holds a checkpoint")
    return load(run_dir / steps[-1]["dir"])


def _check(pipeline_cell: Mapping[str, Any]) -> None:
    from compresslab.bench.openvino_runner import openvino_missing_reason

    if pipeline_cell.get("status") != "finished":
        raise ValueError(f"its pipeline cell did not finish: {pipeline_cell.get('error')}")
    if (why := openvino_missing_reason()) is not None:
        raise ImportError(why)


def nncf_artifact(pipeline_cell: Mapping[str, Any], work: Path, calibration: Sequence[Mapping[str, Any]]) -> Artifact:
    """NNCF PTQ int8 (defaults, ``model_type=TRANSFORMER``, no accuracy control: as the ``nncf_ptq_int8``
    peer runs it) of a finished int8 pipeline's plain fp32 export, as an IR in ``work/openvino_nncf``.
    Raises ValueError when the pipeline did not finish or its deployed file is not int8; ImportError
    when OpenVINO or NNCF is missing."""
    from compresslab.export.openvino_int8 import nncf_int8_ir, nncf_missing_reason

    _check(pipeline_cell)
    a = Artifact.from_dict(dict(pipeline_cell["artifact"]))
    if a.precision != "int8":
        raise ValueError(f"its pipeline deploys {a.precision}, not int8: no int8 candidate to set NNCF beside")
    if (why := nncf_missing_reason()) is not None:
        raise ImportError(why)
    fp32 = _plain_fp32(_run_dir(pipeline_cell))
    xml, q = nncf_int8_ir(fp32, work / "openvino_nncf", calibration)
    return Artifact(xml, "openvino", "default", {
        "source": f"NNCF PTQ ({q.get('n_calibration_examples')} train examples) of the run's plain fp32 export "
                  f"{fp32.name}: NNCF's int8 of our pipeline's model (deploy.int8=nncf)", "quantization": q})


def openvino_artifact(pipeline_cell: Mapping[str, Any], work: Path, calibration: Sequence[Mapping[str, Any]],
                      keep_fp32: Sequence[str] = (), smooth_alpha: Sequence[float | None] = (None,),
                      validation: Any = None, threads: int = 1) -> Artifact:
    """The OpenVINO artifact of a finished pipeline cell (see the module docstring). ``keep_fp32``: Linear
    module patterns whose MatMuls our static QDQ leaves fp32 (only when it quantizes). ``smooth_alpha``:
    the SmoothQuant grid of our int8 IR (``None``: no smoothing); with more than one entry ``validation``
    (a :class:`~compresslab.pipeline.validation.ValidationAgreement` of the task's teacher) scores them.
    Raises ValueError when the pipeline cell did not finish, no form of the file is readable by OpenVINO,
    a ``keep_fp32`` pattern selects nothing, or a grid of several strengths has no ``validation``;
    ImportError when OpenVINO is missing."""
    from compresslab.bench.openvino_runner import plain_export, unreadable_ops

    _check(pipeline_cell)
    a = Artifact.from_dict(dict(pipeline_cell["artifact"]))
    if a.backend == "openvino":
        return Artifact(a.file, "openvino", "default", {"source": "the pipeline's deployed IR"})
    own = plain_export(a.file)
    bad = unreadable_ops(own)
    if not bad:
        return Artifact(own, "openvino", "default",
                        {"source": "the deployed file" if own == a.file else
                         f"the plain twin {own.name} of the deployed fused {a.file.name}"})
    # ORT's dynamic int8 form (of the fused or the plain graph): OpenVINO gets our int8 IR of the plain fp32 export.
    # Anything else (a 4-bit MatMulNBits model) has no form OpenVINO reads.
    if not set(bad) & _ORT_DYNAMIC_INT8 or any(b.endswith("MatMulNBits") for b in bad):
        raise ValueError(f"OpenVINO cannot read {a.file.name} (ops {', '.join(bad)}) and the run has no plain or "
                         "QDQ form of it: not run on OpenVINO")
    grid = list(smooth_alpha)
    if len(grid) > 1 and (validation is None or not validation.examples):
        raise ValueError(f"a SmoothQuant grid of {len(grid)} strengths needs the validation split to choose on, "
                         "and the task has " + ("none" if validation is None else "an empty one") +
                         ": give openvino_smooth_alpha one strength (or null)")
    from compresslab.export.openvino_int8 import ours_int8_ir_chosen
    from compresslab.pipeline.deploy import fp32_matmuls

    run_dir = _run_dir(pipeline_cell)
    fp32 = _plain_fp32(run_dir)
    keep = fp32_matmuls(_final_torch_model(run_dir), list(keep_fp32), fp32) if keep_fp32 else []
    # the strength is chosen at the precision the cell is scored and timed at (the Artifact's "default")
    scorer = validation.ir_scorer(threads, "default") if validation is not None else (lambda irs: {})
    xml, q = ours_int8_ir_chosen(fp32, work / "openvino", calibration, grid, scorer, exclude=keep)
    q["keep_fp32"] = {"patterns": list(keep_fp32), "matmuls": keep}
    q["recipe"] = RECIPE
    kept = f", {len(keep)} MatMuls kept fp32 ({', '.join(keep_fp32)})" if keep else ""
    alpha = q["smooth_choice"]["alpha"]
    smooth = "no SmoothQuant" if alpha is None else f"SmoothQuant alpha {alpha:g}"
    chosen = f" (chosen from {grid} on validation agreement)" if len(grid) > 1 else ""
    return Artifact(xml, "openvino", "default", {
        "source": f"our int8 IR ({smooth}{chosen}; static QDQ calibrated on "
                  f"{sum(len(f['input_ids']) for f in calibration)} train examples) of the run's plain fp32 export "
                  f"{fp32.name}{kept}: the deployed {a.file.name} is ORT's dynamic int8 form "
                  f"({', '.join(sorted(set(bad) & _ORT_DYNAMIC_INT8))}), which OpenVINO does not read (deploy.int8=ours)",
        "quantization": q})


def _quantization(rec: Mapping[str, Any]) -> Mapping[str, Any]:
    """A cell record's ``artifact.info.quantization`` (what the int8 tool recorded), or {}."""
    return ((rec.get("artifact") or {}).get("info") or {}).get("quantization") or {}


def method_of(rec: Mapping[str, Any], planned: str) -> str:
    """The method of a built ``<pipeline>_openvino`` cell record: ours when our int8 recipe chose or changed
    something around ORT's quantizer (SmoothQuant, our pass, scaled weights; its strength, ``None`` included,
    chosen on validation by our search; or one of the recipe's own graph rewrites applied, as the recorded
    counts say: the word table as per-row int8, Q.K^T's QDQ pairs moved before the head split, unquantized
    inputs given their float path back), else ``planned`` (its pipeline's method). The same rule as an ONNX
    pass's ``own_settings`` (``suite_method``): our rewrite of the graph makes the file ours."""
    q = _quantization(rec)
    smoothed = ((q.get("smoothquant") or {}).get("n_matmuls") or 0) > 0
    chosen = bool((q.get("smooth_choice") or {}).get("scored"))
    rewrites = (bool((q.get("embeddings_int8") or {}).get("tables"))
                or ((q.get("attention_scores") or {}).get("pairs_moved_before_head_split") or 0) > 0
                or (q.get("float_residual_inputs") or 0) > 0)
    return OURS if smoothed or chosen or rewrites else planned


def recipe_of(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    """What our int8 recipe chose for a built ``<pipeline>_openvino`` cell, for the results file's
    ``meta.cells`` (the cell record itself lives in the untracked work dir): recipe, grid, chosen strength,
    each strength's validation score, SmoothQuant's MatMul count, MatMuls kept fp32. None when the recipe
    did not make the cell (a file OpenVINO read as it is, NNCF's int8, a failed cell)."""
    q = _quantization(rec)
    if q.get("method") != "ours" or "smooth_choice" not in q:
        return None
    c = q["smooth_choice"]
    return {"recipe": q.get("recipe"), "smooth_grid": c.get("grid"), "smooth_alpha": c.get("alpha"),
            "validation_scores": c.get("scores"), "smoothquant_matmuls": (q.get("smoothquant") or {}).get("n_matmuls"),
            "keep_fp32": (q.get("keep_fp32") or {}).get("patterns")}


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
