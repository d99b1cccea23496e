"""SmoothQuant on an ONNX graph: move activation outliers into the weights before int8 calibration.

Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models" (ICML 2023), eq. 4: for a weight MatMul ``Y = X W`` (``X``: (..., in), ``W``: (in, out)),
a per-input-channel scale ``s_j = max|X_j|^alpha / max_k |W_jk|^(1 - alpha)`` gives the exactly
equivalent ``Y = (X diag(s)^-1) (diag(s) W)``, whose activation has flatter channels (easier to
quantize per tensor) at the cost of slightly harder per-channel weights. ``alpha = 0.5`` balances
the two: afterwards ``max|X'_j| == max_k |W'_jk|`` for every channel ``j``.

Here ``X diag(s)^-1`` is an explicit ``Mul`` by a constant (OpenVINO folds it into the preceding
LayerNorm's affine or keeps a cheap elementwise op; either way the int8 quantizer then calibrates the
smoothed activation). MatMuls that read the same ``X`` (query, key, value) share one scale, with
``max|W_j|`` taken over all of them. Activation maxima come from the calibration feeds only (train
data; MEASURE.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


def weight_matmuls(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Activation name -> the MatMul nodes computing ``activation @ W`` with ``W`` a 2-D initializer."""
    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2 \
                and n.input[0] not in inits:
            out.setdefault(n.input[0], []).append(n)
    return out


def activation_absmax(model: onnx.ModelProto, names: Sequence[str],
                      feeds: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |value| of each named intermediate over ``feeds`` (ORT, fp32)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for name in names:
        if name not in have:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every named value
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    stats: dict[str, np.ndarray] = {}
    n_feeds = 0
    for feed in feeds:
        vals = sess.run(list(names), {k: np.asarray(v) for k, v in feed.items() if k in inputs})
        for name, v in zip(names, vals):
            m = np.abs(v.reshape(-1, v.shape[-1])).max(axis=0)
            stats[name] = m if name not in stats else np.maximum(stats[name], m)
        n_feeds += 1
    if not n_feeds:
        raise ValueError("SmoothQuant needs at least one calibration batch")
    return stats


def smooth_scales(act_max: np.ndarray, w_max: np.ndarray, alpha: float) -> np.ndarray:
    """``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)`` (SmoothQuant eq. 4), 1 where a channel is all zero."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    a = np.maximum(act_max.astype(np.float64), 1e-5)
    w = np.maximum(w_max.astype(np.float64), 1e-5)
    s = a ** alpha / w ** (1.0 - alpha)
    s[(act_max == 0) | (w_max == 0)] = 1.0
    return s.astype(np.float32)


def smooth_onnx(src: str | Path, dst: str | Path, feeds: Iterable[Mapping[str, Any]], *,
                alpha: float = 0.5) -> dict[str, Any]:
    """Write ``src`` with SmoothQuant applied to every weight MatMul as ``dst`` (fp32, equivalent).

    ``feeds``: calibration batches (graph inputs as numpy arrays). Returns what was smoothed:
    ``n_activations`` (distinct X), ``n_matmuls``, ``alpha``, and the largest/median scale.
    Raises ValueError for an ``alpha`` outside [0, 1] or no feeds.
    """
    model = onnx.load(str(src))
    groups = weight_matmuls(model)
    if not groups:
        onnx.save(model, str(dst))
        return {"alpha": alpha, "n_activations": 0, "n_matmuls": 0}
    stats = activation_absmax(model, list(groups), feeds)
    inits = {i.name: i for i in model.graph.initializer}
    new_nodes: dict[str, onnx.NodeProto] = {}  # activation -> the Mul that smooths it
    all_s = []
    for x, nodes in groups.items():
        weights = {n.input[1]: numpy_helper.to_array(inits[n.input[1]]) for n in nodes}
        w_max = np.max([np.abs(w).max(axis=1) for w in weights.values()], axis=0)
        s = smooth_scales(stats[x], w_max, alpha)
        all_s.append(s)
        for name, w in weights.items():  # diag(s) W; a weight shared by two activations is not expected
            inits[name].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(w.dtype), name))
        inv = f"{x}_smooth_inv_scale"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        out = f"{x}_smoothed"
        new_nodes[x] = onnx.helper.make_node("Mul", [x, inv], [out], name=f"{x}_SmoothQuant")
        for n in nodes:
            n.input[0] = out
    # insert each Mul right before its first consumer so the graph stays topologically sorted
    ordered: list[onnx.NodeProto] = []
    placed: set[str] = set()
    for n in model.graph.node:
        for i in n.input:
            src_x = i[: -len("_smoothed")] if i.endswith("_smoothed") else None
            if src_x in new_nodes and src_x not in placed:
                ordered.append(new_nodes[src_x])
                placed.add(src_x)
        ordered.append(n)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    s_all = np.concatenate(all_s)
    return {"alpha": alpha, "n_activations": len(groups), "n_matmuls": sum(len(v) for v in groups.values()),
            "scale_max": float(s_all.max()), "scale_median": float(np.median(s_all))}
