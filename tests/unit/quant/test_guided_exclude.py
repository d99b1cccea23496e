"""Guided int8's ``exclude`` (the outlier split's fp32 side MatMuls): never candidates, never quantized, and an
excluded fp32 reader of a shared input leaves the other reader its per-token choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compresslab.quant import guided_int8 as g


def _ops(path: Path) -> dict[str, str]:
    return {n.name: n.op_type for n in onnx.load(str(path)).graph.node}


def test_excluded_nodes_are_no_candidates_and_stay_fp32_in_every_model(exported, feeds, tmp_path, synthetic_times):
    """exclude (the outlier split's side MatMuls): never a candidate, never quantized, in the chosen file."""
    cands = g.quantizable_matmuls(exported.onnx_path)
    keep = [c.name for c in cands if c.op_type == "MatMul"][:2]
    rec = g.guided_int8(exported.onnx_path, tmp_path / "g.onnx", feeds, threads=1, exclude=keep)
    assert {r["name"] for r in rec["ranking"]} == {c.name for c in cands} - set(keep)
    ops = _ops(tmp_path / "g.onnx")
    assert all(ops[n] == "MatMul" for n in keep) and not any(f"{n}_quant" in ops for n in keep)


def test_an_excluded_reader_of_the_same_input_does_not_take_the_per_token_choice_away(tmp_path):
    """Two weight MatMuls reading one tensor share one DynamicQuantizeLinear (no per-token choice for either);
    an excluded one stays fp32 and reads the float tensor, so the other keeps its own input."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    v = numpy_helper.from_array(np.eye(4, dtype=np.float32), "v")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["a"], name="a"),
                               helper.make_node("MatMul", ["x", "v"], ["b"], name="b")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", 4]) for n in "ab"], [w, v])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert [c.own_input for c in g.quantizable_matmuls(path)] == [False, False]
    (only,) = g.quantizable_matmuls(path, exclude=["b"])
    assert only.name == "a" and only.own_input


def test_exclude_must_be_a_collection_of_names(exported, feeds, tmp_path):
    with pytest.raises(TypeError, match="collection of node names"):
        g.guided_int8(exported.onnx_path, tmp_path / "g.onnx", feeds, exclude="/model/classifier/Gemm_MatMul")
