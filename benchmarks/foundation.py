"""Foundation figures (issue #2): teacher, int8 on ORT, STS-B embedding, wall times.

    python benchmarks/foundation.py [--wall benchmarks/results/wall_times.json]

Runs (or resumes: run dirs are keyed by config) the real pipelines on the embedded MiniLM and
real GLUE data, reads their manifests, and writes benchmarks/results/foundation.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from compresslab.cli import setup_process
from compresslab.config import compose
from compresslab.manifest import library_versions, git_sha, read_json
from compresslab.pipeline import run

from _results import ResultsFile  # sibling module (script dir)

RESULTS = Path(__file__).resolve().parent / "results"
FOUNDATION = ResultsFile(RESULTS / "foundation.json")  # every write stamps meta.machine_load


def run_manifest(overrides: list[str]) -> dict:
    cfg = compose(["+pipeline=int8", *overrides])
    setup_process(cfg.run.get("threads"), int(cfg.seed))
    return read_json(run(cfg) / "manifest.json") | {"_overrides": overrides}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wall", type=Path, default=RESULTS / "wall_times.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    bench = run_manifest(["budget=bench"])
    emb = run_manifest(["task=stsb_embedding", "bench.enabled=false"])
    FOUNDATION.note_run("bench", bench)  # its bench stage timed the speedups copied below (maybe in an earlier process)
    FOUNDATION.note_run("embedding", emb)
    ev, b = bench["eval"]["models"], bench["bench"]
    teacher_step = next(s for s in bench["steps"] if s["name"] == "finetune")["result"]["metrics"]
    out = {
        "teacher_acc": ev["teacher_torch"]["score"],
        "teacher_val_acc": (teacher_step.get("validation") or {}).get("score"),
        "teacher_bench_train_s": teacher_step.get("train_s"),
        "teacher_bench_recipe": teacher_step.get("recipe"),
        "ort_fp32_acc": ev["ort_fp32"]["score"],
        "int8_onnx_acc": ev["deployed"]["score"],
        "int8_agreement": ev["deployed"]["agreement"],
        "int8_mcnemar_p": ev["deployed"].get("mcnemar_p"),
        "int8_drop_pt": round(100 * (ev["teacher_torch"]["score"] - ev["deployed"]["score"]), 2),
        "int8_speedup_b32_vs_ort_fp32": b["speedups"]["deployed"]["b32xs128"],
        "int8_speedup_b32_vs_torch_fp32": b["torch_speedups"]["deployed"]["b32xs128"],
        "int8_speedup_b1_vs_torch_fp32": b["torch_speedups"]["deployed"]["b1xs128"],
        "int8_speedup_b1_vs_ort_fp32": b["speedups"]["deployed"]["b1xs128"],
        "latency_ms": {k: {s: v["p50_ms"] for s, v in shapes.items()} for k, shapes in b["latency"].items()},
        "real_length": b.get("real_length"),
        "load": b.get("load"),
        "size_bytes": bench["size"],
        "stsb_embedding_spearman": emb["eval"]["models"]["teacher_torch"]["score"],
        "stsb_embedding_int8_spearman": emb["eval"]["models"]["deployed"]["score"],
        "gpu": b.get("gpu"),
    }
    if args.wall.is_file():
        out.update(read_json(args.wall))
    out["meta"] = {"git_sha": git_sha(), "versions": library_versions(), "hardware": bench["hardware"],
                   "threads": b["threads"], "budget": "bench (teacher); teacher_quick_acc comes from the fresh-clone `make demo` (wall_times.sh)",
                   "seed": bench["seed"], "runs": {"bench": bench["config_hash"], "embedding": emb["config_hash"]},
                   "command": "python benchmarks/foundation.py", "split": "SST-2 dev (872), STS-B dev (1500)"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    FOUNDATION.write(out)
    json.dump(FOUNDATION.load(), sys.stdout, indent=2, default=str)


if __name__ == "__main__":
    main()
