"""A static int8 QDQ graph rewritten into the integer-MatMul form SparseML's final exports take, for DeepSparse.

DeepSparse 1.8 does not run a QDQ graph's ``DequantizeLinear -> MatMul`` with int8 kernels (measured:
``benchmarks/RESULTS.md``, issue #13: a QDQ file ran slower than the same model in fp32). SparseML, whose
exports the oBERT paper timed, does not ship QDQ: its ``MatMulAddToMatMulIntegerAddCastMul`` transform and
``InitializersToUint8`` rewrite every weight MatMul into::

    x -> QuantizeLinear(s_x, z_x uint8) -> MatMulInteger(·, W uint8, z_x, z_w uint8) -> Cast(float) -> Mul(s_x·s_w)

with the int8 weight codes shifted to uint8 (``W + 128``, zero point ``z + 128``). :func:`qdq_to_matmul_integer`
writes that form (the bias ``Add`` stays a float ``Add`` after the rescale). It is exact up to float rounding:
``Σ (q_x − z_x)(q_w − z_w)`` is an integer sum (int32) and ``s_x·s_w`` one multiply, where the QDQ graph
dequantizes first and sums floats. MatMuls of two activations (attention's Q·Kᵀ and P·V) keep their
Quantize/DequantizeLinear pairs. ONNX Runtime runs the result too (its MatMulInteger kernel), which is how
the tests check it against the QDQ graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NOTE = ("MatMulInteger (SparseML's exported form): uint8 activations from QuantizeLinear, weights as uint8 "
               "codes (int8 + 128, zero point + 128), int32 product -> Cast -> Mul by s_x*s_w; activation-by-"
               "activation MatMuls, where the graph quantizes them, keep their QDQ pairs")


def _weight_dq(dq: Any, inits: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(codes, scale, zero)`` of a DequantizeLinear reading a 2-D int8/uint8 weight initializer ``(K, N)`` with a
    per-tensor scale or one per column (axis 1); None for anything else (an activation, a per-row scale)."""
    from onnx import numpy_helper

    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
        return None
    if len(dq.input) > 2 and dq.input[2] and dq.input[2] not in inits:
        return None
    w = numpy_helper.to_array(inits[dq.input[0]])
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    zero = (numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2]
            else np.zeros((), w.dtype))
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if w.ndim != 2 or w.dtype not in (np.int8, np.uint8) or zero.dtype != w.dtype:
        return None
    if scale.size > 1 and not (axis in (1, -1) and scale.size == w.shape[1] and zero.size in (1, w.shape[1])):
        return None
    return w, scale, zero


def _activation_q(dq: Any, producer: dict[str, Any], inits: dict[str, Any]) -> Any:
    """The uint8 per-tensor QuantizeLinear whose output ``dq`` dequantizes, else None."""
    from onnx import numpy_helper

    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
        return None
    q = producer.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear" or len(q.input) < 3 or q.input[2] not in inits:
        return None
    if q.input[1] not in inits or numpy_helper.to_array(inits[q.input[1]]).size != 1:
        return None
    zero = numpy_helper.to_array(inits[q.input[2]])
    return q if zero.dtype == np.uint8 and zero.size == 1 else None


def qdq_to_matmul_integer(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Rewrite every weight MatMul of the QDQ graph ``src`` (uint8 per-tensor activations, int8 or uint8
    weight initializers ``(K, N)`` per-tensor or per-column) into ``MatMulInteger -> Cast -> Mul`` with uint8
    weights; write ``dst`` atomically.

    Returns ``{"converted": n, "left_qdq": [MatMul names kept as QDQ], "format": FORMAT_NOTE}``.
    Raises ValueError when the graph has no weight MatMul in that form (nothing to rewrite: not a static
    int8 QDQ graph), before writing anything.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from compresslab.export.qdq import drop_dead
    from compresslab.manifest import atomic_write_bytes

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    replaced: dict[int, list[Any]] = {}
    left: list[str] = []
    for mm in [n for n in g.node if n.op_type == "MatMul"]:
        a_dq, b_dq = (producer.get(i) for i in mm.input[:2])
        weight = _weight_dq(b_dq, inits)
        q = _activation_q(a_dq, producer, inits)
        if weight is None or q is None:
            if a_dq is not None and b_dq is not None and "DequantizeLinear" == a_dq.op_type == b_dq.op_type:
                left.append(mm.name or mm.output[0])
            continue
        w, w_scale, w_zero = weight
        if w.dtype == np.int8:  # SparseML's InitializersToUint8: the same levels, shifted into uint8
            w = (w.astype(np.int16) + 128).astype(np.uint8)
            w_zero = (w_zero.astype(np.int16) + 128).astype(np.uint8)
        x_scale = numpy_helper.to_array(inits[q.input[1]]).astype(np.float32).reshape(())
        tag = f"{mm.name or mm.output[0]}_integer"
        g.initializer.extend([numpy_helper.from_array(w, f"{tag}_W"),
                              numpy_helper.from_array(w_zero.reshape(w_zero.shape if w_zero.size > 1 else ()),
                                                      f"{tag}_W_zero_point"),
                              numpy_helper.from_array((x_scale * w_scale).astype(np.float32), f"{tag}_scale")])
        replaced[id(mm)] = [
            helper.make_node("MatMulInteger", [q.output[0], f"{tag}_W", q.input[2], f"{tag}_W_zero_point"],
                             [f"{tag}_int32"], name=f"{tag}/MatMulInteger"),
            helper.make_node("Cast", [f"{tag}_int32"], [f"{tag}_float"], to=TensorProto.FLOAT, name=f"{tag}/Cast"),
            helper.make_node("Mul", [f"{tag}_float", f"{tag}_scale"], [mm.output[0]], name=f"{tag}/Mul")]
    if not replaced:
        if any(n.op_type == "MatMulInteger" for n in g.node):
            raise ValueError(f"{src}: already has MatMulInteger nodes and no weight MatMul in QDQ form: it is "
                             "already in the integer form (nothing to rewrite)")
        raise ValueError(f"{src}: no MatMul reads a QuantizeLinear'd uint8 activation and an int8/uint8 weight "
                         "initializer through DequantizeLinear: not a static int8 QDQ graph (make one with the "
                         "int8_qat pass, or compresslab.bench.deepsparse_backend.quantize_qdq_for_deepsparse)")
    nodes = [new for n in g.node for new in replaced.get(id(n), [n])]  # in place: topological order holds
    del g.node[:]
    g.node.extend(nodes)
    drop_dead(g, ("DequantizeLinear",))  # the weights' DequantizeLinear nodes and their int8 codes
    onnx.checker.check_model(model)
    atomic_write_bytes(dst, model.SerializeToString())
    return {"converted": len(replaced), "left_qdq": left, "format": FORMAT_NOTE}


__all__ = ["FORMAT_NOTE", "qdq_to_matmul_integer"]
