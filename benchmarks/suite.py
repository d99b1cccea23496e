"""The peer suite (issue 14): our pipelines and the tools users know, on one cached teacher, one report.

    python -m benchmarks.suite --task sst2                # build every cell, score it, time all cells at the end
    python -m benchmarks.suite --all --budget bench       # every task in benchmarks/suite.yaml
    python -m benchmarks.suite --task sst2 --cells int8,ort_quantize_dynamic --no-timing   # build these; keep the rest
    python -m benchmarks.suite --list                     # tasks, budgets and cells

For one task: the task's teacher (its preset in suite.yaml: ``bench``, or ``bench_small`` for the small
GLUE tasks) is obtained as every pipeline obtains it (the finetune pass, cached by content hash:
:func:`compresslab.pipeline.teacher_of`), exported once (fused and plain ONNX, a torch checkpoint) and
scored on dev (its predictions are the reference for ``agreement``).
Then every cell is built: our pipelines as normal runs (``python -m compresslab +pipeline=<p>`` with
the task's and the budget's overrides, ``deploy=ort bench=off``: a finished run is found again by its
config hash) and the peers (``benchmarks/peers``) from the teacher's export and the same calibration
examples. Each cell is cached by the hash of its settings (``benchmarks/store.py``): a rerun skips
finished cells and resumes where it stopped. A cell that fails keeps its exact error; the rest run. A
pipeline whose pass refuses the task (oBERT on the label-free ``stsb_embedding``) is not built: its cell,
and its OpenVINO cell, record the pass's reason up front (``suite_applies.py``, which also states per pass
what replaces the task loss on an embedding task: ``meta.label_free``).
Every cell is scored from its deployed artifact itself on dev (the task metric, agreement with the
teacher's predictions, McNemar p of each of ours against each peer on the same examples). Each of our
pipelines also gets an OpenVINO cell of the same model (``<pipeline>_openvino``, ``suite_openvino.py``).
Peers whose pins conflict with ours run in their own venv (``compresslab.bench.external``): optimum's
file is scored and timed here like any ONNX file; INC's and torchao's modules are scored and timed in
their worker on the same dev batches (``timing: alternating processes``).

Then ONE timing phase for all cells of the task, interleaved in this process (MEASURE.md): b1 and b32
medians at the configured sequence length, and real-length throughput over dev; then, in the same
window, the peers timed in their own venv, one after the other. It is refused, with
the reason, when training or tests hold their lock or other processes use the CPU
(:func:`compresslab.bench.quiet.require_quiet`); the scores are still written and earlier timings of
unchanged cells kept, with the phase they come from (``suite_timing.timing_phase``). Only that phase's timing
windows can void the figures; those a build closed (ZipLM's latency table while it trained) are the builds'
(``suite_phase.py``), and the report tells them apart. The verdicts (``benchmarks/verdicts.py``: for each
peer that ran, which of ours beat it and by which rule, or that it wins) and which runtime is faster per
pipeline (``runtimes``) are derived from the figures. Writes ``benchmarks/results/suite_<task>.json`` (atomically, stamped with the
machine's load) and rebuilds ``benchmarks/REPORT.md`` / ``REPORT.html`` from every suite file.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from compresslab.failure import error_text

from ._results import ResultsFile, since, write_aside
from .artifacts import Artifact, digest, head_of, record_batches, size_bytes
from .artifacts import score as _score
from .store import CellStore, cell_key
from .suite_applies import loss_statement, skip_reason
from .suite_openvino import faster_runtime, method_of, nncf_artifact, openvino_artifact, recipe_of
from .suite_plan import CONFIG, SuiteError, TaskPlan, cell_specs, list_suite, load_config, plan
from .suite_phase import REFUSED, busy_reasons, phase_of
from .suite_timing import timing_phase
from .verdicts import guarded_task_verdicts as _verdicts
from .verdicts import void_if_busy

if TYPE_CHECKING:
    from compresslab.pipeline import Teacher as TeacherRecord

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS_DIR = ROOT / "results"
WORK = REPO / "outputs" / "suite"
EXIT_TIMING_REFUSED = 3
EXIT_BUSY = 4  # another process runs the same task and budget (its work dir is locked)
EXIT_HELP = ("exit status: 0 every task done; 2 a bad setting or an unreadable results file (that task not run); "
             f"{EXIT_TIMING_REFUSED} the timing phase was refused (training or other load on the machine: the scores "
             f"are written, rerun on a quiet machine or with --no-timing); {EXIT_BUSY} another suite process runs the "
             "same task and budget (that task not run); 1 a crash")
ISA_FLAGS = ("amx_int8", "amx_bf16", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")

log = logging.getLogger("suite")


# ----------------------------------------------------------------------------------------------- teacher
@dataclass
class Teacher:
    """The task's teacher and what every cell shares: data, tokenizer, export, calibration feeds."""

    record: "TeacherRecord"  # compresslab.pipeline.teacher_of's: the model, tokenizer, task data, max length
    sha: str
    dir: Path  # <work>/<task>/teacher/<sha>: export/, checkpoint/, preds.npy, teacher.json
    preds: np.ndarray
    score: float
    calibration: list[dict[str, np.ndarray]]
    _dev_batches: list[dict[str, np.ndarray]] | None = None

    @property
    def task(self) -> Any:
        return self.record.task

    @property
    def tokenizer(self) -> Any:
        return self.record.tokenizer

    @property
    def dev(self) -> list:
        return list(self.record.task.dev)

    @property
    def max_length(self) -> int:
        return int(self.record.max_length)

    @property
    def head(self) -> str:
        return head_of(self.record)

    def build_record(self, budget_cpu_hours: float | None) -> dict[str, Any]:
        """``meta.teacher_build``: what preparing the teacher took in the process that first did it (wall s,
        that process's CPU s: the training when it trained there, else the export of a cached teacher) against
        the task's ``teacher_cpu_hours``: flagged when over, never enforced (the preset fixes the steps)."""
        from compresslab.manifest import read_json

        rec = read_json(self.dir / "teacher.json") if (self.dir / "teacher.json").is_file() else {}
        cpu = rec.get("cpu_s")
        # only an excess is known: a teacher trained by another command shows just its export here
        over = True if cpu is not None and budget_cpu_hours is not None and cpu > 3600 * float(budget_cpu_hours) else None
        return {"prepare_s": rec.get("prepare_s"), "cpu_s": cpu, "cpu_hours_budget": budget_cpu_hours,
                "over_budget": over, "how": "CPU s of the suite process that trained or first found the teacher "
                "(a teacher trained by another command shows only its export here)"}

    def validation(self) -> Any:
        """The validation split with this teacher's predictions on it (computed once, on first use): what our
        OpenVINO cells choose their SmoothQuant strength on (``Teacher.validation``, a ``ValidationAgreement``)."""
        return self.record.validation

    def dev_batches(self) -> list[dict[str, np.ndarray]]:
        """The dev batches exactly as :func:`_score` feeds them, in order (recorded once): what a peer scored
        in its own process must see, so its logits replay into the same ``predict``."""
        if self._dev_batches is None:
            self._dev_batches = record_batches(self.record)
        return self._dev_batches


