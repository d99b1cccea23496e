"""Parent side of the load-time / peak-RSS probe: one fresh child process per model.

See `compresslab/bench/probe_load.py` (the child) for why a separate process is needed and why
it is run by path rather than with `python -m`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from compresslab.bench.env import resolve_threads

PROBE_SCRIPT = Path(__file__).with_name("probe_load.py")


def probe_load(
    onnx_path: str | Path,
    threads: int | None,
    *,
    provider: str = "CPUExecutionProvider",
    seq: int = 128,
    vocab_size: int | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Load time and peak RSS of one ONNX model, measured in a fresh child process.

    Returns the child's JSON: load_s, first_run_ms (one (1, seq) inference), baseline_rss_mb
    (interpreter + onnxruntime), peak_rss_mb, bytes, threads, provider. Raises RuntimeError
    carrying the child's stderr when it fails.
    """
    cmd = [sys.executable, str(PROBE_SCRIPT), "--onnx", str(onnx_path),
           "--threads", str(resolve_threads(threads)), "--provider", provider, "--seq", str(seq)]
    if vocab_size is not None:
        cmd += ["--vocab-size", str(vocab_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"load probe failed for {onnx_path} (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return json.loads(lines[-1])
