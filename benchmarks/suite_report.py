"""``benchmarks/REPORT.md`` and ``REPORT.html`` from every ``results/suite_<task>.json``: one table per task,
the paired tests of ours against each peer, Pareto plots (score vs b32 latency, score vs size).

Only the results files are read: the report says what they say, figures included, and nothing else.
The CPU's ISA flags stand in the header of every speed column and the title of every latency plot
(int8 and bf16 gains depend on them, and machines differ between runs). Cells timed on a busy machine
(the file's ``meta.machine_load``) and tasks whose timing was refused or skipped say so above their
table. Below each table: which runtime is faster per pipeline (ORT or OpenVINO, ``runtimes``) and the
verdict for every peer that ran (``verdicts``: which of ours beat it and by which rule, or, said plainly,
that the peer wins); on a label-free task, per pass, what replaces the task loss or that it does not apply
(``meta.label_free``). Rendering reuses the run report's blocks (``compresslab.report.render``) and its Pareto plot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from compresslab.manifest import atomic_write_bytes, read_json
from compresslab.report.fmt import mb, ms, pt
from compresslab.report.render import Bullets, Document, Heading, Image, Para, Table, to_html, to_markdown

from .suite_phase import (BUILDS, NO_TIMING, REFUSED, SKIPPED, TIMED, busy_reasons, figures_phase, split_windows,
                          status_of)

PLOT_DIR = "report_plots"  # beside REPORT.md


@dataclass(frozen=True)
class Point:
    """A system as ``compresslab.report.plots.pareto_plot`` reads it (score and cost attributes)."""

    name: str
    score: float | None
    metric: str
    teacher: float | None
    latency_ms_b32: float | None
    size_bytes: float | None
    ref_latency_ms_b32: float | None  # the dense teacher on ORT fp32
    ref_size_bytes: float | None


def _f(x: Any, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _isa(meta: Mapping[str, Any]) -> str:
    return ", ".join(meta.get("cpu_isa") or []) or "ISA not recorded"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def task_blocks(task: str, data: Mapping[str, Any]) -> tuple[list[Any], dict[str, bytes]]:
    """One task's section and its plots (name -> PNG)."""
    from compresslab.report.compare import pareto_front
    from compresslab.report.plots import pareto_plot

    meta, sysd = data.get("meta") or {}, data.get("systems") or {}
    teacher = data.get("teacher_score")
    isa = _isa(meta)
    blocks: list[Any] = [Heading(f"{task} ({meta.get('metric', 'score')}, {meta.get('split', 'dev')})")]
    blocks.append(Para(f"Teacher {_pct(teacher)}; budget {meta.get('budget')}; {meta.get('threads')} threads; CPU "
                       f"{(meta.get('hardware') or {}).get('cpu', {}).get('model', '?')} [{isa}]; git "
                       f"{meta.get('git_sha')}."))
    blocks.append(timing_para(task, meta, sysd))
    blocks += load_blocks(task, meta)
    rows = []
    for name, s in sysd.items():
        delta = None if s.get("score") is None or teacher is None else s["score"] - teacher
        rows.append([name, s.get("method") or "", s.get("tool") or "", _pct(s.get("score")), pt(delta),
                     _f(s.get("agreement")), ms(s.get("latency_ms_b1")), ms(s.get("latency_ms_b32")),
                     _f(s.get("throughput_real"), 1), mb(s.get("size_bytes")), s.get("backend") or "",
                     s.get("precision") or "", _timing(s.get("timing")), s.get("error") or ""])
    blocks.append(Table(["system", "method", "tool", "score", "Δ vs teacher", "agreement", f"b1 ms [{isa}]",
                         f"b32 ms [{isa}]", f"real-length sent/s [{isa}]", "size", "backend", "precision", "timed",
                         "error"], rows,
                        caption="Scores from each deployed file on dev; latency p50. timed: 'one process' = every "
                                "such cell interleaved in the suite's process; 'alternating' = in the tool's own "
                                "venv after them (interleaved there with the dense teacher: see below)."))
    blocks += label_free_blocks(meta.get("label_free") or {})
    blocks += runtime_blocks(data.get("runtimes") or {}, isa)
    blocks += external_blocks(meta)
    blocks += verdict_blocks(data.get("verdicts") or {})
    ours = [n for n, s in sysd.items() if s.get("mcnemar_p_vs")]
    peers = sorted({p for n in ours for p in sysd[n]["mcnemar_p_vs"]})
    if ours and peers:
        blocks.append(Table(["ours \\ peer", *peers],
                            [[n, *(_f(sysd[n]["mcnemar_p_vs"].get(p), 3) for p in peers)] for n in ours],
                            caption="McNemar p (exact, two-sided), paired on the same dev examples."))
    pngs: dict[str, bytes] = {}
    ref = sysd.get("dense_ort_fp32") or {}
    pts = [Point(n, s.get("score"), meta.get("metric", "score"), teacher, s.get("latency_ms_b32"), s.get("size_bytes"),
                 ref.get("latency_ms_b32"), ref.get("size_bytes")) for n, s in sysd.items() if s.get("score") is not None]
    for cost, ref_cost, label, title, scale in (
            ("latency_ms_b32", "ref_latency_ms_b32", "p50 latency, b32 (ms)  ← faster", f"{task}: score vs b32 latency [{isa}]", 1.0),
            ("size_bytes", "ref_size_bytes", "deployed size (MB)  ← smaller", f"{task}: score vs size", 1e-6)):
        have = [q for q in pts if getattr(q, cost) is not None]
        png = pareto_plot(have, pareto_front(have, cost), cost, ref_cost, label, title, scale=scale) if have else None
        if png:
            pngs[f"suite_{task}_{cost}.png"] = png
            blocks.append(Image(f"suite_{task}_{cost}.png", title))
    return blocks, pngs


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _when(phase: Mapping[str, Any]) -> str:
    sha = phase.get("git_sha")
    return f"{phase.get('at') or 'time not recorded'}, git {str(sha)[:12] if sha else 'sha not recorded'}"


