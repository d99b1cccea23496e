"""Seeds of issue 13's key comparisons: results/compound.json ``seeds``, accuracy only, resumable.

    python benchmarks/compound_seeds.py table                          # once, on a QUIET machine: ZipLM's latency table
    python benchmarks/compound_seeds.py run --seeds 42 1 2 --steps 400 # the runs (resumable), then the summary
    python benchmarks/compound_seeds.py summarize                      # summaries and meta.pending again, no runs

Comparisons (a vs b, the same budget for both arms, one normal pipeline run per seed and arm):

* ``ziplm_vs_l1_2x``: ``ziplm_2x`` vs the same pipeline with ``structured_l1`` in ZipLM's place (run dir
  ``outputs/structured_l1_2x/...``), both at 2x with ``max_retries=0``: the structure comes from the latency
  table's prediction alone, never from a timing on this shared machine (the one speedup check each pass
  still makes is void: ``COMPRESSLAB_TIME_BUSY=1`` lets it run beside training, its figure is not used).
  Every run must price with ONE table: the cached table of this machine (``table`` measures it, on a quiet
  machine); ``run`` refuses to start without it and checks every run used exactly that file.
* ``obert_vs_magnitude_80``: ``obert_int8`` vs ``magnitude_int8``, gradual to 80% (benchmarks/obert.py gradual),
  both at the pipelines' default recovery LR (5e-5): untuned for magnitude.
* ``obert_vs_magnitude_80_tuned_lr``: the same pair, each at the recovery LR its own grid chose on the
  validation split (``long.chosen_lr`` in the same results file, written by ``compound_long.py lr-grid`` at
  this budget); refused before any run when that choice is missing or was made at another budget.

Scored: the torch model after the pruning step (``ziplm``/``structured_l1``/``obert``/``magnitude``), fp32,
on SST-2 dev, for both arms alike (obert_int8/magnitude_int8 still run their int8 step; that file is not scored). Every run starts from the
cached ``bench`` teacher of the config's seed (``model=local model.source=<teacher cache> model.finetuned=true``),
so a seed changes the passes' randomness, never the teacher; ``bench=off`` (no timing counts).
Stored per comparison: per-seed dev predictions and accuracies per arm, each run dir, mean and sample std
(ddof=1) per arm, per-seed McNemar p (a vs b) and a pooled one; ``meta.pending.seeds`` names the seeds left.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from compresslab.cli import setup_process
from compresslab.config import compose, keep_pass_overrides
from compresslab.manifest import git_sha, read_json

from _results import ResultsFile  # sibling modules (script dir)
from compound import REPO, RESULTS_PATH, THREADS, _rel

if TYPE_CHECKING:
    from compresslab.pipeline import Teacher

log = logging.getLogger("compound_seeds")

MIN_SEEDS = 3  # MEASURE.md: key comparisons run with 3 seeds
SPEEDUP, SPARSITY = 2.0, 0.8
SPEEDUP_PASSES = ("ziplm", "structured_l1")
# what a seed changes and what it leaves alone in these runs (stored in meta.seeds)
VARIES = ("torch.manual_seed (dropout masks during KD recovery)", "the order of the recovery batches",
          "ZipLM's calibration sample (its Hessians, hence its structure)", "oBERT's Fisher gradient batches",
          "magnitude's masks (taken from weights that depend on the batch order)",
          "the seeded validation carve (up to 1,000 train examples held out; no pass here selects on it), "
          "so the recovery train set differs by those examples")
FIXED = ("the teacher (the cached bench teacher of the config's seed, loaded with its own head: no head init)",
         "SST-2 dev (all 872)", "the budget (steps, batch, lr, KD settings, Fisher gradients, pruning events)",
         "ZipLM's latency table (one cached file, pinned by sha256) and hence structured_l1's structure, which "
         "depends on L1 norms and that table only", "threads")


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: the pipeline overrides and the step whose torch model is scored."""

    name: str  # the run dir's pipeline name
    step: str
    overrides: tuple[str, ...]


