"""Every model on every CPU backend and precision, from ONE interleaved run (issue 9): results/backends.json.

    python benchmarks/backends.py pipelines [--steps 400 --grads 128 --events 4]   # the runs; resumable
    python benchmarks/backends.py measure [--runs 30]                              # cells -> backends.json

``pipelines`` runs, as a user would (``python -m compresslab +pipeline=<p> budget=bench deploy=auto
bench=off`` plus the step budget), ``int8``, ``ziplm_2x``, ``ziplm_int8`` and ``obert_int8`` on the
cached ``bench`` teacher (SST-2). ``deploy=auto`` makes both int8 IRs of every int8 run (ours: our
static QDQ calibration; NNCF PTQ: the peer's), picks one on the validation split, then picks ORT or
OpenVINO on validation agreement + measured b32 speed: that decision is ``deployed_auto``. The
``int8`` run's final torch model IS the teacher, so its NNCF IR is ``dense.openvino_nncf_int8``
(NNCF on the dense teacher, ``method: "peer"``). Run dirs are listed in ``outputs/backends_runs.json``.

``measure`` builds every cell (model x backend_precision) from those run dirs, scores each on SST-2
dev (accuracy, and agreement with the teacher's torch predictions), then times ALL cells in one
process, interleaved (MEASURE.md): b32xs128 and b1xs128 medians, and real-length throughput over
dev batches of 32 (dynamic padding). Speedups are derived from the cells (``derived``): vs
``dense.ort_fp32`` (canonical) and vs ``best_dense`` (the fastest dense cell at b32 here).
Nothing else may run on the machine while it measures (the load is recorded).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from compresslab.cli import setup_process
from compresslab.config import compose
from compresslab.failure import error_text
from compresslab.manifest import git_sha, library_versions, read_json

from _results import ResultsFile, jsonable, write_aside  # sibling module (script dir)

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
DEFAULT_OUT = "benchmarks/results/backends.json"
RESULTS = ResultsFile(REPO / DEFAULT_OUT)  # every write stamps meta.machine_load; main() rebinds it for --out
RUNS = REPO / "outputs" / "backends_runs.json"
PIPELINES = ("int8", "ziplm_2x", "ziplm_int8", "obert_int8")
THREADS = 2
SHAPES = ((32, 128), (1, 128))
# CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE for the oBERT cells: every pruned layer (~80% zeros) is above it,
# the dense ones (classifier, pooler) are not
SPARSE_RATE = 0.5
ISA_CLASS_FLAGS = ("amx_int8", "amx_bf16", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")

log = logging.getLogger("backends")


def _overrides(a: argparse.Namespace) -> list[str]:
    return ["budget=bench", "deploy=auto", "bench=off", f"run.threads={THREADS}",
            f"budget.recovery_steps={a.steps}", f"budget.fisher_grads={a.grads}", f"budget.prune_events={a.events}"]


def pipelines(a: argparse.Namespace) -> None:
    """Run (or resume) every pipeline; record the run dirs."""
    from compresslab.pipeline import run

    runs = read_json(RUNS) if RUNS.is_file() else {}
    for p in a.only or PIPELINES:
        t0 = time.perf_counter()
        cfg = compose([f"+pipeline={p}", *_overrides(a)])
        setup_process(THREADS, int(cfg.seed))
        rd = run(cfg)
        runs[p] = {"run_dir": str(rd.relative_to(REPO) if rd.is_relative_to(REPO) else rd),
                   "overrides": _overrides(a), "wall_s": round(time.perf_counter() - t0, 1)}
        RUNS.parent.mkdir(parents=True, exist_ok=True)
        write_aside(RUNS, runs)  # run dirs, no figures
        log.info("%s: %s (%.0f s)", p, rd, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------- cells
def _cell(kind: str, path: Path | None, precision: str, method: str = "compresslab", **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "path": path, "precision": precision, "method": method, **extra}


def _teacher_ckpt(rd: Path, m: dict) -> Path:
    """The teacher's torch checkpoint: the finetune step's dir (or the cache entry it recorded)."""
    step = next(s for s in m["steps"] if s["name"] == "finetune")
    d = rd / step["dir"]
    if (d / "model.safetensors").is_file():
        return d
    cached = step["result"].get("metrics", {}).get("cache_path")
    if cached and Path(cached).is_dir():
        return Path(cached)
    raise FileNotFoundError(f"no teacher checkpoint in {d}")


def _final_ckpt(rd: Path, m: dict) -> Path:
    """The final torch model's checkpoint: the last step that wrote model.safetensors."""
    for s in reversed(m["steps"]):
        if (rd / s["dir"] / "model.safetensors").is_file():
            return rd / s["dir"]
    raise FileNotFoundError(f"no torch checkpoint in {rd}")


