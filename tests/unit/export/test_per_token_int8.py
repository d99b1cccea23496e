"""export/per_token_int8.py: the rewritten dynamic-int8 graph computes per-token symmetric int8 exactly (a numpy
reference of the same arithmetic), a token's output no longer depends on its batchmates, the per-call path is
kept where an op takes one scale per call, and files it cannot rewrite are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compresslab.export.ort_quant import quantize_dynamic_int8
from compresslab.export.per_token_int8 import PerTokenError, per_token_activations

K, N = 16, 8
# reduce_range: 7-bit weights. Without VNNI, ORT's x86 u8s8 kernels add products pairwise in int16 (vpmaddubsw)
# and saturate past 32767; 2 x 255 x 64 stays below it, so the integer arithmetic is exact on every CPU


def _matmul_model(path: Path, opset: int = 17) -> tuple[Path, np.ndarray]:
    """y = x @ W + b, x [batch, seq, K] (float), W a constant."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(K, N)).astype(np.float32)
    b = rng.normal(size=(N,)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", N])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"], name="mm"), helper.make_node("Add", ["xw", "B"], ["y"])]
    g = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path, w


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _reference(x: np.ndarray, q_path: Path) -> np.ndarray:
    """Per-token symmetric activations (scale = max|x_row| / 127) against the file's own int8 weights."""
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(q_path)).graph.initializer}
    wq = next(v for k, v in init.items() if v.dtype == np.int8 and v.shape == (K, N)).astype(np.int32)
    ws = next(v for k, v in init.items() if v.dtype == np.float32 and v.shape == (N,) and "scale" in k)
    bias = init["B"]
    s = np.maximum(np.abs(x).max(-1, keepdims=True) / np.float32(127), np.float32(1e-12))
    codes = np.round(x / s).astype(np.int32)  # the file adds 128 and its zero point takes it off again
    return (codes @ wq).astype(np.float32) * (s * ws) + bias


@pytest.mark.parametrize("opset", [17, 18])
def test_rewritten_graph_is_per_token_int8_exactly(tmp_path, opset):
    src, _ = _matmul_model(tmp_path / "fp32.onnx", opset)
    quantize_dynamic_int8(src, tmp_path / "int8.onnx", reduce_range=True)
    rec = per_token_activations(tmp_path / "int8.onnx", tmp_path / "tok.onnx")
    assert rec["rewritten"] == 1 and rec["kept_per_call"] == 0
    ops = {n.op_type for n in onnx.load(str(tmp_path / "tok.onnx")).graph.node}
    # MatMulInteger + Cast + rescale fused into MatMulIntegerToFloat with a_scale 1, then the per-token Mul
    assert "DynamicQuantizeLinear" not in ops and "MatMulIntegerToFloat" in ops and "MatMulInteger" not in ops
    x = np.random.default_rng(1).normal(size=(3, 5, K)).astype(np.float32)
    x[0, 0] *= 50  # an outlier token
    x[1, 0], x[1, 1] = -np.abs(x[1, 0]), np.abs(x[1, 1])  # max |x| from the most negative value, and from the largest
    np.testing.assert_allclose(_run(tmp_path / "tok.onnx", x), _reference(x, tmp_path / "tok.onnx"),
                               rtol=1e-5, atol=1e-5)


def test_a_tokens_output_no_longer_depends_on_its_batchmates(tmp_path):
    src, _ = _matmul_model(tmp_path / "fp32.onnx")
    quantize_dynamic_int8(src, tmp_path / "int8.onnx", reduce_range=True)
    per_token_activations(tmp_path / "int8.onnx", tmp_path / "tok.onnx")
    rng = np.random.default_rng(2)
    small = rng.normal(size=(1, 4, K)).astype(np.float32)
    wide = 40 * rng.normal(size=(1, 4, K)).astype(np.float32)
    both = np.concatenate([small, wide])
    per_call = _run(tmp_path / "int8.onnx", both)[0], _run(tmp_path / "int8.onnx", small)[0]
    per_token = _run(tmp_path / "tok.onnx", both)[0], _run(tmp_path / "tok.onnx", small)[0]
    assert not np.allclose(*per_call)  # the premise: per call, the wide batchmate moves the small sentence
    np.testing.assert_array_equal(*per_token)
    exact = small @ _matmul_model(tmp_path / "again.onnx")[1] + numpy_helper.to_array(
        next(t for t in onnx.load(str(src)).graph.initializer if t.name == "B"))
    err_tok = np.abs(per_token[1] - exact).max()
    err_call_batched = np.abs(per_call[0] - exact).max()
    assert err_tok < err_call_batched  # and it is closer to fp32 than the scale the wide batchmate set


