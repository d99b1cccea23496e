"""Issue 13's long oBERT/magnitude runs at 80%: results/compound.json ``long`` and the three top-level keys.

    python benchmarks/compound_long.py lr-grid --method obert --lrs 3e-5 5e-5 1e-4 --steps 400   # then magnitude
    python benchmarks/compound_long.py run --method obert --epochs 1.0 --cpu-hours 3.0           # then magnitude
    python benchmarks/compound_long.py summarize        # obert_80_long_acc, magnitude_80_long_tuned_acc, McNemar

Both arms are compound_seeds.py's ``obert_vs_magnitude_80`` pipelines (obert_int8 / magnitude_int8, gradual to
80%), run as a user would from the cached ``bench`` teacher (``model=local model.source=<teacher cache>
model.finetuned=true bench=off deploy=ort``): no timing counts, so nothing here needs a quiet machine.

* ``lr-grid``: one short run per recovery LR (``pipeline.passes.<step>.recovery.lr``; the teacher's own
  ``budget.lr`` is left alone, so the cached teacher is the same), scored on the VALIDATION split (carved
  from train, seeded; never dev): the torch model after the pruning step. Stores ``long.lr_grid.<method>.<lr>``
  (validation accuracy) and ``long.chosen_lr.<method>`` (the best; ties: the smaller LR). Both methods get
  the same budget and at least the same grid (``summarize`` records ``same_grid_and_budget`` and
  ``baseline_grid_covers_ours``: the magnitude grid may be wider, never narrower).
* ``run``: the long run at the chosen LR (refused without ``lr-grid``), recovery steps = ceil(epochs x
  len(train) / batch). The pruning pass writes step checkpoints every ``--checkpoint-every`` steps
  (``+pipeline.passes.<step>.checkpoint_every``): rerun the same command after a stop and the pipeline
  resumes the unfinished step, the training loop inside it from the last checkpoint. Each call records
  its wall and CPU time (this process, all threads); the total is compared with ``--cpu-hours`` and a run
  past it is flagged ``over_budget`` (never stopped: the figure is still reported, with the flag). A call
  killed before it ended leaves its session marked ``interrupted`` (its time unknown; the loop's
  ``train_s`` covers every session's training).
* ``summarize``: dev accuracy of each long run's pruned torch model, exact McNemar p (both on the same 872
  dev examples, from the stored predictions), the budget; fills the keys and removes them from meta.pending.

Time (2 threads, bench budget): ~2100 steps per SST-2 epoch at batch 32; the 400-step runs took 6-9 min,
so one epoch is ~35-50 min per run, plus oBERT's Fisher rebuilds (one per pruning event).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from compresslab.cli import setup_process
from compresslab.config import compose
from compresslab.manifest import git_sha, read_json

from _results import ResultsFile  # sibling modules (script dir)
from compound import REPO, RESULTS_PATH, THREADS, _rel
from compound_seeds import Arm, _filter, _without_model, comparisons, fixed_teacher, score_step

log = logging.getLogger("compound_long")

METHODS = ("obert", "magnitude")  # a and b of compound_seeds' obert_vs_magnitude_80
KEYS = {"obert": "obert_80_long_acc", "magnitude": "magnitude_80_long_tuned_acc"}
MCNEMAR_KEY = "mcnemar_p_obert_vs_magnitude_80_long"
CHECKPOINT_EVERY = 200  # optimizer steps between recovery checkpoints (a few seconds each)


def arm_of(method: str, events: int) -> Arm:
    a, b = comparisons(events)["obert_vs_magnitude_80"]
    return a if method == "obert" else b


def lr_key(lr: float) -> str:
    return f"{lr:g}"


def cpu_s() -> float:
    """CPU seconds of this process (every thread) and its waited-for children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ----------------------------------------------------------------------------------------------- configs
def base_overrides(a: argparse.Namespace) -> list[str]:
    """What every run of both methods shares (not the steps, not the LR)."""
    return [f"budget={a.budget}", "bench=off", "deploy=ort", f"run.threads={THREADS}",
            f"budget.fisher_grads={a.grads}", *a.override]