def _int8_ir_cells(rd: Path, m: dict) -> dict[str, dict[str, Any]]:
    """ort_int8 (the pipeline's ORT file) and the OpenVINO int8 IRs its deploy stage made."""
    last = m["steps"][-1]["result"]["onnx_path"]
    out = {"ort_int8": _cell("ort", rd / last, "int8")}
    cands = m["export"]["openvino"].get("candidates", {})
    if "ours" in cands and "path" in cands["ours"]:
        out["openvino_int8"] = _cell("openvino", rd / cands["ours"]["path"], "default")
    if "nncf" in cands and "path" in cands["nncf"]:
        out["openvino_nncf_int8"] = _cell("openvino", rd / cands["nncf"]["path"], "default", "peer")
    return out


def cell_key(model: str, name: str) -> str:
    """``<model>.<cell>``, the key of one cell in the runners and in DeepSparse's worker (compound.py). A model may be a
    ``--label`` with dots (``ziplm_strong_int8@3.4x``); a cell name never has one (:func:`split_key`)."""
    if "." in name:
        raise ValueError(f"cell name {name!r} has a dot: its key could not be split back")
    return f"{model}.{name}"


def split_key(key: str) -> tuple[str, str]:
    """``(model, cell)`` of :func:`cell_key`: split at the LAST dot, since labels may hold dots."""
    model, name = key.rsplit(".", 1)
    return model, name


def teacher_ort_int8(rd: Path) -> dict[str, Any]:
    """The dense peer cell ``ort_int8``: ORT's dynamic int8 of run ``rd``'s teacher in one quantizer call
    (``compresslab.pipeline.teacher_int8``, the bench stage's own cell), a speed a user gets without us (the
    fastest dense baseline on AVX2 without VNNI). Not the ``int8`` pipeline's file: that one carries our
    rewrites (block-wise word embeddings by default since 2026-12-05), so it is a model of ours, timed as its own
    cell beside this one. A failure is an error cell (with the exception), not a crash of the measure."""
    from compresslab.manifest import RunManifest
    from compresslab.pipeline import teacher_int8

    try:
        return _cell("ort", teacher_int8(rd, RunManifest.load(rd)), "int8", "peer")
    except Exception as e:  # a graph ORT's quantizer cannot take: an error cell, the other cells still run
        return _cell("ort", None, "int8", "peer", error=f"ORT's int8 of the teacher failed: {error_text(e)}")


def _fp32_cells(onnx: Path, ckpt: Path, flags: set[str]) -> dict[str, dict[str, Any]]:
    from compresslab.bench.openvino_runner import allowed_precisions, plain_export

    out = {"ort_fp32": _cell("ort", onnx, "fp32"),
           "openvino_default": _cell("openvino", plain_export(onnx), "default"),
           "openvino_f32": _cell("openvino", plain_export(onnx), "f32")}
    if "bf16" in allowed_precisions(False, flags):  # a bf16 ISA (openvino_runner's rule)
        out["openvino_bf16"] = _cell("openvino", plain_export(onnx), "bf16")
    out["torch_fp32"] = _cell("torch", ckpt, "fp32")
    return out


