"""Benchmarking: hardware fingerprint, runners, interleaved latency, load time and peak RSS.

Importing this package loads numpy only; onnxruntime and torch are imported when a runner is
built or a function needs them (DESIGN.md: importing compresslab must stay light).
"""

from compresslab.bench.env import (
    fingerprint_key,
    hardware_fingerprint,
    peak_rss_mb,
    resolve_threads,
)
from compresslab.bench.latency import (
    make_inputs,
    measure_latency,
    measure_real_lengths,
    paired_speedup,
    real_length_speedups,
    speedups,
)
from compresslab.bench.load_probe import probe_load
from compresslab.bench.runners import (
    GpuMode,
    OrtRunner,
    Runner,
    TorchRunner,
    cuda_available_backends,
    select_gpu_backend,
)

__all__ = [
    "GpuMode",
    "OrtRunner",
    "Runner",
    "TorchRunner",
    "cuda_available_backends",
    "fingerprint_key",
    "hardware_fingerprint",
    "make_inputs",
    "measure_latency",
    "measure_real_lengths",
    "paired_speedup",
    "peak_rss_mb",
    "probe_load",
    "real_length_speedups",
    "resolve_threads",
    "select_gpu_backend",
    "speedups",
]
