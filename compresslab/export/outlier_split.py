"""Outlier split for dynamic int8: the few outlier channels of each FFN MatMul input computed in fp32.

ONNX Runtime's dynamic int8 quantizes a MatMul input with one uint8 scale per call, set by the largest
|value| in the tensor. In BERT-family encoders that maximum comes from a handful of fixed channels (LLM.int8(),
Dettmers et al., 2022, §4 "emergent large magnitude features"; Bondarenko et al., 2021, "Understanding and
overcoming the challenges of efficient transformer quantization", §3). On the bench MiniLM teacher (SST-2) one
hidden channel of the FFN input reaches |x| = 28 against a per-channel median of 2, and one FFN neuron's GELU
output reaches 24 against 1.5: the scale is set 4-10x too coarse for every other channel. LLM.int8()'s
mixed-precision decomposition (§3.2) computes the outlier columns in fp16 and the rest in int8. It finds them
at run time (|x| >= 6 in any row of the call); here the set is **static**, chosen once from calibration data,
so the graph needs no data-dependent shapes and ORT's int8 kernels stay as they are. The rewrite works on the
fused fp32 graph, for the FFN block ``MatMul(X, W1) -> BiasGelu(b1) | FastGelu(., b1) -> MatMul(H, W2)``
(both activations are 0 at 0), before quantization:

* **FFN input channels** ``C`` (of ``X``): the int8 MatMul reads ``X * m`` (``m`` = 0 on ``C``, 1 elsewhere),
  and ``Gather(X, C) @ W1[C, :]`` (fp32, rank |C|) is added to its output before ``BiasGelu``.
* **FFN neurons** ``K`` (channels of ``H``): column ``K`` of ``W1`` and entry ``K`` of ``b1`` are set to 0, so
  ``H[:, K] = gelu(0) = 0`` in the int8 path and row ``K`` of ``W2`` (also 0) never matters; the side path
  ``gelu(X @ W1[:, K] + b1[K]) @ W2[K, :]`` (fp32, the block's own activation op and attributes) is added to
  the second MatMul's output. Zeroing instead
  of removing keeps the int8 GEMMs at their original widths (aligned; ~1% faster on MiniLM than 1,535 columns).

In fp32 the rewritten graph equals the original up to summation order (the tests check logits to 1e-4 relative).
The side MatMuls (names returned) must stay fp32: pass them to the quantizer's ``nodes_to_exclude``. Cost on
MiniLM at b32xs128 (AVX2): ~0.91-0.94x the all-int8 speed, most of it the FFN-input side path's add over the
1,536-wide output (benchmarks/RESULTS.md, "Outlier split").

Which channels: per input, the channels whose calibration max |x| exceeds ``ratio`` x the median channel's,
the largest first, at most ``max_channels``. Calibration runs the fp32 graph on the given batches (padding
included: ``DynamicQuantizeLinear`` sees it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compresslab.export.ort_quant import atomic_output

log = logging.getLogger(__name__)

__all__ = ["FfnBlock", "OutlierSplitError", "channel_absmax", "ffn_blocks", "outlier_channels", "split_outliers"]

# the fused graph's FFN activation with its bias folded in (ORT's BERT fusion: MatMul -> BiasGelu; FastGelu for
# tanh-GELU models); both are 0 at 0, which the neuron split relies on
GELU_OPS = ("BiasGelu", "FastGelu")
PREFIX = "/outlier_split/"


class OutlierSplitError(ValueError):
    """Bad settings, or a graph without the FFN pattern the split rewrites."""


@dataclass(frozen=True)
class FfnBlock:
    """One FFN block of the fused graph: node names and the tensors the split reads."""

    up: str      # MatMul(X, W1)
    act: str     # BiasGelu(., b1)
    down: str    # MatMul(H, W2)
    x: str       # the block's input X (hidden states)
    h: str       # the activation's output H (the down MatMul's input)


def _check(ratio: float, max_channels: int) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (1.0 < ratio < float("inf")):
        raise OutlierSplitError(f"outlier ratio must be a number > 1 (x the median channel's max |x|), got {ratio!r}")
    if isinstance(max_channels, bool) or not isinstance(max_channels, int) or max_channels < 1:
        raise OutlierSplitError(f"outlier max_channels must be an integer >= 1, got {max_channels!r}")


def ffn_blocks(model: onnx.ModelProto) -> list[FfnBlock]:
    """The ``MatMul -> BiasGelu|FastGelu (bias) -> MatMul`` blocks with initializer weights, in graph order; no
    node belongs to two blocks (a chain ``MatMul -> gelu -> MatMul -> gelu -> MatMul`` gives its first block)."""
    inits = {t.name for t in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    out: list[FfnBlock] = []
    taken: set[str] = set()
    for up in model.graph.node:
        if up.op_type != "MatMul" or len(up.input) < 2 or up.input[1] not in inits or up.name in taken:
            continue
        act = readers.get(up.output[0], [])
        if len(act) != 1 or act[0].op_type not in GELU_OPS or act[0].input[0] != up.output[0] \
                or len(act[0].input) < 2 or act[0].input[1] not in inits:
            continue
        down = readers.get(act[0].output[0], [])
        if len(down) != 1 or down[0].op_type != "MatMul" or down[0].input[0] != act[0].output[0] \
                or down[0].input[1] not in inits:
            continue
        if not (up.name and act[0].name and down[0].name) or down[0].name in taken:
            continue
        taken |= {up.name, act[0].name, down[0].name}
        out.append(FfnBlock(up.name, act[0].name, down[0].name, up.input[0], act[0].output[0]))
    return out


def _after_weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """What follows each weight MatMul (for the error when no FFN block matches)."""
    inits = {t.name for t in model.graph.initializer}
    readers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    return sorted({op for n in model.graph.node if n.op_type == "MatMul" and len(n.input) > 1
                   and n.input[1] in inits for op in readers.get(n.output[0], [])})


def channel_absmax(path: str | Path, feeds: Iterable[Mapping[str, Any]], tensors: list[str],
                   threads: int | None = None) -> dict[str, np.ndarray]:
    """Max |x| per last-axis channel of each of ``tensors`` (intermediate fp32 values of ``path``) over ``feeds``.

    Returns ``{tensor: (channels,) float64}``. ``OutlierSplitError`` if ``feeds`` is empty.
    """
    import onnxruntime as ort

    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in have:
            model.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    from compresslab.eval.onnx_runner import _ORT_TO_NUMPY, make_feeds

    inputs = {i.name: np.dtype(_ORT_TO_NUMPY.get(i.type, np.float32)) for i in sess.get_inputs()}
    out: dict[str, np.ndarray] = {}
    for feed in feeds:
        vals = sess.run(tensors, make_feeds(feed, inputs))
        for t, v in zip(tensors, vals):
            m = np.abs(np.asarray(v, np.float64)).reshape(-1, v.shape[-1]).max(axis=0)
            out[t] = np.maximum(out[t], m) if t in out else m
    if not out:
        raise OutlierSplitError("outlier split needs at least one calibration batch")
    return out


def outlier_channels(absmax: np.ndarray, ratio: float, max_channels: int) -> list[int]:
    """Channels whose ``absmax`` exceeds ``ratio`` x the median channel's, the largest first, at most
    ``max_channels`` (sorted ascending). ``absmax``: ``(channels,)``."""
    _check(ratio, max_channels)
    a = np.asarray(absmax, np.float64)
    level = ratio * float(np.median(a))
    order = np.argsort(-a, kind="stable")[:max_channels]
    return sorted(int(j) for j in order if a[j] > level)


def split_outliers(src: str | Path, dst: str | Path, feeds: Iterable[Mapping[str, Any]], *, ratio: float = 3.0,
                   max_channels: int = 8, threads: int | None = None) -> dict[str, Any]:
    """Rewrite the fused fp32 graph ``src`` into ``dst`` (atomically) with each FFN block's outlier channels
    on an fp32 side path (module docstring), chosen on ``feeds`` (calibration batches: the graph's inputs as
    numpy arrays).

    Returns the record: ``side_nodes`` (the fp32 MatMuls: exclude them from quantization), per block the
    input channels and neurons split with their max |x| and the median's, and the settings.
    Raises ``OutlierSplitError`` for ``ratio`` not in (1, inf), ``max_channels < 1``, no calibration batch, a
    graph already split or with duplicate node names, or one without an FFN ``MatMul -> BiasGelu|FastGelu ->
    MatMul`` block (fuse it first: ``export.ort_quant.ensure_fused``). A batch missing an input the graph needs
    is a ``ValueError`` naming it (``eval.onnx_runner.make_feeds``; a missing ``token_type_ids`` is zeros).
    """
    _check(ratio, max_channels)
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    names = [n.name for n in model.graph.node if n.name]
    if any(n.startswith(PREFIX) for n in names):
        raise OutlierSplitError(f"{src.name} is already outlier-split (it has {PREFIX} nodes): split the fp32 "
                                "graph once")
    if len(names) != len(set(names)):
        raise OutlierSplitError(f"{src.name} has duplicate node names; the split places its nodes by name")
    blocks = ffn_blocks(model)
    if not blocks:
        raise OutlierSplitError(
            f"{src.name} has no fused FFN block (MatMul -> {' | '.join(GELU_OPS)} with a bias -> MatMul, weights "
            f"as initializers); after its weight MatMuls come {_after_weight_matmuls(model) or 'nothing'}. Quantize "
            "the fused graph (the int8 pass's optimize: true fuses an unfused export), or use outliers: none")
    log.info("outlier split: %d FFN blocks in %s", len(blocks), src.name)
    stats = channel_absmax(src, feeds, sorted({t for b in blocks for t in (b.x, b.h)}), threads)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes = {n.name: n for n in g.node}
    after: dict[str, list[onnx.NodeProto]] = {}   # new nodes placed right after a given node
    before: dict[str, list[onnx.NodeProto]] = {}  # ... right before it
    side: list[str] = []
    record = []

    replaced: set[str] = set()  # initializers the rewrite stopped reading (removed below if nothing else does)

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def replace_weight(node: onnx.NodeProto, idx: int, value: np.ndarray, name: str) -> None:
        replaced.add(node.input[idx])
        node.input[idx] = const(name, value.astype(np.float32))

    for i, b in enumerate(blocks):
        up, act, down = nodes[b.up], nodes[b.act], nodes[b.down]
        w1 = numpy_helper.to_array(inits[up.input[1]]).astype(np.float32)
        b1 = numpy_helper.to_array(inits[act.input[1]]).astype(np.float32)
        w2 = numpy_helper.to_array(inits[down.input[1]]).astype(np.float32)
        cin = outlier_channels(stats[b.x], ratio, max_channels)
        neurons = outlier_channels(stats[b.h], ratio, max_channels)
        record.append({"block": b.up, "input_channels": cin, "neurons": neurons,
                       "input_absmax": [round(float(stats[b.x][c]), 3) for c in cin],
                       "input_median": round(float(np.median(stats[b.x])), 3),
                       "neuron_absmax": [round(float(stats[b.h][c]), 3) for c in neurons],
                       "neuron_median": round(float(np.median(stats[b.h])), 3)})
        if not cin and not neurons:
            continue
        p = f"/outlier_split/{i}"
        if neurons:  # the neurons' side path reads the original X and weights; the int8 path sees H[:, K] = 0
            k = np.asarray(neurons)
            down_out = down.output[0]
            down.output[0] = f"{p}/down_int8"
            after.setdefault(b.down, []).extend([
                helper.make_node("MatMul", [b.x, const(f"{p}/w1_neurons", w1[:, k])], [f"{p}/up_neurons"],
                                 name=f"{p}/up_neurons_MatMul"),
                helper.make_node(act.op_type, [f"{p}/up_neurons", const(f"{p}/b1_neurons", b1[k])],
                                 [f"{p}/h_neurons"], name=f"{p}/gelu_neurons", domain=act.domain,
                                 **{a.name: helper.get_attribute_value(a) for a in act.attribute}),
                helper.make_node("MatMul", [f"{p}/h_neurons", const(f"{p}/w2_neurons", w2[k, :])],
                                 [f"{p}/down_neurons"], name=f"{p}/down_neurons_MatMul"),
                helper.make_node("Add", [f"{p}/down_int8", f"{p}/down_neurons"], [down_out], name=f"{p}/down_add"),
            ])
            side += [f"{p}/up_neurons_MatMul", f"{p}/down_neurons_MatMul"]
            w1, b1, w2 = w1.copy(), b1.copy(), w2.copy()
            w1[:, k], b1[k], w2[k, :] = 0.0, 0.0, 0.0
            replace_weight(up, 1, w1, f"{p}/w1")
            replace_weight(act, 1, b1, f"{p}/b1")
            replace_weight(down, 1, w2, f"{p}/w2")
        if cin:  # the int8 path reads X with C zeroed; C's share is an fp32 rank-|C| product added back
            c = np.asarray(cin)
            mask = np.ones(w1.shape[0], np.float32)
            mask[c] = 0.0
            up_out = up.output[0]
            up.output[0] = f"{p}/up_int8"
            before.setdefault(b.up, []).extend([
                helper.make_node("Mul", [b.x, const(f"{p}/mask", mask)], [f"{p}/x_masked"], name=f"{p}/mask_Mul"),
                helper.make_node("Gather", [b.x, const(f"{p}/channels", c.astype(np.int64))], [f"{p}/x_outliers"],
                                 name=f"{p}/channels_Gather", axis=-1),
            ])
            after.setdefault(b.up, []).extend([
                helper.make_node("MatMul", [f"{p}/x_outliers", const(f"{p}/w1_channels", w1[c, :])],
                                 [f"{p}/up_channels"], name=f"{p}/up_channels_MatMul"),
                helper.make_node("Add", [f"{p}/up_int8", f"{p}/up_channels"], [up_out], name=f"{p}/up_add"),
            ])
            up.input[0] = f"{p}/x_masked"
            side.append(f"{p}/up_channels_MatMul")

    ordered = []
    for n in g.node:
        ordered += before.get(n.name, []) + [n] + after.get(n.name, [])
    del g.node[:]
    g.node.extend(ordered)
    used = {i for n in g.node for i in n.input}
    gone = replaced - used  # only what the rewrite replaced: other unused initializers are not ours to drop
    kept = [t for t in g.initializer if t.name not in gone]
    del g.initializer[:]
    g.initializer.extend(kept)
    inputs = [i for i in g.input if i.name not in gone]  # a graph that lists its weights as inputs
    del g.input[:]
    g.input.extend(inputs)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with atomic_output(dst) as out:
        onnx.save(model, str(out))
    return {"method": "outlier_split", "ratio": float(ratio), "max_channels": int(max_channels),
            "side_nodes": side, "blocks": record,
            "split_input_channels": sum(len(r["input_channels"]) for r in record),
            "split_neurons": sum(len(r["neurons"]) for r in record),
            "reference": "LLM.int8() mixed-precision decomposition (Dettmers et al., 2022, §3.2), per FFN block"}
