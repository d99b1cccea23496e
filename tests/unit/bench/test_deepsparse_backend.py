"""The DeepSparse backend's plumbing, exercised without DeepSparse: the worker protocol runs with the
``ort`` engine in this interpreter, so timing, static-shape scoring and the result files are real."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from omegaconf import OmegaConf

from compresslab.config import config_dir
from compresslab.bench import deepsparse_worker as W
from compresslab.bench.deepsparse_backend import (
    DeepSparseBench,
    DeepSparseUnavailable,
    drop_unused_opsets,
    by_runner,
    check_requested,
    find_python,
)
from compresslab.bench.latency import speedups
from compresslab.pipeline.settings import SettingsError, default_settings


def test_find_python_explicit_missing_is_a_clear_error(tmp_path):
    with pytest.raises(DeepSparseUnavailable, match="make deepsparse"):
        find_python(tmp_path / "nope" / "python")


def test_find_python_env_var_then_nothing(tmp_path, monkeypatch):
    fake = tmp_path / "python"
    fake.write_text("")
    monkeypatch.setenv("COMPRESSLAB_DEEPSPARSE_PYTHON", str(fake))
    assert find_python() == fake.absolute()
    monkeypatch.delenv("COMPRESSLAB_DEEPSPARSE_PYTHON")
    monkeypatch.chdir(tmp_path)  # no .venv-deepsparse here
    with pytest.raises(DeepSparseUnavailable, match="COMPRESSLAB_DEEPSPARSE_PYTHON"):
        find_python()


def test_required_backend_fails_early_and_auto_does_not(tmp_path, monkeypatch):
    monkeypatch.delenv("COMPRESSLAB_DEEPSPARSE_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    check_requested("auto", None)
    check_requested(False, None)
    with pytest.raises(DeepSparseUnavailable):
        check_requested(True, None)


def test_deepsparse_settings_are_typed_and_checked_once():
    _, _, bench = default_settings(bench={"deepsparse": {"enabled": "auto", "batches": [2]}})
    ds = bench.deepsparse
    assert ds.enabled == "auto" and ds.batches == (2,) and ds.int8_formats == ("qdq", "qoperator")
    with pytest.raises(SettingsError, match="int8_formats"):
        default_settings(bench={"deepsparse": {"int8_formats": ["qint4"]}})
    with pytest.raises(SettingsError, match="unknown key.*'sequence'"):
        default_settings(bench={"deepsparse": {"sequence": 64}})
    with pytest.raises(SettingsError, match="enabled"):
        default_settings(bench={"deepsparse": {"enabled": "yes"}})


def test_default_config_keeps_deepsparse_off():
    cfg = OmegaConf.load(Path(config_dir()) / "bench" / "default.yaml")
    assert cfg.deepsparse.enabled is False and list(cfg.deepsparse.op_types) == ["MatMul", "Gemm"]
    assert list(cfg.deepsparse.int8_formats)[0] == "qdq"


def test_drop_unused_opsets_keeps_used_domains(tmp_path, tiny_onnx):
    m = onnx.load(str(tiny_onnx))
    m.opset_import.extend([onnx.helper.make_opsetid("ai.onnx.ml", 5), onnx.helper.make_opsetid("com.microsoft", 1)])
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    assert sorted(drop_unused_opsets(p)) == ["ai.onnx.ml", "com.microsoft"]
    assert [o.domain for o in onnx.load(str(p)).opset_import] == [""]
    assert drop_unused_opsets(p) == []


def test_worker_table_is_turned_into_the_one_latency_layout_then_one_speedups():
    worker = {"b1xs8": {"ort_fp32": {"p50_ms": 10.0}, "ds": {"p50_ms": 4.0}},
              "b2xs8": {"ort_fp32": {"p50_ms": 30.0}, "ds": {"p50_ms": 10.0}}}
    lat = by_runner(worker)  # runner -> shape, like bench.latency.measure_latency's results
    assert lat == {"ort_fp32": {"b1xs8": {"p50_ms": 10.0}, "b2xs8": {"p50_ms": 30.0}},
                   "ds": {"b1xs8": {"p50_ms": 4.0}, "b2xs8": {"p50_ms": 10.0}}}
    assert speedups(lat, "ort_fp32") == {"ort_fp32": {"b1xs8": 1.0, "b2xs8": 1.0}, "ds": {"b1xs8": 2.5, "b2xs8": 3.0}}


def test_worker_score_pads_the_last_batch_and_keeps_row_order():
    class Echo:  # logits = first token id, so order and padding are visible
        def run(self, feeds):
            assert feeds["input_ids"].shape[0] == 4
            return feeds["input_ids"][:, :1].astype(np.float32)

    data = {"input_ids": np.arange(10)[:, None].repeat(3, 1), "attention_mask": np.ones((10, 3), np.int64)}
    out = W.score(Echo(), data, 4)
    assert out[:, 0].tolist() == list(range(10))


def test_worker_interleaves_and_summarises():
    calls = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def run(self, feeds):
            calls.append(self.name)

    res = W.time_shape({"a": Fake("a"), "b": Fake("b")}, {}, 2, warmup=1, runs=3, min_time_s=0, max_runs=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert res["a"]["runs"] == 3 and res["a"]["p50_ms"] >= 0


def test_bench_rejects_bad_specs_before_running(tmp_path, tiny_onnx):
    with pytest.raises(FileNotFoundError):
        DeepSparseBench(models={"x": (str(tmp_path / "none.onnx"), "ort")}).run(Path(sys.executable))
    with pytest.raises(ValueError, match="engine"):
        DeepSparseBench(models={"x": (str(tiny_onnx), "tensorrt")}).run(Path(sys.executable))
    with pytest.raises(ValueError, match="cannot score"):
        DeepSparseBench(models={"x": (str(tiny_onnx), "ort")}, score=["y"]).run(Path(sys.executable))


def test_worker_subprocess_times_and_scores_the_same_file(tiny_onnx, tiny_model):
    """The whole protocol with the ORT engine: logits of the static-shape scoring match torch."""
    import torch

    rng = np.random.default_rng(0)
    n, seq = 5, 16
    ids = rng.integers(1, 128, size=(n, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[:, 12:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    job = DeepSparseBench(models={"ort_fp32": (str(tiny_onnx), "ort"), "again": (str(tiny_onnx), "ort")},
                          score=["again"], batches=(1, 2), seq=seq, threads=1, vocab_size=128, warmup=1, runs=2,
                          min_time_s=0, score_batch_size=2)
    res = job.run(Path(sys.executable), inputs)
    assert set(res["latency"]) == {"b1xs16", "b2xs16"}
    assert set(res["latency"]["b2xs16"]) == {"ort_fp32", "again"}
    with torch.inference_mode():
        ref = tiny_model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    np.testing.assert_allclose(res["logits"]["again"], ref, atol=1e-4)
    assert res["versions"]["onnxruntime"] != "missing"


@pytest.mark.parametrize("fmt,op", [("qdq", "DequantizeLinear"), ("qoperator", "QLinearMatMul")])
def test_int8_files_quantize_only_matmuls_and_stay_close(tmp_path, tiny_onnx, fmt, op):
    """MatMul-only static int8 in both formats: no quantized Add (the attention mask), outputs near fp32."""
    import onnxruntime as ort

    from compresslab.bench.deepsparse_backend import quantize_qdq_for_deepsparse

    rng = np.random.default_rng(0)
    batches = [{"input_ids": rng.integers(1, 128, size=(4, 16)).astype(np.int64),
                "attention_mask": np.ones((4, 16), np.int64), "token_type_ids": np.zeros((4, 16), np.int64)}
               for _ in range(4)]
    dst = tmp_path / f"{fmt}.onnx"
    metrics = quantize_qdq_for_deepsparse(tiny_onnx, dst, batches, quant_format=fmt)
    assert metrics["method"] == f"static_{fmt}"
    graph = onnx.load(str(dst)).graph
    ops = [n.op_type for n in graph.node]
    assert op in ops and "QLinearAdd" not in ops
    if fmt == "qdq":  # fewer quantized tensors than quantizing every op (which includes the mask Add)
        from compresslab.export.ort_quant import quantize_static_qdq

        quantize_static_qdq(tiny_onnx, tmp_path / "all.onnx", batches, per_channel=False)
        every = [n.op_type for n in onnx.load(str(tmp_path / "all.onnx")).graph.node]
        assert ops.count("QuantizeLinear") < every.count("QuantizeLinear")
    ref = ort.InferenceSession(str(tiny_onnx)).run(None, batches[0])[0]
    out = ort.InferenceSession(str(dst)).run(None, batches[0])[0]
    assert np.abs(out - ref).max() < 0.1 * (np.abs(ref).max() + 1e-3)
    with pytest.raises(ValueError, match="quant_format"):
        quantize_qdq_for_deepsparse(tiny_onnx, tmp_path / "x.onnx", batches, quant_format="int4")
