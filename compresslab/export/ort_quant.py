"""ONNX Runtime int8 quantization of an exported (fused) encoder: dynamic and static QDQ.

Both work on the fused graph, the one we deploy, so int8 keeps the fused kernels:

* dynamic: weights int8 offline, activations quantized per call. ``Attention`` becomes
  ``QAttention`` and embeddings ``QEmbedLayerNormalization``. ``DefaultTensorType=FLOAT`` is
  required: ONNX shape inference cannot type the outputs of contrib ops (``Attention``,
  ``SkipLayerNormalization``), and without a default the quantizer aborts ("Unable to find data
  type for weight_name").
* static QDQ: activation ranges calibrated on train batches; Q/DQ pairs around the MatMuls, which
  ORT folds into int8 kernels at load. ``quant_pre_process`` runs symbolic shape inference first:
  on the fused graph it is what types the contrib-op outputs (skipping it leaves the classifier
  uncalibrated: "Unable to get valid quantization scale ... bias"). It fails on the unfused
  transformers-5 graph ("Incomplete symbolic shape inference"), so there we fall back to
  ``skip_symbolic_shape=True`` and record which one ran.

The ORT tools drop large scratch files (augmented models, ``sym_shape_infer_temp.onnx``, external
``.data``) into the current directory; they run inside a temporary directory, and outputs are
written atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx

from compresslab.eval.onnx_runner import make_feeds
from compresslab.export.optimize import count_ops, heads_and_hidden, optimize_graph

# op types whose presence shows what got quantized (reported in metrics)
_QUANT_OPS = ("MatMulInteger", "QAttention", "QEmbedLayerNormalization", "DynamicQuantizeLinear",
              "QuantizeLinear", "DequantizeLinear", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat")


class CalibrateMethod(str, Enum):
    """How static quantization turns observed activations into ranges."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class QuantDType(str, Enum):
    """8-bit storage type. x86 int8 kernels prefer uint8 activations with int8 weights (U8S8)."""

    INT8 = "int8"
    UINT8 = "uint8"


@contextlib.contextmanager
def scratch_cwd() -> Iterator[Path]:
    """Run inside a fresh temporary directory (the ORT tools' litter lands there), then clean up.

    The working directory is process-wide: do not quantize from several threads at once.
    """
    old = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="compresslab-ortq-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


class _DropPreprocessHint(logging.Filter):
    """Drops ORT's "Please consider (to run) pre-processing before quantization" root-logger warning,
    which points at its image-classification example: dynamic int8 of our fused graph needs no
    pre-processing (DefaultTensorType types the contrib ops), and static QDQ runs quant_pre_process."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in str(record.msg)


@contextlib.contextmanager
def quiet_preprocess_hint() -> Iterator[None]:
    """Hide that one ORT warning during a quantize call (ORT logs it on the root logger)."""
    root, f = logging.getLogger(), _DropPreprocessHint()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


@contextlib.contextmanager
def atomic_output(dst: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``dst``; it replaces ``dst`` only if the block succeeds."""
    dst = Path(dst).resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def quant_metrics(src: Path, dst: Path, **extra: Any) -> dict[str, Any]:
    """Sizes of ``src`` and ``dst`` and the quantized op counts of ``dst`` (a pass's metrics), plus ``extra``."""
    ops = count_ops(dst)
    before, after = src.stat().st_size, dst.stat().st_size
    return {"size_bytes": after, "size_bytes_input": before, "size_ratio": after / before,
            "quantized_ops": {k: ops[k] for k in _QUANT_OPS if ops[k]}, **extra}