def timing_para(task: str, meta: Mapping[str, Any], sysd: Mapping[str, Mapping[str, Any]]) -> Para:
    """Where this file's speed figures come from, as one clean sentence per fact: timed in this run; or not timed
    (``--no-timing``, or refused on a busy machine with the check's reasons) and the earlier phase's figures kept
    for every scored cell, for some of them (naming both sides), or for none; with when and at which git sha."""
    timing = meta.get("timing") or {}
    status, reason = status_of(timing)
    source = figures_phase({"meta": meta}, task)
    if status == TIMED:
        n = len(timing.get("timed") or [])
        return Para(f"Timed in this run ({_when(source)}): {n} cell{'s' * (n != 1)} in one timing phase.")
    if status == SKIPPED:
        head = ("Not timed in this run: --no-timing was given." if reason == NO_TIMING
                else f"Not timed in this run: the timing phase was skipped ({reason or 'no reason recorded'}).")
    elif status == REFUSED:
        head = ("Not timed in this run: the machine was busy, so the timing phase was refused. The check said: "
                + _sentence(reason or "no reason recorded"))
    else:
        head = f"Not timed in this run (timing status {status or 'not recorded'!r})."
    kept = list(timing.get("kept_from_earlier_run") or [])
    if not kept:
        return Para(f"{head} No speed figures: no cell has a timing from an earlier phase (a timed run on a quiet "
                    "machine measures them).", "warn")
    source = f"the earlier timing phase ({_when(source)})"
    untimed = [n for n, s in sysd.items() if s.get("score") is not None and n not in kept]
    if not untimed:
        return Para(f"{head} Every speed figure is kept from {source}, whose deployed files are unchanged: "
                    f"{', '.join(kept)}.", "warn")
    return Para(f"{head} Partly kept: the speed figures of {len(kept)} of {len(kept) + len(untimed)} scored cells "
                f"come from {source}, whose deployed files are unchanged: {', '.join(kept)}. Not timed: "
                f"{', '.join(untimed)} (new or rebuilt since).", "warn")


def _window(t: Mapping[str, Any]) -> str:
    if t.get("busy"):
        return f"{t.get('what')}: BUSY ({'; '.join(t.get('reasons') or ['busy'])})"
    return (f"{t.get('what')}: quiet (other processes {t.get('other_cpu_before')} CPU s per s before, at most "
            f"{t.get('max_other_cpu_during')} during)")


def load_blocks(task: str, meta: Mapping[str, Any]) -> list[Any]:
    """The machine's load, told apart by what it can void (``suite_phase``): the windows of the timing phase the
    speed figures come from (busy: every speed figure void, said in a banner), and the builds' own windows (a
    ZipLM latency table while it trained, ...: busy, what that build chose by timing was chosen on a busy
    machine; the speed figures are not touched)."""
    load = meta.get("machine_load") or {}
    if not load:
        return []
    phase, other = split_windows(meta, task)
    timed = status_of(meta.get("timing") or {})[0] == TIMED
    whose = "this run's" if timed else "the earlier one the kept figures come from"
    lines = [f"timing phase ({whose}): {_window(t)}" for t in phase] or ["timing phase: none (no speed figures)"]
    runs = {n: r for n, r in (load.get("runs") or {}).items() if isinstance(r, Mapping)}
    label = {n: ("the cell builds' own speed checks (a ZipLM latency table while it trained, ...)" if n == BUILDS
                 else f"pipeline run {n}") for n in runs}
    lines += [f"{label[n]}: BUSY ({'; '.join(r.get('reasons') or ['busy'])}): what it chose by timing was chosen on "
              "a busy machine; no speed figure above comes from it" for n, r in runs.items() if r.get("busy")]
    if quiet := [label[n] for n, r in runs.items() if not r.get("busy")]:
        lines.append(f"quiet: {', '.join(quiet)}")
    lines += [f"not the timing phase's, void of no figure here (a build's speed check an older suite filed among the "
              f"timings, or a phase whose figures are gone): {_window(t)}" for t in other]
    out: list[Any] = []
    if busy := busy_reasons(meta, task):
        out.append(Para("Timed on a busy machine, speed figures void: " + "; ".join(busy), "warn"))
    return out + [Para("Machine load (the timing phase's windows decide whether the speed figures are void; a "
                       "build's own speed checks do not):"), Bullets(lines)]