def test_refuses_a_file_without_dynamic_quantization(tmp_path):
    src, _ = _matmul_model(tmp_path / "fp32.onnx")
    with pytest.raises(PerTokenError, match="no DynamicQuantizeLinear"):
        per_token_activations(src, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_keeps_the_per_call_path_where_one_scale_per_call_is_required(tmp_path):
    """A DynamicQuantizeLinear whose scale feeds an op other than Mul (QAttention's scalar input_scale, here a
    stand-in Identity) stays per call; with nothing else to rewrite the file is refused."""
    src, _ = _matmul_model(tmp_path / "fp32.onnx")
    quantize_dynamic_int8(src, tmp_path / "int8.onnx", reduce_range=True)
    m = onnx.load(str(tmp_path / "int8.onnx"))
    dql = next(n for n in m.graph.node if n.op_type == "DynamicQuantizeLinear")
    m.graph.node.append(helper.make_node("Identity", [dql.output[1]], ["scale_copy"]))
    m.graph.output.append(helper.make_tensor_value_info("scale_copy", TensorProto.FLOAT, []))
    onnx.save(m, tmp_path / "odd.onnx")
    with pytest.raises(PerTokenError, match="Identity"):
        per_token_activations(tmp_path / "odd.onnx", tmp_path / "out.onnx")


def test_only_the_named_matmuls_inputs_are_rewritten(tmp_path):
    src, _ = _matmul_model(tmp_path / "fp32.onnx")
    quantize_dynamic_int8(src, tmp_path / "int8.onnx", reduce_range=True)
    rec = per_token_activations(tmp_path / "int8.onnx", tmp_path / "tok.onnx", matmuls=["mm"])
    assert rec["rewritten"] == 1
    with pytest.raises(PerTokenError, match="not dynamic-int8 MatMuls"):
        per_token_activations(tmp_path / "int8.onnx", tmp_path / "none.onnx", matmuls=["another"])


def _two_input_matmul(path: Path, m: int = 4, k: int = 8, n: int = 6) -> Path:
    """y = a @ b with both operands graph inputs (an activation x activation MatMul)."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["b", m, k])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["b", k, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", m, n])
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"], name="qk")], "g", [a, b], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_an_activation_feeding_matmul_input_b_stays_per_call(tmp_path):
    """A per-row scale is valid on A only: on B (rows along the summed axis) it cannot be factored out. ORT
    quantizes such MatMuls with MatMulConstBOnly=False; their B stays per call, A may go per token."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = _two_input_matmul(tmp_path / "aa.onnx")
    quantize_dynamic(src, tmp_path / "aa_i8.onnx", weight_type=QuantType.QInt8,
                     extra_options={"MatMulConstBOnly": False})
    rec = per_token_activations(tmp_path / "aa_i8.onnx", tmp_path / "tok.onnx")
    assert rec["kept_per_call"] >= 1 and "MatMulInteger input B" in rec["kept_for"]
    rng = np.random.default_rng(3)
    feeds = {"a": rng.normal(size=(2, 4, 8)).astype(np.float32), "b": rng.normal(size=(2, 8, 6)).astype(np.float32)}
    import onnxruntime as ort

    got = ort.InferenceSession(str(tmp_path / "tok.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    exact = feeds["a"] @ feeds["b"]
    assert np.abs(got - exact).max() < 0.05 * np.abs(exact).max()


def test_a_second_selective_rewrite_keeps_the_file_valid(tmp_path):
    """Two MatMuls with inputs of their own, rewritten one call at a time: one set of helper initializers."""
    rng = np.random.default_rng(4)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", N])
    inits = [numpy_helper.from_array(rng.normal(size=(K, K)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.normal(size=(K, N)).astype(np.float32), "W2")]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                                opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "two.onnx")
    quantize_dynamic_int8(tmp_path / "two.onnx", tmp_path / "two_i8.onnx", reduce_range=True)
    per_token_activations(tmp_path / "two_i8.onnx", tmp_path / "a.onnx", matmuls=["mm1"])
    per_token_activations(tmp_path / "a.onnx", tmp_path / "b.onnx", matmuls=["mm2"])
    onnx.checker.check_model(onnx.load(str(tmp_path / "b.onnx")))
    with pytest.raises(PerTokenError, match="already per token"):
        per_token_activations(tmp_path / "b.onnx", tmp_path / "c.onnx")


def test_bad_selections_and_old_opsets_are_clear_errors(tmp_path):
    src, _ = _matmul_model(tmp_path / "fp32.onnx")
    quantize_dynamic_int8(src, tmp_path / "int8.onnx", reduce_range=True)
    with pytest.raises(PerTokenError, match=r"\['typo'\] are not dynamic-int8 MatMuls"):
        per_token_activations(tmp_path / "int8.onnx", tmp_path / "o.onnx", matmuls=["typo"])
    with pytest.raises(TypeError, match="not the string"):
        per_token_activations(tmp_path / "int8.onnx", tmp_path / "o.onnx", matmuls="mm")
    old, _ = _matmul_model(tmp_path / "fp32_12.onnx", opset=12)
    quantize_dynamic_int8(old, tmp_path / "int8_12.onnx", reduce_range=True)
    with pytest.raises(PerTokenError, match="opset 12 < 13"):
        per_token_activations(tmp_path / "int8_12.onnx", tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()