def _graph_inputs(path: Path) -> dict[str, Any]:
    """Graph input names -> numpy dtypes, read without loading weights."""
    import numpy as np
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name for t in graph.initializer}
    return {i.name: np.dtype(tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
            for i in graph.input if i.name not in inits}


def ensure_fused(onnx_path: str | Path, config: Any, work_dir: str | Path) -> tuple[Path, bool]:
    """``onnx_path`` if it already has fused Attention nodes, else a fused copy in ``work_dir``.

    Returns ``(path, fused_here)``. Quantizing an unfused graph loses the fused kernels.
    """
    onnx_path = Path(onnx_path)
    if count_ops(onnx_path)["Attention"] > 0:
        return onnx_path, False
    heads, hidden = heads_and_hidden(config)
    out = Path(work_dir) / "fused.onnx"
    optimize_graph(onnx_path, out, num_heads=heads, hidden_size=hidden)
    return out, True


def check_op_types(p: Any, registry: str) -> list[str] | None:
    """Pass ``p``'s ``op_types`` as a plain list (Hydra gives ListConfig), each a type ORT can quantize.

    ``registry`` names the ORT table: ``IntegerOpsRegistry`` (dynamic) or ``QDQRegistry`` (static).
    """
    if p.op_types is None:
        return None
    if isinstance(p.op_types, str) or not all(isinstance(t, str) for t in p.op_types):
        raise ValueError(f"{p.name} op_types must be a list of op type names, got {p.op_types!r}")
    ops = [str(t) for t in p.op_types]
    if not ops:
        raise ValueError(f"{p.name} op_types is empty; use null to quantize every supported op")
    from onnxruntime.quantization import registry as ort_registry

    allowed = sorted(getattr(ort_registry, registry))
    unknown = [t for t in ops if t not in allowed]
    if unknown:
        raise ValueError(f"{p.name} op_types {unknown} cannot be quantized; allowed: {', '.join(allowed)}")
    return ops


def read_export_config(model_dir: str | Path) -> dict[str, Any]:
    """The export directory's ``config.json`` (heads and hidden size for fusion)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: ONNX passes need the export directory's config.json "
                                "(export_model writes it next to model.onnx)")
    return json.loads(path.read_text())


def copy_model_files(src_dir: str | Path, dst_dir: str | Path) -> list[str]:
    """Copy config, tokenizer and other side files (not graphs or parity) so ``dst_dir`` loads alone."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in sorted(src_dir.iterdir()):
        if f.is_file() and f.suffix not in (".onnx", ".data") and f.name != "parity.json":
            shutil.copy2(f, dst_dir / f.name)
            copied.append(f.name)
    return copied


def quantize_dynamic_int8(src: str | Path, dst: str | Path, *, per_channel: bool = True,
                          reduce_range: bool = False, op_types: Sequence[str] | None = None,
                          nodes_to_exclude: Sequence[str] = (),
                          nodes_to_quantize: Sequence[str] | None = None) -> dict[str, Any]:
    """Dynamic int8 (weights int8, activations per call) of ``src`` into ``dst``; returns metrics.

    ``nodes_to_exclude``: node names left fp32; ``nodes_to_quantize``: if given, only these are
    quantized. Names are those ORT's quantizer sees: it rewrites a ``Gemm`` into ``<name>_MatMul``
    (+ ``<name>_Add``) first (see ``quant.guided_int8.quantizable_matmuls``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if nodes_to_quantize is not None and not list(nodes_to_quantize):
        raise ValueError("nodes_to_quantize is empty (ORT would quantize every node); pass None for all")
    src = Path(src).resolve()
    with atomic_output(dst) as out, scratch_cwd(), quiet_preprocess_hint():
        quantize_dynamic(src, out, per_channel=per_channel, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types) if op_types else None,
                         nodes_to_exclude=list(nodes_to_exclude) or None,
                         nodes_to_quantize=list(nodes_to_quantize) if nodes_to_quantize is not None else None,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return quant_metrics(src, Path(dst), method="dynamic", per_channel=per_channel, reduce_range=reduce_range,
                    **({"n_excluded": len(nodes_to_exclude)} if nodes_to_exclude else {}))


def quantize_static_qdq(src: str | Path, dst: str | Path, batches: Iterable[Mapping[str, Any]], *,
                        per_channel: bool = True, reduce_range: bool = False,
                        calibrate_method: CalibrateMethod | str = CalibrateMethod.MINMAX,
                        activation_type: QuantDType | str = QuantDType.UINT8,
                        weight_type: QuantDType | str = QuantDType.INT8,
                        op_types: Sequence[str] | None = None, quant_format: str = "qdq",
                        nodes_to_exclude: Sequence[str] = (),
                        extra_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Static int8 of ``src`` into ``dst``, calibrated on ``batches``; returns metrics.

    ``nodes_to_exclude``: node names left in fp32 (e.g. :func:`activation_matmuls`).
    ``batches`` are our loader's dicts (torch or numpy); only the graph's inputs are fed.
    ``quant_format``: ``qdq`` (Quantize/DequantizeLinear pairs) or ``qoperator`` (QLinearMatMul...).
    ``extra_options``: more of ``quantize_static``'s ``extra_options`` (e.g.
    ``OpTypesToExcludeOutputQuantization``, ``DedicatedQDQPair``); recorded in the metrics.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    if quant_format not in formats:
        raise ValueError(f"quant_format must be one of {sorted(formats)}, got {quant_format!r}")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[CalibrateMethod(calibrate_method).value]
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    src = Path(src).resolve()
    inputs = _graph_inputs(src)
    feeds = [make_feeds(b, inputs) for b in batches]  # materialized: the calibrator may iterate more than once
    if not feeds:
        raise ValueError("static quantization needs at least one calibration batch")
    if CalibrateMethod(calibrate_method) != CalibrateMethod.MINMAX:
        feeds = uniform_feeds(feeds)  # histogram calibrators np.asarray() every batch's values together

    class _Reader(CalibrationDataReader):
        """Hands the calibrator one feed dict per call; ``rewind`` allows a second pass."""

        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(feeds)

    with atomic_output(dst) as out, scratch_cwd() as work, quiet_preprocess_hint():
        pre = work / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
            shape_inference = "symbolic"
        except Exception:  # noqa: BLE001 - ORT raises bare Exception for incomplete inference
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            shape_inference = "onnx"
        quantize_static(str(pre), str(out), _Reader(), quant_format=formats[quant_format], per_channel=per_channel,
                        reduce_range=reduce_range, activation_type=qtype[QuantDType(activation_type).value],
                        weight_type=qtype[QuantDType(weight_type).value], calibrate_method=method,
                        op_types_to_quantize=list(op_types) if op_types else None,
                        nodes_to_exclude=list(nodes_to_exclude) or None,
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, **(extra_options or {})})
    return quant_metrics(src, Path(dst), method=f"static_{quant_format}", n_excluded=len(nodes_to_exclude),
                    per_channel=per_channel, reduce_range=reduce_range,
                    calibrate_method=CalibrateMethod(calibrate_method).value, n_calibration_batches=len(feeds),
                    n_calibration_examples=sum(len(f["input_ids"]) for f in feeds if "input_ids" in f),
                    shape_inference=shape_inference,
                    **({"extra_options": json.loads(json.dumps(dict(extra_options), default=str))} if extra_options else {}))


def _graph(path_or_graph: str | Path | onnx.GraphProto) -> onnx.GraphProto:
    """A graph already loaded, or the one in the file (weights not needed: external data not read)."""
    if isinstance(path_or_graph, onnx.GraphProto):
        return path_or_graph
    return onnx.load(str(path_or_graph), load_external_data=False).graph


def activation_matmuls(path: str | Path | onnx.GraphProto) -> list[str]:
    """Names of the MatMul nodes whose inputs are both activations (attention's Q.K^T and P.V), as
    opposed to the weight MatMuls (one input an initializer, possibly through a Transpose).
    ``path``: a file, or its graph already loaded."""
    graph = _graph(path)
    consts = {i.name for i in graph.initializer}
    consts |= {o for n in graph.node if n.op_type in ("Constant", "Transpose") and
               (n.op_type == "Constant" or all(i in consts for i in n.input)) for o in n.output}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in consts for i in n.input)]


def attention_score_matmuls(path: str | Path | onnx.GraphProto) -> list[str]:
    """Of :func:`activation_matmuls`, attention's Q.K^T: those whose output reaches a Softmax through the
    score's elementwise ops (scale, mask: Mul, Div, Add, Sub, Where, Cast, Identity), at most 6 ops on.
    P.V (an input from the Softmax) and anything else stay out. ``path``: a file, or its graph."""
    graph = _graph(path)
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    between = {"Mul", "Div", "Add", "Sub", "Where", "Cast", "Identity"}

    def reaches_softmax(tensor: str, depth: int = 6) -> bool:
        for n in readers.get(tensor, []):
            if n.op_type == "Softmax" or (depth > 0 and n.op_type in between
                                          and any(reaches_softmax(o, depth - 1) for o in n.output)):
                return True
        return False

    acts = set(activation_matmuls(graph))
    return [n.name for n in graph.node if n.name in acts and reaches_softmax(n.output[0])]


def uniform_feeds(feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The same examples as one-example feeds of one shape: every (batch, seq) input right-padded with
    zeros to the longest seq (attention_mask 0, so the model ignores the added positions; the id is
    irrelevant under the mask), then split by example (a last, smaller batch would be ragged too)."""
    longest = max(int(np.shape(v)[1]) for f in feeds for v in f.values() if np.ndim(v) == 2)
    out = []
    for f in feeds:
        padded = {k: np.pad(v, ((0, 0), (0, longest - v.shape[1]))) if np.ndim(v) == 2 else v for k, v in f.items()}
        n = len(next(iter(padded.values())))
        out.extend({k: v[i:i + 1] for k, v in padded.items()} for i in range(n))
    return out
