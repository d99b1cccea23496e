"""ORT int8 dynamic and static QDQ on the fused tiny BERT export."""

from __future__ import annotations

import numpy as np
import pytest

from compresslab.eval.onnx_runner import OnnxRunner
from compresslab.export import count_ops, ensure_fused, quantize_dynamic_int8, quantize_static_qdq


@pytest.fixture()
def in_clean_cwd(tmp_path, monkeypatch):
    """Run from an empty cwd so any scratch file the ORT tools leave behind is caught."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _agreement(path, batches, ref_path) -> float:
    q, ref = OnnxRunner(path, threads=1), OnnxRunner(ref_path, threads=1)
    a = np.concatenate([q.run(b) for b in batches])
    r = np.concatenate([ref.run(b) for b in batches])
    assert np.isfinite(a).all() and a.shape == r.shape
    return float((a.argmax(-1) == r.argmax(-1)).mean())


def test_dynamic_int8_is_smaller_and_runs(exported_bert, batches, tmp_path, in_clean_cwd):
    dst = tmp_path / "out" / "model.onnx"
    m = quantize_dynamic_int8(exported_bert.onnx_path, dst, per_channel=True)
    assert m["size_bytes"] == dst.stat().st_size < exported_bert.onnx_path.stat().st_size
    assert m["quantized_ops"]["QAttention"] == 2 and m["quantized_ops"]["MatMulInteger"] > 0
    assert _agreement(dst, batches, exported_bert.onnx_path) >= 0.5
    assert list(in_clean_cwd.iterdir()) == []  # scratch files stayed in the temp dir
    assert {p.name for p in dst.parent.iterdir()} == {"model.onnx"}  # no temp file left beside it


def test_static_qdq_runs_on_fused_graph(exported_bert, batches, tmp_path, in_clean_cwd):
    dst = tmp_path / "model.qdq.onnx"
    m = quantize_static_qdq(exported_bert.onnx_path, dst, batches, calibrate_method="minmax")
    assert m["shape_inference"] == "symbolic" and m["n_calibration_examples"] == 12
    ops = count_ops(dst)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and ops["Attention"] == 2
    assert _agreement(dst, batches, exported_bert.onnx_path) >= 0.5
    assert list(in_clean_cwd.iterdir()) == []


def test_static_qdq_falls_back_on_unfused_graph(exported_bert, batches, tmp_path, in_clean_cwd):
    # symbolic shape inference cannot finish the transformers-5 unfused graph; ONNX inference is used
    m = quantize_static_qdq(exported_bert.unfused_path, tmp_path / "q.onnx", batches[:1],
                            calibrate_method="percentile", activation_type="int8")
    assert m["shape_inference"] == "onnx" and m["quantized_ops"]["QuantizeLinear"] > 0
    OnnxRunner(tmp_path / "q.onnx", threads=1).run(batches[0])


def test_static_needs_batches(exported_bert, tmp_path):
    with pytest.raises(ValueError, match="at least one calibration batch"):
        quantize_static_qdq(exported_bert.onnx_path, tmp_path / "q.onnx", [])


def test_failed_quantization_leaves_no_output(exported_bert, tmp_path, in_clean_cwd):
    dst = tmp_path / "q.onnx"
    with pytest.raises(ValueError):
        quantize_static_qdq(exported_bert.onnx_path, dst, [{"attention_mask": np.ones((1, 3))}])
    assert not dst.exists() and list(tmp_path.glob(".q.onnx*")) == []


def test_ensure_fused_is_a_no_op_on_fused_graphs(exported_bert, tmp_path):
    import json

    cfg = json.loads((exported_bert.dir / "config.json").read_text())
    assert ensure_fused(exported_bert.onnx_path, cfg, tmp_path) == (exported_bert.onnx_path, False)
    path, fused = ensure_fused(exported_bert.unfused_path, cfg, tmp_path)
    assert fused and count_ops(path)["Attention"] == 2


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibrators_take_batches_of_different_lengths(exported_bert, make_batches, tmp_path, method,
                                                                 in_clean_cwd):
    # dynamic padding gives every batch its own seq length, and the last batch is smaller; ORT's
    # histogram calibrators np.asarray() all of them together
    ragged = make_batches(n=3, bs=4, seed=7) + make_batches(n=1, bs=3, seed=8)
    assert len({b["input_ids"].shape for b in ragged}) > 2
    dst = tmp_path / "q.onnx"
    quantize_static_qdq(exported_bert.unfused_path, dst, ragged, op_types=["MatMul"], calibrate_method=method)
    assert count_ops(dst)["QuantizeLinear"] > 0
    feed = {k: v.numpy() for k, v in ragged[0].items() if k != "labels"}
    assert np.isfinite(OnnxRunner(dst, threads=1).run(feed)).all()


def test_uniform_feeds_pads_with_a_zero_mask_and_splits_by_example():
    from compresslab.export.ort_quant import uniform_feeds

    a = {"input_ids": np.arange(6).reshape(2, 3) + 1, "attention_mask": np.ones((2, 3), np.int64)}
    b = {"input_ids": np.full((1, 5), 9), "attention_mask": np.ones((1, 5), np.int64)}
    out = uniform_feeds([a, b])
    assert [f["input_ids"].shape for f in out] == [(1, 5)] * 3
    np.testing.assert_array_equal(out[1]["input_ids"], [[4, 5, 6, 0, 0]])
    np.testing.assert_array_equal(out[1]["attention_mask"], [[1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(out[2]["input_ids"], b["input_ids"])