def prepare_teacher(p: TaskPlan, work: Path) -> Teacher:
    """Train or find the cached teacher, export it once (keyed by its weights' hash) and score it on dev."""
    from compresslab.cli import setup_process
    from compresslab.config import compose
    from compresslab.data.loaders import make_loader
    from compresslab.export.onnx import export_model
    from compresslab.manifest import read_json, state_dict_sha256
    from compresslab.pipeline import teacher_of

    cfg = compose(["+pipeline=int8", *p.overrides])  # any pipeline whose first pass makes the teacher
    setup_process(p.threads, int(cfg.seed))
    t0, cpu0 = time.perf_counter(), _cpu_s()
    t = teacher_of(cfg, work / "teacher_run")
    sha = state_dict_sha256(t.model)
    d = work / "teacher" / sha[:16]
    done = d / "teacher.json"
    if not done.is_file():
        dev = list(t.task.dev)
        batches = list(make_loader(dev[:32], t.tokenizer, 16, int(t.max_length), shuffle=False,
                                   kind=t.task.spec.kind))
        export_model(t.model, t.tokenizer, d / "export", batches, threads=p.threads)
        t.model.save_pretrained(d / "checkpoint")
        t.tokenizer.save_pretrained(d / "checkpoint")
        scored = _score(Artifact(d / "checkpoint", "torch", "fp32"), t, p.threads)
        np.save(d / "preds.npy", scored.predictions)
        write_aside(done, {"sha256": sha, "score": float(scored.metrics["score"]), "prepare_s": since(t0),
                           "cpu_s": round(_cpu_s() - cpu0, 1), "overrides": list(p.overrides)})
    rec = read_json(done)
    calib = calibration_feeds(t.calibration_batches(p.calibration_examples, 32))
    return Teacher(t, sha, d, np.load(d / "preds.npy"), float(rec["score"]), calib)


