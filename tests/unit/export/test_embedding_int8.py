"""Block-wise int8 word embeddings (export/embedding_int8.py): exact lookups, the grid, and fewer int8 errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compresslab.export.embedding_int8 import (EmbeddingError, blockwise_word_embeddings, embedding_readers,
                                               table_storage)
from compresslab.export.ort_quant import quantize_dynamic_int8


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _feeds(make_batches, path: Path, seed: int) -> list[dict[str, np.ndarray]]:
    names = {i.name for i in _session(path).get_inputs()}
    return [{k: v.numpy() for k, v in b.items() if k in names} for b in make_batches(n=2, seed=seed)]


def _dequantized(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray) -> np.ndarray:
    """ŵ = (q − z)·Δ of the rewrite's tables: codes (V, nb, bs), scales / zero points (V, nb, 1)."""
    return ((codes.astype(np.float32) - zeros.astype(np.float32)) * scales).reshape(len(codes), -1)


def _tables(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _with_table(src: Path, dst: Path, name: str, value: np.ndarray) -> None:
    m = onnx.load(str(src))
    t = next(t for t in m.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    onnx.save(m, str(dst))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("block_size", [16, 128])
def test_the_rewrite_equals_the_graph_with_the_dequantized_table(exported_bert, make_batches, tmp_path, fused,
                                                                 block_size):
    """Exact: the rewritten lookups return the rows of ŵ, for the fused op (a per-call table) and a Gather."""
    src = Path(exported_bert.onnx_path if fused else exported_bert.unfused_path)
    model = onnx.load(str(src))
    words, _ = embedding_readers(model)
    assert [n.op_type for n, _ in words] == ["EmbedLayerNormalization" if fused else "Gather"]
    table = words[0][1]
    rec = blockwise_word_embeddings(src, tmp_path / "emb.onnx", block_size=block_size)
    w = _tables(src)[table]
    # the tiny BERT is 32 wide: 16 divides it (2 blocks a row), 128 does not (one block a row)
    assert rec["tables"][table]["block_size"] == (16 if block_size == 16 else w.shape[1])
    new = _tables(tmp_path / "emb.onnx")
    assert table not in new  # the fp32 table is gone
    base = "/embedding_int8/0"
    codes, scales, zeros = new[f"{base}_codes"], new[f"{base}_scales"], new[f"{base}_zero_points"]
    assert codes.dtype == np.uint8 and zeros.dtype == np.uint8
    assert codes.shape == (w.shape[0], w.shape[1] // rec["tables"][table]["block_size"],
                           rec["tables"][table]["block_size"])
    w_hat = _dequantized(codes, scales, zeros)
    # the grid: each value within half a step of its block's scale, the block's range in 256 levels
    step = np.repeat(scales[..., 0], codes.shape[2], axis=1)
    assert np.all(np.abs(w_hat - w) <= step / 2 + 1e-7)
    assert rec["tables"][table]["rel_error"] == pytest.approx(np.linalg.norm(w_hat - w) / np.linalg.norm(w),
                                                              rel=1e-5)
    _with_table(src, tmp_path / "ref.onnx", table, w_hat)
    a, b = _session(tmp_path / "ref.onnx"), _session(tmp_path / "emb.onnx")
    for f in _feeds(make_batches, src, seed=4):
        for x, y in zip(a.run(None, f), b.run(None, f)):
            np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)


def test_a_mask_and_padding_pass_through_the_fused_op(exported_bert, make_batches, tmp_path):
    """Rows of padding and sentences of different lengths: the per-call table keeps each token's own row."""
    src = Path(exported_bert.onnx_path)
    blockwise_word_embeddings(src, tmp_path / "emb.onnx")
    ref = _session(src)
    new = _session(tmp_path / "emb.onnx")
    for f in _feeds(make_batches, src, seed=11):
        assert (f["attention_mask"] == 0).any()  # the batches are padded
        np.testing.assert_allclose(new.run(None, f)[0], ref.run(None, f)[0], rtol=0.05, atol=0.05)
        # and ids shuffled within the batch move the outputs with them: no id is read from the wrong row
        perm = np.arange(len(f["input_ids"]))[::-1]
        g = {k: v[perm] for k, v in f.items()}
        np.testing.assert_allclose(new.run(None, g)[0], new.run(None, f)[0][perm], rtol=1e-5, atol=1e-6)


def _embedding_graph(path: Path, vocab: int = 64, width: int = 32, outlier_row: int = 7) -> np.ndarray:
    """ids -> Gather(table) -> MatMul(w) -> y: a word table with one row 40x the others (as BERT tables have)."""
    rng = np.random.default_rng(0)
    table = (rng.standard_normal((vocab, width)) * 0.05).astype(np.float32)
    table[outlier_row] *= 40.0
    w = (rng.standard_normal((width, width)) * 0.2).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["e"], name="word"),
         helper.make_node("MatMul", ["e", "w"], ["y"], name="proj")],
        "emb", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", width])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return table


