"""The QDQ -> MatMulInteger rewrite (SparseML's exported int8 form, for DeepSparse): exact integer products on a
hand-built layer, every weight MatMul converted on a real static int8 export, attention's activation products kept,
and the refusals."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compresslab.export.matmul_integer import qdq_to_matmul_integer


def _layer(tmp_path, w: np.ndarray, w_scale: np.ndarray, w_zero: np.ndarray, x_scale: float, x_zero: int,
           bias: np.ndarray | None = None):
    """x (B, K) -> QuantizeLinear -> DequantizeLinear -> MatMul(DequantizeLinear(W (K, N))) [-> Add(bias)]."""
    k, n = w.shape
    inits = [numpy_helper.from_array(np.array(x_scale, np.float32), "xs"),
             numpy_helper.from_array(np.array(x_zero, np.uint8), "xz"),
             numpy_helper.from_array(w, "W"), numpy_helper.from_array(w_scale.astype(np.float32), "ws"),
             numpy_helper.from_array(w_zero, "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["W", "ws", "wz"], ["wd"], name="wdq",
                              **({"axis": 1} if w_scale.size > 1 else {})),
             helper.make_node("MatMul", ["xd", "wd"], ["mm" if bias is not None else "y"], name="matmul")]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "b"))
        nodes.append(helper.make_node("Add", ["mm", "b"], ["y"], name="add"))
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", n])], inits)
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _run(path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as ONNX defines it
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("w_dtype,w_zero", [(np.int8, 0), (np.int8, -3), (np.uint8, 128), (np.uint8, 121)])
def test_one_layer_equals_the_integer_product_exactly(tmp_path, per_column, w_dtype, w_zero):
    rng = np.random.default_rng(0)
    k, n = 64, 24
    info = np.iinfo(w_dtype)
    w = rng.integers(info.min, info.max + 1, size=(k, n)).astype(w_dtype)
    w[rng.random((k, n)) < 0.8] = w_zero  # 80% pruned: a pruned weight is its zero point
    w_scale = rng.uniform(1e-3, 1e-2, size=n if per_column else ()).astype(np.float32)
    w_zero_arr = np.full(n if per_column else (), w_zero, dtype=w_dtype)
    x_scale, x_zero = 0.05, 131
    bias = rng.normal(size=n).astype(np.float32)
    src = _layer(tmp_path, w, w_scale, w_zero_arr, x_scale, x_zero, bias)
    dst = tmp_path / "int.onnx"
    res = qdq_to_matmul_integer(src, dst)
    assert res["converted"] == 1 and res["left_qdq"] == []

    x = rng.normal(scale=3.0, size=(5, k)).astype(np.float32)
    out = _run(dst, x)
    # the reference: the integer sum of the codes, then one multiply by s_x * s_w (and the bias)
    xq = np.clip(np.rint(x / np.float32(x_scale)) + x_zero, 0, 255).astype(np.int64)
    acc = (xq - x_zero) @ (w.astype(np.int64) - w_zero)
    ref = acc.astype(np.float32) * (np.float32(x_scale) * w_scale) + bias
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out, _run(src, x), rtol=1e-5, atol=1e-5)  # and the QDQ graph, up to float sums

    g = onnx.load(str(dst)).graph
    ops = [node.op_type for node in g.node]
    assert ops == ["QuantizeLinear", "MatMulInteger", "Cast", "Mul", "Add"]  # no DequantizeLinear left
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    mmi = g.node[1]
    codes, zero = inits[mmi.input[1]], inits[mmi.input[3]]
    assert codes.dtype == np.uint8 and zero.dtype == np.uint8  # SparseML's layout: uint8 weights
    # the shift keeps the levels: a pruned weight is still exactly the zero point
    assert np.array_equal(codes.astype(np.int64) - zero.astype(np.int64), w.astype(np.int64) - w_zero)
    assert "W" not in inits  # the old codes are dropped


def test_a_real_static_export_converts_every_weight_matmul_and_keeps_attention(tmp_path, tiny_onnx):
    from compresslab.bench.deepsparse_backend import quantize_qdq_for_deepsparse

    rng = np.random.default_rng(0)
    batches = [{"input_ids": rng.integers(1, 128, size=(4, 16)).astype(np.int64),
                "attention_mask": np.ones((4, 16), np.int64), "token_type_ids": np.zeros((4, 16), np.int64)}
               for _ in range(4)]
    qdq = tmp_path / "qdq.onnx"
    quantize_qdq_for_deepsparse(tiny_onnx, qdq, batches)
    weight_matmuls = sum(1 for node in onnx.load(str(tiny_onnx)).graph.node
                         if node.op_type == "MatMul" and any(i.startswith("onnx::MatMul") or "weight" in i
                                                             for i in node.input[1:]))
    dst = tmp_path / "int.onnx"
    res = qdq_to_matmul_integer(qdq, dst)
    ops = [node.op_type for node in onnx.load(str(dst)).graph.node]
    assert res["converted"] == ops.count("MatMulInteger") == weight_matmuls > 0
    assert "MatMul" in ops and len(res["left_qdq"]) == ops.count("MatMul")  # attention: two activations
    feeds = batches[0]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    a = ort.InferenceSession(str(qdq), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    b = ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    # the same codes: only float rounding differs (a rounding flip in a later activation's codes moves a logit by
    # about one step of that activation's scale, never more)
    assert np.abs(a - b).max() < 0.02 * (np.abs(a).max() + 1e-3)
    assert (a.argmax(-1) == b.argmax(-1)).all()


def test_a_graph_without_static_int8_matmuls_is_refused_before_writing(tmp_path, tiny_onnx):
    dst = tmp_path / "int.onnx"
    with pytest.raises(ValueError, match="not a static int8 QDQ graph"):
        qdq_to_matmul_integer(tiny_onnx, dst)
    assert not dst.exists()


def test_a_per_row_weight_scale_is_left_as_qdq(tmp_path):
    """A scale along the weight's input axis (axis 0) cannot be pulled out of the integer sum: not converted."""
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, size=(8, 4)).astype(np.int8)
    src = _layer(tmp_path, w, np.full(8, 0.01, np.float32), np.zeros(8, np.int8), 0.1, 128)
    g = onnx.load(str(src))
    next(nd for nd in g.graph.node if nd.name == "wdq").attribute[0].i = 0  # per input row
    onnx.save(g, str(src))
    with pytest.raises(ValueError, match="not a static int8 QDQ graph"):
        qdq_to_matmul_integer(src, tmp_path / "int.onnx")


def test_a_graph_already_in_integer_form_is_named_as_such(tmp_path, tiny_onnx, tiny_qdq_onnx):
    """A trial converted a file twice: the second call said "not a static int8 QDQ graph (quantize it first)"."""
    qdq_to_matmul_integer(tiny_qdq_onnx, tmp_path / "int.onnx")
    with pytest.raises(ValueError, match="already in the integer form"):
        qdq_to_matmul_integer(tmp_path / "int.onnx", tmp_path / "again.onnx")
    assert not (tmp_path / "again.onnx").exists()
    with pytest.raises(ValueError, match="int8_qat pass, or compresslab.bench.deepsparse_backend"):
        qdq_to_matmul_integer(tiny_onnx, tmp_path / "fp32.onnx")  # the fp32 graph: says how to make a QDQ one
