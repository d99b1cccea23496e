"""Outlier split (export/outlier_split.py): which channels, exact fp32 rewrite, and fewer int8 errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compresslab.export.ort_quant import quantize_dynamic_int8
from compresslab.export.outlier_split import (OutlierSplitError, channel_absmax, ffn_blocks, outlier_channels,
                                              split_outliers)

H, F = 16, 64  # hidden width, FFN width


def _ffn_graph(path: Path, seed: int = 0, outlier_neuron: int = 5, act: str = "BiasGelu",
              neuron_bias: float = 12.0) -> dict[str, np.ndarray]:
    """x [B, T, H] -> MatMul(W1) -> BiasGelu(b1) -> MatMul(W2) -> y, the fused graph's FFN block.

    Neuron ``outlier_neuron`` gets a large bias, so its GELU output is an outlier whatever the input. Row 3 of
    W1 (the input channel :func:`_feeds` scales up) is small, so that channel alone makes no outlier neuron.
    """
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((H, F)) * 0.3).astype(np.float32)
    w1[3] *= 0.03
    b1 = (rng.standard_normal(F) * 0.1).astype(np.float32)
    b1[outlier_neuron] = neuron_bias
    w2 = (rng.standard_normal((F, H)) * 0.3).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["u"], name="up"),
         helper.make_node(act, ["u", "b1"], ["h"], name="gelu", domain="com.microsoft"),
         helper.make_node("MatMul", ["h", "w2"], ["y"], name="down")],
        "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", H])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(m, str(path))
    return {"w1": w1, "b1": b1, "w2": w2}


def _feeds(n: int = 4, seed: int = 1, outlier_channel: int = 3, scale: float = 30.0) -> list[dict[str, np.ndarray]]:
    """Hidden states with one outlier channel (as BERT's LayerNorm outputs have)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.standard_normal((2, 7, H)).astype(np.float32)
        x[..., outlier_channel] *= scale
        out.append({"x": x})
    return out


def _run(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, f)[0] for f in feeds])


def test_outlier_channels_are_those_above_ratio_times_the_median():
    a = np.array([1.0, 1.0, 1.0, 10.0, 1.0, 5.0, 2.9])
    assert outlier_channels(a, 3.0, 8) == [3, 5]  # the median is 1: 10 and 5 exceed 3; 2.9 does not
    assert outlier_channels(a, 3.0, 1) == [3]     # the largest first, capped
    assert outlier_channels(a, 12.0, 8) == []
    # the median, not the mean (2.99 here): a mean rule would keep channel 3 only
    assert outlier_channels(a, 1.6, 8) == [3, 5, 6]


@pytest.mark.parametrize("ratio,max_channels", [(1.0, 8), (0.5, 8), (True, 8), ("3", 8), (3.0, 0), (3.0, 2.5),
                                                (3.0, True)])
def test_bad_settings_are_clear_errors(ratio, max_channels):
    with pytest.raises(OutlierSplitError, match="ratio|max_channels"):
        outlier_channels(np.ones(4), ratio, max_channels)


def test_a_graph_without_an_ffn_block_or_without_batches_is_refused(tmp_path):
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", H])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", H])],
                          [numpy_helper.from_array(np.eye(H, dtype=np.float32), "w")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "plain.onnx"))
    with pytest.raises(OutlierSplitError, match="no fused FFN block.*after its weight MatMuls come nothing"):
        split_outliers(tmp_path / "plain.onnx", tmp_path / "out.onnx", _feeds())
    _ffn_graph(tmp_path / "ffn.onnx")
    with pytest.raises(OutlierSplitError, match="at least one calibration batch"):
        split_outliers(tmp_path / "ffn.onnx", tmp_path / "out.onnx", [])
    assert not (tmp_path / "out.onnx").exists()


