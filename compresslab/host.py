"""The machine and process a run runs on: installed library versions, this process (pid, host, start time) and
whether a recorded one still runs, and the CPU's model and ISA flags. Here, on the ground floor, so that the
manifest, export (int8 parity), bench (fingerprints, OpenVINO precisions) and the report read them the same way."""

from __future__ import annotations

import os
import platform
from typing import Any, Sequence


# what a run's figures can depend on; the optional runtimes (OpenVINO, NNCF, DeepSparse) only where installed
RUN_LIBRARIES: tuple[str, ...] = ("compresslab", "torch", "transformers", "onnx", "onnxruntime", "accelerate",
                                  "hydra-core", "numpy", "scipy", "safetensors", "openvino", "nncf", "deepsparse")


def installed_versions(names: Sequence[str], keep_missing: bool = False) -> dict[str, str | None]:
    """The installed version of each distribution in ``names`` (package metadata: nothing is imported, so torch
    and ONNX Runtime stay unloaded). A missing one is left out, or recorded as None with ``keep_missing``.
    ``onnxruntime`` falls back to the GPU wheel's distribution name, ``onnxruntime-gpu``."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            try:
                if name != "onnxruntime":
                    raise
                out[name] = version("onnxruntime-gpu")
            except PackageNotFoundError:
                if keep_missing:
                    out[name] = None
    return out


def library_versions() -> dict[str, str]:
    """Python and the installed version of each of :data:`RUN_LIBRARIES` (:func:`installed_versions`); a library
    that is not installed is left out."""
    return {"python": platform.python_version(), **installed_versions(RUN_LIBRARIES)}  # type: ignore[dict-item]


def process_record() -> dict[str, Any]:
    """This process, as a manifest records who is running it: pid, host and the pid's start time
    (so a pid the OS reused later is not mistaken for the run's process)."""
    import psutil

    return {"pid": os.getpid(), "host": platform.node(), "pid_started": psutil.Process().create_time()}


def process_alive(rec: dict[str, Any] | None) -> bool | None:
    """Whether the process a manifest names still runs: None when unknown (no record, another host)."""
    import psutil

    if not isinstance(rec, dict) or rec.get("host") != platform.node() or not isinstance(rec.get("pid"), int):
        return None
    try:
        p = psutil.Process(rec["pid"])
        started = p.create_time()
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.AccessDenied:  # another user's live process
        return True
    except psutil.Error:
        return False
    return rec.get("pid_started") is None or abs(started - float(rec["pid_started"])) < 1.0


def read_cpuinfo(path: str = "/proc/cpuinfo") -> str:
    """/proc/cpuinfo's text, or "" where it does not exist (macOS, Windows)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(model name, flag set) from the first processor block of /proc/cpuinfo text."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # "Features" on aarch64
            flags = set(value.split())
        if model and flags:
            break
    return model, flags


def cpu_flags() -> set[str]:
    """The CPU's ISA flags as /proc/cpuinfo spells them (empty where it does not exist). Here, on the ground
    floor, so that export (int8 parity) and bench (fingerprints, OpenVINO precisions) read them the same way."""
    return parse_cpuinfo(read_cpuinfo())[1]
