"""Compound compression toward 10x (issue 13): results/compound.json, every compound model on every CPU backend.

    python benchmarks/compound.py pipelines [--steps 400 --grads 128 --events 4]   # the runs; resumable
    python benchmarks/compound.py measure [--runs 30 --rounds 3]                   # cells -> compound.json
    python benchmarks/compound.py derive                                           # speedups, best_dense, best again

``pipelines`` runs, as a user would, ``ziplm_obert_int8``, ``obert_qat_int8``, ``ziplm_obert_qat_int8`` and
``ziplm_strong_int8`` (ZipLM 2.5x + int8, with 5x the KD steps: ``STEPS_FACTOR``) on the cached ``bench``
teacher (``budget=bench deploy=auto bench=off run.threads=2`` plus the step budget; ``--override`` appends more,
e.g. ``debug=smoke``). ``int8``, ``ziplm_int8`` and ``obert_int8`` are taken from ``outputs/backends_runs.json``
(benchmarks/backends.py) when that run finished at the same budget, else run here; ``int8``'s model is the teacher,
so NNCF's int8 IR of it becomes the dense cell ``openvino_nncf_int8``, and ORT's one-call dynamic int8 of the teacher
is the dense cell ``ort_int8`` (a user gets both without us: with AVX512-VNNI and no AMX the first is the fastest
dense baseline, on AVX2 without VNNI the second; the ``int8`` run's own ORT file has our block-wise embeddings, so it
is a model of ours, not that baseline). Run dirs go to ``outputs/compound_runs.json``. ``--label NAME`` lists one
pipeline's run at other settings under its own name (``--only ziplm_strong_int8 --override pipeline.passes.ziplm.speedup=3.4
--label ziplm_strong_int8@3.4x``); ``measure`` treats it as one more model (``models.<NAME>``).

``measure`` builds the cells (benchmarks/backends.py's cells, plus OpenVINO sparse weight decompression
on AMX and DeepSparse), scores each on SST-2 dev (accuracy, agreement with the teacher's torch
predictions), times the in-process cells in ONE interleaved run (b32xs128, b1xs128 medians and the
real-length throughput), then the DeepSparse cells in its worker process (another interleaved run,
with its own ``ort_fp32``). ``models.<pipeline>`` is the pipeline's fastest own cell at b32 within 1 pt of
the teacher on the VALIDATION split (``_compound_derive.SELECTION``; all cells under ``cells``); ``best`` the
fastest entry within 1 pt on dev. Keys other scripts fill
(the long oBERT/magnitude runs, seeds, ZipLM retries) stay null with the reason in ``meta.pending``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from compresslab.cli import setup_process
from compresslab.config import compose, keep_pass_overrides
from compresslab.failure import error_text
from compresslab.manifest import git_sha, library_versions, read_json

from _compound_cells import (SPARSE_RATES, build_cells, check_runs, dense_from_int8, model_cells,  # noqa: F401 (tests
                             one_teacher, size_bytes, teacher_key, teacher_ort_int8)                 # read them here)
from _compound_derive import MODEL_KEYS, SELECTION, WITHIN, cells_of, derive  # noqa: F401 (sibling modules, script dir; tests read them here)
from _results import ResultsFile, jsonable, write_aside
from backends import (RUNS as BACKENDS_RUNS, SHAPES, THREADS, _forward, _isa, _runner, cell_key,
                      split_key)

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS_PATH = ROOT / "results" / "compound.json"
RUNS_PATH = REPO / "outputs" / "compound_runs.json"
PIPELINES = ("ziplm_obert_int8", "obert_qat_int8", "ziplm_obert_qat_int8", "ziplm_strong_int8")
# a pipeline's KD steps as a multiple of --steps: the speed-first ZipLM point gets 5x (2,000 at the default 400,
# ziplm_mild_int8's recovery in the peer suite), since at 400 steps ZipLM 2x already costs ~0.8 pt
STEPS_FACTOR = {"ziplm_strong_int8": 5}
# benchmarks/backends.py's runs, when finished. ``int8``'s final model IS the teacher: NNCF's int8 IR of it is
# the dense cell ``openvino_nncf_int8`` (a user gets it without us: MEASURE.md's best_dense counts it, and on
# CPUs without AMX it is the fastest dense baseline)
REUSED = ("int8", "ziplm_int8", "obert_int8")
# filled by other scripts (issue 13's long runs, seeds, ZipLM's fitted latency model): never invented here
PENDING = {
    "ziplm_retries": "ZipLM's per-layer fixed-cost latency model (retries before/after) is measured by "
                     "benchmarks/ziplm_retries.py",
    "obert_80_long_acc": "the long oBERT 80% recovery (1-2 epochs, <= 3 CPU h) is run separately",
    "magnitude_80_long_tuned_acc": "the tuned gradual magnitude baseline at the long budget is run separately",
    "mcnemar_p_obert_vs_magnitude_80_long": "needs both long runs' dev predictions",
    "seeds": "3 seeds of ZipLM vs L1 at 2x and oBERT vs magnitude at 80% are run separately",
}

log = logging.getLogger("compound")


def _overrides(a: argparse.Namespace, pipeline: str) -> list[str]:
    """The run's overrides; a pass setting (``pipeline.passes.<pass>.<key>=...``) only where the pipeline has
    that pass (the config refuses a setting of a pass it does not run)."""
    every = [f"budget={a.budget}", "deploy=auto", "bench=off", f"run.threads={THREADS}",
             f"budget.recovery_steps={a.steps * STEPS_FACTOR.get(pipeline, 1)}", f"budget.fisher_grads={a.grads}",
             # the pass's key, not budget.prune_events: the smoke budget has no such setting
             f"pipeline.passes.obert.num_events={a.events}", *a.override]
    return keep_pass_overrides(every, compose([f"+pipeline={pipeline}"]).pipeline.steps)


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO) if p.is_relative_to(REPO) else p)


def _finished(run_dir: Path) -> bool:
    m = run_dir / "manifest.json"
    return m.is_file() and read_json(m).get("status") == "finished"


def _same_budget(a: argparse.Namespace, their_run: dict[str, Any]) -> bool:
    """A backends.py run is reused only when it had this command's budget and no extra overrides were asked
    for (a smoke run, another setting): otherwise the pipeline is run here."""
    want = {f"budget={a.budget}", f"budget.recovery_steps={a.steps}", f"budget.fisher_grads={a.grads}",
            f"budget.prune_events={a.events}"}
    return not a.override and want <= set(their_run.get("overrides", []))


def pipelines(a: argparse.Namespace) -> None:
    """Run (or resume) the compound pipelines; reuse backends.py's ziplm_int8 / obert_int8 when finished."""
    from compresslab.pipeline import run

    runs_path = Path(a.runs_file)
    runs = read_json(runs_path) if runs_path.is_file() else {}
    theirs = read_json(BACKENDS_RUNS) if BACKENDS_RUNS.is_file() else {}
    todo = a.only or (*PIPELINES, *REUSED)
    for p in todo:
        if not a.label and p in REUSED and p in theirs and _same_budget(a, theirs[p]) \
                and _finished(REPO / theirs[p]["run_dir"]):
            runs[p] = {**theirs[p], "reused_from": _rel(BACKENDS_RUNS)}
            log.info("%s: reusing %s", p, theirs[p]["run_dir"])
            continue
        t0 = time.perf_counter()
        over = _overrides(a, p)
        cfg = compose([f"+pipeline={p}", *over])
        setup_process(THREADS, int(cfg.seed))
        rd = run(cfg)
        # --label (one pipeline, checked in main): another setting of it, listed beside the pipeline's own run
        runs[a.label or p] = {"run_dir": _rel(rd), **({"pipeline": p} if a.label else {}), "overrides": over,
                              "wall_s": round(time.perf_counter() - t0, 1)}
        runs_path.parent.mkdir(parents=True, exist_ok=True)
        write_aside(runs_path, runs)  # run dirs, no figures
        log.info("%s: %s (%.0f s)", p, rd, time.perf_counter() - t0)
    write_aside(runs_path, runs)


