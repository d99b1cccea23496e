"""Decide what the report says: manifest facts -> formatted tables, notes and plot slots.

Numbers are formatted once (``fmt.py``) so the Markdown and HTML renderings are identical. A
missing section becomes a sentence saying it is missing, never an exception: a running or failed
run still deserves a report. Tables stay narrow (at most :data:`MAX_COLUMNS` columns): the
headline shows the largest timed shape, the Speed section (``speed.py``) every shape, one row
per model and shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compresslab.config import CUSTOM_STEPS
from compresslab.failure import stop_summary
from compresslab.report import facts as F
from compresslab.report.environment import config_yaml, environment_section  # noqa: F401  (config_yaml: re-export)
from compresslab.report.export import export_section
from compresslab.report.provenance import code_banner
from compresslab.report.fmt import DASH, agreement_cell, count, mb, ms, pct, plain, pt, secs, times
from compresslab.report.notes import notes_section
from compresslab.report.quantization import quantization_section
from compresslab.report.redone import redone_section
from compresslab.report.render import Block, Bullets, Document, Heading, Image, Para, Table
from compresslab.report.sizes import size_section
from compresslab.report.speed import busy_banner, speed_section
from compresslab.report.selection import selection_section
from compresslab.report.facts import serving_scores
from compresslab.report.summary import OVER, ir_origin, over_tolerance
from compresslab.report.summary import summary as _summary
from compresslab.report.targets import speedup_targets
from compresslab.report.verdicts import LOW_AGREEMENT, run_flags

# Sections a finished run has; listed as missing at the top of the report when absent.
EXPECTED = ("steps", "export", "eval", "size", "bench", "hardware", "versions", "config")
# Wider tables do not fit a page (or a terminal showing report.md); tests hold every table to it.
MAX_COLUMNS = 10


def _missing(what: str, m: Mapping[str, Any] | None = None) -> Para:
    if m is not None and F.switched_off(m, what):
        return Para(f"Not run: {what}.enabled=false in this run's config.")
    return Para(f"Not available: the manifest has no `{what}` section.")


def _status(m: Mapping[str, Any]) -> list[Block]:
    from compresslab.manifest import live_status

    status = live_status(dict(m))  # "crashed": a running manifest whose process is gone (kill -9, OOM)
    out: list[Block] = []
    if status != "finished":
        out.append(Para(f"Run status: {status} (last update {m.get('updated', DASH)}). "
                        "Figures below are partial.", kind="warn"))
    err = m.get("error")
    if isinstance(err, Mapping):  # said from the record's fields: a manifest written before `summary` reads the same
        out.append(Para(stop_summary({"interrupted": m.get("status") == "interrupted", **err},
                                     api=m.get("pipeline") == "compress"), kind="warn"))
    absent = [k for k in EXPECTED if not m.get(k) and not F.switched_off(m, k)]
    if absent:
        out.append(Para("Missing from the manifest: " + ", ".join(absent) + ".", kind="warn"))
    off = [f"{k}.enabled=false" for k in EXPECTED if not m.get(k) and F.switched_off(m, k)]
    if off:
        out.append(Para("Switched off in this run's config: " + ", ".join(off) + "."))
    out += busy_banner(m)
    out += code_banner(m)
    out.append(Bullets([f"{k}: {plain(status if k == 'status' else m.get(k))}" for k in  # one status: the live one
                        ("pipeline", "model_id", "task", "status", "created", "updated")]))
    return out


def _delta(r: F.ModelRow, teacher: float | None) -> float | None:
    return r.score - teacher if r.score is not None and teacher is not None else None


def _agreement(share: float | None, r: bool = False) -> str:
    """An agreement cell (a share, or a regression task's Pearson r: ``r``), ⚠ below verdicts.LOW_AGREEMENT (the
    Summary's rule, row by row)."""
    return agreement_cell(share, r) + (OVER if share is not None and share < LOW_AGREEMENT else "")


def _headline(m: Mapping[str, Any], plots: set[str]) -> list[Block]:
    out: list[Block] = [Heading("Headline")]
    rows = F.model_rows(m)
    if not rows:
        return out + [Para("No headline: the manifest has neither `eval` nor `bench` results.")]
    shape = F.big_shape(F.shape_keys(m))
    teacher, tol = F.teacher_score(m), F.max_drop(m)
    metric = F.get(m, "eval", "primary_metric") or "score"
    split = F.get(m, "eval", "split") or "dev"
    denom = F.get(m, "bench", "denominator") or "ort_fp32"
    with_p = any(r.mcnemar_p is not None for r in rows)
    with_prec = any(r.precision for r in rows)
    with_best = any(r.speedup_best for r in rows)
    is_r = F.agreement_is_r(m)  # a regression task: agreement is Pearson r with the teacher's predictions
    others = F.secondary_metrics(m)
    headers = ["model", f"{split} {metric} (%)", "Δ (pt)", "r with teacher" if is_r else "agreement (%)"]
    headers += [f"{split} {k} (%)" for k in others] + ["McNemar p"] * with_p
    headers += ["size (MB)"] + ["precision"] * with_prec
    if shape:
        headers += [f"p50 {shape} (ms)", f"× {denom}"] + ["× best_dense"] * with_best
    table, flagged = [], []
    for r in rows:
        delta = _delta(r, teacher)
        if over_tolerance(delta, tol):
            flagged.append(r.label)
        cells = [r.label, pct(r.score), pt(delta) + (OVER if over_tolerance(delta, tol) else ""),
                 _agreement(r.agreement, is_r)] + [pct(r.metrics.get(k)) for k in others]
        size = mb(r.size_bytes) + (f" ({kind})" if r.key == "torch_final" and (kind := F.final_torch_kind(m)) else "")
        cells += [plain(r.mcnemar_p)] * with_p + [size] + [plain(r.precision)] * with_prec
        if shape:
            cells += [ms(r.p50_ms.get(shape)), times(r.speedup.get(shape))]
            cells += [times(r.speedup_best.get(shape))] * with_best
        table.append(cells)
        for s in serving_scores(m, r.key)[1:]:  # a batch-dependent file's other serving mode: judged the same
            d = s.score - teacher if teacher is not None else None
            label = f"{r.label} {s.mode}"
            if over_tolerance(d, tol):
                flagged.append(label)
            table.append([label, pct(s.score), pt(d) + (OVER if over_tolerance(d, tol) else ""),
                          _agreement(s.agreement, is_r)]
                         + [DASH] * (len(headers) - 4))
    n, _ = F.threads(m)
    caption = (f"Δ in points (0.01) against teacher_torch;{OVER} marks a drop over the tolerance "
               f"eval.max_drop = {tol * 100:.2f} pt, and an agreement below "
               + (f"r = {LOW_AGREEMENT:.2f}. " if is_r else f"{LOW_AGREEMENT * 100:.0f}%. ") +
               "Size: on-disk bytes of that artifact (MB = 10^6 bytes).")
    if is_r:
        caption += (" r with teacher: a regression task has no labels to agree on, so its agreement is the Pearson "
                    "correlation of the model's predictions with the teacher's on the same examples (1: the same "
                    "ranking and spacing), and the other metrics of the task are shown beside it.")
    if shape:
        caption += (f" Latency: median at batch × length {shape}, {plain(n)} threads; × = p50 of {denom} / p50 of "
                    "the model (> 1: faster). Every shape is in the Speed section.")
    if with_best:
        caption += (" best_dense = the fastest dense teacher over every enabled backend and precision. The rows "
                    "teacher_torch, ort_fp32, ort_int8, openvino_<precision> and torch_fp32 are the dense teacher; "
                    f"{F.deployed_label(m)} (the file the run ships), deployed_*, final_fp32_* and torch_final are "
                    "this run's model.")
    if any(len(serving_scores(m, r.key)) > 1 for r in rows):
        caption += (" A file whose labels depend on the batch (activations quantized per call) has a second row, "
                    "scored one sentence per call: the tolerance judges both.")
    out.append(Table(headers, table, caption))
    if flagged:
        out.append(Para(f"Over the tolerance of {tol * 100:.2f} pt (eval.max_drop): " + ", ".join(flagged) + ".",
                        kind="warn"))
    if flags := run_flags(m):  # what the tolerance does not say, by the Summary's rules: the table alone reads fine
        out.append(Para("Also flagged (the Summary says why and what to do): " + "; ".join(flags) + ".", kind="warn"))
    if "eval" not in m:
        out.append(_missing("eval", m))
    if "bench" not in m:
        out.append(_missing("bench", m))
    if "score_vs_latency.png" in plots:
        out.append(Image("score_vs_latency.png", "score vs latency"))
    return out


def _steps(m: Mapping[str, Any], plots: set[str]) -> list[Block]:
    out: list[Block] = [Heading("Steps")]
    steps = F.steps(m)
    if not steps:
        return out + [_missing("steps")]
    from compresslab.manifest import live_status

    crashed = live_status(dict(m)) == "crashed"  # a step left "running" by a killed run crashed with it
    rows = []
    for s in steps:
        after = F.as_dict(s.get("metrics_after"))
        sp = F.step_sparsity(s)
        rows.append([F.step_label(s), plain(s.get("stage")),
                     "crashed" if crashed and s.get("status") == "running" else plain(s.get("status")),
                     secs(F.num(s.get("wall_s"))),
                     pct(F.num(F.get(s, "metrics_before", "score"))),
                     pct(F.num(after.get("score"))),
                     pct(F.num(after.get("agreement"))), count(F.num(after.get("params"))),
                     _step_size(s), pct(sp, 1) if sp is not None else DASH])
    headers = ["step", "stage", "status", "wall time", "score before (%)", "score after (%)",
               "agreement (%)", "params", "size (MB)", "sparsity (%)"]
    caption = ("Scores here are the passes' own evaluation (torch, before export); the headline scores the export. "
               "Size: the step's file on disk (a torch step's model.safetensors, an ONNX step's graph), with the "
               "formats a pass also wrote beside it.")
    if (origin := ir_origin(m, brief=True)) is not None and origin[1]:
        onnx = F.run_relative(F.get(m, "export", "deployed", "onnx_path"), m)
        caption += (f" The deployed file is no step's: {F.deployed_label(m)} was {origin[0]}, not from {onnx} (the "
                    "Summary says more).")
    out.append(Table(headers, rows, caption))
    out += [Image(n, n[:-4].replace("_", " ")) for n in
            ("size_per_step.png", "layer_sparsity.png", "structure.png") if n in plots]
    out.append(Heading("Skipped modules", 3))
    skipped = [f"{F.step_label(s)}: {mod} — {why}" for s in steps
               for mod, why in F.as_dict(F.get(s, "result", "skipped")).items()]
    out.append(Bullets(skipped) if skipped else Para("No step skipped a module."))
    return out


def _step_size(s: Mapping[str, Any]) -> str:
    """A step's size cell: its file's MB, and when the pass wrote a smaller format beside it, what that file is and
    the format's size (a 4-bit step's fp32 fake-quant safetensors is no 4-bit size: ``91.7 (fp32 fake-quant;
    packed_nbits 54.1)``)."""
    size = mb(F.num(F.get(s, "metrics_after", "size_bytes")))
    kind, formats = F.step_file_kind(s), F.step_formats(s)
    if kind is None or size == DASH:
        return size
    return f"{size} ({kind}; " + ", ".join(f"{k} {mb(v)}" for k, v in formats.items()) + ")"


def pipeline_title(m: Mapping[str, Any]) -> str:
    """The run's pipeline as a title names it: a shipped pipeline whose steps were overridden
    (config.run_pipeline_name: ``<name>+custom``) with the steps that ran, since the name alone says
    which shipped pipeline it started from, not what it did."""
    name = str(m.get("pipeline", "?"))
    steps = F.get(m, "config", "pipeline", "steps")
    if name.endswith(CUSTOM_STEPS) and isinstance(steps, list):
        return f"{name} (steps: {', '.join(str(s) for s in steps)})"
    return name


def build_document(m: Mapping[str, Any], plots: set[str], plot_errors: Mapping[str, str],
                   run_dir: str) -> Document:
    """The whole report as blocks; ``plots`` names the PNGs that were actually drawn."""
    title = f"compresslab: {pipeline_title(m)} on {m.get('model_id', '?')} ({m.get('task', '?')})"
    doc = Document(title, _status(m))
    for part in (_summary(m), _headline(m, plots), _steps(m, plots), speedup_targets(m), selection_section(m),
                 quantization_section(m), size_section(m), export_section(m), speed_section(m), notes_section(m),
                 redone_section(m), environment_section(m, run_dir)):
        doc.blocks += part
    if plot_errors:
        doc.blocks += [Heading("Plot errors", 3),
                       Bullets([f"{k}: {v}" for k, v in plot_errors.items()])]
    return doc
