"""One run as the cross-run comparison sees it (:class:`RunPoint`, read from its manifest alone): its deployed
model's score, size and speed against its own teacher and dense export, and the data and examples it was scored
on (:func:`dev_data`, :func:`eval_subset`), so that :mod:`compresslab.report.compare_groups` never ranks runs
scored on different examples together."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compresslab.manifest import live_status
from compresslab.report import facts as F
from compresslab.report.compare_runs import REPLACED
from compresslab.report.facts import serving_scores
from compresslab.report.verdicts import (low_agreement, lowest_agreement, one_class_warning, slower_than_dense,
                                         teacher_warning)

# Settings that never make two runs different experiments (where files go, how a run is resumed, and
# whether it was timed: the speed columns say "bench off" for that).
IGNORED_SETTINGS = ("paths.", "run.dir", "run.overwrite", "run.stop_after", "run.keep", "report", "hydra.",
                    "model.name", "bench.enabled")


@dataclass
class RunPoint:
    """One run, reduced to what the comparison shows: its deployed model against its own teacher."""

    run_dir: Path
    name: str  # pipeline/config-hash: unique and short
    pipeline: str
    task: str
    status: str
    metric: str
    teacher: float | None
    score: float | None
    agreement: float | None
    size_bytes: float | None
    ref_size_bytes: float | None  # the dense teacher's fp32 export
    shape: str | None  # the largest timed shape
    p50_ms: float | None  # deployed, at shape
    ref_p50_ms: float | None  # ort_fp32, at shape
    speedup: float | None  # vs the run's denominator (ort_fp32), at shape
    speedup_best: float | None
    busy: bool
    machine: tuple[Any, ...]  # CPU model, threads: absolute latencies compare only within one
    tolerance: float
    settings: dict[str, Any] = field(default_factory=dict)
    data: tuple[Any, ...] | None = None  # what the dev scores were measured on (dev_data); None: not recorded
    data_name: str = ""  # the dev file's name, or how the dev data was given
    subset: tuple[Any, ...] | None = None  # which examples of it were scored (eval_subset); None: not recorded
    subset_name: str = ""  # e.g. "dev, 64 of 872 examples (task.max_dev=64, seed 42)"
    subset_short: str = ""  # e.g. "dev64s42", for file names
    bench_off: bool = False  # bench.enabled=false: no latency was measured, on purpose
    worst_score: float | None = None  # the lowest over the serving modes measured (a batch-dependent file: batch 1)
    chance_teacher: bool = False  # the teacher is no better than chance (verdicts.teacher_warning): its Δ says nothing
    one_class: bool = False  # the deployed classifier predicts one class (verdicts.one_class_warning)
    low_agreement: bool = False  # agreement with the teacher under verdicts.LOW_AGREEMENT (its worst serving mode)
    agreement_r: bool = False  # the agreement is Pearson r with the teacher's predictions (a regression task)
    crashed_sessions: int = 0  # sessions a later one found killed (manifest.end_gone_session): the run was resumed
    slower: bool = False  # the deployed file is slower than the dense teacher at ``shape`` (verdicts.slower_than_dense)
    group: str = ""  # the runs ranked together: task, and data and subset where runs of that task differ in them
    slug: str = ""  # the group as a file-name part of its plots
    label: str = ""  # its name in the plots: what sets it apart from the other runs of its group (assign_labels)

    @property
    def delta(self) -> float | None:
        """Deployed score minus the run's own teacher score."""
        return self.score - self.teacher if self.score is not None and self.teacher is not None else None

    @property
    def worst_delta(self) -> float | None:
        """The worst serving mode's score minus the teacher's: what the tolerance judges (summary.serving_scores)."""
        worst = self.worst_score if self.worst_score is not None else self.score
        return worst - self.teacher if worst is not None and self.teacher is not None else None


def dev_data(m: Mapping[str, Any]) -> tuple[tuple[Any, ...] | None, str]:
    """``(key, name)`` of the data a run's scores were measured on, from the input hashes the
    manifest records (``inputs.data``): the dev file's sha256 (the train file's when the scores are
    on the validation split carved from it, or there is no dev file; the parsed examples' when data
    was given in memory) and the label names, so a regression and a 4-class run on the same file
    differ. ``(None, "")`` when not recorded."""
    data = F.as_dict(F.get(m, "inputs", "data"))
    files = F.as_dict(data.get("files"))
    labels = tuple(map(str, data.get("labels") or ()))
    order = ("train", "dev") if _eval_split(m) == "validation" else ("dev", "train")
    for split in order:
        f = F.as_dict(files.get(split))
        if f.get("sha256"):
            return ("file", str(f["sha256"]), labels), Path(str(f.get("path") or split)).name
    if data.get("examples"):
        return ("examples", str(data["examples"]), labels), "data in memory"
    return None, ""


def _eval_split(m: Mapping[str, Any]) -> str:
    """The split a run's scores are on: ``eval.split`` as recorded, else as configured, else dev."""
    return str(F.get(m, "eval", "split") or F.get(m, "config", "eval", "split") or "dev")


