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
