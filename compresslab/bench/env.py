"""Hardware and software fingerprint for benchmark results.

Latency figures mean nothing without the machine they came from: int8 speedups depend on
VNNI/AMX, ORT fusions change between versions, and thread count moves everything. This module
collects those facts once so every results file (and the latency-table cache, via
`fingerprint_key`) carries them. It imports no heavy library at module import time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
from typing import TYPE_CHECKING, Any, Sequence

# the /proc/cpuinfo reader lives on the ground floor (export reads the flags too); cpu_flags and parse_cpuinfo
# are this module's names as well, for the scripts and runners that import them from here
from compresslab.manifest import cpu_flags, installed_versions, parse_cpuinfo, read_cpuinfo

if TYPE_CHECKING:
    import torch

# ISA flags that decide int8/bf16 speed on x86 (names as /proc/cpuinfo spells them).
ISA_FLAGS: tuple[str, ...] = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)

LIBRARIES: tuple[str, ...] = ("torch", "transformers", "onnxruntime", "onnx", "numpy")

# The parts of a fingerprint that change latency; other fields (python version, RAM) do not
# invalidate a cached latency table.
LATENCY_KEYS: tuple[str, ...] = ("cpu.model", "cpu.isa", "libraries.onnxruntime", "threads")


def physical_cores() -> int:
    """Physical core count (hyper-threads excluded); falls back to logical count."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except ImportError:  # psutil is a dependency, but a fingerprint must never fail on it
        n = None
    return int(n or os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """`None` means all physical cores (the MEASURE.md default); otherwise a positive int."""
    if threads is None:
        return physical_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None (auto), got {threads!r}")
    usable = _usable_cpus()
    if usable is not None and threads > usable and threads not in _WARNED_THREADS:
        # allowed (a user may mean it), but every timing taken this way is oversubscribed: say so once
        _WARNED_THREADS.add(threads)
        logging.getLogger(__name__).warning(
            "run.threads=%d is more than the %d CPU(s) this process may use: threads will share cores and every "
            "latency figure of this run is oversubscribed; set run.threads=%d or less (or null: all physical cores)",
            threads, usable, usable)
    return threads


_WARNED_THREADS: set[int] = set()


def _usable_cpus() -> int | None:
    """CPUs this process may run on (its affinity mask, as taskset/cgroups set it), or None if unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _total_ram_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 2)
    except ImportError:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 2) if pages > 0 else None


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions for a hardware fingerprint (:func:`compresslab.manifest.installed_versions`); a missing
    library is recorded as None, so a fingerprint always has the same keys."""
    return installed_versions(names, keep_missing=True)


def ort_providers() -> list[str]:
    """ONNX Runtime's available execution providers ([] when ORT is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def cuda_device_name() -> str | None:
    """Name of CUDA device 0 when torch sees one, else None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(0))


def hardware_fingerprint(threads: int | None = None) -> dict[str, Any]:
    """Describe this machine and software stack for a results file or manifest.

    `threads` is the thread count the benchmark pins (recorded because it is part of what a
    latency number means); it is stored as given, `None` when not benchmarking.
    """
    model, flags = parse_cpuinfo(read_cpuinfo())
    uname = platform.uname()
    return {
        "cpu": {
            "model": model or platform.processor() or uname.machine,
            "arch": uname.machine,
            "logical_cores": os.cpu_count(),
            "physical_cores": physical_cores(),
            "isa": {flag: flag in flags for flag in ISA_FLAGS},
        },
        "ram_gb": _total_ram_gb(),
        "os": uname.system,
        "kernel": uname.release,
        "python": platform.python_version(),
        "libraries": library_versions(),
        "ort_providers": ort_providers(),
        "cuda_device": cuda_device_name(),
        "threads": threads,
    }


def _lookup(fp: dict[str, Any], dotted: str) -> Any:
    node: Any = fp
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(
                f"fingerprint has no {dotted!r}; top-level keys are {sorted(fp)} "
                f"(use dotted paths such as 'cpu.isa')"
            )
        node = node[part]
    return node


def fingerprint_key(fp: dict[str, Any], keys: Sequence[str] = LATENCY_KEYS) -> str:
    """Short stable hash of the fingerprint parts (dotted paths) that matter for latency.

    Two machines with the same key can share a cached latency table; anything outside `keys`
    (RAM, python patch version) is deliberately ignored.
    """
    if not keys:
        raise ValueError("keys must name at least one fingerprint field, e.g. 'cpu.model'")
    parts = {k: _lookup(fp, k) for k in keys}
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource  # Unix-only, so imported here rather than at module import

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 2**10
    return round(rss * scale, 2)


def peak_memory_mb(device: "torch.device") -> float:
    """High-water mark in MiB: the CUDA allocator's peak on a GPU, else this process's peak RSS."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()
