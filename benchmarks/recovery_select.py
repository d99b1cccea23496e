"""Recovery with checkpoint selection on validation (``recovery.select_every``) for the suite's mild ZipLM cell.

    python benchmarks/recovery_select.py --task mrpc            # runs (or finds) the pipeline, then writes
                                                                # results/recovery_select.json["mrpc"]
    python benchmarks/recovery_select.py --task sst2 --label light_oneshot \
        --run-dir outputs/ziplm_light_int8/<hash>                # summarise a finished run (any ZipLM pipeline)
    python benchmarks/recovery_select.py --task cola --label hidden1 \
        --set pipeline.passes.ziplm.recovery.hidden_weight=1.0  # a lever tried on the same cell: written to
                                                                # results/recovery_select.json["cola"]["hidden1"]

Levers are compared by the validation score of the checkpoint each keeps (``selection.best_score``), never by
dev: dev is the suite's reported score.

The run is the suite's ``ziplm_mild_int8`` cell for the task (benchmarks/suite.yaml: the task's and the
``bench`` budget's overrides, the pipeline's own, deploy on ORT, no bench stage) with
``pipeline.passes.ziplm.recovery.select_every`` set. The figures come from the run's manifest: the validation
checks and the step kept, the ZipLM structure and its measured speedup, and the dev scores of the
recovered torch model and of the deployed ORT int8 file. Nothing is timed here beyond ZipLM's own speedup
check (the run takes the training lock); latency comparisons belong to the suite's timing phase.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from _results import ResultsFile  # sibling module

from compresslab.manifest import read_json

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
PIPELINE = "ziplm_mild_int8"


def run_args(task: str, every: int, extra: list[str] = (), pipeline: str = PIPELINE) -> list[str]:
    """The suite cell's command line with selection on (suite_plan.plan + TaskPlan.args), then ``extra``."""
    sys.path.insert(0, str(REPO))
    from benchmarks.suite_plan import load_config, plan

    p = plan(load_config(ROOT / "suite.yaml"), task, "bench", [pipeline])
    return [*p.args(pipeline), f"pipeline.passes.ziplm.recovery.select_every={every}", *extra]


def summary(run_dir: Path) -> dict:
    """The figures of one finished run, from its manifest and eval metrics."""
    m = read_json(run_dir / "manifest.json")
    if m.get("status") != "finished":
        raise SystemExit(f"{run_dir}: status {m.get('status')!r}, not finished")
    zip_step = next(s for s in m["steps"] if s.get("name") == "ziplm")
    zm = zip_step["result"]["metrics"]
    ev = read_json(run_dir / "eval" / "metrics.json")
    recovery = zm.get("recovery") or {}  # absent: a one-shot run (recovery.steps=0), nothing selected
    return {
        "run_dir": str(run_dir.relative_to(REPO)) if run_dir.is_relative_to(REPO) else str(run_dir),
        "command": m["command"], "git_sha": m.get("git_sha"), "seed": m.get("seed"),
        "pipeline": m["config"]["pipeline"]["name"], "selection": recovery.get("selection"),
        "recovery_steps": recovery.get("steps", 0), "ziplm_num_calibration": zip_step["pass"].get("num_calibration"),
        "structure": zm.get("structure") or zm["family"][f"{zm['target_speedup']:g}x"]["structure"],
        "measured_speedup_b32": zm.get("measured_speedup_b32"), "ziplm_retries": zm.get("retries"),
        "dev": {"split": ev["split"], "n": ev["n"], "metric": ev["primary_metric"],
                "teacher": ev["models"]["teacher_torch"]["score"], "torch_selected": ev["models"]["torch_final"]["score"],
                "deployed": ev["models"]["deployed"]["score"],
                "deployed_agreement": ev["models"]["deployed"]["agreement"],
                "deployed_runtime": ev.get("deployed_runtime"), "deployed_precision": ev.get("deployed_precision"),
                "deployed_file": ev.get("deployed_path")},
        "hardware_isa": {k: v for k, v in m["hardware"]["cpu"]["isa"].items() if v},
        "versions": m.get("versions"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--pipeline", default=PIPELINE, help="a ZipLM pipeline of suite.yaml's (default %(default)s)")
    ap.add_argument("--select-every", type=int, default=200)
    ap.add_argument("--run-dir", help="summarise this finished run instead of running the pipeline")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a Hydra override on top of the suite cell's (repeatable): the lever tried")
    ap.add_argument("--label", help="store under results[task][label] (default: results[task])")
    a = ap.parse_args()
    if a.set and not a.label:
        ap.error("--set needs --label: a lever's figures must not overwrite the cell's own")
    if a.run_dir:
        run_dir = Path(a.run_dir).resolve()
    else:
        args = run_args(a.task, a.select_every, a.set, a.pipeline)
        out = subprocess.run([sys.executable, "-m", "compresslab", *args], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        line = next(ln for ln in out.splitlines() if ln.startswith("run dir: "))
        run_dir = (REPO / line.split(": ", 1)[1].strip()).resolve()
    rf = ResultsFile(ROOT / "results" / "recovery_select.json")
    rec = summary(run_dir)
    rf.note_run(f"{a.task}/{a.label}" if a.label else a.task, read_json(run_dir / "manifest.json"))
    rf.put([a.task, a.label] if a.label else [a.task], rec)
    print(rec)


if __name__ == "__main__":
    main()