TUNED = "obert_vs_magnitude_80_tuned_lr"
NAMES = ("ziplm_vs_l1_2x", "obert_vs_magnitude_80", TUNED)


def comparisons(events: int, lrs: Mapping[str, float] | None = None) -> dict[str, tuple[Arm, Arm]]:
    """name -> (a, b); a is our method, b its baseline. ``lrs`` (method -> recovery LR, from
    ``long.chosen_lr``) adds :data:`TUNED`: oBERT vs magnitude, each at its own tuned LR."""
    speed = lambda p: (f"pipeline.passes.{p}.speedup={SPEEDUP}", f"pipeline.passes.{p}.max_retries=0",  # noqa: E731
                       f"pipeline.passes.{p}.check_runs=1")  # the check is void: as little of it as possible
    sparse = lambda p: (f"pipeline.passes.{p}.mode=gradual", f"pipeline.passes.{p}.sparsity={SPARSITY}",  # noqa: E731
                        f"pipeline.passes.{p}.num_events={events}")
    ob = Arm("obert_int8", "obert", ("+pipeline=obert_int8", *sparse("obert")))
    mag = Arm("magnitude_int8", "magnitude", ("+pipeline=magnitude_int8", *sparse("magnitude")))
    tuned = ({TUNED: tuple(Arm(arm.name, arm.step, (*arm.overrides, f"pipeline.passes.{arm.step}.recovery.lr={lrs[arm.step]}"))
                           for arm in (ob, mag))} if lrs is not None else {})
    return {
        "ziplm_vs_l1_2x": (
            Arm("ziplm_2x", "ziplm", ("+pipeline=ziplm_2x", *speed("ziplm"))),
            Arm("structured_l1_2x", "structured_l1",
                ("+pipeline=ziplm_2x", "~pipeline.passes.ziplm", "+pass@pipeline.passes.structured_l1=structured_l1",
                 "pipeline.steps=[finetune,structured_l1]", "pipeline.name=structured_l1_2x", *speed("structured_l1")))),
        "obert_vs_magnitude_80": (ob, mag),
        **tuned,  # type: ignore[dict-item]
    }


def tuned_lrs(results: ResultsFile, a: argparse.Namespace, base: Sequence[str]) -> dict[str, float] | None:
    """``long.chosen_lr`` when both methods have one chosen at this comparison's budget, else None.

    Raises SystemExit when :data:`TUNED` is asked for (``--only``) and no such choice exists: the grid
    must have run at the same base settings, recovery steps and pruning events."""
    chosen = results.get(["long", "chosen_lr"]) or {}
    grid = results.get(["long", "lr_grid_settings"]) or {}
    why = []
    for method in ("obert", "magnitude"):
        g = grid.get(method) or {}
        if method not in chosen:
            why.append(f"{method}: no LR chosen (python benchmarks/compound_long.py lr-grid --method {method})")
            continue
        want = {"base": [o for o in base if not o.startswith("budget.recovery_steps=")], "steps": a.steps,
                "events": a.events}
        got = {"base": g.get("base"), "steps": g.get("steps"), "events": g.get("events")}
        if got != want:
            why.append(f"{method}: its LR was chosen at {got}, these seeds run at {want}")
    if not why:
        return {m: float(chosen[m]) for m in ("obert", "magnitude")}
    if a.only and TUNED in a.only:
        raise SystemExit(f"{TUNED}: no tuned LRs for this budget in {a.results}: " + "; ".join(why))
    return None