def test_channel_absmax_is_the_max_over_batches_tokens_and_rows(tmp_path):
    _ffn_graph(tmp_path / "ffn.onnx")
    feeds = _feeds(n=3)
    got = channel_absmax(tmp_path / "ffn.onnx", feeds, ["x"])["x"]
    want = np.max(np.abs(np.concatenate([f["x"].reshape(-1, H) for f in feeds])), axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_the_split_graph_equals_the_original_in_fp32_and_finds_the_planted_outliers(tmp_path):
    _ffn_graph(tmp_path / "ffn.onnx", outlier_neuron=5)
    feeds = _feeds(outlier_channel=3)
    rec = split_outliers(tmp_path / "ffn.onnx", tmp_path / "split.onnx", feeds, ratio=3.0, max_channels=2)
    (block,) = rec["blocks"]
    assert block["input_channels"] == [3]
    assert block["neurons"] == [5]
    assert rec["split_input_channels"] == 1 and rec["split_neurons"] == len(block["neurons"])
    test = _feeds(seed=7)
    np.testing.assert_allclose(_run(tmp_path / "split.onnx", test), _run(tmp_path / "ffn.onnx", test),
                               rtol=1e-5, atol=1e-4)
    # what the int8 MatMuls read: the split neuron is 0 in the down MatMul's input, the split channel 0 in the up's
    seen = channel_absmax(tmp_path / "split.onnx", test, ["/outlier_split/0/x_masked", "/outlier_split/0/down_int8",
                                                            "h"])
    assert seen["/outlier_split/0/x_masked"][3] == 0.0 and seen["/outlier_split/0/x_masked"].max() > 0
    assert seen["h"][5] == 0.0 and np.delete(seen["h"], 5).max() > 0
    # the int8 GEMMs keep their widths (zeroed neurons, masked channels): aligned, and the same weight shapes
    m = onnx.load(str(tmp_path / "split.onnx"))
    dims = {t.name: tuple(t.dims) for t in m.graph.initializer}
    nodes = {n.name: n for n in m.graph.node}
    assert dims[nodes["up"].input[1]] == (H, F) and dims[nodes["down"].input[1]] == (F, H)
    assert set(rec["side_nodes"]) <= set(nodes) and all(nodes[n].op_type == "MatMul" for n in rec["side_nodes"])


def test_int8_after_the_split_is_closer_to_fp32_and_its_side_path_stays_fp32(tmp_path):
    _ffn_graph(tmp_path / "ffn.onnx")
    feeds = _feeds()
    rec = split_outliers(tmp_path / "ffn.onnx", tmp_path / "split.onnx", feeds, ratio=3.0)
    quantize_dynamic_int8(tmp_path / "ffn.onnx", tmp_path / "plain_int8.onnx")
    quantize_dynamic_int8(tmp_path / "split.onnx", tmp_path / "split_int8.onnx", nodes_to_exclude=rec["side_nodes"])
    q = onnx.load(str(tmp_path / "split_int8.onnx"))
    kept = {n.name for n in q.graph.node if n.op_type == "MatMul"}
    assert set(rec["side_nodes"]) <= kept  # fp32 MatMuls, not MatMulInteger
    assert sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in q.graph.node) == 2
    test = _feeds(seed=11)
    ref = _run(tmp_path / "ffn.onnx", test)
    err_plain = np.abs(_run(tmp_path / "plain_int8.onnx", test) - ref).mean()
    err_split = np.abs(_run(tmp_path / "split_int8.onnx", test) - ref).mean()
    # the planted channel (x30) sets the plain file's input scale: the split removes most of that error
    assert err_split < 0.5 * err_plain, (err_split, err_plain)