def _timing(t: str | None) -> str:
    return "" if not t else "alternating" if t.startswith("alternating") else "one process"


def label_free_blocks(label_free: Mapping[str, Any]) -> list[Any]:
    """A label-free task (``meta.label_free``): per pass of our pipelines, whether it applies and what replaces
    the task loss (``benchmarks/suite_applies.py``); the cells refused up front carry the reason as their error."""
    passes = label_free.get("passes") or {}
    if not passes:
        return []
    rows = [[name, p.get("applies", ""), p.get("replaces_task_loss", ""), ", ".join(p.get("pipelines") or [])]
            for name, p in passes.items()]
    return [Table(["pass", "applies", "what replaces the task loss", "in pipelines"], rows,
                  caption=f"Label-free task. Task loss: {label_free.get('task_loss', '')}. Cells whose pass does "
                          "not apply were not run: the reason is their error above.")]


def runtime_blocks(runtimes: Mapping[str, Mapping[str, Any]], isa: str) -> list[Any]:
    """Which runtime runs each of our pipelines faster (b32 p50): its ORT file vs its OpenVINO cell."""
    if not runtimes:
        return []
    rows = []
    for p, r in runtimes.items():
        verdict = (f"{r['faster']} ({r['ratio']:.2f}x)" if r.get("faster") not in (None, "tie") else
                   "tie" if r.get("faster") == "tie" else f"not compared: {r.get('why', '')}")
        rows.append([p, ms(r.get("ort_ms_b32")), ms(r.get("openvino_ms_b32")), verdict, _pct(r.get("ort_score")),
                     _pct(r.get("openvino_score"))])
    return [Table(["pipeline", f"ORT b32 ms [{isa}]", f"OpenVINO b32 ms [{isa}]", "faster", "ORT score",
                   "OpenVINO score"], rows,
                  caption="Each of our pipelines on both runtimes (OpenVINO: the same file, its plain twin, or our "
                          "int8 IR (SmoothQuant chosen on validation + static QDQ) of the run's plain export where ORT's file is "
                          "its dynamic int8 form).")]


def external_blocks(meta: Mapping[str, Any]) -> list[Any]:
    """The dense teacher's figures timed beside each peer in its own venv (the bridge between processes); from
    the earlier phase when this file was rewritten without timing (its figures are kept, so is their bridge)."""
    timing = meta.get("timing") or {}
    ext = timing.get("external") or (timing.get("earlier_phase") or {}).get("external") or {}
    lines = []
    for name, e in ext.items():
        ref = ((e.get("reference") or {}).get("dense_torch_fp32") or {})
        if e.get("error"):
            lines.append(f"{name}: {e['error']}")
        elif ref:
            lines.append(f"{name}: timed in its own venv, alternating with this process; the dense teacher (eager "
                         f"fp32) timed beside it there: b32 {ms(ref.get('latency_ms_b32'))}, b1 "
                         f"{ms(ref.get('latency_ms_b1'))} (compare with dense_torch_fp32 above).")
    return [Para("Peers timed in their own venv (alternating processes):"), Bullets(lines)] if lines else []


