"""ZipLM retries before/after the fitted latency model (issue #13) into benchmarks/results/compound.json.

The runs are normal pipeline runs on a quiet machine, the same family from one database, differing only in
``latency_model``; no recovery (retries are a property of the latency model, not of training). They must
price with one measurement (the same cached latency table: same file, same calibration timings), so run
them in one session; the script refuses ``one_layer`` and the default model's run otherwise and leaves out
any other model's run that priced differently::

    for LM in one_layer calibrated linear; do
      python -m compresslab +pipeline=ziplm_2x budget=bench budget.recovery_steps=0 bench=off \\
        pipeline.passes.ziplm.speedup=4 'pipeline.passes.ziplm.family=[1.5,2,3,4]' \\
        pipeline.passes.ziplm.num_calibration=512 pipeline.passes.ziplm.latency_model=$LM
    done
    python benchmarks/ziplm_retries.py

``before`` = retries summed over the family with the one-layer table, ``after`` = with the latency model
ZipLM ships as its default (``SpeedupSettings.latency_model``; ``retries_total`` of each run's ZipLM step);
every model run is in ``ziplm_retries_detail`` (``linear``, when run: the calibrated model on the table's
least-squares lines). Per target: the first try's measured / target ratio (the issue: within [0.95, 1.15] on
the first try), retries, measured speedup and whether it met the target.
Figures are copied from the runs' manifests (``note_run`` stamps their machine load).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from compresslab.manifest import read_json

from _results import ResultsFile  # sibling module (script dir)

ROOT = Path(__file__).resolve().parent
RESULTS_PATH = ROOT / "results" / "compound.json"
FAMILY = [1.5, 2.0, 3.0, 4.0]
FIRST_TRY = (0.95, 1.15)  # the window for measured / target on the first try


def ziplm_step(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The finished ZipLM step of a run's manifest, or None."""
    for s in manifest.get("steps", []):
        if s.get("name") == "ziplm" and s.get("status") == "done":
            return s
    return None


def find_runs(outputs: Path) -> dict[str, Path]:
    """latency_model -> the newest finished ``ziplm_2x`` run dir with the retries settings (speedup 4, the
    family above, no recovery)."""
    found: dict[str, tuple[str, Path]] = {}
    for m in sorted((outputs / "ziplm_2x").glob("*/manifest.json")):
        data = read_json(m)
        step = ziplm_step(data)
        if step is None:
            continue
        cfg = step.get("pass") or step.get("pass_config") or {}  # the manifest names it "pass"
        rec = cfg.get("recovery") or {}
        if float(cfg.get("speedup", 0)) != 4.0 or [float(x) for x in cfg.get("family") or []] != FAMILY \
                or int(rec.get("steps", -1)) != 0:
            continue
        lm = str(cfg.get("latency_model"))
        when = str(step.get("finished") or "")
        if lm not in found or when > found[lm][0]:
            found[lm] = (when, m.parent)
    return {k: v[1] for k, v in found.items()}


def summarize(step: dict[str, Any]) -> dict[str, Any]:
    """Retries and the first try's accuracy per target from one ZipLM step's result."""
    res = step.get("result") or {}
    metrics = res.get("metrics", res)
    fam = metrics.get("family") or {}
    targets = {}
    for key, r in fam.items():
        ratio = r.get("first_try_ratio")
        targets[key] = {"retries": r.get("retries"), "first_try_ratio": ratio,
                        "first_try_within": None if ratio is None else FIRST_TRY[0] <= ratio <= FIRST_TRY[1],
                        "predicted_speedup": r.get("predicted_speedup"),
                        "measured_speedup_b32": r.get("measured_speedup_b32"), "met_target": r.get("met_target")}
    table = metrics.get("latency_table") or {}
    return {"retries_total": metrics.get("retries_total"), "busy_checks": metrics.get("busy_checks"),
            "table_busy": table.get("busy"), "table_cache_file": table.get("cache_file"), "targets": targets,
            "calibration": table.get("calibration"), **({"linear": table["linear"]} if table.get("linear") else {})}


def measurement(detail: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies the latency measurement a run priced with: the cached table's file and its whole-model
    calibration timings (a file measured anew after its cache was deleted keeps its path, not its timings)."""
    points = (detail.get("calibration") or {}).get("points") or []
    return (detail.get("table_cache_file"), *(p.get("measured_ms") for p in points))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outputs", default="outputs", help="the pipelines' output dir (default outputs)")
    ap.add_argument("--results", default=str(RESULTS_PATH))
    a = ap.parse_args()
    from compresslab.pruning.speedup import SpeedupSettings

    after = SpeedupSettings().latency_model.value  # the model a user gets
    required = {"one_layer", after}
    runs = find_runs(Path(a.outputs))
    missing = sorted(required - set(runs))
    if missing:
        raise SystemExit(f"no finished ziplm_2x retries run for latency_model={missing} under {a.outputs}/ziplm_2x: "
                         "run the commands in this script's docstring first")
    manifests = {lm: read_json(rd / "manifest.json") for lm, rd in runs.items()}
    detail = {lm: {"run_dir": str(rd), **summarize(ziplm_step(manifests[lm]))} for lm, rd in runs.items()}
    tables = {lm: measurement(d) for lm, d in detail.items()}
    if len({tables[lm] for lm in required}) > 1 or any(tables[lm][0] is None for lm in required):
        raise SystemExit(f"the runs priced with different (or uncached) latency tables "
                         f"{ {lm: tables[lm][0] for lm in sorted(required)} } (or the same file measured anew): run "
                         "every latency_model in one session on a quiet machine, so they share one cached table")
    for lm in sorted(set(detail) - required):
        if tables[lm] != tables[after]:
            print(f"left out: the {lm} run {detail[lm]['run_dir']} priced with another latency table")
            del detail[lm], manifests[lm]
    results = ResultsFile(a.results)
    for lm in detail:
        results.note_run(f"ziplm_retries_{lm}", manifests[lm])
    results.put(["ziplm_retries_detail"], {**detail, "family": FAMILY, "first_try_window": list(FIRST_TRY),
                                           "before": "one_layer", "after": after})
    results.put(["ziplm_retries"], {"before": detail["one_layer"]["retries_total"],
                                    "after": detail[after]["retries_total"]})
    pending = dict(results.get(["meta", "pending"]) or {})
    if pending.pop("ziplm_retries", None) is not None:
        results.put(["meta", "pending"], pending)
    print({lm: (d["retries_total"], {k: round(t["first_try_ratio"] or 0, 3) for k, t in d["targets"].items()})
           for lm, d in detail.items()})


if __name__ == "__main__":
    main()
