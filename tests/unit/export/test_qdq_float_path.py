"""``float_path_for_unquantized``: only quantized ops read the uint8 grid; the rest read the float tensor."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compresslab.export.qdq import float_path_for_unquantized


def _graph(path) -> None:
    """x -> Q -> DQ -> {MatMul(W), Add(b)}; W is an int8 initializer behind its own DQ, which a second Add
    (not quantized) also reads: that weight DQ must stay."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "z"),
             numpy_helper.from_array(np.arange(-8, 8, dtype=np.int8).reshape(4, 4), "w_q"),
             numpy_helper.from_array(np.array(0.1, np.float32), "w_s"),
             numpy_helper.from_array(np.array(0, np.int8), "w_z"),
             numpy_helper.from_array(np.full((4,), 0.25, np.float32), "b")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["x_q"], name="q"),
             helper.make_node("DequantizeLinear", ["x_q", "s", "z"], ["x_dq"], name="dq"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], name="w_dq"),
             helper.make_node("MatMul", ["x_dq", "w"], ["mm"], name="matmul"),
             helper.make_node("Add", ["x_dq", "b"], ["residual"], name="add"),
             helper.make_node("Add", ["w", "w"], ["w2"], name="add_w")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("mm", "residual", "w2")],
                          inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_unquantized_consumers_read_the_float_tensor_and_quantized_ones_keep_the_grid(tmp_path):
    p = tmp_path / "m.onnx"
    _graph(p)
    x = np.array([[0.013, -0.4, 1.234, 2.0], [-3.01, 0.5, 0.777, -0.021]], np.float32)
    mm0, res0, w0 = _run(p, x)
    assert not np.allclose(res0, x + 0.25)  # before: the residual Add saw the uint8 grid

    assert float_path_for_unquantized(p, ["MatMul"]) == 1
    mm1, res1, w1 = _run(p, x)
    np.testing.assert_array_equal(res1, x + np.float32(0.25))  # exactly the float path
    np.testing.assert_array_equal(mm1, mm0)  # the quantized MatMul is unchanged
    np.testing.assert_array_equal(w1, w0)  # a weight's DequantizeLinear is not an activation grid
    g = onnx.load(str(p)).graph
    assert {n.name: list(n.input) for n in g.node}["add"] == ["x", "b"]
    assert float_path_for_unquantized(p, ["MatMul"]) == 0  # idempotent


def test_listing_add_as_quantized_keeps_its_grid(tmp_path):
    p = tmp_path / "m.onnx"
    _graph(p)
    assert float_path_for_unquantized(p, ["MatMul", "Add"]) == 0


def test_hoisting_the_pair_above_the_head_split_is_exact_and_only_moves_per_tensor_pairs(tmp_path):
    """x (2, 6) -> Reshape (2, 2, 3) -> Transpose (2, 3, 2) -> Q/DQ -> MatMul with y (2, 2, 3): the pair moves
    onto x; a per-axis pair on the other input stays."""
    from compresslab.export.qdq import hoist_qdq_above_layout_ops

    def build(per_axis: bool) -> onnx.ModelProto:
        s = np.array([0.02, 0.03], np.float32) if per_axis else np.array(0.02, np.float32)
        z = np.array([0, 0], np.int8) if per_axis else np.array(0, np.int8)
        inits = [numpy_helper.from_array(np.array([2, 2, 3], np.int64), "shape"),
                 numpy_helper.from_array(s, "s"), numpy_helper.from_array(z, "z")]
        ax = [helper.make_attribute("axis", 0)] if per_axis else []
        q = helper.make_node("QuantizeLinear", ["t", "s", "z"], ["t_q"], name="q")
        dq = helper.make_node("DequantizeLinear", ["t_q", "s", "z"], ["t_dq"], name="dq")
        q.attribute.extend(ax)
        dq.attribute.extend(ax)
        nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
                 helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1], name="transpose"), q, dq,
                 helper.make_node("MatMul", ["t_dq", "y"], ["out"], name="scores")]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                                           helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    rng = np.random.default_rng(0)
    feed = {"x": rng.normal(size=(2, 6)).astype(np.float32), "y": rng.normal(size=(2, 2, 3)).astype(np.float32)}
    p = tmp_path / "m.onnx"
    onnx.save(build(False), str(p))
    before = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert hoist_qdq_above_layout_ops(p, ["scores"]) == 1
    g = onnx.load(str(p)).graph
    nodes = {n.name: n for n in g.node}
    assert nodes["q"].input[0] == "x" and nodes["reshape"].input[0] == "t_dq" and nodes["scores"].input[0] == "t"
    assert [n.name for n in g.node].index("q") < [n.name for n in g.node].index("reshape")  # sorted again
    after = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_array_equal(after, before)  # elementwise per-tensor quantization commutes with the layout
    assert hoist_qdq_above_layout_ops(p, ["scores"]) == 0  # nothing left to move
    onnx.save(build(True), str(p))
    assert hoist_qdq_above_layout_ops(p, ["scores"]) == 0  # a per-axis pair would change meaning: stays
    m = build(False)  # another reader of the pair's output: it must keep reading the transposed tensor
    m.graph.node.append(helper.make_node("Identity", ["t_dq"], ["also"], name="also"))
    m.graph.output.append(helper.make_tensor_value_info("also", TensorProto.FLOAT, None))
    onnx.save(m, str(p))
    assert hoist_qdq_above_layout_ops(p, ["scores"]) == 0
    m = build(False)  # a graph output on the chain: its value must not change
    m.graph.output.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, None))
    onnx.save(m, str(p))
    assert hoist_qdq_above_layout_ops(p, ["scores"]) == 0
    m = build(False)  # the head split's first output read elsewhere too: the pair moves above the Transpose only
    m.graph.node.append(helper.make_node("Identity", ["r"], ["also"], name="also"))
    m.graph.output.append(helper.make_tensor_value_info("also", TensorProto.FLOAT, None))
    onnx.save(m, str(p))
    assert hoist_qdq_above_layout_ops(p, ["scores"]) == 1
    nodes = {n.name: n for n in onnx.load(str(p)).graph.node}
    assert nodes["q"].input[0] == "r" and nodes["transpose"].input[0] == "t_dq" and nodes["also"].input[0] == "r"
    out = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)
    np.testing.assert_array_equal(out[0], before)
