"""Per-token dynamic int8: one activation scale per token instead of one per call.

ONNX Runtime's dynamic int8 quantizes each MatMul input with ``DynamicQuantizeLinear``: ONE uint8 scale and
zero point over the whole tensor, i.e. over every token of every sentence in the call, padding included
(ONNX operator spec). Two faults follow. A few tokens with outlier activations (BERT's [SEP]/[CLS] and
punctuation carry them) set the scale for all others, so ordinary tokens get few levels; and a sentence's
logits depend on its batchmates (``eval/batch_dependence.py``). LLM.int8() (Dettmers et al., 2022, §3.1:
"vector-wise quantization") and ZeroQuant (Yao et al., 2022, §4.1: "token-wise quantization") quantize
activations per row instead.

:func:`per_token_activations` rewrites a dynamic-int8 file so: each ``DynamicQuantizeLinear`` becomes

    s  = max(max(ReduceMax(X), -ReduceMin(X)) / 127, eps)            # [..., 1], one scale per token (max |X|)
    Xq = QuantizeLinear(X, s, 128) per token                           # Round(X / s) + 128: codes 1..255

with the scalar zero point 128. ORT's ``MatMulInteger`` takes only a scalar ``a_zero_point``
(onnxruntime#27897), which a symmetric code keeps; the uint8 code keeps its fast u8s8 kernels. A token's
codes, and so its output, depend on that token alone.

ORT's quantizer rescales with ``Mul(Cast(MatMulInteger(..)), Mul(a_scale, b_scale))``, and ORT fuses that
pattern at load into ``MatMulIntegerToFloat``, whose ``a_scale`` is one value per tensor (or per column of
A): given a per-token scale it computes wrong outputs (tests/unit/export/test_per_token_int8.py). The
rewrite therefore writes ``MatMulIntegerToFloat(A, B, 1, b_scale, ...)`` itself and multiplies by the
per-token scale after it (``Mul(Mul(Cast(Y), b_scale), a_scale)`` where the MatMulInteger feeds anything
else). The output uses com.microsoft ops: it is a file for ONNX Runtime only, like every dynamic-int8 file.

Fused ``QAttention`` / ``DynamicQuantizeMatMul`` take a scalar input scale: the ``DynamicQuantizeLinear``
feeding them is left per call and counted (``kept_per_call``), so such a file still depends on the batch
(quantize the plain export, or the fused one with ``op_types=["MatMul"]``, for a file that does not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compresslab.export.ort_quant import atomic_output

# scale floor: an all-zero row would otherwise divide by zero (its codes are then all 128: exact zeros)
EPS = 1e-12


class PerTokenError(ValueError):
    """The file cannot take per-token activation scales (see the module docstring)."""


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def per_token_activations(src: str | Path, dst: str | Path, matmuls: Collection[str] | None = None) -> dict[str, Any]:
    """Rewrite the ``DynamicQuantizeLinear`` nodes of the dynamic-int8 ONNX file ``src`` whose scale and zero
    point feed only ``Mul`` and ``MatMulInteger`` into per-token symmetric uint8 quantization (module
    docstring); write the result to ``dst`` atomically. Those feeding an op that takes one scale per call
    (``QAttention``, ``DynamicQuantizeMatMul``) stay as they are.

    ``matmuls``: if given, only the inputs of these MatMuls are rewritten (their names before quantization, as
    ``nodes_to_exclude`` takes them; a Gemm is ``<name>_MatMul``); an input shared by several MatMuls only if
    all of them are named; the others stay per call. A name the file does not have raises.

    Returns ``{"rewritten": n, "kept_per_call": m, "kept_for": [op types], "method": "per_token_symmetric_u8"}``.
    Raises :class:`PerTokenError` when ``src`` has no ``DynamicQuantizeLinear`` (not a dynamic-int8 file, or
    already per token), none that can take a per-token scale (one feeding B of a MatMulInteger, QAttention, or
    a graph output cannot), its opset is below 13, or ``matmuls`` names an unknown MatMul; ``TypeError`` when
    ``matmuls`` is a string.
    """
    if isinstance(matmuls, str):
        raise TypeError(f"matmuls must be a collection of MatMul names, not the string {matmuls!r}")
    model = onnx.load(str(src))
    graph = model.graph
    if _opset(model) < 13:  # QuantizeLinear takes a per-axis scale from opset 13
        raise PerTokenError(f"{src}: opset {_opset(model)} < 13; per-token scales need a per-axis QuantizeLinear")
    dqls = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    if not dqls:
        already = any(n.name.endswith("_per_token_Quantize") for n in graph.node)
        raise PerTokenError(f"{src}: no DynamicQuantizeLinear to rewrite "
                            + ("(its activations are already per token)" if already else "(not a dynamic-int8 file)"))
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    selectable = {c.name.removesuffix("_quant") for c in graph.node if c.op_type == "MatMulInteger"}
    if matmuls is not None:
        unknown = sorted(set(matmuls) - selectable)
        if unknown:
            raise PerTokenError(f"{src}: matmuls {unknown} are not dynamic-int8 MatMuls of this file (a Gemm is "
                                f"named '<name>_MatMul' after quantization); known: {sorted(selectable)}")
    targets, kept_for = [], set()
    rescale: dict[str, tuple[str, str]] = {}  # per-call rescale Mul output -> (its b_scale, the token scale)
    for n in dqls:
        xq, scale, zero = n.output
        other = {c.op_type for c in consumers.get(scale, []) if c.op_type != "Mul"}
        other |= {c.op_type for c in consumers.get(zero, []) if c.op_type != "MatMulInteger"}
        # a per-row scale is valid on A (rows of [..., M, K]) only: on B it would vary along the summed axis
        if any(c.op_type == "MatMulInteger" and (list(c.input[:1]) != [xq] or c.input[2:3] != [zero])
               for c in consumers.get(xq, []) + consumers.get(zero, [])):
            other.add("MatMulInteger input B")
        if {scale, zero} & graph_outputs:
            other.add("a graph output")
        # ORT's form: Mul(a_scale, b_scale) -> S, consumed only by Mul(Cast(MatMulInteger), S)
        plan = {}
        for m in consumers.get(scale, []):
            if m.op_type != "Mul":
                continue
            b_scale = [i for i in m.input if i != scale]
            users = consumers.get(m.output[0], [])
            if len(b_scale) != 1 or not users or any(u.op_type != "Mul" for u in users):
                other.add(f"Mul({scale}) used as {[u.op_type for u in users] or 'an output'}")
                continue
            plan[m.output[0]] = (b_scale[0], scale)
        if matmuls is not None:  # an input shared by several MatMuls is rewritten only if all are selected
            names = {c.name.removesuffix("_quant") for c in consumers.get(zero, []) if c.op_type == "MatMulInteger"}
            if not names or not names <= set(matmuls):
                other.add("not selected")
        if other:  # a per-token scale would not broadcast there (QAttention takes a scalar input_scale)
            kept_for |= other
        else:
            targets.append(n)
            rescale.update(plan)
    if not targets:
        if kept_for == {"not selected"}:
            raise PerTokenError(f"{src}: none of matmuls {sorted(matmuls or [])} has an input of its own (an input "
                                "shared by several MatMuls is rewritten only when all of them are named)")
        raise PerTokenError(f"{src}: no DynamicQuantizeLinear can take a per-token scale (they feed "
                            f"{sorted(kept_for)}); QAttention takes one scale per call: quantize the plain export, or "
                            "the fused one with op_types=['MatMul']")
    target_ids = {n.output[0] for n in targets}  # output names are unique; protobuf wrappers are not
    producer = {o: n for n in graph.node for o in n.output}
    # Mul(Cast(MatMulInteger(A, B, a_zp, b_zp)), S) whose MatMulInteger and Cast feed nothing else: fused into
    # MatMulIntegerToFloat(A, B, 1, b_scale, a_zp, b_zp) * a_scale (one pass over the output instead of three)
    fused_mm: dict[str, tuple[onnx.NodeProto, onnx.NodeProto]] = {}
    for s_name in rescale:
        for m in consumers.get(s_name, []):
            acc = next((i for i in m.input if i != s_name), None)
            cast = producer.get(acc)
            mmi = producer.get(cast.input[0]) if cast is not None and cast.op_type == "Cast" else None
            if (mmi is not None and mmi.op_type == "MatMulInteger" and len(mmi.input) == 4
                    and len(consumers.get(cast.output[0], [])) == 1 and len(consumers.get(mmi.output[0], [])) == 1):
                fused_mm[m.output[0]] = (cast, mmi)
    skip = {n.output[0] for pair in fused_mm.values() for n in pair}

    opset = _opset(model)
    inits = [numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), "per_token_inv127"),
             numpy_helper.from_array(np.array(EPS, np.float32), "per_token_eps"),
             numpy_helper.from_array(np.array(128, np.uint8), "per_token_zp"),
             numpy_helper.from_array(np.array([-1], np.int64), "per_token_flat"),
             numpy_helper.from_array(np.array(1.0, np.float32), "per_token_one")]
    if opset >= 18:  # ReduceMax / ReduceMin take their axes as an input from opset 18
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "per_token_axes"))
    have = {t.name for t in graph.initializer}
    graph.initializer.extend(t for t in inits if t.name not in have)  # a second rewrite reuses the first's
    new_nodes: list[onnx.NodeProto] = []
    for n in graph.node:
        if n.op_type == "Mul" and n.output[0] in rescale:  # Mul(a_scale, b_scale): rescaled in two steps below
            continue
        hit = [i for i in n.input if i in rescale] if n.op_type == "Mul" else []
        if hit:  # Mul(Cast(Y), S) -> Mul(Mul(Cast(Y), b_scale), a_scale), or the fused form above
            (s_name,), y = hit, n.output[0]
            acc = next(i for i in n.input if i != s_name)
            b_scale, a_scale = rescale[s_name]
            if y in fused_mm:
                a, b, a_zp, b_zp = fused_mm[y][1].input
                new_nodes.append(helper.make_node("MatMulIntegerToFloat", [a, b, "per_token_one", b_scale, a_zp, b_zp],
                                                  [f"{y}_per_column"], name=f"{n.name or y}_ByColumn",
                                                  domain="com.microsoft"))
            else:
                new_nodes.append(helper.make_node("Mul", [acc, b_scale], [f"{y}_per_column"],
                                                  name=f"{n.name or y}_ByColumn"))
            new_nodes.append(helper.make_node("Mul", [f"{y}_per_column", a_scale], [y], name=f"{n.name or y}_ByToken"))
            continue
        if n.output and n.output[0] in skip:  # a MatMulInteger / Cast the fused node replaces
            continue
        if n.op_type != "DynamicQuantizeLinear" or n.output[0] not in target_ids:
            kept = onnx.NodeProto()
            kept.CopyFrom(n)  # a copy: the graph's own nodes are cleared below
            new_nodes.append(kept)
            continue
        x, (xq, scale, zero) = n.input[0], n.output
        p = (n.name or xq) + "_per_token"
        reduce_in = [x] + (["per_token_axes"] if opset >= 18 else [])
        reduce_kw = {} if opset >= 18 else {"axes": [-1]}
        new_nodes += [
            # max|x| per token as max(ReduceMax(x), -ReduceMin(x)): two reads of X and no write, where
            # ReduceMax(Abs(x)) writes a copy of X first. Same value; a little faster (MiniLM b32xs128, AVX2, 2
            # threads, 30 interleaved rounds: +57 ms over per-call instead of +64 ms; timing noise is ~10 %)
            helper.make_node("ReduceMax", reduce_in, [f"{p}_hi"], name=f"{p}_ReduceMax", keepdims=1, **reduce_kw),
            helper.make_node("ReduceMin", reduce_in, [f"{p}_lo"], name=f"{p}_ReduceMin", keepdims=1, **reduce_kw),
            helper.make_node("Neg", [f"{p}_lo"], [f"{p}_neg_lo"], name=f"{p}_Neg"),
            helper.make_node("Max", [f"{p}_hi", f"{p}_neg_lo"], [f"{p}_amax"], name=f"{p}_AbsMax"),
            helper.make_node("Mul", [f"{p}_amax", "per_token_inv127"], [f"{p}_s"], name=f"{p}_Scale"),
            helper.make_node("Max", [f"{p}_s", "per_token_eps"], [scale], name=f"{p}_Floor"),
            # one QuantizeLinear pass (divide, round half to even, + 128, saturate, cast) with the per-token
            # scale as its per-axis scale: tokens flattened to rows of a [tokens, K] matrix, axis 0
            helper.make_node("Flatten", [x], [f"{p}_rows"], name=f"{p}_Rows", axis=-1),
            helper.make_node("Reshape", [scale, "per_token_flat"], [f"{p}_row_scale"], name=f"{p}_RowScale"),
            helper.make_node("Shape", [f"{p}_row_scale"], [f"{p}_n_rows"], name=f"{p}_NRows"),
            helper.make_node("Expand", ["per_token_zp", f"{p}_n_rows"], [f"{p}_row_zp"], name=f"{p}_RowZp"),
            helper.make_node("QuantizeLinear", [f"{p}_rows", f"{p}_row_scale", f"{p}_row_zp"], [f"{p}_q_rows"],
                             name=f"{p}_Quantize", axis=0),
            helper.make_node("Shape", [x], [f"{p}_shape"], name=f"{p}_Shape"),
            helper.make_node("Reshape", [f"{p}_q_rows", f"{p}_shape"], [xq], name=f"{p}_Unflatten"),
            helper.make_node("Constant", [], [zero], name=f"{p}_ZeroPoint",
                             value=numpy_helper.from_array(np.array(128, np.uint8), f"{p}_zp")),
        ]
    del graph.node[:]
    graph.node.extend(new_nodes)
    if fused_mm and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    # the old scale/zero-point value infos (scalars) would contradict the per-token shapes
    rewritten = {o for n in targets for o in n.output[1:]}
    keep = [v for v in graph.value_info if v.name not in rewritten]
    del graph.value_info[:]
    graph.value_info.extend(keep)
    with atomic_output(dst) as out:
        onnx.save(model, str(out))
    return {"rewritten": len(targets), "kept_per_call": len(dqls) - len(targets), "kept_for": sorted(kept_for),
            "method": "per_token_symmetric_u8"}
