"""The bench stage: latency of the deployed file vs ``ort_fp32`` and torch fp32, per MEASURE.md."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from compresslab.manifest import RunManifest, atomic_write_json
from compresslab.pipeline.deepsparse import deepsparse
from compresslab.pipeline.export import teacher_onnx
from compresslab.pipeline.settings import BenchSettings
from compresslab.pipeline.state import RunState

log = logging.getLogger(__name__)


def _real_batches(state: RunState, batch_size: int, max_batches: int | None) -> list[dict]:
    """Dev set batches with dynamic padding: the task's real token-length distribution."""
    from compresslab.data.loaders import make_loader

    loader = make_loader(list(state.task.dev), state.tokenizer, batch_size, state.settings.max_length,
                         kind=state.task.spec.kind)
    out = []
    for i, b in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        out.append({k: v.numpy() for k, v in b.items() if k != "labels" and not k.endswith("_b")})
    return out


def bench(state: RunState, run_dir: Path, manifest: RunManifest, threads: int) -> None:
    """Time the deployed file vs ``ort_fp32`` (and torch fp32), interleaved; write ``bench/latency.json``."""
    from compresslab.bench import (OrtRunner, TorchRunner, measure_latency, measure_real_lengths, probe_load,
                                   real_length_speedups, speedups)

    b = state.settings.bench
    vocab = int(getattr(state.model.config, "vocab_size", 100))
    files = {"ort_fp32": teacher_onnx(run_dir, manifest), "deployed": Path(state.onnx.onnx_path)}
    runners: dict[str, Any] = {name: OrtRunner(p, threads, vocab_size=vocab) for name, p in files.items()}
    if b.torch_fp32:
        runners["torch_fp32"] = TorchRunner(state.teacher_or_initial(), threads)
    shapes = list(b.shapes)
    log.info("bench: %s at %s, %d threads, interleaved", list(runners), shapes, threads)
    lat = measure_latency(runners, shapes, warmup=b.warmup, runs=b.runs, min_time_s=b.min_time_s,
                          seed=b.seed, vocab_size=vocab, max_runs=b.max_runs)
    section: dict[str, Any] = {"threads": threads, "shapes": [list(s) for s in shapes], "denominator": b.denominator,
                               "latency": lat["results"], "speedups": speedups(lat, b.denominator),
                               "torch_speedups": speedups(lat, "torch_fp32") if "torch_fp32" in runners else {},
                               "runners": lat.get("runners"), "notes": []}
    if b.real_length:
        batches = _real_batches(state, b.real_length_batch_size, b.real_length_max_batches)
        rl = measure_real_lengths(dict(runners), batches, rounds=b.real_length_rounds)
        section["real_length"] = rl.get("results", rl)
        section["real_length_speedups"] = real_length_speedups(rl, b.denominator)
    if b.load_probe:
        section["load"] = {name: probe_load(p, threads, vocab_size=vocab) for name, p in files.items()}
    section["gpu"] = _gpu(state, files, shapes, b, vocab)
    section["deepsparse"] = deepsparse(state, run_dir, manifest, threads)
    if any("sparse_int8" in (s.result.get("formats") or ()) for s in manifest.steps):
        section["notes"].append("ONNX Runtime runs sparse weights with dense kernels: sparsity shrinks the "
                                "compressed size, not the ORT latency.")
    manifest.data["bench"] = section
    atomic_write_json(run_dir / "bench" / "latency.json", section)
    manifest.save()


def _gpu(state: RunState, files: dict[str, Path], shapes: list, b: BenchSettings, vocab: int) -> dict[str, Any]:
    """ORT's CUDA provider when installed, else the torch models on CUDA (and say so), else skip."""
    from compresslab.bench import OrtRunner, TorchRunner, measure_latency, select_gpu_backend, speedups

    sel = select_gpu_backend(b.gpu)
    if sel["backend"] is None:
        return {"skipped": sel["reason"]}
    if sel["backend"] == "ort_cuda":
        runners = {n: OrtRunner(p, None, provider="CUDAExecutionProvider", vocab_size=vocab) for n, p in files.items()}
        note = "ONNX Runtime CUDA provider"
    else:
        import copy

        runners = {"torch_fp32": TorchRunner(copy.deepcopy(state.teacher_or_initial()), None, device="cuda"),
                   "torch_final": TorchRunner(copy.deepcopy(state.model), None, device="cuda")}
        note = "onnxruntime-gpu not installed: the torch models run on CUDA instead"
    lat = measure_latency(runners, shapes, warmup=b.warmup, runs=b.runs, min_time_s=b.min_time_s,
                          seed=b.seed, vocab_size=vocab)
    denom = "ort_fp32" if "ort_fp32" in runners else "torch_fp32"
    return {"backend": sel["backend"], "note": note, "device": sel.get("reason"), "latency": lat["results"],
            "speedups": speedups(lat, denom)}