def make_cfg(a: argparse.Namespace, teacher_dir: Path, steps: int, lr: float, *extra: str) -> Any:
    arm = arm_of(a.method, a.events)
    teacher = ["model=local", f"model.source={teacher_dir}", "model.finetuned=true"]
    return compose(_filter([*_without_model(base_overrides(a)), *teacher, f"seed={a.seed}"],
                           [*arm.overrides, f"budget.recovery_steps={steps}",
                            f"pipeline.passes.{arm.step}.recovery.lr={lr}", *extra]))


def teacher_dir_of(a: argparse.Namespace) -> Path:
    with tempfile.TemporaryDirectory(prefix="long-teacher-") as tmp:
        teacher, d = fixed_teacher([*base_overrides(a), f"seed={a.seed}"], Path(tmp))
        del teacher
    return d


def finished_run(cfg: Any, seed: int) -> tuple[Path, dict[str, Any]]:
    """Run (or resume) the pipeline; its dir and manifest, SystemExit unless it finished."""
    from compresslab.pipeline import run

    setup_process(THREADS, seed)
    rd = run(cfg)
    m = read_json(rd / "manifest.json")
    if m.get("status") != "finished":
        raise SystemExit(f"{rd}: the run did not finish ({m.get('status')})")
    return rd, m


# ----------------------------------------------------------------------------------------------- lr-grid
def lr_grid(a: argparse.Namespace) -> None:
    results = ResultsFile(a.results)
    arm = arm_of(a.method, a.events)
    settings = {"base": base_overrides(a), "steps": a.steps, "seed": a.seed, "events": a.events,
                "split": "validation (carved from train, seeded)", "lrs": [lr_key(x) for x in a.lrs]}
    old = results.get(["long", "lr_grid_settings", a.method])
    if old is not None and any(old.get(k) != settings[k] for k in ("base", "steps", "seed", "events")):
        raise SystemExit(f"{a.results} holds a {a.method} LR grid made with {old}: move it away first "
                         "(scores of different budgets are not compared)")
    teacher_dir = teacher_dir_of(a)
    if not isinstance(results.get(["long"]), dict):
        results.put(["long"], {})
    for lr in a.lrs:
        key = lr_key(lr)
        if results.has(["long", "lr_grid", a.method, key]):
            continue
        t0 = time.perf_counter()
        cfg = make_cfg(a, teacher_dir, a.steps, lr)
        rd, m = finished_run(cfg, a.seed)
        preds, _, val = score_step(cfg, rd, m, arm.step, "validation")
        results.put(["long", "lr_grid_runs", a.method, key],
                    {"run_dir": _rel(rd), "config_hash": m.get("config_hash"), "val_acc": val,
                     "val_examples": len(preds), "wall_s_this_call": round(time.perf_counter() - t0, 1)})
        results.put(["long", "lr_grid", a.method, key], val)
        log.info("%s lr %s: validation %.4f (%s)", a.method, key, val, rd)
    grid = results.get(["long", "lr_grid", a.method]) or {}
    asked = [lr_key(x) for x in a.lrs]
    done = {k: v for k, v in grid.items() if k in asked}
    chosen = max(done, key=lambda k: (done[k], -float(k)))  # best validation; ties: the smaller LR
    results.put(["long", "chosen_lr", a.method], float(chosen))
    results.put(["long", "lr_grid_settings", a.method], {**settings, "teacher": _rel(teacher_dir)})
    print(json.dumps({"method": a.method, "validation": done, "chosen_lr": float(chosen)}, indent=1))


# ----------------------------------------------------------------------------------------------- run
def train_size(cfg: Any) -> int:
    """Examples the recovery trains on (train less the validation carve)."""
    from compresslab.pipeline import task_data

    return len(task_data(cfg).train)