def test_blockwise_int8_is_closer_to_fp32_than_one_scale_per_table(tmp_path):
    """The fault: one outlier row sets ORT's per-table scale, so every other row loses most of its levels."""
    table = _embedding_graph(tmp_path / "fp32.onnx")
    rec = blockwise_word_embeddings(tmp_path / "fp32.onnx", tmp_path / "emb.onnx", block_size=16)
    quantize_dynamic_int8(tmp_path / "fp32.onnx", tmp_path / "per_tensor.onnx")
    quantize_dynamic_int8(tmp_path / "emb.onnx", tmp_path / "blockwise.onnx", nodes_to_exclude=rec["exclude"])
    m = onnx.load(str(tmp_path / "per_tensor.onnx"))
    gathered = {t.name: t.data_type for t in m.graph.initializer if t.name in {n.input[0] for n in m.graph.node
                                                                                 if n.op_type == "Gather"}}
    assert list(gathered.values()) == [TensorProto.UINT8]  # ORT did quantize the table, one scale: a real comparison
    ids = np.array([[i for i in range(len(table)) if i != 7][:40]], np.int64)  # ordinary rows only
    ref = _session(tmp_path / "fp32.onnx").run(None, {"input_ids": ids})[0]
    err = {k: np.abs(_session(tmp_path / f"{k}.onnx").run(None, {"input_ids": ids})[0] - ref).mean()
           for k in ("per_tensor", "blockwise")}
    assert err["blockwise"] < err["per_tensor"] / 4, err


def test_the_other_tables_and_new_lookups_are_named_for_the_quantizer(exported_bert, tmp_path):
    src = Path(exported_bert.unfused_path)
    rec = blockwise_word_embeddings(src, tmp_path / "emb.onnx")
    g = onnx.load(str(tmp_path / "emb.onnx")).graph
    by_name = {n.name: n for n in g.node}
    assert all(name in by_name for name in rec["exclude"])
    # position and token-type tables stay fp32 and are excluded; so are the new lookups (a float scale table)
    other = [n for n in g.node if n.op_type == "Gather" and n.input[0].endswith(("position_embeddings.weight",
                                                                               "token_type_embeddings.weight"))]
    assert other and all(n.name in rec["exclude"] for n in other)
    assert all(n.name in rec["exclude"] for n in g.node if n.name.startswith("/embedding_int8/"))
    quantize_dynamic_int8(tmp_path / "emb.onnx", tmp_path / "q.onnx", nodes_to_exclude=rec["exclude"])
    q = _tables(tmp_path / "q.onnx")
    assert q["/embedding_int8/0_scales"].dtype == np.float32  # not requantized
    assert [k for k in q if k.endswith("position_embeddings.weight")]


def test_bad_input_is_refused(exported_bert, tmp_path):
    table = _embedding_graph(tmp_path / "fp32.onnx")
    assert table.shape == (64, 32)
    with pytest.raises(ValueError, match="block_size"):
        blockwise_word_embeddings(tmp_path / "fp32.onnx", tmp_path / "x.onnx", block_size=0)
    blockwise_word_embeddings(tmp_path / "fp32.onnx", tmp_path / "emb.onnx")
    with pytest.raises(EmbeddingError, match="already"):
        blockwise_word_embeddings(tmp_path / "emb.onnx", tmp_path / "x.onnx")
    # no word lookup: a graph whose Gather reads another input
    g = helper.make_graph([helper.make_node("Gather", ["table", "positions"], ["y"], name="pos")], "g",
                          [helper.make_tensor_value_info("positions", TensorProto.INT64, ["T"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 4])],
                          [numpy_helper.from_array(np.zeros((8, 4), np.float32), "table")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "pos.onnx"))
    with pytest.raises(EmbeddingError, match="no word-embedding lookup"):
        blockwise_word_embeddings(tmp_path / "pos.onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("fused", [True, False])
def test_a_token_id_outside_the_table_is_refused_not_wrapped(exported_bert, make_batches, tmp_path, fused):
    """ONNX Gather wraps -1 to the last row; the rewritten lookup must refuse it (and ids >= vocab) as BERT's
    fused op does, and pass every id in range unchanged."""
    import onnxruntime as ort

    src = Path(exported_bert.onnx_path if fused else exported_bert.unfused_path)
    blockwise_word_embeddings(src, tmp_path / "emb.onnx")
    sess = _session(tmp_path / "emb.onnx")
    feeds = _feeds(make_batches, tmp_path / "emb.onnx", seed=3)[0]
    vocab = next(t.dims[0] for t in onnx.load(str(src)).graph.initializer if "word_embeddings" in t.name)
    ok = sess.run(None, {**feeds, "input_ids": np.full_like(feeds["input_ids"], vocab - 1)})[0]
    assert np.isfinite(ok).all()
    for bad in (-1, vocab):
        ids = feeds["input_ids"].copy()
        ids[0, 1] = bad
        with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="token_id_out_of_range"):
            sess.run(None, {**feeds, "input_ids": ids})
    if fused:  # the fp32 graph's own op refuses -1 as well: the rewrite keeps its contract
        with pytest.raises(Exception):
            _session(src).run(None, {**feeds, "input_ids": np.where(feeds["input_ids"] > 0, -1, 0)})