# ----------------------------------------------------------------------------------------------- summary math
def summarize(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, sample std (ddof=1; None below 2 seeds) per arm and McNemar p-values, from stored predictions.

    ``runs``: seed -> {"labels": "0110...", "a": {"preds": "0100..."}, "b": {...}}; seeds missing an arm are
    left out. Accuracies are recomputed from the predictions. ``mcnemar_p`` is per seed (a vs b on the same
    dev examples); ``mcnemar_p_pooled`` sums the discordant pairs over seeds: each dev example counts once per
    seed, and those repeats are not independent, so it overstates significance (the per-seed ones are exact).
    """
    import numpy as np

    from compresslab.data.metrics import mcnemar_pvalue

    done = [s for s, r in runs.items() if "a" in r and "b" in r]
    correct: dict[str, dict[str, Any]] = {}
    for s in done:
        labels = np.array([int(c) for c in runs[s]["labels"]])
        preds = {arm: np.array([int(c) for c in runs[s][arm]["preds"]]) for arm in ("a", "b")}
        if any(len(p) != len(labels) for p in preds.values()):
            raise ValueError(f"seed {s}: predictions and labels differ in length "
                             f"({ {arm: len(p) for arm, p in preds.items()} } vs {len(labels)})")
        correct[s] = {arm: p == labels for arm, p in preds.items()}
    acc = {arm: [float(correct[s][arm].mean()) for s in done] for arm in ("a", "b")}
    diff = [x - y for x, y in zip(acc["a"], acc["b"])]

    def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
        return (float(np.mean(xs)) if xs else None, float(np.std(xs, ddof=1)) if len(xs) > 1 else None)

    (am, asd), (bm, bsd), (dm, dsd) = mean_std(acc["a"]), mean_std(acc["b"]), mean_std(diff)
    pooled = (mcnemar_pvalue(np.concatenate([correct[s]["a"] for s in done]),
                             np.concatenate([correct[s]["b"] for s in done])) if done else None)
    return {"a_mean": am, "a_std": asd, "b_mean": bm, "b_std": bsd, "diff_mean": dm, "diff_std": dsd,
            "seeds_done": [int(s) for s in done], "a_acc": dict(zip(done, acc["a"])), "b_acc": dict(zip(done, acc["b"])),
            "mcnemar_p": {s: mcnemar_pvalue(correct[s]["a"], correct[s]["b"]) for s in done},
            "mcnemar_p_pooled": pooled}


def pending_text(entries: Mapping[str, Any], names: Sequence[str], seeds: Sequence[int]) -> str | None:
    """meta.pending.seeds: None once every comparison has every asked seed and at least MIN_SEEDS of them."""
    left = []
    for name in names:
        done = set((entries.get(name) or {}).get("seeds_done") or [])
        missing = [s for s in seeds if s not in done]
        if missing:
            left.append(f"{name}: seeds {missing} to run (done: {sorted(done)})")
        elif len(done) < MIN_SEEDS:
            left.append(f"{name}: {MIN_SEEDS - len(done)} more seed(s) to run (done: {sorted(done)})")
    if not left:
        return None
    return (f"{MIN_SEEDS} seeds of ZipLM vs L1 at 2x and oBERT vs magnitude at 80% (benchmarks/compound_seeds.py run): "
            + "; ".join(left))


# ----------------------------------------------------------------------------------------------- teacher and table
def _without_model(overrides: Sequence[str]) -> list[str]:
    """The runs name the teacher as their model: the user's model overrides only choose that teacher."""
    return [o for o in overrides if not o.lstrip("+~").startswith(("model=", "model."))]


def fixed_teacher(base: list[str], work: Path) -> tuple["Teacher", Path]:
    """(the teacher, its directory): the finetune pass's cache entry at the config's seed (trained once if missing,
    as every benchmark does), or the given model with ``model.finetuned=true``."""
    from hydra.utils import instantiate

    from compresslab.pipeline import teacher_of

    cfg = compose(_filter(base, ["+pipeline=ziplm_2x"]))
    setup_process(THREADS, int(cfg.seed))
    teacher = teacher_of(cfg, work)
    if teacher.given:
        return teacher, Path(teacher.source)
    key = instantiate(cfg.pipeline.passes.finetune).cache_key(teacher.context(work, work / "step"))
    d = Path(cfg.paths.cache_dir) / "teachers" / key
    if not (d / "teacher.json").is_file():
        raise SystemExit(f"the teacher is not in the cache ({d}): the finetune pass must cache it (cache: true)")
    return teacher, Path(_rel(d.resolve()))  # relative to the repo: the runs' config (and run dirs) move with it


def pinned_table(cfgs: Sequence[Any], teacher: Any) -> dict[str, Any]:
    """The one cached latency table every speedup arm prices with: its path and sha256.

    SystemExit (before any run) when the arms would use different tables or none is cached for this
    machine and software: then ``table`` measures it, on a quiet machine."""
    from hydra.utils import instantiate

    from compresslab.bench.latency_table import cache_file, environment
    from compresslab.bench.table_cache import differences, normalize
    from compresslab.ops.spdy import LatencyTable

    found = {}
    for cfg in cfgs:
        step = next(s for s in cfg.pipeline.steps if s in SPEEDUP_PASSES)
        p = instantiate(cfg.pipeline.passes[step], _convert_="all")
        if len(p.runtimes()) != 1:  # a pinned table is one runtime's
            raise SystemExit(f"{step}: latency_runtime {p.latency_runtime} lists several runtimes; the seeds pin "
                             "one cached table, so give one")
        env = environment(teacher, p.table_settings())
        found[step] = (cache_file(Path(cfg.paths.cache_dir), env), env)
    (path, env), *rest = found.values()
    if any(p != path for p, _ in rest):
        raise SystemExit(f"the arms would use different latency tables ({ {k: str(v[0]) for k, v in found.items()} }): "
                         "give both speedup passes the same batch, seq, threads and ffn_grid")
    if not path.is_file():
        raise SystemExit(f"no latency table cached for this machine at {path}: measure it once on a quiet machine "
                         "with `python benchmarks/compound_seeds.py table` (same overrides), then run again")
    recorded = LatencyTable.from_dict(json.loads(path.read_text())["table"]).fingerprint
    if normalize(recorded) != normalize(env):
        raise SystemExit(f"the cached latency table {path} was measured in another environment (differs in "
                         f"{differences(normalize(recorded), normalize(env))}): run `table` again")
    return {"path": _rel(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def table(a: argparse.Namespace) -> None:
    """Measure (or find) ZipLM's latency table with the runs' settings; exit 1 when it could not be cached."""
    from hydra.utils import instantiate

    from compresslab.pruning.speedup import SpeedupLab, sample_batches

    with tempfile.TemporaryDirectory(prefix="seeds-teacher-") as tmp:
        base = base_overrides(a)
        teacher, _ = fixed_teacher(base, Path(tmp))
        a_arm = comparisons(a.events)["ziplm_vs_l1_2x"][0]
        cfg = compose(_filter(base, a_arm.overrides))
        p = instantiate(cfg.pipeline.passes.ziplm, _convert_="all")
        ctx = teacher.context(Path(tmp), Path(tmp) / "step")
        with SpeedupLab(teacher.model, ctx, p, sample_batches(ctx, p.num_calibration)) as lab:
            info = lab.table_info
    print(json.dumps({k: info.get(k) for k in ("cached", "cache_file", "measure_s", "not_cached")}, indent=1))
    if not info.get("cache_file"):
        raise SystemExit(f"the latency table was not cached: {info.get('not_cached')}; rerun on a quiet machine")


# ----------------------------------------------------------------------------------------------- runs
def base_overrides(a: argparse.Namespace) -> list[str]:
    return [f"budget={a.budget}", "bench=off", "deploy=ort", f"run.threads={THREADS}",
            f"budget.recovery_steps={a.steps}", f"budget.fisher_grads={a.grads}", *a.override]


def _filter(overrides: Sequence[str], pipeline: Sequence[str]) -> list[str]:
    """``pipeline`` (the overrides that choose it) and ``overrides``, less the pass settings
    (``pipeline.passes.<pass>.<key>=...``) of passes that pipeline does not run (the config refuses them)."""
    # the pipeline's own settings last: they win (max_retries=0 and the targets are what the study holds fixed)
    return [*keep_pass_overrides(overrides, compose(list(pipeline)).pipeline.steps), *pipeline]


def score_step(cfg: Any, rd: Path, m: Mapping[str, Any], step: str, split: str | None = None
               ) -> tuple[str, str, float]:
    """(predictions, labels, accuracy) of the step's torch checkpoint on the run's eval split, or on
    ``split`` ("dev" or "validation": compound_long selects its LR on validation)."""
    from transformers import AutoTokenizer

    from compresslab.checkpoint import load
    from compresslab.eval.evaluate import predict, torch_forward
    from compresslab.pipeline import task_data

    rec = next(s for s in m["steps"] if s["name"] == step)
    task = task_data(cfg)  # as the run read it, after the run's own checks
    split = split or str(cfg.eval.split)  # the run's eval split (dev or validation, checked by task_data)
    examples = list(task.validation if split == "validation" else task.dev)
    sc = predict(torch_forward(load(rd / rec["dir"])), task.spec, examples,
                 AutoTokenizer.from_pretrained(str(rd / rec["dir"])), batch_size=int(cfg.eval.batch_size),
                 max_length=int(cfg.task.max_length))
    as_str = lambda xs: "".join(str(int(x)) for x in xs)  # noqa: E731
    return as_str(sc.predictions), as_str(sc.labels), float(sc.metrics["score"])


def run_arm(cfg: Any, arm: Arm, seed: int, table_pin: dict[str, Any] | None) -> dict[str, Any]:
    """One pipeline run (resumed if it was stopped), checked and scored."""
    from compresslab.pipeline import run

    setup_process(THREADS, seed)
    t0 = time.perf_counter()
    rd = run(cfg)
    m = read_json(rd / "manifest.json")
    if m.get("status") != "finished":
        raise SystemExit(f"{rd}: the run did not finish ({m.get('status')})")
    step = next(s for s in m["steps"] if s["name"] == arm.step)
    met = step["result"].get("metrics", {})
    preds, labels, acc = score_step(cfg, rd, m, arm.step)
    rec = {"run_dir": _rel(rd), "config_hash": m.get("config_hash"), "acc": acc, "preds": preds, "labels": labels,
           "step_score": step["metrics_after"].get("score"), "agreement": step["metrics_after"].get("agreement"),
           "wall_s_this_call": round(time.perf_counter() - t0, 1)}
    if table_pin is not None:  # the structure must come from the pinned table alone
        lt = met.get("latency_table") or {}
        used = Path(lt.get("cache_file") or "")
        same = (lt.get("cached") is True and used.is_file()
                and hashlib.sha256(used.read_bytes()).hexdigest() == table_pin["sha256"])
        if not same:
            raise SystemExit(f"{rd}: step {arm.step} did not price with the pinned latency table {table_pin['path']} "
                             f"(it used {lt.get('cache_file')}, cached={lt.get('cached')}): its structure is void")
        rec.update(structure=step["result"].get("structure"), predicted_speedup=met.get("predicted_speedup"),
                   retries=met.get("retries"), speedup_check="void: timed beside training, not used (max_retries=0)")
    else:
        rec["sparsity"] = met.get("sparsity")
    return rec


def run_all(a: argparse.Namespace) -> None:
    # the speedup passes' one check per run times beside training: allowed, marked busy, never used
    os.environ.setdefault("COMPRESSLAB_TIME_BUSY", "1")
    results = ResultsFile(a.results)
    base = base_overrides(a)
    lrs = tuned_lrs(results, a, base)  # method -> recovery LR, or None: TUNED is then not offered
    comps = comparisons(a.events, lrs)
    names = a.only or list(comps)
    with tempfile.TemporaryDirectory(prefix="seeds-teacher-") as tmp:
        fixed, teacher_dir = fixed_teacher(base, Path(tmp))
        teacher = ["model=local", f"model.source={teacher_dir}", "model.finetuned=true"]
        cfg_of = lambda arm, seed: compose(_filter([*_without_model(base), *teacher, f"seed={seed}"],  # noqa: E731
                                                   arm.overrides))
        pins, settings = {}, {}
        for name in names:  # every bad input before the first run
            old = results.get(["seeds", name, "settings"]) or {}
            if old.get("base", base) != base:
                raise SystemExit(f"{a.results} holds {name} seeds made with {old['base']}, not {base}: move them "
                                 "away first (seeds are only pooled within one setting)")
            asked = [*old.get("seeds_asked", []), *(s for s in a.seeds if s not in old.get("seeds_asked", []))]
            settings[name] = {"base": base, "seeds_asked": asked}
            if name == TUNED:  # the arms' LRs are part of the setting: seeds pool only at the same LRs
                if old.get("recovery_lr", lrs) != lrs:
                    raise SystemExit(f"{a.results} holds {name} seeds made at recovery LRs {old['recovery_lr']}, "
                                     f"not {lrs}: move them away first")
                settings[name]["recovery_lr"] = lrs
            if name == "ziplm_vs_l1_2x":
                pins[name] = pinned_table([cfg_of(arm, a.seeds[0]) for arm in comps[name]], fixed.model)
                old_pin = results.get(["seeds", name, "latency_table"])
                if old_pin is not None and old_pin["sha256"] != pins[name]["sha256"]:
                    raise SystemExit(f"the latency table changed since {name}'s earlier seeds ({old_pin}): they "
                                     "priced with another table; move those seeds away first")
        del fixed
    if not isinstance(results.get(["seeds"]), dict):  # compound.py measure writes it as null until filled
        results.put(["seeds"], {})
    for name in names:
        for seed in a.seeds:
            for side, arm in zip(("a", "b"), comps[name]):
                key = ["seeds", name, "runs", str(seed), side]
                if results.has([*key, "preds"]):  # scored and stored: done (its run dir may be gone)
                    continue
                log.info("%s seed %d %s: %s", name, seed, side, arm.name)
                rec = run_arm(cfg_of(arm, seed), arm, seed, pins.get(name))
                results.put(key, rec)
                store_summary(results, name, comps[name], settings[name], pins.get(name), teacher_dir)
        store_summary(results, name, comps[name], settings[name], pins.get(name), teacher_dir)
    store_meta(results, a, list(comps), teacher_dir)


def store_summary(results: ResultsFile, name: str, arms: tuple[Arm, Arm], settings: dict[str, Any],
                  pin: dict[str, Any] | None, teacher_dir: Path | None) -> None:
    """The comparison's summary beside its runs (the labels of a seed come from its first arm)."""
    entry = dict(results.get(["seeds", name]) or {})
    runs = entry.get("runs") or {}
    for s, r in runs.items():
        if "a" in r and "b" in r and r["a"]["labels"] != r["b"]["labels"]:
            raise SystemExit(f"{name} seed {s}: the two arms were scored on different examples")
    flat = {s: {"labels": next(iter(r.values()))["labels"], **r} for s, r in runs.items()}
    entry.update(summarize(flat))
    entry.update({"a": arms[0].name, "b": arms[1].name, "settings": settings,
                  "score": f"torch model after step {arms[0].step!r} (a) / {arms[1].step!r} (b), fp32, eval split "
                           "(SST-2 dev): the same stage for both arms (the int8 step of obert_int8/magnitude_int8 "
                           "runs too, its file is not scored here)"})
    if pin is not None:
        entry["latency_table"] = pin
    if teacher_dir is not None:
        entry["teacher"] = _rel(teacher_dir)
    results.put(["seeds", name], entry)


def store_meta(results: ResultsFile, a: argparse.Namespace, names: list[str], teacher_dir: Path | None) -> None:
    """meta.seeds (what the seeds vary and hold fixed, the command) and meta.pending.seeds (or its removal)."""
    data = results.load()
    meta = data.setdefault("meta", {})
    entries = data.get("seeds") or {}
    meta["seeds"] = {
        **(meta.get("seeds") or {}), "git_sha": git_sha(), "varies": list(VARIES), "fixed": list(FIXED), "min_seeds": MIN_SEEDS,
        "std": "sample standard deviation over seeds (ddof=1)", "timing": "none counts: bench=off, deploy=ort; "
        "ZipLM/structured_l1 with max_retries=0 (structure from the pinned table's prediction; the one speedup "
        "check per run is void and not used)",
        "ziplm_note": "the structure is the first solve's (predicted 2x by the calibrated table); benchmarks/backends.py's "
                      "ziplm_2x took one retry after a measured shortfall, so these models may differ from it",
        **({"teacher": _rel(teacher_dir), "command": "python benchmarks/compound_seeds.py " + " ".join(sys.argv[1:])}
           if teacher_dir is not None else {})}
    pending = dict(meta.get("pending") or {})
    seeds = sorted({s for e in entries.values() for s in (e.get("settings") or {}).get("seeds_asked", [])})
    text = pending_text(entries, names, seeds or [])
    if text is None:
        pending.pop("seeds", None)
    else:
        pending["seeds"] = text
    meta["pending"] = pending
    data.setdefault("seeds", None)
    results.write(data)
    print(json.dumps({n: {k: e.get(k) for k in ("a_mean", "a_std", "b_mean", "b_std", "seeds_done", "mcnemar_p_pooled")}
                      for n, e in entries.items()}, indent=1))


def resummarize(a: argparse.Namespace) -> None:
    results = ResultsFile(a.results)
    entries = results.get(["seeds"]) or {}
    # the tuned comparison's arms from the LRs its seeds ran at (long.chosen_lr may have moved on since)
    ran_at = (entries.get(TUNED) or {}).get("settings", {}).get("recovery_lr")
    comps = comparisons(a.events, ran_at)
    for name, entry in entries.items():
        store_summary(results, name, comps[name], entry.get("settings") or {}, entry.get("latency_table"), None)
    store_meta(results, a, list(comps), None)



def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["table", "run", "summarize"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2], help="run seeds (42: the config's)")
    ap.add_argument("--budget", default="bench")
    ap.add_argument("--steps", type=int, default=400, help="budget.recovery_steps, both arms")
    ap.add_argument("--grads", type=int, default=128, help="budget.fisher_grads (oBERT)")
    ap.add_argument("--events", type=int, default=4, help="gradual pruning events (oBERT and magnitude)")
    ap.add_argument("--only", nargs="*", choices=NAMES)
    ap.add_argument("--override", nargs="*", default=[], help="more overrides for every run (e.g. debug=smoke)")
    ap.add_argument("--results", default=str(RESULTS_PATH), help="the results file (a scratch path for smoke runs)")
    a = ap.parse_args(argv)
    # a path the user gives is relative to where they ran the command: resolved before the chdir to the repo
    a.results = str(Path(a.results).resolve())
    if len(set(a.seeds)) != len(a.seeds) or min(a.seeds) < 0:
        ap.error(f"--seeds must be distinct integers >= 0, got {a.seeds}")
    if a.steps < 1 or a.grads < 1 or a.events < 1:
        ap.error("--steps, --grads and --events must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.chdir(REPO)
    {"table": table, "run": run_all, "summarize": resummarize}[a.what](a)


if __name__ == "__main__":
    main(sys.argv[1:])