def build_cells(runs: dict[str, Any], flags: set[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> cell -> what to run, from the pipelines' run dirs."""
    from compresslab.manifest import RunManifest
    from compresslab.pipeline import teacher_onnx

    cells: dict[str, dict[str, dict[str, Any]]] = {}
    rd = REPO / runs["int8"]["run_dir"]
    m = read_json(rd / "manifest.json")
    cells["dense"] = _fp32_cells(teacher_onnx(rd, RunManifest.load(rd)), _teacher_ckpt(rd, m), flags)
    cells["dense"]["ort_int8"] = teacher_ort_int8(rd)
    int8 = _int8_ir_cells(rd, m)
    if "openvino_nncf_int8" in int8:  # the int8 run's torch model is the teacher: NNCF on the dense teacher
        cells["dense"]["openvino_nncf_int8"] = int8.pop("openvino_nncf_int8")
    cells["int8"] = int8
    if "ziplm_2x" in runs:  # a measurement of some pipelines only (--only) leaves the others out
        rd = REPO / runs["ziplm_2x"]["run_dir"]
        m = read_json(rd / "manifest.json")
        cells["ziplm_2x"] = _fp32_cells(rd / m["export"]["fp32"]["path"], _final_ckpt(rd, m), flags)
    for p in ("ziplm_int8", "obert_int8"):
        if p in runs:
            rd = REPO / runs[p]["run_dir"]
            cells[p] = _int8_ir_cells(rd, read_json(rd / "manifest.json"))
    if "amx_int8" in flags and "obert_int8" in cells:  # issue 9: OpenVINO's sparse weight decompression, int8 FC layers, AMX only
        for name, c in list(cells["obert_int8"].items()):
            if c["kind"] == "openvino":
                cells["obert_int8"][f"{name}_sparse"] = {**c, "sparse_rate": SPARSE_RATE}
    return cells


def _runner(c: dict[str, Any], vocab: int) -> Any:
    from compresslab.bench import OrtRunner, TorchRunner
    from compresslab.bench.openvino_runner import OpenVinoRunner
    from compresslab.checkpoint import load

    if c["kind"] == "ort":
        return OrtRunner(c["path"], THREADS, vocab_size=vocab)
    if c["kind"] == "openvino":
        return OpenVinoRunner(c["path"], THREADS, c["precision"], vocab_size=vocab, sparse_rate=c.get("sparse_rate"))
    return TorchRunner(load(c["path"]).eval(), THREADS)


def _forward(c: dict[str, Any], runner: Any) -> Any:
    from compresslab.eval.evaluate import onnx_forward, torch_forward
    from compresslab.eval.onnx_runner import OnnxRunner

    if c["kind"] == "ort":  # the timing runner returns nothing: score with the eval runner on the same file
        return onnx_forward(OnnxRunner(c["path"], threads=THREADS))
    if c["kind"] == "openvino":
        return onnx_forward(runner)
    return torch_forward(runner.model)


def _isa(flags: set[str]) -> list[str]:
    return [f for f in ISA_CLASS_FLAGS if f in flags]


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

    setup_process(THREADS, 0)
    load0 = os.getloadavg()
    flags = cpu_flags()
    runs = read_json(RUNS)
    if a.only:
        missing = [p for p in a.only if p not in runs]
        if "int8" not in a.only or missing:
            raise SystemExit(f"--only needs int8 (the teacher's cells come from its run) and run dirs for every "
                             f"pipeline named; missing: {missing or ['int8']}")
        runs = {p: r for p, r in runs.items() if p in a.only}
    cells = build_cells(runs, flags)
    rd = REPO / runs["int8"]["run_dir"]
    cfg = read_json(rd / "manifest.json")["config"]
    task = load_run_task(cfg)
    tok = AutoTokenizer.from_pretrained(str(rd / "export"))
    dev = list(task.dev)
    vocab = int(tok.vocab_size)
    kw = dict(batch_size=64, max_length=int(cfg["task"]["max_length"]))

    runners: dict[str, Any] = {}
    out_models: dict[str, dict[str, Any]] = {}
    teacher_pred = None
    for model, mc in cells.items():
        for name, c in mc.items():
            key = cell_key(model, name)
            runners[key] = _runner(c, vocab)
            t0 = time.perf_counter()
            scored = predict(_forward(c, runners[key]), task.spec, dev, tok, **kw)
            if key == "dense.torch_fp32":
                teacher_pred = scored
            out_models.setdefault(model, {})[name] = {
                "acc": float(scored.metrics[task.spec.primary_metric]),
                "_pred": scored.predictions, "file": str(Path(c["path"]).relative_to(REPO)) if c["path"] else None,
                "method": c["method"], "precision_requested": c["precision"]}
            log.info("scored %s: %s (%.0f s)", key, out_models[model][name]["acc"], time.perf_counter() - t0)
    assert teacher_pred is not None
    for model, mc in out_models.items():
        for name, cell in mc.items():
            cell["agreement"] = float(np.mean(cell.pop("_pred") == teacher_pred.predictions))

    log.info("timing %d runners interleaved at %s", len(runners), SHAPES)
    # every figure of the file is timed again below, in one phase: an earlier measurement's timing windows
    # (the file's previous write, e.g. another session's) describe no figure any more
    RESULTS.restart_timings(builds="scoring before the timing phase")
    t0 = time.perf_counter()
    loader = make_loader(dev, tok, 32, kw["max_length"], shuffle=False)
    batches = [{k: v.numpy() for k, v in b.items() if k != "labels"} for b in loader]
    with timing_window("backends: every cell, fixed shapes and real lengths"):  # one lock, one probe for both
        lat = measure_latency(runners, SHAPES, warmup=5, runs=a.runs, min_time_s=0.0, seed=0, vocab_size=vocab,
                              keep_times=True)
        rl = measure_real_lengths(runners, batches, rounds=a.rounds)
    timing_s = time.perf_counter() - t0
    for key, r in runners.items():
        model, name = split_key(key)
        cell = out_models[model][name]
        res = lat["results"][key]
        cell["b32_ms"] = res[shape_key(32, 128)]["p50_ms"]
        cell["b1_ms"] = res[shape_key(1, 128)]["p50_ms"]
        cell["b32_times_ms"] = res[shape_key(32, 128)]["times_ms"]  # per round: the paired speedups
        cell["real_len_sent_per_s"] = rl["results"][key]["sentences_per_s"]
        info = r.info() if hasattr(r, "info") else {}
        cell["precision"] = (info.get("precision") if cells[model][name]["kind"] == "openvino"
                             else cells[model][name]["precision"])
        if cells[model][name]["kind"] == "openvino" and "int8" in name:
            cell["precision"] = f"int8 ({cell['precision']} for the rest)"
    models = {m: {n: {k: c[k] for k in ("acc", "agreement", "b1_ms", "b32_ms", "real_len_sent_per_s", "file",
                                        "precision", "method", "b32_times_ms")} for n, c in mc.items()}
              for m, mc in out_models.items()}
    for m, mc in cells.items():  # the setting that made a *_sparse cell differ from its twin
        for n, c in mc.items():
            if c.get("sparse_rate") is not None:
                models[m][n]["sparse_weights_decompression_rate"] = c["sparse_rate"]
    deployed_auto = {}
    for p, r in runs.items():
        run_manifest = read_json(REPO / r["run_dir"] / "manifest.json")
        RESULTS.note_run(p, run_manifest)  # deploy=auto chose on its own timing: its machine_load comes along
        deployed_auto[p] = run_manifest["export"].get("deployed", {}).get("label")
    result = {"cpu_isa": _isa(flags), "teacher_acc": models["dense"]["torch_fp32"]["acc"], "models": models,
              "deployed_auto": deployed_auto, "derived": None,
              "meta": {"git_sha": git_sha(), "versions": library_versions(), "hardware": hardware_fingerprint(THREADS),
                       "threads": THREADS, "shapes": [list(s) for s in SHAPES], "runs": a.runs,
                       "real_length": rl["settings"], "timing_s": round(timing_s, 1),
                       "loadavg_before": load0, "loadavg_after": os.getloadavg(),
                       "split": f"{task.spec.name} dev ({len(dev)})", "pipelines": runs,
                       "runners": {k: jsonable(v) for k, v in lat["runners"].items()},
                       "command": "python benchmarks/backends.py pipelines && python benchmarks/backends.py measure"
                                  + "".join(f" {k}" for k in _cli_tail(a)),
                       "sparse_weights_decompression": _sparse_note(flags)}}
    RESULTS.write(result)  # the cells first: a slip in derive() must not lose the timing
    result["derived"] = derive(models, result["cpu_isa"])
    RESULTS.write(result)
    print(json.dumps({"derived": result["derived"], "deployed_auto": deployed_auto}, indent=1))


def rederive() -> None:
    """Recompute ``derived`` (speedups, best_dense, targets) from the cells already in backends.json."""
    result = RESULTS.load()
    result["derived"] = derive(result["models"], result.get("cpu_isa"))
    RESULTS.write(result)
    print(json.dumps(result["derived"]["targets"], indent=1))


def _cli_tail(a: argparse.Namespace) -> list[str]:
    """The measure options that change what is measured or where it goes, for meta.command."""
    tail = [f"--only {' '.join(a.only)}"] if a.only else []
    return tail + ([f"--out {a.out}"] if a.out != DEFAULT_OUT else [])


def _sparse_note(flags: set[str]) -> str:
    if "amx_int8" not in flags:
        return ("not tried: OpenVINO's CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE acts on int8 fully connected layers "
                "with AMX only, and this CPU has no amx_int8")
    return (f"tried: obert_int8's OpenVINO int8 IRs also compiled with CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE="
            f"{SPARSE_RATE} (cells *_sparse; compare with the same IR without it)")


def _paired(base: dict[str, Any], c: dict[str, Any]) -> dict[str, float]:
    """``paired_speedup`` at b32 (the median over interleaved rounds of base / cell) where both cells kept their
    round times (measurements since 2026-12-05), else nothing: older files re-derive unchanged."""
    from compresslab.bench.latency import paired_speedup

    a, b = base.get("b32_times_ms"), c.get("b32_times_ms")
    return {"paired": paired_speedup(a, b)} if a and b else {}


def derive(models: dict[str, dict[str, dict[str, Any]]], cpu_isa: list[str] | None = None) -> dict[str, Any]:
    """Speedups from the cells: vs dense.ort_fp32 and vs best_dense (fastest dense cell at b32), and the targets.

    ``b32_*_paired``: the median of per-round ratios (``compresslab.bench.paired_speedup``), where the cells kept
    their round times. A ratio of two medians can pair medians from the VM's two speed states (RESULTS.md,
    compound on avx512_bf16); so a b32 target counts as met only where the paired ratio meets it too."""
    dense = models["dense"]
    best = min(dense, key=lambda n: dense[n]["b32_ms"])
    base, top = dense["ort_fp32"], dense[best]
    sp = {}
    for m, mc in models.items():
        for n, c in mc.items():
            sp[f"{m}.{n}"] = {"b32_vs_ort_fp32": base["b32_ms"] / c["b32_ms"], "b32_vs_best_dense": top["b32_ms"] / c["b32_ms"],
                              "b1_vs_ort_fp32": base["b1_ms"] / c["b1_ms"], "b1_vs_best_dense": top["b1_ms"] / c["b1_ms"],
                              "real_len_vs_ort_fp32": c["real_len_sent_per_s"] / base["real_len_sent_per_s"],
                              "real_len_vs_best_dense": c["real_len_sent_per_s"] / top["real_len_sent_per_s"]}
            sp[f"{m}.{n}"].update({f"b32_vs_{ref}_{k}": v for ref, cell in (("ort_fp32", base), ("best_dense", top))
                                   for k, v in _paired(cell, c).items()})

    def b32_at_least(key: str, ref: str, x: float) -> bool:
        """The b32 speedup vs ``ref`` meets ``x`` as a ratio of medians and, where measured, paired."""
        return sp[key][f"b32_vs_{ref}"] >= x and sp[key].get(f"b32_vs_{ref}_paired", x) >= x
    ours8 = {n: c for n, c in models["int8"].items() if c["method"] == "compresslab" and c["agreement"] >= 0.99}
    best8 = min(ours8, key=lambda n: ours8[n]["b32_ms"]) if ours8 else None
    peer = dense.get("openvino_nncf_int8")
    teacher = dense["torch_fp32"]["acc"]
    amx = "amx_int8" in (cpu_isa or [])  # the ISA the cells were timed on, as recorded beside them
    targets = {
        "int8_best_ours_agreement_ge_0.99": {
            "cell": f"int8.{best8}" if best8 else None,
            "b32_ms": ours8[best8]["b32_ms"] if best8 else None, "nncf_b32_ms": peer["b32_ms"] if peer else None,
            **({"vs_nncf_paired": v} if best8 and peer and (v := _paired(peer, ours8[best8]).get("paired")) else {}),
            "met": bool(best8 and peer and ours8[best8]["b32_ms"] <= peer["b32_ms"]
                        and _paired(peer, ours8[best8]).get("paired", 1.0) >= 1.0),
            "our_int8_cells": {n: {"agreement": c["agreement"], "b32_ms": c["b32_ms"]} for n, c in models["int8"].items()}},
    }
    not_run = {"met": None, "measured": False, "reason": "its pipeline was not part of this measurement (--only)"}
    if "ziplm_2x" not in models:
        targets["ziplm_2x_within_1pt_at_1.8x_best_dense"] = dict(not_run)
    else:
        z = models["ziplm_2x"]
        zbest = min(z, key=lambda n: z[n]["b32_ms"])
        targets["ziplm_2x_within_1pt_at_1.8x_best_dense"] = {
            "cell": f"ziplm_2x.{zbest}", "acc_drop_pt": 100 * (teacher - z[zbest]["acc"]),
            "b32_vs_best_dense": sp[f"ziplm_2x.{zbest}"]["b32_vs_best_dense"],
            **({"b32_vs_best_dense_paired": v} if (v := sp[f"ziplm_2x.{zbest}"].get("b32_vs_best_dense_paired"))
               is not None else {}),
            "met": bool(teacher - z[zbest]["acc"] <= 0.01 and b32_at_least(f"ziplm_2x.{zbest}", "best_dense", 1.8))}
    if "ziplm_int8" not in models:
        targets["ziplm_int8_8x_ort_fp32"] = dict(not_run)
    else:
        zi = {n: c for n, c in models["ziplm_int8"].items() if c["method"] == "compresslab"}  # not NNCF's int8
        zibest = min(zi, key=lambda n: zi[n]["b32_ms"])
        targets["ziplm_int8_8x_ort_fp32"] = {
            "cell": f"ziplm_int8.{zibest}", "b32_vs_ort_fp32": sp[f"ziplm_int8.{zibest}"]["b32_vs_ort_fp32"],
            **({"b32_vs_ort_fp32_paired": v} if (v := sp[f"ziplm_int8.{zibest}"].get("b32_vs_ort_fp32_paired"))
               is not None else {}),
            "met": b32_at_least(f"ziplm_int8.{zibest}", "ort_fp32", 8.0),
            "all_cells_b32_vs_ort_fp32": {n: round(sp[f"ziplm_int8.{n}"]["b32_vs_ort_fp32"], 3)
                                          for n in models["ziplm_int8"]},
            "judged": amx, "note": ("the 8x target is set for AMX machines: judged here (amx_int8)" if amx else
                                    "the 8x target is set for AMX machines; this one has no AMX (reported, not judged)")}
    return {"best_dense": f"dense.{best}", "speedups": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in sp.items()},
            "targets": targets}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["pipelines", "measure", "derive"])
    ap.add_argument("--steps", type=int, default=400, help="budget.recovery_steps (KD steps after ZipLM / oBERT)")
    ap.add_argument("--grads", type=int, default=128, help="budget.fisher_grads (oBERT)")
    ap.add_argument("--events", type=int, default=4, help="budget.prune_events (oBERT gradual)")
    ap.add_argument("--only", nargs="*", choices=PIPELINES)
    ap.add_argument("--runs", type=int, default=30, help="timed rounds per shape (interleaved)")
    ap.add_argument("--rounds", type=int, default=3, help="real-length rounds over the dev batches")
    ap.add_argument("--out", default=DEFAULT_OUT,
                    help="results file (relative to the repo): e.g. benchmarks/results/backends_avx512_bf16.json for a "
                         "CPU of another ISA class than the one backends.json was timed on")
    a = ap.parse_args(argv)
    global RESULTS
    RESULTS = ResultsFile(REPO / a.out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.chdir(REPO)
    if a.what == "derive":
        rederive()
    else:
        (pipelines if a.what == "pipelines" else measure)(a)


if __name__ == "__main__":
    main(sys.argv[1:])
