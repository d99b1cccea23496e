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
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from compresslab.report import MANIFEST, ManifestError, write_atomic
from compresslab.report.compare_groups import (assign_groups, assign_labels, group_by, pareto_front,  # noqa: F401
                                               settings_text, short, swept, varied)
from compresslab.report.compare_points import RunPoint, point  # noqa: F401
from compresslab.report.compare_runs import COMPARE_MD, collect, default_out  # noqa: F401
from compresslab.report.fmt import DASH, agreement_cell, mb, pct, plain, pt, times
from compresslab.report.render import Block, Bullets, Document, Heading, Image, Para, Table, to_html, to_markdown
from compresslab.report.verdicts import LOW_AGREEMENT


class CompareError(ManifestError):
    """No run to compare; the message says what was given and what a run directory looks like."""


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
        if p.crashed_sessions:  # resumed after a kill: the run may mix what two processes made
            label += f" (resumed after {p.crashed_sessions} crashed session{'s' * (p.crashed_sessions > 1)})"
        over = p.worst_delta is not None and -p.worst_delta > p.tolerance + 1e-12
        rows.append([label, settings_text(p, sweeps[(p.pipeline, p.group)]),
                     pct(p.teacher) + (" ⚠ chance" if p.chance_teacher else ""),
                     pct(p.score) + (" ⚠ one class" if p.one_class else ""),
                     pt(p.delta) + (" ⚠" if over else ""), ("r " if p.agreement_r and p.agreement is not None else "")
                     + agreement_cell(p.agreement, p.agreement_r) + (" ⚠ low" if p.low_agreement else ""),
                     mb(p.size_bytes), plain(p.shape), _speed(p),
                     times(p.speedup_best) + (" (busy)" if p.busy and p.speedup_best is not None else "")
                     + (" ⚠ slower" if p.slower else "")])
    with_r = any(p.agreement_r for p in points)
    return Table(["run", "settings swept", "teacher (%)", "deployed (%)", "Δ (pt)",
                  "agreement (% or r)" if with_r else "agreement (%)", "size (MB)",
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
                 + (" Agreement r = a regression run's Pearson correlation of the deployed model's predictions with "
                    "its teacher's on the same examples (no labels to agree on)." if with_r else "")
                 + (f" ⚠ low = fewer than {LOW_AGREEMENT:.0%} of the predictions agree with the teacher's"
                    + (f" (a regression run: r under {LOW_AGREEMENT:.2f})" if with_r else "") + "."
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
            facts.append(f"Pareto front, score vs {what}: " + "; ".join(settings_text(p, keys) for p in front) + ".")
    ok = [p for p in quiet if p in within and p.speedup is not None]
    if ok:
        best = max(ok, key=lambda p: p.speedup)
        facts.append(f"Fastest within the tolerance ({best.tolerance * 100:.2f} pt, eval.max_drop): "
                     f"{settings_text(best, keys)}: {times(best.speedup)} at {pt(best.delta)} pt ({best.name}).")
    elif any(p.delta is not None for p in quiet):
        facts.append("No run of this sweep timed on a quiet machine is within its tolerance (eval.max_drop).")
    sized = [p for p in within if p.size_bytes is not None]
    if sized:
        small = min(sized, key=lambda p: p.size_bytes)
        facts.append(f"Smallest within the tolerance ({small.tolerance * 100:.2f} pt, eval.max_drop): "
                     f"{settings_text(small, keys)}: {mb(small.size_bytes)} MB at {pt(small.delta)} pt "
                     f"({small.name}).")
    if not timed and scored:
        top = max(scored, key=lambda p: p.score)
        facts.append(f"Best score: {settings_text(top, keys)}: {pct(top.score)} % ({pt(top.delta)} pt, {top.name})."
                     + ("" if within else " No run is within its tolerance (eval.max_drop)."))
    if timed and (untimed := [p for p in group if p not in timed]):
        facts.append("Not timed, so left out of the speed comparisons: "
                     + ", ".join(f"{p.name} ({_why_untimed([p])})" for p in untimed) + ".")
    if busy := [p.name for p in group if p.busy]:
        facts.append("Timed on a busy machine, so left out of the speed comparisons: " + ", ".join(busy) + ".")
    if constant := [settings_text(p, keys) for p in group if p.one_class]:
        facts.append("Predicts the same class for every example (a constant model, wherever it ranks): "
                     + "; ".join(constant) + ".")
    if chance := [settings_text(p, keys) for p in group if p.chance_teacher]:
        facts.append("Teacher no better than chance, so Δ and tolerance say nothing about the compression: "
                     + "; ".join(chance) + ".")
    return out + ([Bullets(facts)] if facts else [])


def _plots(points: Sequence[RunPoint]) -> tuple[dict[str, bytes], list[Block]]:
    """Per task: score vs latency (runs timed at the task's most common shape and machine) and vs size."""
    from compresslab.report.plots import pareto_plot  # matplotlib only when a comparison is drawn

    pngs: dict[str, bytes] = {}
    blocks: list[Block] = []
    many = len({p.group for p in points}) > 1
    for (task,), group in group_by(points, "group").items():
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
    sweeps = [b for k, g in group_by(points, "pipeline", "group").items() for b in _sweep(k, g)]
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
