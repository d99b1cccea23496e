"""int8 OpenVINO IRs from an fp32 plain export: our calibration, or NNCF's PTQ (the peer's method).

Two ways to turn a model into an int8 IR for OpenVINO's CPU plugin (issue 9, "int8 for OpenVINO"):

- ``ours``: ONNX Runtime's static QDQ quantization of the *plain* export (the inputs of the weight
  MatMuls: per-channel symmetric int8 weights, uint8 activations calibrated on train examples; the
  inputs of attention's Q.K^T: symmetric int8), after SmoothQuant at a strength chosen on validation
  (:func:`ours_int8_ir_chosen`), converted by ``openvino.convert_model``: OpenVINO folds each
  QuantizeLinear/DequantizeLinear pair into a FakeQuantize and runs the MatMul with int8 kernels.
  Four of ORT's defaults are undone because they cost accuracy or speed on OpenVINO (measured in
  ``benchmarks/results/openvino_int8.json``): MatMul *outputs* are not quantized (ORT puts a pair
  before each bias Add, GELU and softmax); the residual Add and LayerNorm read the float tensor, not
  the grid the MatMuls read; Q.K^T's pairs sit on the query/key projections before the head split
  (after it, as ORT writes them, OpenVINO does not build its int8 attention kernel and runs slower);
  P.V stays float. The every-op variant is avoided on purpose: it also quantizes the attention-mask
  Add, whose range spans float min.
  The word-embedding table is stored per-row int8 before its Gather, as NNCF's IR stores it (ORT's
  quantizer leaves it fp32: half of MiniLM's weights): the IR 2.4x smaller at the same speed and
  agreement (``benchmarks/results/openvino_int8_embeddings.json``).
- ``nncf``: ``nncf.quantize(model_type=TRANSFORMER)`` on the IR converted from the same plain
  export (SmoothQuant + fast bias correction; NNCF's ignored patterns for attention), or
  ``nncf.quantize_with_accuracy_control`` when a validation set and ``max_drop`` are given (layers
  are reverted to fp32 by NNCF's ranking until the drop is met). A cell made this way is the
  peer's method (``method: "peer"``), whatever model it ran on.

Both write optimum-intel's layout (``openvino_model.xml`` + ``.bin`` + config + tokenizer) and take the
same calibration feeds, so the two are compared on equal data. ``openvino``/``nncf`` are imported
inside functions: importing compresslab must not import them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compresslab.failure import error_text

log = logging.getLogger(__name__)

INT8_METHODS: tuple[str, ...] = ("ours", "nncf")
# The version of ours_int8_ir's defaults: what a cache of our int8 IRs keys on (the peer suite's OpenVINO cells).
# Bump it with any change to those defaults. 2026-12-04: Q.K^T symmetric int8 before the head split, MatMul
# outputs and the residual path float. 2026-12-04.2: the word-embedding table per-row int8
# (benchmarks/results/openvino_int8_embeddings.json).
RECIPE = "ours_int8_ir/2026-12-04.2"
IR_NAME = "openvino_model.xml"  # optimum-intel's OVModelForSequenceClassification file name


def nncf_missing_reason() -> str | None:
    """Why NNCF PTQ cannot run here, or None when ``import nncf`` works."""
    try:
        import nncf  # noqa: F401
    except ImportError as e:
        return f"nncf is not installed ({e}); install it with `pip install 'compresslab[openvino]'`"
    return None


def save_ir(model: Any, out_dir: Path, files_from: Path | None) -> Path:
    """``ov.save_model`` (fp32 weights kept: precision is a compile-time choice) into ``out_dir`` as
    ``openvino_model.xml``, plus the config/tokenizer files found in ``files_from``."""
    import openvino as ov

    from compresslab.export.ort_quant import copy_model_files

    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / IR_NAME
    ov.save_model(model, str(xml), compress_to_fp16=False)
    if files_from is not None:
        copy_model_files(files_from, out_dir)
    return xml


def ours_int8_ir(plain_onnx: Path, out_dir: Path, feeds: Sequence[Mapping[str, Any]], *,
                 calibrate_method: str = "minmax", attention_matmuls: bool = False,
                 exclude: Sequence[str] = (), smooth_alpha: float | None = None,
                 matmul_outputs: bool = False, float_residual: bool = True,
                 attention_scores: bool = True, embeddings_int8: bool = True) -> tuple[Path, dict[str, Any]]:
    """Our static QDQ int8 of ``plain_onnx`` (MatMul inputs), converted to an IR in ``out_dir``.

    ``feeds``: calibration batches (dicts of (batch, seq) int arrays; extra keys are ignored).
    ``calibrate_method``: minmax | entropy | percentile (ORT's calibrators).
    ``attention_matmuls``: also quantize attention's activation x activation MatMuls (Q.K^T, P.V) as
    ORT writes them (uint8, after the head split); False (the default) leaves that to ``attention_scores``. ``exclude``: more node names kept fp32.
    ``smooth_alpha``: SmoothQuant (``export/smoothquant.py``) with this migration strength first.
    ``matmul_outputs``: ORT's quantizer also puts a QDQ pair on every MatMul's output (before the bias
    Add, the GELU, the softmax); False leaves outputs float (``OpTypesToExcludeOutputQuantization``).
    ``float_residual``: the ops that are not quantized (residual Add, LayerNorm) read the float tensor,
    not the uint8 grid the MatMuls read (:func:`~compresslab.export.qdq.float_path_for_unquantized`).
    ``attention_scores``: quantize the inputs of attention's Q.K^T (not P.V) as symmetric int8, the
    pair placed on the query/key projections before the head split
    (:func:`~compresslab.export.qdq.hoist_qdq_above_layout_ops`): the form OpenVINO's CPU plugin runs
    as an int8 attention kernel (NNCF writes it so too).
    ``embeddings_int8``: also store the word-embedding table as per-row int8 before its Gather
    (:func:`~compresslab.export.qdq.int8_embedding_tables`): a 2.4x smaller IR for MiniLM, as NNCF's
    IR stores it; on SST-2 the same b32 and dev agreement (``benchmarks/results/openvino_int8_embeddings.json``).
    Returns the IR path and the quantizer's metrics.
    Raises ValueError when OpenVINO cannot read it.
    """
    import openvino as ov
    from onnxruntime.quantization import QuantType

    if matmul_outputs and float_residual:  # the float path would move the bias Add off each output pair
        raise ValueError("matmul_outputs=True with float_residual=True: the unquantized readers of a quantized "
                         "MatMul output would be moved to the float tensor, undoing the output quantization")

    from compresslab.export.ort_quant import activation_matmuls, attention_score_matmuls, quantize_static_qdq

    qdq = out_dir / "source_qdq.onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    import onnx

    graph = onnx.load(str(plain_onnx), load_external_data=False).graph  # read once for the questions below
    scores = [n for n in attention_score_matmuls(graph) if n not in exclude] if attention_scores else []
    skip = [*exclude, *(() if attention_matmuls else
                        (n for n in activation_matmuls(graph) if n not in scores))]
    src, smooth = plain_onnx, None
    if smooth_alpha is not None:
        from compresslab.export.smoothquant import smooth_onnx

        src = out_dir / "source_smoothed.onnx"
        smooth = smooth_onnx(plain_onnx, src, feeds, alpha=smooth_alpha)
    extra: dict[str, Any] = {} if matmul_outputs else {"OpTypesToExcludeOutputQuantization": ["MatMul"]}
    if scores:  # symmetric int8 for Q.K^T's two inputs (tensor names are the plain export's)
        names = {i for n in graph.node if n.name in scores for i in n.input}
        extra["TensorQuantOverrides"] = {t: [{"quant_type": QuantType.QInt8, "symmetric": True}] for t in sorted(names)}
    metrics = quantize_static_qdq(src, qdq, feeds, per_channel=True, op_types=["MatMul"],
                                  calibrate_method=calibrate_method, nodes_to_exclude=skip,
                                  extra_options=extra or None)
    metrics["matmul_outputs"] = matmul_outputs
    metrics["attention_scores"] = {"matmuls": len(scores)}
    if float_residual:
        from compresslab.export.qdq import float_path_for_unquantized

        metrics["float_residual_inputs"] = float_path_for_unquantized(qdq, ["MatMul"])
    if scores:  # after the float path: the head split then reads the dequantized tensor on purpose
        from compresslab.export.qdq import hoist_qdq_above_layout_ops, symmetric_int8_inputs

        want = 2 * len(scores)
        sym = symmetric_int8_inputs(qdq, scores)  # ORT ignores override names it cannot find: check
        moved = hoist_qdq_above_layout_ops(qdq, scores)
        metrics["attention_scores"].update(symmetric_int8_inputs=sym, pairs_moved_before_head_split=moved)
        if sym != want or moved != want:
            note = (f"of {want} Q.K^T inputs, {sym} got symmetric int8 and {moved} pairs moved before the head "
                    "split: OpenVINO may not run its int8 attention kernel on this graph")
            metrics["attention_scores"]["note"] = note
            log.warning("our int8 IR: %s", note)
    if embeddings_int8:
        from compresslab.export.qdq import int8_embedding_tables

        metrics["embeddings_int8"] = int8_embedding_tables(qdq)
    if smooth is not None:
        src.unlink()
        metrics["smoothquant"] = smooth
    metrics["attention_matmuls"] = attention_matmuls
    try:
        model = ov.convert_model(str(qdq))
    except Exception as e:  # OpenVINO raises bare RuntimeErrors
        raise ValueError(f"OpenVINO cannot convert our QDQ graph {qdq.name}: {error_text(e, typed=False, limit=300)}") from e
    xml = save_ir(model, out_dir, plain_onnx.parent)
    qdq.unlink()  # the IR is the artifact; the QDQ ONNX is rebuilt by the same call if needed
    metrics.update(method="ours", recipe=RECIPE,
                   scheme=("static QDQ MatMul inputs, per-channel int8 weights, uint8 activations"
                           + (", Q.K^T symmetric int8 before the head split" if scores else "")
                           + (", word-embedding table per-row int8"
                              if metrics.get("embeddings_int8", {}).get("tables") else "")),
                   quantize_s=round(time.perf_counter() - t0, 2))
    return xml, metrics


def ours_int8_ir_chosen(plain_onnx: Path, out_dir: Path, feeds: Sequence[Mapping[str, Any]],
                        smooth_alphas: Sequence[float | None],
                        score: Callable[[dict[str, Path]], dict[str, float]], **kw: Any) -> tuple[Path, dict[str, Any]]:
    """:func:`ours_int8_ir` once per SmoothQuant strength in ``smooth_alphas`` (``None``: no smoothing),
    each IR scored by ``score`` (label -> IR path in, label -> a higher-is-better figure out: the
    validation agreement with the teacher); the best is moved to ``out_dir``, the others deleted.
    A tie keeps the earlier entry. With one entry nothing is scored.

    Returns the IR path and the chosen build's metrics, with ``smooth_choice``: the grid, each
    entry's score and the chosen ``alpha``. Every entry is built in a scratch folder beside ``out_dir``
    that is deleted whatever happens; ``out_dir`` is replaced whole only once an IR is chosen.
    Raises ValueError for an empty grid, a failed scoring, no entry with a finite score, or what
    :func:`ours_int8_ir` raises.
    """
    import shutil

    grid = list(smooth_alphas)
    if not grid:
        raise ValueError("smooth_alphas is empty: give at least one strength (or None for no SmoothQuant)")
    label = {a: "none" if a is None else f"alpha_{a:g}" for a in grid}
    if len(set(label.values())) != len(grid):
        raise ValueError(f"smooth_alphas has a repeated entry (equal at 6 significant digits): {grid}")
    work = out_dir.parent / f".{out_dir.name}.smooth_grid"
    shutil.rmtree(work, ignore_errors=True)
    try:  # a failed build or score leaves nothing behind, and out_dir as it was
        built: dict[str, tuple[Path, dict[str, Any]]] = {}
        for a in grid:
            built[label[a]] = ours_int8_ir(plain_onnx, work / label[a], feeds, smooth_alpha=a, **kw)
        if len(grid) == 1:  # nothing to choose: no scoring
            scores = {label[grid[0]]: float("nan")}
        else:
            try:
                raw = score({k: xml for k, (xml, _) in built.items()})
            except Exception as e:  # an IR OpenVINO cannot compile, a scorer's own failure: the caller's ValueError
                raise ValueError(f"scoring the SmoothQuant grid failed: {error_text(e, limit=300)}") from e
            scores = {k: float(v) if v is not None and np.isfinite(v) else float("-inf")
                      for k, v in ((k, raw.get(k)) for k in label.values())}  # missing or NaN: never chosen
            if not any(np.isfinite(v) for v in scores.values()):
                raise ValueError(f"no SmoothQuant grid entry got a finite score: {raw}")
        best = max(grid, key=lambda a: (scores[label[a]], -grid.index(a)))
        xml, metrics = built[label[best]]
        old = out_dir.parent / f".{out_dir.name}.replaced"
        shutil.rmtree(old, ignore_errors=True)
        if out_dir.exists():
            out_dir.replace(old)  # the previous IR moves aside first, then goes
        xml.parent.replace(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(grid) == 1:
        metrics["smooth_choice"] = {"grid": grid, "alpha": best, "scored": False}
        return out_dir / IR_NAME, metrics
    metrics["smooth_choice"] = {"grid": grid, "alpha": best, "scored": True,
                                "scores": {label[a]: scores[label[a]] if np.isfinite(scores[label[a]]) else None
                                           for a in grid},
                                "rule": "the highest score (validation agreement with the teacher); a tie keeps "
                                        "the earlier grid entry"}
    log.info("our int8 IR: SmoothQuant %s chosen (%s)", label[best],
             {k: v if v is None else round(v, 4) for k, v in metrics["smooth_choice"]["scores"].items()})
    return out_dir / IR_NAME, metrics


def already_quantized(onnx_path: Path) -> int:
    """How many QuantizeLinear / DequantizeLinear nodes the graph holds (0: a float graph). Weights not loaded."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)


def nncf_int8_ir(plain_onnx: Path, out_dir: Path, feeds: Sequence[Mapping[str, Any]], *,
                 validation: Sequence[tuple[Mapping[str, Any], np.ndarray]] | None = None,
                 max_drop: float = 0.01, max_iterations: int = 20) -> tuple[Path, dict[str, Any]]:
    """NNCF PTQ (``model_type=TRANSFORMER``) of the IR converted from ``plain_onnx``, saved in ``out_dir``.

    With ``validation`` (pairs of feed dict and (batch,) reference labels: the teacher's
    predictions, so the metric is agreement), ``nncf.quantize_with_accuracy_control`` keeps the
    agreement drop under ``max_drop`` (absolute fraction) by reverting layers to fp32, for at most
    ``max_iterations`` revert steps (NNCF's default is unbounded: a drop below one example's share
    never ends on a small set).
    Returns the IR path and what ran. ImportError-free: call :func:`nncf_missing_reason` first. ValueError when
    ``plain_onnx`` is already an int8 QDQ graph (a quantizing torch pass such as ``int8_qat`` exported it): NNCF's
    PTQ takes an fp32 model, and run on a quantized one it quantizes the rounding again.
    """
    if n := already_quantized(plain_onnx):
        raise ValueError(f"{plain_onnx.name} is already an int8 QDQ graph ({n} QuantizeLinear/DequantizeLinear nodes: "
                         "a quantizing torch pass such as int8_qat made it); NNCF's PTQ takes an fp32 model, so there "
                         "is no NNCF int8 of it")
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    model = ov.convert_model(str(plain_onnx))
    names = [p.get_any_name() for p in model.inputs]
    calib = [{n: np.asarray(f[n]) for n in names} for f in feeds]
    n_examples = sum(len(f[names[0]]) for f in calib)
    t0 = time.perf_counter()
    info: dict[str, Any] = {"method": "nncf", "nncf_version": nncf.__version__, "model_type": "TRANSFORMER",
                            "n_calibration_batches": len(calib), "n_calibration_examples": n_examples}
    if validation is None:
        q = nncf.quantize(model, nncf.Dataset(calib), model_type=nncf.ModelType.TRANSFORMER,
                          subset_size=len(calib))
        info["api"] = "nncf.quantize"
    else:
        val = [({n: np.asarray(f[n]) for n in names}, np.asarray(y)) for f, y in validation]
        q = nncf.quantize_with_accuracy_control(
            model, nncf.Dataset(calib), nncf.Dataset(val, lambda item: item[0]), _agreement_fn(),
            max_drop=float(max_drop), drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib),
            model_type=nncf.ModelType.TRANSFORMER,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=max_iterations))
        info.update(api="nncf.quantize_with_accuracy_control", max_drop=float(max_drop), max_iterations=max_iterations,
                    n_validation_examples=int(sum(len(y) for _, y in val)))
    # subset_size counts dataset items (our batches), not examples: all of them are used
    info["quantize_s"] = round(time.perf_counter() - t0, 2)
    xml = save_ir(q, out_dir, plain_onnx.parent)
    return xml, info


def _agreement_fn() -> Callable[[Any, Any], float]:
    """NNCF's validation_fn: the fraction of examples whose argmax matches the reference labels."""

    def fn(compiled: Any, items: Any) -> float:
        hit = n = 0
        for feed, ref in items:
            logits = np.asarray(compiled(feed)[0])
            hit += int((logits.argmax(-1) == ref).sum())
            n += len(ref)
        return hit / max(n, 1)

    return fn
