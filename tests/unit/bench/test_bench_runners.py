"""Real runners on a tiny exported BERT, the GPU backend choice, and the bench configs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from compresslab.config import config_dir
from compresslab.bench.latency import make_inputs, measure_latency, speedups
from compresslab.bench.runners import (
    GpuMode,
    OrtRunner,
    TorchRunner,
    cuda_available_backends,
    select_gpu_backend,
)

CONF = Path(config_dir())


def _inputs(batch=2, seq=12):
    return make_inputs(batch, seq, 100, np.random.default_rng(0))


def test_ort_runner_runs_with_pinned_threads_and_full_optimization(tiny_onnx):
    import onnxruntime as ort

    r = OrtRunner(tiny_onnx, threads=1)
    r.run(_inputs())
    assert set(r.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    opts = r.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    info = r.info()
    assert info["threads"] == 1 and info["provider"] == "CPUExecutionProvider"
    assert r.load_s > 0


def test_ort_runner_drops_segment_ids_the_graph_lacks(tiny_onnx_no_segments):
    r = OrtRunner(tiny_onnx_no_segments, threads=1)
    batch = _inputs()
    assert set(r.feed(batch)) == {"input_ids", "attention_mask"}
    r.run(batch)


def test_ort_runner_errors_are_actionable(tiny_onnx, tmp_path):
    with pytest.raises(ValueError, match="available"):
        OrtRunner(tiny_onnx, threads=1, provider="NopeExecutionProvider")
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        OrtRunner(tmp_path / "missing.onnx", threads=1)
    r = OrtRunner(tiny_onnx, threads=1)
    with pytest.raises(ValueError, match="attention_mask"):
        r.run({"input_ids": _inputs()["input_ids"]})


def test_torch_runner_runs_and_restores_threads(tiny_model):
    import torch

    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    r = TorchRunner(tiny_model, threads=want)
    seen = []
    handle = tiny_model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:
        r.run(_inputs())
    finally:
        handle.remove()
    assert seen == [want]
    assert torch.get_num_threads() == before
    assert r.vocab_size == tiny_model.config.vocab_size
    assert r.info()["kind"] == "torch_eager"


def test_measure_latency_on_real_runners(tiny_model, tiny_onnx):
    runners = {"ort_fp32": OrtRunner(tiny_onnx, threads=1),
               "torch_fp32": TorchRunner(tiny_model, threads=1)}
    out = measure_latency(runners, [(1, 16), (4, 16)], warmup=1, runs=3, seed=0)
    for name in runners:
        for shape in ("b1xs16", "b4xs16"):
            stats = out["results"][name][shape]
            assert stats["n"] == 3 and 0 < stats["p50_ms"] <= stats["p90_ms"]
    assert out["runners"]["ort_fp32"]["threads"] == 1
    assert speedups(out)["ort_fp32"]["b1xs16"] == 1.0
    assert out["settings"]["vocab_size"] == 100  # torch declares 128; ORT leaves the default


class SleepRunner:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self, batch) -> None:
        time.sleep(self.seconds)


def test_known_sleeps_give_plausible_medians_with_the_real_clock():
    out = measure_latency({"slow": SleepRunner(0.02), "fast": SleepRunner(0.005)}, [(1, 8)],
                          warmup=1, runs=5)
    slow = out["results"]["slow"]["b1xs8"]["p50_ms"]
    fast = out["results"]["fast"]["b1xs8"]["p50_ms"]
    assert 19.0 <= slow < 200.0 and 4.5 <= fast < 150.0
    assert speedups(out, denominator="slow")["fast"]["b1xs8"] > 1.5


@pytest.mark.skipif(bool(cuda_available_backends()), reason="this machine has a GPU backend")
def test_gpu_is_skipped_with_a_reason_when_absent():
    assert cuda_available_backends() == []
    choice = select_gpu_backend("auto")
    assert choice["backend"] is None and "CUDAExecutionProvider" in choice["reason"]
    assert select_gpu_backend(GpuMode.OFF)["backend"] is None
    with pytest.raises(RuntimeError, match="ort_cuda"):
        select_gpu_backend("ort_cuda")


def test_gpu_mode_lists_allowed_values():
    with pytest.raises(ValueError, match="torch_cuda"):
        select_gpu_backend("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available_backends(), reason="needs CUDA")
def test_gpu_backend_runs(tiny_model, tiny_onnx):
    backend = select_gpu_backend("auto")["backend"]
    if backend == "ort_cuda":
        runner = OrtRunner(tiny_onnx, threads=1, provider="CUDAExecutionProvider")
    else:
        runner = TorchRunner(tiny_model, threads=1, device="cuda")
    out = measure_latency({"gpu": runner}, [(1, 16)], warmup=1, runs=2)
    assert out["results"]["gpu"]["b1xs16"]["n"] == 2


@pytest.mark.parametrize("name,enabled", [("default", True), ("off", False)])
def test_bench_configs_compose(name, enabled):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+bench={name}"]).bench
    assert cfg.enabled is enabled
    assert [list(s) for s in cfg.shapes] == [[1, 128], [32, 128]]
    assert cfg.threads is None and cfg.denominator == "ort_fp32"
    GpuMode(cfg.gpu)