def calibration_feeds(batches: Any) -> list[dict[str, np.ndarray]]:
    """The model's inputs of each calibration batch as numpy. An embedding task's batches also hold the
    pair's second sentence (``input_ids_b``, ...: our loader's keys, no graph input of any model): only the
    first is fed, as our own calibrating passes feed it (``MODEL_INPUTS``)."""
    from compresslab.training.losses import MODEL_INPUTS

    return [{k: v.numpy() for k, v in b.items() if k in MODEL_INPUTS} for b in batches]


# ----------------------------------------------------------------------------------------------- cells
def _cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (what a CPU-hour budget counts)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def build_pipeline(args: Sequence[str], results: ResultsFile, name: str) -> tuple[Artifact, dict[str, Any]]:
    """Run (or find finished) ``python -m compresslab <args>``; its deployed file is the artifact."""
    from compresslab.config import compose
    from compresslab.manifest import read_json
    from compresslab.pipeline import run

    rd = run(compose(list(args)), overrides=list(args))
    m = read_json(rd / "manifest.json")
    if m.get("status") != "finished":
        raise RuntimeError(f"run {rd} ended {m.get('status')!r}: {m.get('error')}")
    results.note_run(name, m)  # the copied deploy record comes with the run's machine load
    dep = m["export"]["deployed"]
    precision = "default" if dep["runtime"] == "openvino" else dep["precision"]
    return Artifact(rd / dep["path"], dep["runtime"], precision), {"run_dir": _rel(rd), "command": m.get("command")}


def _rel(p: Path) -> str:
    p = Path(p).resolve()
    return str(p.relative_to(REPO) if p.is_relative_to(REPO) else p)


def build_cells(p: TaskPlan, teacher: Teacher, store: CellStore, results: ResultsFile) -> dict[str, dict[str, Any]]:
    """Build and score the plan's cells (finished ones are read back); name -> record. The task's cells outside
    ``--cells`` are read back, never built: the results file is the whole task's, not the last command's."""
    from tqdm.auto import tqdm

    from .peers import PeerInputs

    todo = cell_specs(p.whole(), teacher_sha=teacher.sha, dev=teacher.dev, max_length=teacher.max_length,
                      validation=teacher.task.validation)
    asked = {*p.pipelines, *p.peers}  # a pipeline's OpenVINO cells come with it (spec "of")
    inputs_dir = teacher.dir / "export"
    out: dict[str, dict[str, Any]] = {}
    left_out: list[str] = []
    bar = tqdm(todo, desc=f"{p.task} cells", unit="cell", dynamic_ncols=True)
    for name, how, spec in bar:
        bar.set_postfix_str(name)
        key = cell_key(spec)
        rec = store.finished(name, key)
        if rec is None and (why := skip_reason(spec, teacher.task, out)) is not None:
            log.warning("cell %s not run: %s", name, why)
            rec = {"name": name, "spec": spec, "tool": _tool_of(name, spec), "status": "skipped", "skipped": why,
                   "error": f"not run: {why}", "key": key}  # asked again each run (cheap): never cached
        elif rec is None and spec.get("of", name) not in asked:
            rec = store.record(name, key)  # a failure too, with its exact error (a run that builds it retries)
            if rec is None:
                left_out.append(name)
                continue
        elif rec is None:
            rec = _build_one(name, how, spec, key, p, teacher, store, results, inputs_dir, PeerInputs, out)
        if spec["kind"] == "pipeline_openvino" and spec.get("int8") != "nncf" and rec.get("status") == "finished":
            how = method_of(rec, how)  # our SmoothQuant changed the weights first: ours (suite_openvino.method_of)
        out[name] = {**rec, "method": how}  # the rule of today, not the one a cached record was built under
    if left_out:
        log.warning("%s: not built, not in --cells, so not in the results: %s", p.task, ", ".join(left_out))
    return out


def _tool_of(name: str, spec: Mapping[str, Any]) -> str:
    from .peers import PEERS

    if spec["kind"] == "pipeline_openvino" and spec.get("int8") == "nncf":
        return f"NNCF PTQ int8 of compresslab +pipeline={spec['of']}'s model, on OpenVINO"
    if spec["kind"] == "pipeline_openvino":
        return f"compresslab +pipeline={spec['of']} on OpenVINO"
    return PEERS[name].tool if name in PEERS else f"compresslab +pipeline={name}"


