"""The cross-run view: ``python -m compresslab.report --compare outputs/*/*``.

Reads the manifest of every run directory given (nothing else: no model is loaded), and writes
``compare.md``, ``compare.html`` and Pareto plots of score against latency and against size,
one pair per task and scored subset: runs scored on different dev files (``task=generic`` runs on
each user's own data), on another split (``eval.split``) or on other examples of it (``task.max_dev``,
as ``debug=smoke`` sets it, with its seed) are never ranked together, and each group says which
examples it was scored on. Runs of one pipeline that differ only in some settings (a Hydra multirun
sweep, ``-m ...sparsity=0.5,0.7``) get a sweep summary: the swept settings, each run's score and
speed, the Pareto fronts, the fastest and the smallest run within the tolerance (``eval.max_drop``);
runs made with ``bench.enabled=false`` are said to have no latency and are ranked by score and size.

Scores are compared as drops against each run's own teacher (two runs may have trained different
teachers: budget=quick vs bench), speeds as ratios against each run's own dense ONNX export timed
in the same process; absolute latencies are plotted only among runs timed at the same shape.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compresslab.report import MANIFEST, ManifestError, facts as F, write_atomic
from compresslab.report.compare_runs import COMPARE_MD, REPLACED, collect, default_out
from compresslab.report.fmt import DASH, mb, pct, plain, pt, times
from compresslab.report.render import Block, Bullets, Document, Heading, Image, Para, Table, to_html, to_markdown
from compresslab.report.facts import serving_scores
from compresslab.report.verdicts import (LOW_AGREEMENT, low_agreement, lowest_agreement, one_class_warning,
                                         slower_than_dense, teacher_warning)

# Settings that never make two runs different experiments (where files go, how a run is resumed, and
# whether it was timed: the speed columns say "bench off" for that).
IGNORED_SETTINGS = ("paths.", "run.dir", "run.overwrite", "run.stop_after", "run.keep", "report", "hydra.",
                    "model.name", "bench.enabled")
# A point's label in the plots names at most this many swept settings, each value cut to its last characters
# (a model path's end names the model): more crowd the plot, and the runs table has them all in full.
MAX_LABEL_SETTINGS, MAX_LABEL_VALUE = 2, 24


class CompareError(ManifestError):
    """No run to compare; the message says what was given and what a run directory looks like."""


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


def assign_groups(points: Sequence[RunPoint]) -> None:
    """Set each run's ``group`` (and ``slug``): its task, plus the dev data (file name and short hash)
    where runs of that task were scored on different data (``task=generic``: each user's own files),
    plus the scored subset (split, number of examples, seed) where they were scored on different
    examples (``task.max_dev`` / ``debug=smoke`` slices, ``eval.split``), so scores measured on
    different examples are never ranked, swept or plotted together, and each group says which."""
    by_task = _groups(points, "task")
    for task, group in by_task.items():
        for attr in ("data", "subset"):
            keys = list(dict.fromkeys(getattr(p, attr) for p in group))
            if len(keys) == 2 and None in keys and (attr == "subset" or task[0] != "generic"):
                keys.remove(None)  # a named task's data is fixed by its name, and a manifest older than input
                for p in group:  # hashes (or without eval.n) joins the one recorded data set / subset
                    setattr(p, attr, getattr(p, attr) or keys[0])
        datas = list(dict.fromkeys(p.data for p in group))
        subsets = list(dict.fromkeys(p.subset for p in group))
        for p in group:
            name, slug = [task[0]], [task[0]]
            if len(datas) > 1:
                part = [p.data_name, p.data[1][:8]] if p.data is not None else ["dev data not recorded"]
                name += part
                slug += part
            if len(subsets) > 1:
                name.append(p.subset_name or "scored examples not recorded")
                slug.append(p.subset_short if p.subset is not None else "subset_unknown")
            p.group, p.slug = " · ".join(name), "_".join(slug)
        clash = Counter(p.group for p in group)
        alike = {g for g, c in clash.items() if c > 1 and len({q.data for q in group if q.group == g}) > 1}
        for p in group:
            if p.group in alike and p.data is not None:
                labels = "/".join(p.data[2]) or "none"  # same file, other labels
                p.group += f" · labels {labels}"
                p.slug += f"_labels_{labels}"


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
        pipeline=str(m.get("pipeline") or "?"), task=str(m.get("task") or "?"), status=str(m.get("status") or "?"),
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
        low_agreement=low_agreement(lowest_agreement(serving_scores(m)), F.get(m, "eval", "n")) is not None,
        slower=bool(dep and shape and slower_than_dense(m, dep, [shape])))


def varied(points: Sequence[RunPoint]) -> list[str]:
    """Settings whose values differ between the runs (what a sweep swept), in config order. A
    setting some runs lack (written by an older version) is not a difference."""
    keys = list(dict.fromkeys(k for p in points for k in p.settings))
    return [k for k in keys if len({repr(p.settings[k]) for p in points if k in p.settings}) > 1]


def swept(points: Sequence[RunPoint]) -> dict[tuple[str, str], list[str]]:
    """Per pipeline and group, the settings its runs differ in: the runs table's "settings swept"."""
    return {k: varied(g) for k, g in _groups(points, "pipeline", "group").items()}


def assign_labels(points: Sequence[RunPoint]) -> None:
    """Set each run's ``label`` for the plots of its group (after :func:`assign_groups`): the settings swept
    between its pipeline's runs there, as the runs table names them (``magnitude.sparsity=0.7``; shortened
    by MAX_LABEL_SETTINGS and MAX_LABEL_VALUE unless that leaves two runs alike), after the pipeline where the
    group holds several. A run left blank or alike another (nothing differs) keeps its name: pipeline/hash."""
    keys = swept(points)

    def label(p: RunPoint, cut: bool, several: bool) -> str:
        ks = keys[(p.pipeline, p.group)]
        text = _settings_text(p, ks)
        if cut:
            values = [plain(p.settings.get(k)) for k in ks[:MAX_LABEL_SETTINGS]]
            text = ", ".join(f"{short(k)}={v if len(v) <= MAX_LABEL_VALUE else '…' + v[1 - MAX_LABEL_VALUE:]}"
                             for k, v in zip(ks, values)) + (", …" if len(ks) > MAX_LABEL_SETTINGS else "")
        return ": ".join(t for t in (p.pipeline if several else "", text if ks else "") if t)

    for group in _groups(points, "group").values():
        several = len({p.pipeline for p in group}) > 1
        for p in group:
            p.label = ""
        for cut in (True, False):  # short labels, else every swept setting in full, else the name
            texts = [label(p, cut, several) for p in group]
            alike = Counter(texts)
            for p, text in zip(group, texts):
                if not p.label and text and alike[text] == 1:
                    p.label = text
        for p in group:
            p.label = p.label or p.name


def short(key: str) -> str:
    """``pipeline.passes.obert.sparsity`` -> ``obert.sparsity``: the pass name says enough."""
    return key.removeprefix("pipeline.passes.")


def pareto_front(points: Sequence[RunPoint], cost: str) -> list[RunPoint]:
    """Runs no other run beats on both score and ``cost`` (an attribute: lower is better)."""
    have = [p for p in points if p.score is not None and getattr(p, cost) is not None]
    return [p for p in have if not any(q is not p and q.score >= p.score and getattr(q, cost) <= getattr(p, cost)
                                       and (q.score > p.score or getattr(q, cost) < getattr(p, cost)) for q in have)]


def _groups(points: Sequence[RunPoint], *attrs: str) -> dict[tuple[str, ...], list[RunPoint]]:
    out: dict[tuple[str, ...], list[RunPoint]] = {}
    for p in points:
        out.setdefault(tuple(getattr(p, a) for a in attrs), []).append(p)
    return out


def _settings_text(p: RunPoint, keys: Sequence[str]) -> str:
    return ", ".join(f"{short(k)}={plain(p.settings.get(k))}" for k in keys) or DASH


def _speed(p: RunPoint) -> str:
    """A run's speedup cell: ``busy`` marks a void timing, ``bench off`` a run that timed nothing on purpose."""
    if p.speedup is not None:
        return times(p.speedup) + (" (busy)" if p.busy else "")
    return "bench off" if p.bench_off else DASH


def _why_untimed(points: Sequence[RunPoint]) -> str:
    """Why these runs have no latency: bench switched off, the run did not finish, or nothing recorded."""
    reasons = ["bench.enabled=false" if p.bench_off else f"run {p.status}" if p.status != "finished"
               else "no latency in its manifest" for p in points]
    counts = Counter(reasons)
    if len(points) > 1 and len(counts) == 1:
        return f"{reasons[0]} in every run"
    return ", ".join(f"{r} ({n} run{'s' if n > 1 else ''})" if len(points) > 1 else r for r, n in counts.items())


def _runs_table(points: Sequence[RunPoint]) -> Table:
    sweeps = swept(points)
    rows = []
    order = list(dict.fromkeys(p.group for p in points))
    for p in sorted(points, key=lambda p: order.index(p.group)):  # runs ranked together stay together
        label = p.name if p.status == "finished" else f"{p.name} ({p.status})"
        over = p.worst_delta is not None and -p.worst_delta > p.tolerance + 1e-12
        rows.append([label, _settings_text(p, sweeps[(p.pipeline, p.group)]),
                     pct(p.teacher) + (" ⚠ chance" if p.chance_teacher else ""),
                     pct(p.score) + (" ⚠ one class" if p.one_class else ""),
                     pt(p.delta) + (" ⚠" if over else ""), pct(p.agreement) + (" ⚠ low" if p.low_agreement else ""),
                     mb(p.size_bytes), plain(p.shape), _speed(p),
                     times(p.speedup_best) + (" (busy)" if p.busy and p.speedup_best is not None else "")
                     + (" ⚠ slower" if p.slower else "")])
    return Table(["run", "settings swept", "teacher (%)", "deployed (%)", "Δ (pt)", "agreement (%)", "size (MB)",
                  "shape", "× ort_fp32", "× best_dense"], rows,
                 "Each run's deployed model against its own teacher (Δ in points; ⚠ = a drop over that run's "
                 "eval.max_drop in a serving mode measured: a file whose labels depend on the batch is judged one "
                 "sentence per call too) and its own dense ONNX export timed in the same process (×, at the largest "
                 "shape it timed; > 1: faster). busy = timed while other processes used the CPUs: void."
                 + (" bench off = bench.enabled=false: no latency measured." if any(p.bench_off for p in points)
                    else "")
                 + (" ⚠ chance = a teacher no better than chance (its run's report says why): that run's Δ says "
                    "nothing about the compression." if any(p.chance_teacher for p in points) else "")
                 + (" ⚠ one class = a deployed model that predicts the same class for every example: a constant "
                    "model." if any(p.one_class for p in points) else "")
                 + (f" ⚠ low = fewer than {LOW_AGREEMENT:.0%} of the predictions agree with the teacher's."
                    if any(p.low_agreement for p in points) else "")
                 + (" ⚠ slower = the deployed file is slower than the dense teacher." if any(p.slower for p in points)
                    else "")
                 + (" Scored on different data or examples, so never ranked together: " + "; ".join(order) + "."
                    if len(order) > 1 else ""))


def _sweep(key: tuple[str, ...], group: list[RunPoint]) -> list[Block]:
    """One pipeline's runs that differ in some settings: a table sorted by them, the fronts, the picks.

    Speed picks use runs timed on a quiet machine only; runs without a latency (``bench.enabled=false``)
    are named as such, never counted as "not within the tolerance", and still ranked by score and size."""
    keys = varied(group)
    if len(group) < 2 or not keys:
        return []
    group = sorted(group, key=lambda p: tuple(repr(p.settings.get(k)) for k in keys))
    rows = [[*(plain(p.settings.get(k)) for k in keys[:5]), pct(p.score), pt(p.delta), mb(p.size_bytes),
             _speed(p), p.name] for p in group]
    out: list[Block] = [Heading(f"Sweep: {key[0]} on {key[1]}", 3),
                        Table([*(short(k) for k in keys[:5]), "deployed (%)", "Δ (pt)", "size (MB)", "× ort_fp32",
                               "run"], rows, f"{len(group)} runs; settings that differ between them: "
                              + ", ".join(short(k) for k in keys) + ".")]
    facts = []
    timed = [p for p in group if p.speedup is not None or p.p50_ms is not None]
    quiet = [p for p in timed if not p.busy]  # a busy machine's timings are void (MEASURE.md)
    scored = [p for p in group if p.delta is not None]
    within = [p for p in scored if -p.worst_delta <= p.tolerance + 1e-12]  # every serving mode within it
    if not timed:
        facts.append(f"No latency was measured ({_why_untimed(group)}), so speed is not compared: the runs are "
                     "ranked by score and size only.")
    for cost, what, among in (("p50_ms", "latency", quiet), ("size_bytes", "size", group)):
        front = pareto_front(among, cost)
        if front:
            facts.append(f"Pareto front, score vs {what}: " + "; ".join(_settings_text(p, keys) for p in front) + ".")
    ok = [p for p in quiet if p in within and p.speedup is not None]
    if ok:
        best = max(ok, key=lambda p: p.speedup)
        facts.append(f"Fastest within the tolerance ({best.tolerance * 100:.2f} pt, eval.max_drop): "
                     f"{_settings_text(best, keys)}: {times(best.speedup)} at {pt(best.delta)} pt ({best.name}).")
    elif any(p.delta is not None for p in quiet):
        facts.append("No run of this sweep timed on a quiet machine is within its tolerance (eval.max_drop).")
    sized = [p for p in within if p.size_bytes is not None]
    if sized:
        small = min(sized, key=lambda p: p.size_bytes)
        facts.append(f"Smallest within the tolerance ({small.tolerance * 100:.2f} pt, eval.max_drop): "
                     f"{_settings_text(small, keys)}: {mb(small.size_bytes)} MB at {pt(small.delta)} pt "
                     f"({small.name}).")
    if not timed and scored:
        top = max(scored, key=lambda p: p.score)
        facts.append(f"Best score: {_settings_text(top, keys)}: {pct(top.score)} % ({pt(top.delta)} pt, {top.name})."
                     + ("" if within else " No run is within its tolerance (eval.max_drop)."))
    if timed and (untimed := [p for p in group if p not in timed]):
        facts.append("Not timed, so left out of the speed comparisons: "
                     + ", ".join(f"{p.name} ({_why_untimed([p])})" for p in untimed) + ".")
    if busy := [p.name for p in group if p.busy]:
        facts.append("Timed on a busy machine, so left out of the speed comparisons: " + ", ".join(busy) + ".")
    if constant := [_settings_text(p, keys) for p in group if p.one_class]:
        facts.append("Predicts the same class for every example (a constant model, wherever it ranks): "
                     + "; ".join(constant) + ".")
    if chance := [_settings_text(p, keys) for p in group if p.chance_teacher]:
        facts.append("Teacher no better than chance, so Δ and tolerance say nothing about the compression: "
                     + "; ".join(chance) + ".")
    return out + ([Bullets(facts)] if facts else [])


def _plots(points: Sequence[RunPoint]) -> tuple[dict[str, bytes], list[Block]]:
    """Per task: score vs latency (runs timed at the task's most common shape and machine) and vs size."""
    from compresslab.report.plots import pareto_plot  # matplotlib only when a comparison is drawn

    pngs: dict[str, bytes] = {}
    blocks: list[Block] = []
    many = len({p.group for p in points}) > 1
    for (task,), group in _groups(points, "group").items():
        suffix = "_" + re.sub(r"[^A-Za-z0-9.-]+", "_", group[0].slug or task).strip("_") if many else ""
        timed = [p for p in group if p.shape is not None and p.p50_ms is not None and not p.busy]
        left_out = [f"{p.name} (timed on a busy machine)" for p in group if p.busy and p.p50_ms is not None]
        untimed = [p for p in group if p.p50_ms is None]
        if untimed and len(untimed) == len(group):
            left_out.append(f"no run was timed ({_why_untimed(group)})")
        elif untimed:
            left_out += [f"{p.name} (not timed: {_why_untimed([p])})" for p in untimed]
        if timed:
            shape, machine = Counter((p.shape, p.machine) for p in timed).most_common(1)[0][0]
            same = [p for p in timed if (p.shape, p.machine) == (shape, machine)]
            left_out += [f"{p.name} (timed at {p.shape} on {plain(p.machine[0])}, {plain(p.machine[1])} threads: "
                         f"absolute latencies compare only at one shape on one machine and thread count)"
                         for p in timed if p not in same]
            png = pareto_plot(same, pareto_front(same, "p50_ms"), "p50_ms", "ref_p50_ms",
                              f"p50 latency at {shape} (ms)  ← faster",
                              f"{task}: score vs latency ({plain(machine[0])}, {plain(machine[1])} threads)")
            if png:
                pngs[f"pareto_latency{suffix}.png"] = png
        sized = [p for p in group if p.size_bytes is not None]
        png = pareto_plot(sized, pareto_front(sized, "size_bytes"), "size_bytes", "ref_size_bytes",
                          "deployed file size (MB)  ← smaller", f"{task}: score vs size",
                          scale=1e-6) if sized else None
        if png:
            pngs[f"pareto_size{suffix}.png"] = png
        names = [n for n in (f"pareto_latency{suffix}.png", f"pareto_size{suffix}.png") if n in pngs]
        if names:
            blocks.append(Heading(f"Pareto plots: {task}", 3))
            blocks += [Image(n, n[:-4].replace("_", " ")) for n in names]
            blocks.append(Para("Dots: deployed models (filled: on the Pareto front, no other run is both better "
                               "and cheaper); grey crosses: each run's dense teacher (ort_fp32); dashed: the best "
                               "teacher score."))
        if left_out:
            blocks.append(Para("Not in the latency plot: " + "; ".join(left_out) + "."))
    return pngs, blocks


def build_comparison(runs: Sequence[tuple[Path, Mapping[str, Any]]], skipped: Sequence[str]) -> tuple[Document,
                                                                                                      dict[str, bytes]]:
    """The comparison document and its plots."""
    points = [point(d, m) for d, m in runs]
    assign_groups(points)
    assign_labels(points)
    doc = Document(f"compresslab: {len(points)} runs compared")
    doc.blocks += [Para("Read from each run's manifest.json; rebuild with python -m compresslab.report --compare "
                        "RUN_DIR..."), Heading("Runs"), _runs_table(points)]
    pngs, plot_blocks = _plots(points)
    doc.blocks += plot_blocks
    sweeps = [b for k, g in _groups(points, "pipeline", "group").items() for b in _sweep(k, g)]
    if sweeps:
        doc.blocks += [Heading("Sweep summary"), *sweeps]
    if skipped:
        doc.blocks += [Heading("Not compared", 3), Bullets(list(skipped))]
    return doc, pngs


def compare(paths: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Write the comparison of the runs under ``paths`` into ``out`` (default: :func:`default_out`);
    return the written files keyed by path relative to ``out``.

    Raises:
        CompareError: none of ``paths`` is a run directory with a readable manifest.json.
    """
    paths = list(paths)
    runs, skipped = collect(paths)
    if not runs:
        shown = ", ".join(map(str, paths[:3])) + (", ..." if len(paths) > 3 else "")
        raise CompareError(f"None of the {len(paths)} paths given ({shown or 'none'}) is a run directory with a "
                           f"{MANIFEST}. Pass run directories, e.g. --compare outputs/*/* or "
                           "--compare outputs/int8/<hash> outputs/obert_int8/<hash>.")
    root = Path(out) if out is not None else default_out([d for d, _ in runs])
    doc, pngs = build_comparison(runs, skipped)
    written: dict[str, Path] = {}
    for name, png in pngs.items():
        write_atomic(root / "plots" / name, png)
        written[f"plots/{name}"] = root / "plots" / name
    write_atomic(root / COMPARE_MD, to_markdown(doc).encode("utf-8"))
    written[COMPARE_MD] = root / COMPARE_MD
    write_atomic(root / "compare.html", to_html(doc, pngs).encode("utf-8"))
    written["compare.html"] = root / "compare.html"
    return written