# ----------------------------------------------------------------------------------------------- DeepSparse
def deepsparse_cells(cells: dict[str, dict[str, dict[str, Any]]], fused_teacher: Path, dev: list, tok: Any, spec: Any,
                     teacher_pred: Any, vocab: int, a: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score and time every DeepSparse cell in its worker (one process, interleaved with its own ort_fp32).

    Returns (key -> cell figures or {"error"}, the worker's meta). Static shapes: dev padded to 128."""
    import numpy as np

    from compresslab.bench.deepsparse_backend import (DeepSparseBench, DeepSparseUnavailable, by_runner, check_python,
                                                      find_python, static_inputs)
    from compresslab.bench.latency import shape_key

    keys = {cell_key(m, n): c for m, mc in cells.items() for n, c in mc.items()
            if c["kind"] == "deepsparse" and "error" not in c}  # an error cell keeps its reason, never runs
    try:
        python = find_python(None)
        version = check_python(python)
    except DeepSparseUnavailable as e:
        return {k: {"error": f"DeepSparse not installed: {e}"} for k in keys}, {"skipped": str(e)}
    seq = 128
    inputs = static_inputs(dev, tok, seq, spec.kind)
    labels = np.array([e.label for e in dev])
    job = DeepSparseBench(models={"ort_fp32": (str(fused_teacher), "ort"),
                                  **{k: (str(c["path"]), "deepsparse") for k, c in keys.items()}},
                          score=list(keys), batches=(1, 32), seq=seq, threads=THREADS, vocab_size=vocab,
                          warmup=5, runs=a.runs, min_time_s=0.0, max_runs=max(a.runs, 1))
    from compresslab.bench.machine_load import timing_window

    try:
        with timing_window("compound: DeepSparse worker"):  # only around a worker that runs: nothing else is timed
            res = job.run(python, inputs)
    except Exception as e:  # e.g. the engine refuses this CPU or a graph: every cell keeps the exact error
        return ({k: {"error": error_text(e)} for k in keys},
                {"python": str(python), "deepsparse_version": version, "error": error_text(e)})
    lat = by_runner(res["latency"])
    own = lat.get("ort_fp32", {})  # the worker's own ort_fp32, interleaved with its cells: their only same-process base
    own_b32, own_b1 = (own.get(shape_key(b, seq), {}).get("p50_ms") for b in (32, 1))
    out: dict[str, Any] = {}
    for k in keys:
        if k not in lat or k not in res["logits"]:
            out[k] = {"error": res.get("errors", {}).get(k, "the worker returned no figures for it")}
            continue
        preds = res["logits"][k].argmax(-1)
        b32 = lat[k][shape_key(32, seq)]["p50_ms"]
        out[k] = {"acc": float(np.mean(preds == labels)), "agreement": float(np.mean(preds == teacher_pred.predictions)),
                  "b32_ms": b32, "b1_ms": lat[k][shape_key(1, seq)]["p50_ms"],
                  # static engines: every sentence is padded to seq, so the real-length figure is b32's throughput
                  "real_len_sent_per_s": 32 * 1000.0 / b32, "real_len_note": f"static shapes: padded to {seq}",
                  "timed_in": "deepsparse_worker", "ort_fp32_b32_ms_same_process": own_b32,
                  "ort_fp32_b1_ms_same_process": own_b1}
    meta = {"python": str(python), "deepsparse_version": version, "versions": res.get("versions"),
            "compile_s": res.get("compile_s"), "ort_fp32_in_worker": lat.get("ort_fp32"),
            "note": "DeepSparse cells are timed in their own worker process (interleaved with that process's ort_fp32), "
                    "after the in-process interleaved run, not interleaved with it: their speedups are against the "
                    "worker's own ort_fp32 (ort_fp32_in_worker, the same file); none against best_dense, which is "
                    "timed in the other process, so a DeepSparse cell is never best_dense, a pipeline's entry or best"}
    return out, meta


# ----------------------------------------------------------------------------------------------- measure
def picks_on_validation(model: str, name: str, cell: dict[str, Any]) -> bool:
    """The cells scored on the validation split too: the teacher (the reference) and every in-process cell of
    ours that may stand for its pipeline (not a peer's IR, not a file before the pipeline's last step)."""
    if model == "dense":
        return name == "torch_fp32"
    return cell.get("method") != "peer" and cell.get("backend") != "deepsparse"


def measure(a: argparse.Namespace) -> None:
    import numpy as np

    from compresslab.bench import measure_latency, measure_real_lengths
    from compresslab.bench.env import cpu_flags, hardware_fingerprint
    from compresslab.bench.latency import shape_key
    from compresslab.bench.machine_load import timing_window
    from compresslab.data.loaders import make_loader
    from compresslab.data.tasks import load_run_task
    from compresslab.eval.evaluate import predict
    from transformers import AutoTokenizer

    results = ResultsFile(a.results)
    setup_process(THREADS, 0)
    load0 = os.getloadavg()
    flags = cpu_flags()
    if not Path(a.runs_file).is_file():
        raise SystemExit(f"no runs file at {a.runs_file}: run `python benchmarks/compound.py pipelines` first")
    try:
        runs = read_json(Path(a.runs_file))
    except ValueError as e:
        raise SystemExit(f"{a.runs_file} is not a JSON runs file ({e})") from None
    manifests = check_runs(runs, a.runs_file)  # every run readable and finished before anything is scored or timed
    cells = build_cells(runs, manifests, flags)
    rd = REPO / next(iter(runs.values()))["run_dir"]
    cfg = manifests[next(iter(runs))]["config"]
    task = load_run_task(cfg)
    tok = AutoTokenizer.from_pretrained(str(rd / "export"))
    dev, val = list(task.dev), list(task.validation)
    if cfg["task"].get("max_dev"):  # a smoke run's slice (debug=smoke); the real measurement has all 872
        dev, val = dev[: int(cfg["task"]["max_dev"])], val[: int(cfg["task"]["max_dev"])]
    vocab = int(tok.vocab_size)
    kw = dict(batch_size=64, max_length=int(cfg["task"]["max_length"]))

    runners: dict[str, Any] = {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    preds: dict[str, Any] = {}
    for model, mc in cells.items():
        for name, c in mc.items():
            key = cell_key(model, name)
            cell = out.setdefault(model, {})[name] = {
                "backend": c["kind"], "file": _rel(Path(c["path"])) if c["path"] else None,
                "size_bytes": size_bytes(c["path"]), "method": c["method"], "precision_requested": c["precision"]}
            if c.get("sparse_rate") is not None:
                cell["sparse_weights_decompression_rate"] = c["sparse_rate"]
            if c.get("final_model") is False:
                cell["final_model"] = False
            if "error" in c:
                cell["error"] = c["error"]
                continue
            if c["kind"] == "deepsparse":
                continue  # scored and timed by its worker below
            t0 = time.perf_counter()
            try:
                runners[key] = _runner(c, vocab)
                scored = predict(_forward(c, runners[key]), task.spec, dev, tok, **kw)
                if picks_on_validation(model, name, cell):  # what derive() picks a pipeline's cell on (not dev)
                    cell["val_acc"] = float(predict(_forward(c, runners[key]), task.spec, val, tok, **kw)
                                            .metrics[task.spec.primary_metric])
            except Exception as e:  # e.g. OpenVINO cannot read a file: the cell says why
                runners.pop(key, None)
                cell.pop("val_acc", None)
                cell["error"] = error_text(e, limit=500)
                log.warning("cell %s failed: %s", key, cell["error"])
                continue
            preds[key] = scored.predictions
            cell["acc"] = float(scored.metrics[task.spec.primary_metric])
            log.info("scored %s: dev %s, validation %s (%.0f s)", key, cell["acc"], cell.get("val_acc"),
                     time.perf_counter() - t0)
    teacher = preds["dense.torch_fp32"]
    for key, p in preds.items():
        model, name = split_key(key)
        out[model][name]["agreement"] = float(np.mean(p == teacher))

    log.info("timing %d runners interleaved at %s", len(runners), SHAPES)
    t0 = time.perf_counter()
    loader = make_loader(dev, tok, 32, kw["max_length"], shuffle=False)
    batches = [{k: v.numpy() for k, v in b.items() if k != "labels"} for b in loader]
    with timing_window("compound: every in-process cell, fixed shapes and real lengths"):
        lat = measure_latency(runners, SHAPES, warmup=5, runs=a.runs, min_time_s=0.0, seed=0, vocab_size=vocab,
                              keep_times=True)
        rl = measure_real_lengths(runners, batches, rounds=a.rounds)
    timing_s = time.perf_counter() - t0
    for key, r in runners.items():
        model, name = split_key(key)
        cell, c = out[model][name], cells[model][name]
        res = lat["results"][key]
        cell["b32_ms"] = res[shape_key(32, 128)]["p50_ms"]
        cell["b32_times_ms"] = res[shape_key(32, 128)]["times_ms"]  # per round: the paired speedups
        cell["b1_ms"] = res[shape_key(1, 128)]["p50_ms"]
        cell["real_len_sent_per_s"] = rl["results"][key]["sentences_per_s"]
        info = r.info() if hasattr(r, "info") else {}
        cell["precision"] = info.get("precision") if c["kind"] == "openvino" else c["precision"]
        if c["kind"] == "openvino" and "int8" in name:
            cell["precision"] = f"int8 ({cell['precision']} for the rest)"
    from compresslab.manifest import RunManifest
    from compresslab.pipeline import teacher_onnx

    ds, ds_meta = deepsparse_cells(cells, teacher_onnx(rd, RunManifest.load(rd)), dev, tok, task.spec,
                                   _Pred(teacher), vocab, a)
    for key, figs in ds.items():
        model, name = split_key(key)
        out[model][name].update(figs)
        if "precision" not in out[model][name] and "error" not in figs:
            out[model][name]["precision"] = cells[model][name]["precision"]
    for p in runs:
        results.note_run(p, manifests[p])
    data = results.load()  # other scripts' keys (seeds, long runs, retries) are kept
    data["best"] = data["best_any_method"] = None  # until derive() below: never the last measure's beside new cells
    meta = {**data.get("meta", {}),
            "git_sha": git_sha(), "versions": library_versions(), "hardware": hardware_fingerprint(THREADS),
            "cpu_flags_relevant": sorted(f for f in flags if f.startswith(("amx", "avx512_vnni", "avx512_bf16", "avx_vnni"))),
            "threads": THREADS, "shapes": [list(s) for s in SHAPES], "runs": a.runs, "rounds": a.rounds,
            "real_length": rl["settings"], "timing_s": round(timing_s, 1), "loadavg_before": load0,
            "loadavg_after": os.getloadavg(), "split": f"{task.spec.name} dev ({len(dev)}; validation {len(val)} to pick each pipeline's cell)", "pipelines": runs,
            "runners": {k: jsonable(v) for k, v in lat["runners"].items()}, "deepsparse": ds_meta,
            "sparse_weights_decompression": _sparse_note(flags),
            "selection": SELECTION,
            "size_bytes": "the deployed file on disk plus its external data / IR weights (the whole model, embeddings in)",
            "command": f"python benchmarks/compound.py pipelines && python benchmarks/compound.py measure --runs {a.runs} "
                       f"--rounds {a.rounds}",
            "pending": {k: v for k, v in PENDING.items() if data.get(k) is None}}
    data.update({"teacher_acc": out["dense"]["torch_fp32"]["acc"], "cpu_isa": _isa(flags),
                 "budget": _budget(runs),
                 "meta": meta})
    for k in PENDING:
        data.setdefault(k, None)
    data["models"] = {m: {"cells": mc} for m, mc in out.items() if m != "dense"}
    data["best_dense"] = {"cells": out["dense"]}
    results.write(data)  # the cells first: a slip in derive() must not lose the timing
    data.update(derive(out))
    results.write(data)
    print(json.dumps({k: data[k] for k in ("best_dense", "best")}, indent=1))


def _budget(runs: dict[str, Any]) -> dict[str, Any]:
    """The budget the runs were made with, from their manifests (not this command's flags): the composed
    preset of the first run, and every run's own overrides."""
    first = read_json(REPO / next(iter(runs.values()))["run_dir"] / "manifest.json")["config"]["budget"]
    return {**first, "overrides": {p: r.get("overrides") for p, r in runs.items()}}


class _Pred:  # the teacher's predictions in the shape deepsparse_cells reads
    def __init__(self, predictions: Any) -> None:
        self.predictions = predictions


def _sparse_note(flags: set[str]) -> str:
    if "amx_int8" not in flags:
        return ("not tried: OpenVINO's CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE acts on int8 fully connected layers with "
                "AMX only, and this CPU has no amx_int8")
    return (f"tried: every OpenVINO int8 IR also compiled with CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE in {SPARSE_RATES} "
            "(cells *_sparse50 / *_sparse80, the rate in sparse_weights_decompression_rate; compare with the twin)")


def rederive(results: ResultsFile) -> None:
    """Recompute best_dense, models and best from the cells already in the results file."""
    data = results.load()
    if not isinstance(data, dict) or not {"best_dense", "models"} <= set(data):
        raise SystemExit(f"{results.path}: no measured cells to derive from (no best_dense / models): run "
                         "`python benchmarks/compound.py measure` first")
    data.update(derive(cells_of(data)))
    results.write(data)
    print(json.dumps({k: data[k] for k in ("best_dense", "best")}, indent=1))


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["pipelines", "measure", "derive"])
    ap.add_argument("--budget", default="bench", help="budget preset (bench; smoke for a look with --override debug=smoke)")
    ap.add_argument("--steps", type=int, default=400, help="budget.recovery_steps (KD steps after ZipLM / oBERT / QAT)")
    ap.add_argument("--grads", type=int, default=128, help="budget.fisher_grads (oBERT)")
    ap.add_argument("--events", type=int, default=4, help="budget.prune_events (oBERT gradual)")
    ap.add_argument("--only", nargs="*", choices=(*PIPELINES, *REUSED))
    ap.add_argument("--override", nargs="*", default=[], help="more pipeline overrides (e.g. debug=smoke paths.output_dir=...)")
    ap.add_argument("--runs", type=int, default=30, help="timed rounds per shape (interleaved)")
    ap.add_argument("--rounds", type=int, default=3, help="real-length rounds over the dev batches")
    ap.add_argument("--runs-file", default=str(RUNS_PATH), help="where the run dirs are listed")
    ap.add_argument("--results", default=str(RESULTS_PATH), help="the results file (a scratch path for smoke runs)")
    ap.add_argument("--label", help="pipelines only: list the run under this name in the runs file (with one --only "
                                    "pipeline and the --override / --steps that make it differ, e.g. "
                                    "ziplm_strong_int8@3x); measure then times it as one more model")
    a = ap.parse_args(argv)
    # a path the user gives is relative to where they ran the command: resolved before the chdir to the repo
    a.runs_file = str(Path(a.runs_file).resolve())
    a.results = str(Path(a.results).resolve())
    if a.label is not None:
        if a.what != "pipelines" or len(a.only or ()) != 1:
            ap.error("--label names one run: use it with `pipelines --only <one pipeline>`")
        if a.label in (*PIPELINES, *REUSED, "dense"):
            ap.error(f"--label {a.label!r} is a pipeline's own name or 'dense': pick a name of its own")
        if not re.fullmatch(r"[A-Za-z0-9_.@-]+", a.label):
            ap.error(f"--label {a.label!r}: use one or more of A-Z a-z 0-9 _ . @ - (no spaces or slashes)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.chdir(REPO)
    if a.what == "derive":
        rederive(ResultsFile(a.results))
    else:
        (pipelines if a.what == "pipelines" else measure)(a)


if __name__ == "__main__":
    main(sys.argv[1:])
