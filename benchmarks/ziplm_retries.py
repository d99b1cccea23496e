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
import json
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


def measured_structures(manifests: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every structure the runs timed, as each run's final model per target (structure, measured speedup from the
    same check): ``[{"run": latency_model, "target", "heads", "ffn", "measured"}]``; dense members left out."""
    points = []
    for lm, manifest in manifests.items():
        res = (ziplm_step(manifest) or {}).get("result") or {}
        for key, r in ((res.get("metrics", res)).get("family") or {}).items():
            st, measured = r.get("structure"), r.get("measured_speedup_b32")
            if st and measured is not None and float(r.get("target_speedup", 0)) > 1.0:
                points.append({"run": lm, "target": key, "heads": list(st["heads"]), "ffn": list(st["ffn"]),
                               "measured": float(measured)})
    return points


def heldout(tables: dict[str, Any], points: list[dict[str, Any]], dense: dict[str, list[int]]) -> dict[str, Any]:
    """Each latency model's predicted speedup (``T(dense) / T(structure)``) of every measured structure, against
    its measured speedup: ``{model: {"mean_rel_error", "max_abs_rel_error", "within_first_try_window",
    "points": [...]}}`` (relative error = predicted / measured - 1; ``within_first_try_window``: how many
    measured / predicted land in FIRST_TRY, what a target priced by that model would have done on the first
    try if the structure were the one it picked).

    A size a model's table dropped as dominated is priced at the next larger size it kept. Unlike retries,
    which count the few structures each model chose, this prices the same structures with
    every model: none is graded on its own choices, and one noisy check moves one point, not a retry count.
    """
    def price(table: Any, config: dict[str, list[int]]) -> float:
        # a size this table dropped as dominated (no faster than a larger size) at the next larger size kept
        def kept(kind: str, n: int) -> int:
            return min(s for s in table.sizes(kind) if s >= n)
        return table.predict({k: [kept(k, n) for n in sizes] for k, sizes in config.items()})

    out: dict[str, Any] = {}
    for name, table in tables.items():
        t_dense = price(table, dense)
        rows = []
        for p in points:
            pred = t_dense / price(table, {"attention": p["heads"], "ffn": p["ffn"]})
            rows.append({"run": p["run"], "target": p["target"], "predicted": pred, "measured": p["measured"],
                         "rel_error": pred / p["measured"] - 1})
        errs = [r["rel_error"] for r in rows]
        out[name] = {"mean_rel_error": sum(errs) / len(errs) if errs else None,
                     "max_abs_rel_error": max(map(abs, errs)) if errs else None,
                     "within_first_try_window": sum(FIRST_TRY[0] <= r["measured"] / r["predicted"] <= FIRST_TRY[1]
                                                    for r in rows),
                     "points": rows}
    return out


def latency_models(cache_file: Path) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """The three latency models from one cached table file (the one-layer table, the calibrated one, and the
    calibrated model on the table's lines) and the dense structure they price."""
    from compresslab.bench.latency_table import linear_table, one_layer_table
    from compresslab.ops.spdy import LatencyTable

    data = json.loads(cache_file.read_text())
    info = data["info"]
    one = one_layer_table(info)
    arch = one.fingerprint["arch"]
    dense = {"attention": [int(arch["heads"])] * int(arch["layers"]),
             "ffn": [int(arch["ffn"])] * int(arch["layers"])}
    return {"one_layer": one, "calibrated": LatencyTable.from_dict(data["table"]),
            "linear": linear_table(info)[0]}, dense


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
    cache = Path(tables[after][0])
    held = None
    if cache.is_file():  # the file every required run priced with (checked above): same structures, every model
        models, dense = latency_models(cache)
        held = heldout(models, measured_structures(manifests), dense)
    else:
        print(f"held-out comparison left out: the latency table file {cache} is gone")
    results = ResultsFile(a.results)
    for lm in detail:
        results.note_run(f"ziplm_retries_{lm}", manifests[lm])
    results.put(["ziplm_retries_detail"], {**detail, "family": FAMILY, "first_try_window": list(FIRST_TRY),
                                           "before": "one_layer", "after": after,
                                           **({"heldout": held} if held is not None else {})})
    results.put(["ziplm_retries"], {"before": detail["one_layer"]["retries_total"],
                                    "after": detail[after]["retries_total"]})
    pending = dict(results.get(["meta", "pending"]) or {})
    if pending.pop("ziplm_retries", None) is not None:
        results.put(["meta", "pending"], pending)
    print({lm: (d["retries_total"], {k: round(t["first_try_ratio"] or 0, 3) for k, t in d["targets"].items()})
           for lm, d in detail.items()})
    if held is not None:
        print({m: (round(h["mean_rel_error"], 3), round(h["max_abs_rel_error"], 3), h["within_first_try_window"],
                   len(h["points"])) for m, h in held.items()})


if __name__ == "__main__":
    main()
