"""export/qdq.int8_embedding_tables: the word-embedding table stored as per-row symmetric int8 in front of
its Gather. Checked on hand-made graphs against the exact grid (numpy) and by running both graphs in ONNX
Runtime: the gathered rows differ by at most half a row's step, only tables read by Gathers alone change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compresslab.export.qdq import int8_embedding_tables


def _graph(path: Path, tables: dict[str, np.ndarray], extra_reader: str | None = None, opset: int = 17) -> Path:
    """ids -> Gather(table) -> out_<table>, per table; ``extra_reader`` also feeds that table to a MatMul."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [None])
    nodes, outs = [], []
    for name, t in tables.items():
        nodes.append(helper.make_node("Gather", [name, "ids"], [f"out_{name}"], name=f"gather_{name}"))
        outs.append(helper.make_tensor_value_info(f"out_{name}", TensorProto.FLOAT, [None, t.shape[1]]))
    if extra_reader:
        t = tables[extra_reader]
        nodes.append(helper.make_node("MatMul", [f"out_{extra_reader}", extra_reader + "_T"], ["logits"], name="tied"))
        outs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, t.shape[0]]))
        tied = helper.make_node("Transpose", [extra_reader], [extra_reader + "_T"], name="tie")
        nodes.insert(0, tied)
    inits = [numpy_helper.from_array(t.astype(np.float32), n) for n, t in tables.items()]
    g = helper.make_graph(nodes, "g", [ids], outs, inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _run(path: Path, ids: np.ndarray) -> dict[str, np.ndarray]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"ids": ids})))


def test_rows_land_on_their_own_int8_grid_and_small_tables_stay_float(tmp_path) -> None:
    rng = np.random.default_rng(0)
    word = rng.normal(size=(1200, 8)) * np.exp(rng.normal(size=(1200, 1)) * 2)  # rows differing in scale by ~e^6
    word[5] = 0.0  # an all-zero row: exact
    pos = rng.normal(size=(64, 8))
    f = _graph(tmp_path / "m.onnx", {"word": word, "pos": pos})
    ids = np.array([0, 5, 17, 63, 17], np.int64)  # within both tables
    before = _run(f, ids)
    info = int8_embedding_tables(f)
    assert info["tables"] == ["word"] and info["rows"] == 1200  # pos: under min_rows
    after = _run(f, ids)
    step = np.abs(word).max(axis=1) / 127.0
    err = np.abs(after["out_word"] - before["out_word"])
    assert np.all(err <= step[ids][:, None] / 2 + 1e-6)  # round to nearest on each row's grid
    assert np.array_equal(after["out_word"][1], np.zeros(8, np.float32))
    assert np.array_equal(after["out_pos"], before["out_pos"])
    # the exact grid: q = clip(rint(E / s), -127, 127), s = max|row| / 127; the largest entry of each row is ±127
    g = onnx.load(str(f)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    q, s = inits["word_int8"], inits["word_scale"]
    assert q.dtype == np.int8 and np.all(np.abs(q).max(axis=1)[np.arange(1200) != 5] == 127)
    assert np.array_equal(q, np.clip(np.rint(word.astype(np.float32) / s[:, None]), -127, 127).astype(np.int8))
    assert not np.any(inits["word_zero_point"]) and "word" not in inits
    assert 0 < info["max_abs_error"] <= float(step.max()) / 2 + 1e-6
    assert int8_embedding_tables(f)["tables"] == []  # idempotent: the int8 table is not a float table


def test_a_table_with_another_reader_is_left_alone(tmp_path) -> None:
    word = np.random.default_rng(1).normal(size=(1000, 4))
    f = _graph(tmp_path / "m.onnx", {"word": word}, extra_reader="word")  # tied: a MatMul reads it too
    assert int8_embedding_tables(f) == {"tables": [], "rows": 0, "max_abs_error": 0.0}


def test_an_opset_without_per_axis_dequantize_is_refused(tmp_path) -> None:
    f = _graph(tmp_path / "m.onnx", {"word": np.ones((1000, 4))}, opset=12)
    with pytest.raises(ValueError, match="opset 12 < 13"):
        int8_embedding_tables(f)


def test_an_old_opset_without_a_table_is_left_as_it_is(tmp_path) -> None:
    """Only a graph with a table to store needs per-axis DequantizeLinear: small tables at opset 12 pass."""
    f = _graph(tmp_path / "m.onnx", {"pos": np.ones((64, 4))}, opset=12)
    before = f.read_bytes()
    assert int8_embedding_tables(f) == {"tables": [], "rows": 0, "max_abs_error": 0.0}
    assert f.read_bytes() == before