def _build_one(name: str, method: str, spec: dict[str, Any], key: str, p: TaskPlan, teacher: Teacher,
               store: CellStore, results: ResultsFile, inputs_dir: Path, PeerInputs: Any,
               built: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from compresslab.bench.external import ExternalError

    from .peers import PEERS

    work = store.begin(name, key)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    base = {"name": name, "method": method, "spec": spec}
    tool, extra = _tool_of(name, spec), {}
    try:
        if spec["kind"] == "pipeline":
            a, extra = build_pipeline(spec["args"], results, name)
        elif spec["kind"] == "pipeline_openvino":
            of = built.get(spec["of"]) or {}
            a = (nncf_artifact(of, work, teacher.calibration) if spec.get("int8") == "nncf"
                 else openvino_artifact(of, work, teacher.calibration, spec.get("keep_fp32") or (),
                                        spec.get("smooth_alpha") or (None,), teacher.validation(), p.threads))
            extra = {k: built[spec["of"]].get(k) for k in ("run_dir", "command")}
        else:
            a = PEERS[name].build(PeerInputs(
                plain_onnx=inputs_dir / "model_unfused.onnx", fused_onnx=inputs_dir / "model.onnx",
                checkpoint=teacher.dir / "checkpoint", calibration=teacher.calibration, work_dir=work,
                dev_batches=teacher.dev_batches() if hasattr(PEERS[name], "time") else (), head=teacher.head,
                threads=p.threads))
        build_s, cpu_s = since(t0), round(_cpu_s() - cpu0, 1)
        scored = _score(a, teacher.record, p.threads)
    except Exception as e:  # any failure is this cell's, exactly as raised; the suite goes on
        error = str(e) if isinstance(e, ExternalError) else error_text(e)
        log.warning("cell %s failed: %s", name, error)
        return store.fail(name, key, {**base, "tool": tool, "error": error, "build_s": since(t0)})
    over = p.cell_cpu_hours is not None and cpu_s > 3600 * float(p.cell_cpu_hours)
    size = a.info.get("size_bytes") if a.backend == "external" else size_bytes(a.file)
    rec = {**base, "tool": tool, "artifact": a.to_dict(), "size_bytes": size,
           "score": float(scored.metrics["score"]), "metrics": {k: float(v) for k, v in scored.metrics.items()},
           "build_s": build_s, "cpu_s": cpu_s, "cpu_hours_budget": p.cell_cpu_hours, "over_budget": over, **extra,
           "error": None}
    if over:
        log.warning("cell %s took %.2f CPU h, over its budget of %s", name, cpu_s / 3600, p.cell_cpu_hours)
    return store.finish(name, key, rec, scored.predictions)


# ----------------------------------------------------------------------------------------------- scores
def systems(cells: Mapping[str, Mapping[str, Any]], store: CellStore, teacher: Teacher,
            agreement_vs: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, Any]]:
    """``systems.<name>`` of suite_<task>.json without timings: score, agreement, size, file, errors, and
    ``mcnemar_p_vs`` for each of ours against every peer that was scored (classification only). When
    given, ``agreement_vs`` is filled: ours -> peer -> fraction of dev examples predicted alike
    (classification; what the verdicts' "same score" rule reads)."""
    from compresslab.data.metrics import agreement, mcnemar_counts, mcnemar_pvalue
    from compresslab.data.tasks import TaskKind

    spec = teacher.task.spec
    labels = np.array([e.label for e in teacher.dev])
    classify = spec.kind is TaskKind.CLASSIFICATION
    preds = {n: store.preds(n, c["key"]) for n, c in cells.items() if c.get("status") == "finished"}
    out: dict[str, dict[str, Any]] = {}
    for name, c in cells.items():
        a = c.get("artifact") or {}
        s = {"method": c["method"], "tool": c["tool"], "score": c.get("score"), "agreement": None,
             "latency_ms_b1": None, "latency_ms_b32": None, "throughput_real": None, "size_bytes": c.get("size_bytes"),
             "backend": a.get("backend"), "precision": a.get("precision"), "file": _rel(Path(a["file"])) if a else None,
             "file_sha256": digest(a["file"]) if a and c.get("status") == "finished" else None,
             "mcnemar_p_vs": {}, "mcnemar_discordant_vs": {}, "timing": None, "error": c.get("error")}
        if c.get("status") == "skipped":
            s["skipped"] = c["skipped"]  # not applicable to the task: the reason, recorded up front
        if name in preds:
            if np.unique(preds[name]).size == 1 < np.unique(teacher.preds).size:
                # a broken model, not a compressed one (INC's documented dynamic recipe did this, session 9):
                # its score is the majority share; no verdict may rest on it
                s["degenerate"] = (f"every dev example gets the same prediction ({preds[name][0]}): a broken model; "
                                   "no verdict is drawn from it")
            s["agreement"] = (agreement(preds[name], teacher.preds) if classify
                              else None if s.get("degenerate") else float(np.corrcoef(preds[name], teacher.preds)[0, 1]))
        out[name] = s
    right = {n: preds[n] == labels for n in preds} if classify else {}
    for ours in (n for n in preds if cells[n]["method"] == "compresslab"):
        for peer in (n for n in preds if cells[n]["method"] == "peer"):
            out[ours]["mcnemar_p_vs"][peer] = mcnemar_pvalue(right[ours], right[peer]) if classify else None
            if classify:  # (only ours right, only the peer right): rule a's direction (verdicts.Pair)
                out[ours]["mcnemar_discordant_vs"][peer] = list(mcnemar_counts(right[ours], right[peer]))
            if agreement_vs is not None and classify:
                agreement_vs.setdefault(ours, {})[peer] = agreement(preds[ours], preds[peer])
    return out


