"""Run manifests shared by the report cases (test_report_render.py, test_report_compare.py).

The manifests are real: ``tests/unit/report/runs/*.json`` were written by smoke runs of the tiny
BERT (``debug=smoke model=local``, bench with real lengths and the load probe) on this code, one
of them timed on a busy machine and one killed by an error; ``int8_openvino_smoke`` (``task=generic
deploy=openvino deploy.int8=auto``) deploys the int8 IR the deploy stage made of the fp32 export. Their
absolute paths were rewritten to another user's home, as a manifest copied from another machine has them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUNS = Path(__file__).resolve().parents[1] / "unit" / "report" / "runs"
FULL = Path(__file__).resolve().parents[1] / "unit" / "report" / "manifest_full.json"
FIXTURES = ("obert_int8_smoke", "int8_smoke", "magnitude_int8_busy", "magnitude_int8_failed",
            "int8_openvino_smoke")


def manifest(name: str) -> dict[str, Any]:
    """A fresh copy of one fixture manifest (``RUNS/<name>.json``)."""
    return json.loads((RUNS / f"{name}.json").read_text())


def sweep_run(root: Path, sparsity: float, score: float, p50: float, size: float, *,
              busy: bool = False, shape: str = "b4xs32") -> Path:
    """An obert_int8 run of a sparsity sweep, from the real smoke manifest with its figures set."""
    m = manifest("obert_int8_smoke")
    h = f"sweep{int(sparsity * 100):03d}{'b' if busy else ''}{shape}"
    m["config_hash"] = h
    m["config"]["pipeline"]["passes"]["obert"]["sparsity"] = sparsity
    models = m["eval"]["models"]
    for k in ("teacher_torch", "ort_fp32", "torch_final"):
        models[k]["score"] = 0.905
    models["deployed"]["score"] = score
    b = m["bench"]
    b["latency"] = {"ort_fp32": {shape: {"p50_ms": 60.0, "p90_ms": 61.0}},
                    "deployed": {shape: {"p50_ms": p50, "p90_ms": p50 * 1.02}}}
    b["shapes"] = [[int(x) for x in shape[1:].split("xs")]]
    for k in ("speedups", "speedups_best_dense", "best_dense"):
        b.pop(k, None)
    b["machine_load"] = {"busy": busy, "reasons": ["a training ran"] if busy else []}
    m["size"]["deployed"]["total"] = m["export"]["deployed"]["size_bytes"] = size * 1e6  # the latter is compared
    run = root / "obert_int8" / h
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(m))
    return run