def test_a_graph_below_opset_15_is_refused_before_any_rewrite(tmp_path):
    _embedding_graph(tmp_path / "fp32.onnx")
    m = onnx.load(str(tmp_path / "fp32.onnx"))
    m.opset_import[0].version = 14
    onnx.save(m, str(tmp_path / "old.onnx"))
    with pytest.raises(EmbeddingError, match="opset 14.*>= 15"):
        blockwise_word_embeddings(tmp_path / "old.onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_a_table_also_read_by_another_node_keeps_its_fp32_copy(tmp_path):
    """A tied head (the table reused as a MatMul weight) must not lose its weights."""
    _embedding_graph(tmp_path / "fp32.onnx")
    m = onnx.load(str(tmp_path / "fp32.onnx"))
    m.graph.node.append(helper.make_node("MatMul", ["y", "table_t"], ["logits"], name="tied"))
    m.graph.node.insert(0, helper.make_node("Transpose", ["table"], ["table_t"], name="t"))
    m.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "T", 64]))
    onnx.save(m, str(tmp_path / "tied.onnx"))
    rec = blockwise_word_embeddings(tmp_path / "tied.onnx", tmp_path / "emb.onnx")
    assert "table" in _tables(tmp_path / "emb.onnx") and rec["tables"]["table"]["fp32_copy_kept"] is True
    ids = np.array([[1, 2, 3]], np.int64)
    out = _session(tmp_path / "emb.onnx").run(None, {"input_ids": ids})
    assert np.isfinite(out[1]).all()


@pytest.mark.parametrize("arch", ["distilbert", "roberta"])
def test_other_encoders_fused_and_unfused_stay_exact(arch, tok, make_batches, tmp_path):
    """DistilBERT's fused op has no segment input, RoBERTa's positions come from the ids: both rewrites exact."""
    from compresslab.export import export_model
    from compresslab.models.tiny import tiny_model

    exp = export_model(tiny_model(arch), tok, tmp_path / "exp", make_batches(n=2, seed=1), threads=1)
    for src in (Path(exp.onnx_path), Path(exp.unfused_path)):
        words, _ = embedding_readers(onnx.load(str(src)))
        # DistilBERT's fused graph keeps a Gather of the ids beside the fused op (for its shape): one table either way
        assert len({t for _, t in words}) == 1, (src.name, [n.op_type for n, _ in words])
        table = words[0][1]
        blockwise_word_embeddings(src, tmp_path / "emb.onnx", block_size=16)
        new = _tables(tmp_path / "emb.onnx")
        assert sum(k.endswith("_codes") for k in new) == 1  # stored once
        w_hat = _dequantized(new["/embedding_int8/0_codes"], new["/embedding_int8/0_scales"],
                             new["/embedding_int8/0_zero_points"])
        _with_table(src, tmp_path / "ref.onnx", table, w_hat)
        a, b = _session(tmp_path / "ref.onnx"), _session(tmp_path / "emb.onnx")
        for f in _feeds(make_batches, src, seed=5):
            np.testing.assert_allclose(b.run(None, f)[0], a.run(None, f)[0], rtol=1e-5, atol=1e-6)