def long_run(a: argparse.Namespace) -> None:
    results = ResultsFile(a.results)
    arm = arm_of(a.method, a.events)
    lr = results.get(["long", "chosen_lr", a.method])
    if lr is None:
        raise SystemExit(f"no recovery LR chosen for {a.method} in {a.results}: run "
                         f"`python benchmarks/compound_long.py lr-grid --method {a.method}` first (same overrides)")
    grid = results.get(["long", "lr_grid_settings", a.method]) or {}
    if grid.get("base") != base_overrides(a) or grid.get("seed") != a.seed or grid.get("events") != a.events:
        raise SystemExit(f"{a.method}'s LR was chosen with other settings ({grid}); run lr-grid with these "
                         f"overrides ({base_overrides(a)}, seed {a.seed}, events {a.events}) first")
    key = ["long", "runs", a.method]
    if results.has([*key, "preds"]):
        log.info("%s: done (%s)", a.method, results.get([*key, "run_dir"]))
        return
    teacher_dir = teacher_dir_of(a)
    probe = make_cfg(a, teacher_dir, 2, lr)
    n, batch = train_size(probe), int(probe.budget.batch_size)
    steps = max(2, math.ceil(a.epochs * n / batch))
    every = min(a.checkpoint_every, steps)
    cfg = make_cfg(a, teacher_dir, steps, lr, f"pipeline.passes.{arm.step}.checkpoint_every={every}")
    rec = dict(results.get(key) or {})
    sessions = [dict(s, interrupted=True) if "wall_s" not in s else s for s in rec.get("sessions", [])]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rec.update(lr=lr, epochs=a.epochs, steps=steps, train_examples=n, batch_size=batch, checkpoint_every=every,
               cpu_hours_budget=a.cpu_hours, teacher=_rel(teacher_dir), git_sha=git_sha(),
               command="python benchmarks/compound_long.py " + " ".join(sys.argv[1:]),
               sessions=[*sessions, {"started": started}])
    results.put(key, rec)  # a call killed from here on leaves its session open: marked interrupted next time
    t0, c0 = time.perf_counter(), cpu_s()
    rd, m = finished_run(cfg, a.seed)
    step = next(s for s in m["steps"] if s["name"] == arm.step)
    preds, labels, acc = score_step(cfg, rd, m, arm.step, "dev")
    this = {"started": started, "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu_s() - c0, 1)}
    sessions = [*sessions, this]
    cpu_h = sum(s.get("cpu_s") or 0.0 for s in sessions) / 3600
    met = step["result"].get("metrics", {})
    rec.update(run_dir=_rel(rd), config_hash=m.get("config_hash"), acc=acc, preds=preds, labels=labels,
               step_score=step["metrics_after"].get("score"), sparsity=met.get("sparsity"),
               train_s=met.get("train_s"), resumed_at=met.get("resumed_at"), sessions=sessions,
               cpu_hours_measured=round(cpu_h, 3), over_budget=cpu_h > a.cpu_hours,
               cpu_note="CPU time of the calls that ended (process + children, all threads); interrupted "
                        "sessions are not counted (train_s, from the loop, covers every session's training)")
    results.put(key, rec)
    if rec["over_budget"]:
        log.warning("%s: %.2f CPU h > the %.1f h budget: flagged", a.method, cpu_h, a.cpu_hours)
    print(json.dumps({k: rec[k] for k in ("acc", "lr", "steps", "cpu_hours_measured", "over_budget")}, indent=1))


# ----------------------------------------------------------------------------------------------- summarize
def summary(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Top-level keys from the stored runs: each method's dev accuracy (recomputed from its predictions)
    and the exact McNemar p of obert vs magnitude when both are there (same examples, same order)."""
    import numpy as np

    from compresslab.data.metrics import mcnemar_pvalue

    correct = {}
    for method, r in runs.items():
        if "preds" not in r:
            continue
        p, y = (np.array([int(c) for c in r[k]]) for k in ("preds", "labels"))
        if len(p) != len(y):
            raise ValueError(f"{method}: {len(p)} predictions for {len(y)} labels")
        correct[method] = p == y
    out: dict[str, Any] = {KEYS[m]: float(c.mean()) for m, c in correct.items()}
    if set(METHODS) <= set(correct):
        if runs["obert"]["labels"] != runs["magnitude"]["labels"]:
            raise SystemExit("the two long runs were scored on different examples")
        out[MCNEMAR_KEY] = mcnemar_pvalue(correct["obert"], correct["magnitude"])
    return out


def summarize(a: argparse.Namespace) -> None:
    results = ResultsFile(a.results)
    data = results.load()
    long = data.get("long") or {}
    filled = summary(long.get("runs") or {})
    grids = long.get("lr_grid_settings") or {}
    def agree(*keys: str) -> bool:  # both methods' grids hold the same values under ``keys``
        return len(grids) == 2 and len({json.dumps({k: g.get(k) for k in keys}, sort_keys=True)
                                        for g in grids.values()}) == 1

    same = agree("base", "steps", "lrs", "seed", "events")
    # MEASURE.md: the baseline gets at least our tuning effort. Same budget and settings, and the baseline's
    # LRs include ours (a wider baseline grid only makes the comparison harder for us).
    lrs = {m: {float(x) for x in g.get("lrs") or ()} for m, g in grids.items()}
    covers = agree("base", "steps", "seed", "events") and lrs["obert"] <= lrs["magnitude"]
    runs = long.get("runs") or {}
    long["budget"] = {
        "lr_grid": {m: {k: g.get(k) for k in ("steps", "lrs", "split")} for m, g in grids.items()},
        "same_grid_and_budget": same,
        "baseline_grid_covers_ours": covers,
        "runs": {m: {k: r.get(k) for k in ("lr", "epochs", "steps", "batch_size", "cpu_hours_budget",
                                           "cpu_hours_measured", "over_budget", "train_s")} for m, r in runs.items()},
        "score": "torch model after the pruning step, fp32, SST-2 dev (the int8 step runs too, not scored)",
        "timing": "none: bench=off, deploy=ort"}
    data["long"] = long
    for k, v in filled.items():
        data[k] = v
    meta = data.setdefault("meta", {})
    pending = dict(meta.get("pending") or {})
    for k in (*KEYS.values(), MCNEMAR_KEY):
        if k in filled:
            pending.pop(k, None)
    meta["pending"] = pending
    results.write(data)
    print(json.dumps({**filled, "same_grid_and_budget": same, "baseline_grid_covers_ours": covers}, indent=1))


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["lr-grid", "run", "summarize"])
    ap.add_argument("--method", choices=METHODS)
    ap.add_argument("--lrs", type=float, nargs="+", default=[3e-5, 5e-5, 1e-4], help="lr-grid: recovery LRs")
    ap.add_argument("--steps", type=int, default=400, help="lr-grid: recovery steps per LR (the bench budget)")
    ap.add_argument("--epochs", type=float, default=1.0, help="run: recovery epochs over the train split")
    ap.add_argument("--cpu-hours", type=float, default=3.0, help="run: the budget a run is flagged past")
    ap.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY, help="run: steps between checkpoints")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--budget", default="bench")
    ap.add_argument("--grads", type=int, default=128, help="budget.fisher_grads (oBERT)")
    ap.add_argument("--events", type=int, default=4, help="gradual pruning events (both methods)")
    ap.add_argument("--override", nargs="*", default=[], help="more overrides for every run (e.g. debug=smoke)")
    ap.add_argument("--results", default=str(RESULTS_PATH), help="the results file (a scratch path for smoke runs)")
    a = ap.parse_args(argv)
    # a path the user gives is relative to where they ran the command: resolved before the chdir to the repo
    a.results = str(Path(a.results).resolve())
    if a.what != "summarize" and a.method is None:
        ap.error(f"{a.what} needs --method")
    if a.steps < 2 or a.grads < 1 or a.events < 1 or a.checkpoint_every < 1 or a.epochs <= 0 or a.cpu_hours <= 0:
        ap.error("--steps >= 2, --grads/--events/--checkpoint-every >= 1, --epochs/--cpu-hours > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.chdir(REPO)
    {"lr-grid": lr_grid, "run": long_run, "summarize": summarize}[a.what](a)


if __name__ == "__main__":
    main(sys.argv[1:])