# ----------------------------------------------------------------------------------------------- one task
def run_task(p: TaskPlan, *, work: Path, results_dir: Path, timing: bool, quiet: Mapping[str, Any] | None = None) -> int:
    """Build, score and (unless ``timing`` is False) time one task; write suite_<task>.json. Returns 0, or
    EXIT_TIMING_REFUSED when the timing phase was refused (the scores are written all the same). Raises
    DirectoryBusyError when another process runs the same task and budget in ``work`` (nothing done)."""

    from compresslab.dirlock import exclusive

    task_work = work / p.task / p.budget
    with exclusive(task_work, f"the suite's task {p.task} (budget {p.budget})"):  # one writer of its cells
        return _run_task(p, task_work, results_dir, timing, quiet)


def _run_task(p: TaskPlan, task_work: Path, results_dir: Path, timing: bool,
              quiet: Mapping[str, Any] | None) -> int:
    from compresslab.bench.env import cpu_flags, hardware_fingerprint
    from compresslab.manifest import git_sha, library_versions

    results = ResultsFile(results_dir / f"suite_{p.task}.json")
    old = load_results(results)
    teacher = prepare_teacher(p, task_work)
    store = CellStore(task_work / "cells")
    cells = build_cells(p, teacher, store, results)
    agree_vs: dict[str, dict[str, float]] = {}
    sysd = systems(cells, store, teacher, agree_vs)
    keys = {n: c["key"] for n, c in cells.items() if c.get("status") == "finished"}
    flags = cpu_flags()
    timing_meta = timing_phase(results, cells, sysd, keys, old, teacher, p, timing=timing, quiet=quiet)
    code = 0
    if timing_meta["status"] == REFUSED:
        print(f"suite: {timing_meta['reason']}", file=sys.stderr)
        code = EXIT_TIMING_REFUSED
    label_free = ({"label_free": loss_statement({pl: c["spec"]["args"] for pl, c in cells.items()
                                                 if c["spec"]["kind"] == "pipeline"})}
                  if teacher.head == "encoder" else {})
    data = {"teacher_score": teacher.score, "systems": sysd,
            "verdicts": _verdicts(sysd, agree_vs, classification=_classify(teacher),
                                  external=phase_of({"timing": timing_meta}).get("external")),
            "runtimes": faster_runtime(sysd, p.whole().pipelines) if p.openvino else {},
            "meta": {"task": p.task, "metric": teacher.task.spec.primary_metric, "budget": p.budget,
                     "split": f"{p.task} dev ({len(teacher.dev)})", "teacher_sha256": teacher.sha,
                     "overrides": list(p.overrides), "threads": p.threads, "timing": timing_meta,
                     "pipeline_overrides": {k: list(v) for k, v in p.pipeline_extra.items()},
                     "cpu_isa": [f for f in ISA_FLAGS if f in flags], "cell_keys": keys,
                     "cells": {n: {**{k: c.get(k) for k in ("build_s", "cpu_s", "over_budget", "run_dir", "command",
                                                                  "status")},
                                   **({"int8_recipe": r} if (r := recipe_of(c)) else {})}
                               for n, c in cells.items()},
                     "skipped": {n: c["skipped"] for n, c in cells.items() if c.get("status") == "skipped"},
                     **label_free,
                     "agreement": ("fraction of dev examples predicted as the teacher (torch fp32) predicts"
                                   if sysd and _classify(teacher) else "Pearson r of the predictions with the teacher's"),
                     "mcnemar": "exact two-sided McNemar on dev correctness, each of ours vs each peer (classification)",
                     "verdicts": "benchmarks/verdicts.py: (a) b32 <= the peer's and a higher score (McNemar p < 0.05 "
                                 "and more of the discordant examples right; >= 1 pt on regression) or (b) agreement "
                                 ">= 0.99 with the peer's predictions or within 0.3 pt (or higher) at <= 0.9x its b32 "
                                 "latency; peers timed in their own venv bridged through the dense teacher",
                     "agreement_vs_peers": agree_vs,
                     "teacher_cpu_hours_budget": p.teacher_cpu_hours,
                     "teacher_build": teacher.build_record(p.teacher_cpu_hours), "git_sha": git_sha(),
                     "versions": library_versions(), "hardware": hardware_fingerprint(p.threads),
                     "command": "python -m benchmarks.suite " + " ".join(sys.argv[1:])}}
    results.write(data)
    busy = busy_reasons(results.load().get("meta") or {}, p.task)
    if busy:  # the windows of the phase the figures come from (builds' own checks are not among them)
        log.warning("%s: the timing was busy (%s): every verdict is undecided", p.task, "; ".join(busy))
        data["verdicts"] = void_if_busy(data["verdicts"], busy)
        results.write(data)
    log.info("%s: %d systems written to %s (timing: %s)", p.task, len(sysd), results.path, timing_meta["status"])
    return code


