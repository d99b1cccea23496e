"""The accuracy-aware search on a task (issue 14): ``python benchmarks/search.py --task sst2 --budget-s 7200``.

Runs ``python -m compresslab +search=auto`` (``compresslab.search``: every candidate a normal run,
selection on the validation split with a margin, dev reported for the chosen model only) with the
suite's bench budget (400 KD steps, 128 Fisher gradients, 4 pruning events, the cached bench teacher),
``search.max_drop`` points and the b32 x s128 latency objective, then writes
``benchmarks/results/search_<task>.json``::

    {"chosen": {"pipeline", "name", "val_score", "dev_score", "speedup_b32_vs_best_dense", ...},
     "best_single": {same keys}, "teacher_dev": f, "front": [...], "wall_s": f, "meta": {...}}

Rerunning the same command resumes the search (finished candidates are read back from their run dirs;
the time spent before counts against the budget). Each candidate's bench stage times its deployed
file against the dense teacher in its own process window: run it on an otherwise idle machine (the
bench stage waits for any training's lock, then refuses; ``meta.machine_load`` records the load).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Mapping

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SUITE_CONFIG = REPO / "benchmarks" / "suite.yaml"


def budgets() -> dict[str, list[str]]:
    """The suite's budgets (``benchmarks/suite.yaml``: name -> the overrides every run gets, its teacher
    preset included): the search's candidates train exactly as the suite's cells do."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(SUITE_CONFIG), resolve=True)
    return {name: [*b.get("overrides", []), *([f"budget.teacher={b['teacher']}"] if b.get("teacher") else [])]
            for name, b in cfg["budgets"].items()}


def entry(c: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """One reported candidate in the issue's shape (plus its name, settings and drops)."""
    if c is None:
        return None
    return {"pipeline": c["pipeline"], "name": c["name"], "overrides": c.get("overrides"),
            "val_score": c.get("val_score"), "val_drop_pt": c.get("val_drop_pt"), "dev_score": c.get("dev_score"),
            "dev_drop_pt": c.get("dev_drop_pt"), "speedup_b32_vs_best_dense": c.get("speedup_vs_best_dense"),
            "size_bytes": c.get("size_bytes"), **({"dev_error": c["dev_error"]} if c.get("dev_error") else {})}


def summary(data: Mapping[str, Any], command: list[str]) -> dict[str, Any]:
    """``search.json``'s data as the issue's ``search_<task>.json``."""
    from compresslab.manifest import git_sha

    return {"chosen": entry(data.get("chosen")), "best_single": entry(data.get("best_single")),
            "teacher_dev": data.get("teacher_dev"), "teacher_val": data.get("teacher_val"),
            "front": [entry(c) for c in data.get("front") or []], "wall_s": data.get("spent_s"),
            "met": data.get("met"), "best_single_met": data.get("best_single_met"),
            "meta": {"git_sha": git_sha(), "command": "python benchmarks/search.py " + " ".join(sys.argv[1:]),
                     "search_command": command, "status": data.get("status"), "message": data.get("message"),
                     "settings": data.get("settings"), "search_dir": data.get("search_dir"),
                     "candidates": [{k: c.get(k) for k in ("name", "status", "drop_pt", "speedup", "size_bytes",
                                                           "ran_s", "error", "reason", "run_dir")}
                                    for c in data.get("candidates") or []],
                     "selection": "validation split carved from train (min(1000, 5%), seeded); dev scored for the "
                                  "chosen and the best single-method candidate only"}}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--budget-s", type=float, default=7200.0, help="search.time_budget_s (wall seconds, all of it)")
    ap.add_argument("--max-drop", type=float, default=1.0, help="search.max_drop in points")
    ap.add_argument("--objective", default="latency", choices=["latency", "size"])
    ap.add_argument("--budget", default="bench", choices=sorted(budgets()),
                    help="training budget of every candidate (benchmarks/suite.yaml's budgets)")
    ap.add_argument("--threads", type=int, default=None, help="run.threads (default: physical cores)")
    ap.add_argument("--override", nargs="*", default=[], help="more overrides for the search command")
    ap.add_argument("--results", default=None, help="results file (default benchmarks/results/search_<task>.json)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import os

    sys.path.insert(0, str(REPO / "benchmarks"))
    from _results import ResultsFile

    from compresslab.manifest import read_json
    from compresslab.search.driver import search

    # a --results path is the user's, relative to where they ran the command (resolved before the chdir)
    results = ResultsFile(Path(a.results).resolve() if a.results else RESULTS / f"search_{a.task}.json")
    os.chdir(REPO)  # the runs' relative paths (outputs/, the caches) are the repo's, wherever this is started
    overrides = [f"task={a.task}", *budgets()[a.budget], *([f"run.threads={a.threads}"] if a.threads else []),
                 *a.override]
    shape = [] if a.budget == "smoke" else [32, 128]  # the smoke bench has no b32 x s128 shape
    settings: dict[str, Any] = {"max_drop": a.max_drop, "objective": a.objective, "time_budget_s": a.budget_s,
                                **({"latency_shape": shape} if shape else {})}
    from compresslab.cli import bad_input_errors, terminate_as_interrupt

    terminate_as_interrupt()  # kill (SIGTERM) records the search as interrupted, like Ctrl-C; rerun to resume
    try:
        data = search(overrides, **settings)
    except bad_input_errors() as e:  # a bad setting: one line naming it, exit 2, nothing run
        print(f"search: error: {' '.join(str(e).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    for c in data.get("candidates") or []:  # the timed figures copied come from these runs' bench stages
        if c.get("status") == "ok" and c.get("run_dir") and (Path(c["run_dir"]) / "manifest.json").is_file():
            results.note_run(c["name"], read_json(Path(c["run_dir"]) / "manifest.json"))
    results.write(summary(data, ["+search=auto", *overrides, *(f"search.{k}={v}" for k, v in settings.items())]))
    print(data["message"])


if __name__ == "__main__":
    main(sys.argv[1:])