def verdict_blocks(verdicts: Mapping[str, Mapping[str, Any]]) -> list[Any]:
    """Per peer: beaten (by which of ours, which rule) or, said plainly, the peer wins; undecided and why."""
    if not verdicts:
        return []
    if isinstance(verdicts.get("error"), str):  # suite._verdicts: the figures were written, the verdicts failed
        return [Para(f"Verdicts: none drawn ({verdicts['error']}); rerun with --no-timing to derive them.", "warn")]
    wins = [n for n, v in verdicts.items() if v.get("status") == "peer wins"]
    lines = []
    for name, v in verdicts.items():
        if v["status"] == "beaten":
            who = "; ".join(f"{h['system']} (rule {h['rule']}: {h['why']})" for h in v["beaten_by"])
            lines.append(f"{name}: beaten by {who}")
        elif v["status"] == "peer wins":
            lines.append(f"{name}: THE PEER WINS. {v['why']}")
        else:
            was = v.get("if_quiet")
            lines.append(f"{name}: undecided ({v['why']})" + (f"; with those figures it would read: {was['status']}"
                                                              if was else ""))
    head = (f"Where a peer wins: {', '.join(wins)}." if wins else
            "No peer wins where both were timed." if any(v["status"] == "beaten" for v in verdicts.values())
            else "No verdict yet (not timed).")
    return [Para("Verdicts (issue 14): (a) at most as slow at b32 with a higher score (McNemar p < 0.05 and right on "
                 "more of the examples only one of the two gets right; >= 1 pt on STS-B), or (b) the same score "
                 "(agreement >= 0.99 with the peer's predictions, or within 0.3 pt; a higher score that is not "
                 "significant counts, and says so) at <= 0.9x the peer's b32 latency. A peer timed in its own venv "
                 "is compared through the dense teacher timed in both processes. Undecided: a scored system of ours "
                 f"was not timed, or the timing was busy. {head}", "warn" if wins else "text"), Bullets(lines)]


def build(results_dir: Path) -> tuple[Document, dict[str, bytes]]:
    """The report over every ``suite_<task>.json`` in ``results_dir``."""
    doc = Document("compresslab against the tools users know (issue 14)")
    files = sorted(results_dir.glob("suite_*.json"))
    doc.blocks.append(Para("Built by python -m benchmarks.suite from " + (", ".join(f.name for f in files) or
                                                                          "no results file yet") + "."))
    pngs: dict[str, bytes] = {}
    if not files:
        doc.blocks.append(Para("Not yet measured: no suite_<task>.json in benchmarks/results.", "warn"))
    for f in files:
        blocks, p = task_blocks(f.stem.removeprefix("suite_"), read_json(f))
        doc.blocks += blocks
        pngs.update(p)
    doc.blocks += [Heading("How to read it", 3), Bullets([
        "method compresslab: our pipeline's deployed file, where one of our passes changed the model or the graph "
        "the quantizer wrote (int8's block-wise word embeddings, results files from 2026-12-06 on); peer: another "
        "tool's (the dense teacher's cells included), also when one of our pipelines only runs that tool on the "
        "teacher (int8 in older results files: ORT's quantize_dynamic; benchmarks/suite_method.py). An OpenVINO "
        "cell made by our int8 recipe (results files from 2026-12-04 on: meta.cells.<cell>.int8_recipe) is ours, on the teacher too "
        "(int8_openvino): SmoothQuant, our pass, changed the weights first, our search chose its strength on "
        "validation, or one of its graph rewrites applied (per-row int8 word table, Q.K^T pairs moved, float "
        "path). A task whose results file is older holds static-QDQ cells, where int8_openvino is a peer.",
        "agreement: fraction of dev examples predicted as the teacher (torch fp32) predicts (Pearson r on regression).",
        "Every speed figure: one process, every cell interleaved, medians, except the cells timed 'alternating': "
        "those run only in their tool's venv and were timed there, after the others, interleaved with the dense "
        "teacher (eager fp32) whose figure there is given; the CPU ISA flags are in the header.",
        "OpenVINO cells of our pipelines (<pipeline>_openvino): the same model on OpenVINO (see the runtime table); "
        "an ORT int8 pipeline's is our int8 IR of its fp32 export (deploy.int8=ours: the SmoothQuant strength "
        "chosen on validation agreement, keeping suite.yaml's openvino_keep_fp32 MatMuls fp32; older results "
        "files: our static QDQ). <pipeline>_openvino_nncf: NNCF PTQ of the same model (NNCF's int8; the pipeline's method, "
        "since our pass changed the model first).",
        "Verdicts: benchmarks/verdicts.py; a peer that failed has no verdict, its exact error is in the table."])]
    return doc, pngs


def write_report(results_dir: Path, md_path: Path) -> dict[str, Path]:
    """Write ``md_path``, the HTML beside it (plots embedded) and the plots under ``report_plots/``."""
    doc, pngs = build(Path(results_dir))
    md_path = Path(md_path)
    written = {}
    for name, png in pngs.items():
        atomic_write_bytes(md_path.parent / PLOT_DIR / name, png)
        written[name] = md_path.parent / PLOT_DIR / name
    atomic_write_bytes(md_path, to_markdown(doc, PLOT_DIR).encode("utf-8"))
    html = md_path.with_suffix(".html")
    atomic_write_bytes(html, to_html(doc, pngs).encode("utf-8"))
    written.update({"md": md_path, "html": html})
    return written