def load_results(results: ResultsFile) -> dict[str, Any]:
    """The earlier suite_<task>.json (its timings of unchanged cells are kept), {} when there is none;
    SuiteError naming the file when it is not readable JSON (a results file is written atomically, so a
    damaged one was damaged outside the suite: it is not overwritten silently)."""
    try:
        return results.load()
    except ValueError as e:
        raise SuiteError(f"{results.path} is not a readable suite results file ({e}); move it aside or delete it "
                         "(every figure in it is rebuilt from the cached cells, timings by a timed run)") from None


def _classify(teacher: Teacher) -> bool:
    from compresslab.data.tasks import TaskKind

    return teacher.task.spec.kind is TaskKind.CLASSIFICATION


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_HELP)
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", help="one task of the suite config")
    which.add_argument("--all", action="store_true", help="every task of the suite config")
    which.add_argument("--list", action="store_true", help="list tasks, budgets and cells, run nothing")
    ap.add_argument("--cells", help="comma-separated cell names to build (default: every pipeline and peer); the "
                    "results file keeps the task's other cells already built")
    ap.add_argument("--budget", default="bench", help="a budget of the suite config (default bench)")
    ap.add_argument("--config", default=str(CONFIG), help="the suite config (default benchmarks/suite.yaml)")
    ap.add_argument("--no-timing", action="store_true", help="build and score only; keep earlier timings of unchanged cells")
    ap.add_argument("--override", nargs="*", default=[], help="more compresslab overrides for every run (paths.*, ...)")
    ap.add_argument("--work-dir", default=str(WORK), help="cells and teacher exports (default outputs/suite)")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR), help="where suite_<task>.json go")
    ap.add_argument("--report", default=str(ROOT / "REPORT.md"), help="the Markdown report (HTML beside it)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = load_config(a.config)
        if a.list:
            print(list_suite(cfg))
            return 0
        cells = [c.strip() for c in a.cells.split(",") if c.strip()] if a.cells is not None else None
        tasks = list(cfg["tasks"]) if a.all else [a.task]
        plans = [plan(cfg, t, a.budget, cells, a.override) for t in tasks]  # every task checked before any work
    except SuiteError as e:
        print(f"suite: error: {e}", file=sys.stderr)
        return 2
    from compresslab.dirlock import DirectoryBusyError

    code = 0
    for p in plans:  # a task that cannot run says why; the other tasks still run
        try:
            code = max(code, run_task(p, work=Path(a.work_dir), results_dir=Path(a.results_dir),
                                      timing=not a.no_timing))
        except (SuiteError, DirectoryBusyError) as e:
            print(f"suite: error: {e}", file=sys.stderr)
            code = max(code, EXIT_BUSY if isinstance(e, DirectoryBusyError) else 2)
    from .suite_report import write_report

    write_report(Path(a.results_dir), Path(a.report))
    return code


if __name__ == "__main__":
    sys.exit(main())