def test_finds_every_ffn_block_of_a_fused_bert_export_and_stays_exact(exported_bert, make_batches, tmp_path):
    src = Path(exported_bert.onnx_path)
    blocks = ffn_blocks(onnx.load(str(src), load_external_data=False))
    assert len(blocks) == 2  # the tiny BERT's layers
    feeds = [{k: v.numpy() for k, v in b.items() if k != "labels"} for b in make_batches(n=2, seed=3)]
    # a ratio near 1, so that every block of the random model has channels to split (its top 3)
    rec = split_outliers(src, tmp_path / "split.onnx", feeds, ratio=1.01, max_channels=3)
    assert all(len(b["input_channels"]) == 3 and len(b["neurons"]) == 3 for b in rec["blocks"])
    test = [{k: v.numpy() for k, v in b.items() if k != "labels"} for b in make_batches(n=2, seed=9)]
    import onnxruntime as ort

    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(tmp_path / "split.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in a.get_inputs()}
    for f in test:
        f = {k: v for k, v in f.items() if k in names}
        np.testing.assert_allclose(b.run(None, f)[0], a.run(None, f)[0], rtol=1e-4, atol=1e-5)


def test_an_outlier_neuron_alone_is_split_and_int8_gets_closer(tmp_path):
    """No outlier input channel: the neuron split alone must cut the int8 error (a broken neuron path would not).
    The neuron's GELU output (~40) is ~10x the others', so it sets the down MatMul's input scale."""
    _ffn_graph(tmp_path / "ffn.onnx", outlier_neuron=5, neuron_bias=40.0)
    feeds = _feeds(scale=1.0)
    rec = split_outliers(tmp_path / "ffn.onnx", tmp_path / "split.onnx", feeds, ratio=3.0)
    (block,) = rec["blocks"]
    assert block["input_channels"] == [] and block["neurons"] == [5]
    quantize_dynamic_int8(tmp_path / "ffn.onnx", tmp_path / "plain_int8.onnx")
    quantize_dynamic_int8(tmp_path / "split.onnx", tmp_path / "split_int8.onnx", nodes_to_exclude=rec["side_nodes"])
    test = _feeds(seed=13, scale=1.0)
    ref = _run(tmp_path / "ffn.onnx", test)
    err_plain = np.abs(_run(tmp_path / "plain_int8.onnx", test) - ref).mean()
    err_split = np.abs(_run(tmp_path / "split_int8.onnx", test) - ref).mean()
    assert err_split < 0.75 * err_plain, (err_split, err_plain)  # 0.58 here; the up MatMul keeps its own error


def test_a_fastgelu_block_is_split_with_its_own_activation(tmp_path):
    _ffn_graph(tmp_path / "ffn.onnx", act="FastGelu")
    feeds = _feeds()
    rec = split_outliers(tmp_path / "ffn.onnx", tmp_path / "split.onnx", feeds, ratio=3.0)
    assert rec["split_neurons"] >= 1
    ops = {n.name: n.op_type for n in onnx.load(str(tmp_path / "split.onnx")).graph.node}
    assert ops["/outlier_split/0/gelu_neurons"] == "FastGelu"  # tanh-GELU stays tanh-GELU on the side path
    test = _feeds(seed=5)
    np.testing.assert_allclose(_run(tmp_path / "split.onnx", test), _run(tmp_path / "ffn.onnx", test),
                               rtol=1e-5, atol=1e-4)


def test_a_split_file_is_not_split_again_and_foreign_initializers_are_kept(tmp_path):
    _ffn_graph(tmp_path / "ffn.onnx")
    m = onnx.load(str(tmp_path / "ffn.onnx"))
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "unused_but_not_ours"))
    onnx.save(m, str(tmp_path / "ffn.onnx"))
    split_outliers(tmp_path / "ffn.onnx", tmp_path / "split.onnx", _feeds(), ratio=3.0)
    names = {t.name for t in onnx.load(str(tmp_path / "split.onnx")).graph.initializer}
    assert "unused_but_not_ours" in names and "w2" not in names  # w2 was replaced (a neuron was split)
    with pytest.raises(OutlierSplitError, match="already outlier-split"):
        split_outliers(tmp_path / "split.onnx", tmp_path / "again.onnx", _feeds(), ratio=3.0)
    assert not (tmp_path / "again.onnx").exists()


@pytest.mark.parametrize("ratio", [float("inf"), float("nan")])
def test_a_ratio_that_splits_nothing_by_construction_is_refused(ratio):
    with pytest.raises(OutlierSplitError, match="ratio"):
        outlier_channels(np.ones(4), ratio, 8)