def eval_subset(m: Mapping[str, Any]) -> tuple[tuple[Any, ...] | None, str, str]:
    """``(key, description, short)`` of the examples a run was scored on, from its manifest: the split
    (``eval.split``), how many examples (``eval.n``, else the split's size in ``data.sizes``) and,
    when they are a seeded draw (a ``task.max_dev`` slice of dev, as ``debug=smoke`` takes, or the
    validation split carved from train), the seed that drew them. Two runs with the same dev file
    but another count or seed were scored on other examples. ``(None, "", "")`` when not recorded."""
    split = _eval_split(m)
    data = F.as_dict(m.get("data"))
    n = F.num(F.get(m, "eval", "n"))
    if n is None:
        n = F.num(F.get(data, "sizes", split))
    if n is None:
        return None, "", ""
    n_int, seed = int(n), data.get("val_seed")
    if split == "validation":
        carve = data.get("val_carve") or "random"
        if carve != "random":  # another carve holds other examples (the random carve keeps earlier slugs)
            return ((split, n_int, seed, carve), f"validation, {n_int} examples carved from train ({carve}, "
                    f"seed {seed})", f"val{n_int}s{seed}{carve}")
        return ((split, n_int, seed), f"validation, {n_int} examples carved from train (seed {seed})",
                f"val{n_int}s{seed}")
    rows = F.num(F.get(data, "files", split, "rows"))
    if rows is not None and n_int < rows:  # a seeded slice: another seed draws other examples
        max_dev = data.get("max_dev")
        how = f"task.max_dev={max_dev}, seed {seed}" if max_dev is not None else f"seed {seed}"
        return (split, n_int, seed), f"{split}, {n_int} of {int(rows)} examples ({how})", f"{split}{n_int}s{seed}"
    return (split, n_int, None), f"{split}, all {n_int} examples", f"{split}{n_int}"


def point(run_dir: Path, m: Mapping[str, Any]) -> RunPoint:
    """The comparison's view of one manifest (missing figures stay ``None``)."""
    rows = {r.key: r for r in F.model_rows(m)}
    dep, ref = rows.get("deployed"), rows.get("ort_fp32")
    shape = F.big_shape(F.shape_keys(m))
    n, _ = F.threads(m)
    cpu = F.get(m, "hardware", "cpu", "model") or F.get(m, "hardware", "cpu_model")
    data, data_name = dev_data(m)
    subset, subset_name, subset_short = eval_subset(m)
    settings = {k: v for k, v in F.flatten(F.as_dict(m.get("config"))).items()
                if not k.startswith(IGNORED_SETTINGS) and not k.endswith("._target_")}
    name = f"{m.get('pipeline', run_dir.parent.name)}/{m.get('config_hash', run_dir.name)}"
    if REPLACED in run_dir.name:  # same pipeline and hash as the live run: say which one this is
        when = run_dir.name.split(REPLACED, 1)[1]
        try:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(int(when)))
        except (ValueError, OverflowError, OSError):
            pass
        name += f" (replaced {when})"
    return RunPoint(
        run_dir=run_dir, name=name,
        pipeline=str(m.get("pipeline") or "?"), task=str(m.get("task") or "?"),
        status=live_status(dict(m)) if m.get("status") else "?",  # a killed run's "running" reads crashed
        crashed_sessions=sum(1 for s in m.get("sessions") or [] if isinstance(s, Mapping)
                             and isinstance(s.get("ended"), Mapping) and s["ended"].get("status") == "crashed"),
        metric=str(F.get(m, "eval", "primary_metric") or "score"), teacher=F.teacher_score(m),
        score=dep.score if dep else None, agreement=dep.agreement if dep else None,
        size_bytes=dep.size_bytes if dep else None, ref_size_bytes=ref.size_bytes if ref else None,
        shape=shape, p50_ms=dep.p50_ms.get(shape) if dep and shape else None,
        ref_p50_ms=ref.p50_ms.get(shape) if ref and shape else None,
        speedup=dep.speedup.get(shape) if dep and shape else None,
        speedup_best=dep.speedup_best.get(shape) if dep and shape else None,
        busy=bool(F.machine_load(m).get("busy")), machine=(cpu, n), tolerance=F.max_drop(m), settings=settings,
        data=data, data_name=data_name, subset=subset, subset_name=subset_name, subset_short=subset_short,
        bench_off=F.switched_off(m, "bench"),
        worst_score=min((s.score for s in serving_scores(m)), default=None),
        chance_teacher=teacher_warning(m) is not None, one_class=one_class_warning(m) is not None,
        low_agreement=low_agreement(lowest_agreement(serving_scores(m)), F.get(m, "eval", "n"),
                                    F.agreement_is_r(m)) is not None, agreement_r=F.agreement_is_r(m),
        slower=bool(dep and shape and slower_than_dense(m, dep, [shape])))