def test_a_table_read_by_two_lookups_is_stored_once_and_unnamed_nodes_are_handled(tmp_path):
    """Two Gathers of one table (one of them unnamed): one copy of the codes, both lookups exact."""
    table = _embedding_graph(tmp_path / "fp32.onnx")
    m = onnx.load(str(tmp_path / "fp32.onnx"))
    m.graph.node.append(helper.make_node("Gather", ["table", "input_ids"], ["e2"]))  # no name
    m.graph.node.append(helper.make_node("Add", ["y", "e2"], ["z"]))  # no name either
    m.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["B", "T", 32]))
    onnx.save(m, str(tmp_path / "two.onnx"))
    rec = blockwise_word_embeddings(tmp_path / "two.onnx", tmp_path / "emb.onnx", block_size=16)
    assert len(rec["tables"]["table"]["lookups"]) == 2
    new = onnx.load(str(tmp_path / "emb.onnx"))
    assert sum(t.name.endswith("_codes") for t in new.graph.initializer) == 1
    assert len({n.name for n in new.graph.node}) == len(new.graph.node) and all(n.name for n in new.graph.node)
    t = _tables(tmp_path / "emb.onnx")
    w_hat = _dequantized(t["/embedding_int8/0_codes"], t["/embedding_int8/0_scales"], t["/embedding_int8/0_zero_points"])
    _with_table(tmp_path / "two.onnx", tmp_path / "ref.onnx", "table", w_hat)
    ids = {"input_ids": np.array([[0, 7, 63, 5]], np.int64)}
    for x, y in zip(_session(tmp_path / "ref.onnx").run(None, ids), _session(tmp_path / "emb.onnx").run(None, ids)):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
    assert table.shape == (64, 32)


@pytest.mark.parametrize("width,block,used", [(384, 128, 128), (312, 128, 104), (32, 128, 32), (48, 16, 16),
                                              (131, 128, 131), (40, 8, 8), (36, 8, 6)])  # prime: a block per row
def test_the_block_is_the_largest_divisor_of_the_width_up_to_block_size(tmp_path, width, block, used):
    _embedding_graph(tmp_path / "fp32.onnx", vocab=8, width=width)
    rec = blockwise_word_embeddings(tmp_path / "fp32.onnx", tmp_path / "emb.onnx", block_size=block)
    assert rec["tables"]["table"]["block_size"] == used


def test_odd_graphs_are_refused_or_left_alone_not_broken(tmp_path):
    """From a trial: a Gather along axis 1 is no token lookup; inf in the table, or a name the rewrite would write
    twice, are clear errors instead of a file ORT refuses or a nan record."""
    _embedding_graph(tmp_path / "fp32.onnx")
    m = onnx.load(str(tmp_path / "fp32.onnx"))
    m.graph.node[0].attribute.append(helper.make_attribute("axis", 1))
    assert embedding_readers(m)[0] == [] and embedding_readers(m)[1] == ["word"]  # still a reader: excluded
    t = next(t for t in m.graph.initializer if t.name == "table")
    bad = numpy_helper.to_array(t).copy()
    bad[3, 3] = np.inf
    m2 = onnx.load(str(tmp_path / "fp32.onnx"))
    next(x for x in m2.graph.initializer if x.name == "table").CopyFrom(numpy_helper.from_array(bad, "table"))
    onnx.save(m2, str(tmp_path / "inf.onnx"))
    with pytest.raises(EmbeddingError, match="non-finite"):
        blockwise_word_embeddings(tmp_path / "inf.onnx", tmp_path / "x.onnx")
    m3 = onnx.load(str(tmp_path / "fp32.onnx"))
    m3.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "/embedding_int8/0_dim"))
    onnx.save(m3, str(tmp_path / "clash.onnx"))
    with pytest.raises(EmbeddingError, match="clash"):
        blockwise_word_embeddings(tmp_path / "clash.onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_table_storage_reads_back_what_a_file_holds(tmp_path):
    _embedding_graph(tmp_path / "fp32.onnx")
    rec = blockwise_word_embeddings(tmp_path / "fp32.onnx", tmp_path / "emb.onnx")
    quantize_dynamic_int8(tmp_path / "fp32.onnx", tmp_path / "per_tensor.onnx")
    quantize_dynamic_int8(tmp_path / "emb.onnx", tmp_path / "blockwise.onnx", nodes_to_exclude=rec["exclude"])
    assert [table_storage(tmp_path / f"{k}.onnx") for k in ("fp32", "per_tensor", "blockwise", "emb")] == [
        "fp32", "per_tensor", "blockwise", "blockwise"]
