"""Decide what the report says: manifest facts -> formatted tables, notes and plot slots.

Numbers are formatted once (``fmt.py``) so the Markdown and HTML renderings are identical. A
missing section becomes a sentence saying it is missing, never an exception: a running or failed
run still deserves a report. Tables stay narrow (at most :data:`MAX_COLUMNS` columns): the
headline shows the largest timed shape, the Speed section (``speed.py``) every shape, one row
per model and shape.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

import yaml

from compresslab.config import CUSTOM_STEPS
from compresslab.failure import stop_summary
from compresslab.report import facts as F
from compresslab.report.export import export_section
from compresslab.report.provenance import code_banner, git_row, sessions_table
from compresslab.report.fmt import DASH, count, mb, ms, pct, plain, pt, secs, times
from compresslab.report.redone import redone_section
from compresslab.report.render import Block, Bullets, Code, Document, Heading, Image, Para, Table
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
# Step and export names of the dense ONNX files, as opposed to checkpoint formats a pass measured.
ONNX_SIZES = ("ort_fp32", "deployed", "deployed_onnx")  # deployed: an OpenVINO IR when deploy chose one


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


def _agreement(share: float | None) -> str:
    """An agreement cell, ⚠ below verdicts.LOW_AGREEMENT (the Summary's rule, row by row)."""
    return pct(share) + (OVER if share is not None and share < LOW_AGREEMENT else "")


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
    headers = ["model", f"{split} {metric} (%)", "Δ (pt)", "agreement (%)"] + ["McNemar p"] * with_p
    headers += ["size (MB)"] + ["precision"] * with_prec
    if shape:
        headers += [f"p50 {shape} (ms)", f"× {denom}"] + ["× best_dense"] * with_best
    table, flagged = [], []
    for r in rows:
        delta = _delta(r, teacher)
        if over_tolerance(delta, tol):
            flagged.append(r.label)
        cells = [r.label, pct(r.score), pt(delta) + (OVER if over_tolerance(delta, tol) else ""),
                 _agreement(r.agreement)]
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
                          _agreement(s.agreement)]
                         + [DASH] * (len(headers) - 4))
    n, _ = F.threads(m)
    caption = (f"Δ in points (0.01) against teacher_torch;{OVER} marks a drop over the tolerance "
               f"eval.max_drop = {tol * 100:.2f} pt, and an agreement below {LOW_AGREEMENT * 100:.0f}%. "
               "Size: on-disk bytes of that artifact (MB = 10^6 bytes).")
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


def _size_table(sizes: Mapping[str, Any], ref: str | None, caption: str,
                names: Mapping[str, str] | None = None) -> Table:
    """format | encoder | total | ratios against ``ref`` (a row of ``sizes``) | embeddings | head."""
    ref_e, ref_t = F.num(F.get(sizes, ref, "encoder")), F.num(F.get(sizes, ref, "total"))

    def ratio(v: float | None, r: float | None) -> str:
        return times(r / v) if v and r else DASH

    rows = []
    for fmt_name, v in sizes.items():
        enc, tot = F.num(F.get(v, "encoder")), F.num(F.get(v, "total"))
        rows.append([(names or {}).get(fmt_name, fmt_name), mb(enc), mb(tot), ratio(enc, ref_e), ratio(tot, ref_t),
                     mb(F.num(F.get(v, "embeddings"))), mb(F.num(F.get(v, "head")))])
    return Table(["format", "encoder (MB)", "total (MB)", f"{ref or DASH}/x encoder", f"{ref or DASH}/x total",
                  "embeddings (MB)", "head (MB)"], rows, caption)


def _deployed_files(m: Mapping[str, Any]) -> str:
    """The caption of the deployed files' sizes: what each row is, an IR's true source included."""
    label = F.deployed_label(m)
    text = f"Deployed files: ort_fp32 is the dense teacher's export, {label} the file the run ships"
    if F.get(m, "export", "deployed", "runtime") == "openvino":
        origin = ir_origin(m, brief=True)
        onnx = F.run_relative(F.get(m, "export", "deployed", "onnx_path"), m)
        text += (": an OpenVINO IR (.xml + .bin: total only)" + (f", {origin[0]}" if origin else "")
                 + f"; deployed_onnx is the pipeline's ONNX file{f' {onnx}' if onnx else ''}"
                 + (", which the IR was not made from" if origin and origin[1] else ""))
    return text + ". On-disk bytes; the encoder excludes embeddings and the head, the total is the whole file."


def _size(m: Mapping[str, Any]) -> list[Block]:
    """Two kinds of size, never mixed in one table: the ONNX files the run exported and deployed
    (ratios against the fp32 export), and the checkpoint formats a pass measured for its own model
    (ratios against that pass's fp32 checkpoint)."""
    size = {k: v for k, v in F.as_dict(m.get("size")).items() if isinstance(v, Mapping)}
    if not size:
        return []
    onnx = {k: v for k, v in size.items() if k in ONNX_SIZES}
    out: list[Block] = [Heading("Size")]
    if onnx:
        out.append(_size_table(onnx, "ort_fp32" if "ort_fp32" in onnx else None, _deployed_files(m),
                               {"deployed": F.deployed_label(m)}))
    by_step: dict[str, dict[str, Any]] = {}
    for s in F.steps(m):
        for k in F.as_dict(F.get(s, "result", "metrics", "size")):
            if k in size and k not in onnx:
                by_step.setdefault(F.step_label(s), {})[k] = size[k]
    placed = {k for d in by_step.values() for k in d}
    rest = {k: v for k, v in size.items() if k not in onnx and k not in placed}
    if rest:
        by_step["checkpoint"] = rest
    for label, formats in by_step.items():
        ref = "fp32" if "fp32" in formats else None
        out.append(_size_table(formats, ref, f"Checkpoint formats of {label} (safetensors files, what "
                                             "compresslab.save writes; not the ONNX file): on-disk bytes, "
                                             f"ratios against {ref or 'no fp32 row'}."))
    return out


def _quant(m: Mapping[str, Any]) -> list[Block]:
    """Weight bits of quantizing steps (``bits_per_layer`` / ``avg_bits``, e.g. hawq) and what an n-bit
    deployment step wrote (``n_matmul_nbits``, e.g. ort_matmul_nbits): bits per layer, the budget and
    how it was met, deployed bits and the graph's parity. Nothing without such steps."""
    out: list[Block] = []
    for s in F.steps(m):
        met = F.as_dict(F.get(s, "result", "metrics"))
        label = F.step_label(s)
        if "bits_per_layer" in met:
            alloc = F.as_dict(met.get("allocation"))
            facts = [["average bits (encoder Linears; fp32 counts 32)", plain(met.get("avg_bits"))],
                     ["allocation", plain(alloc.get("method"))],
                     ["budget (average bits)", plain(alloc.get("budget_avg_bits"))],
                     ["sensitivity", plain(F.get(met, "sensitivity", "method"))],
                     ["groups", f"{plain(met.get('group'))} (block_size {plain(met.get('block_size'))})"],
                     ["QAT steps", plain(F.get(met, "qat", "steps") or 0)]]
            if pinned := F.as_dict(alloc.get("pinned")):  # widths the user fixed (hawq rules), in the budget
                facts.append(["pinned by rules (counted in the budget)", plain(pinned)])
            emb = F.as_dict(met.get("embedding"))
            if emb:
                facts.append(["word embeddings", ", ".join(f"{k}: {plain(F.get(v, 'bits'))} bits"
                                                           for k, v in emb.items())])
            out.append(Table(["fact", label], facts, f"{label}: weight quantization"))
            rows = [[k, " ".join(str(b) for b in (v if isinstance(v, list) else [v]))]
                    for k, v in F.as_dict(met.get("bits_per_layer")).items()]
            out.append(Table(["layer", "bits per Linear (32 = fp32)"], rows,
                             f"{label}: bits per Linear in module order (default targets: q k v o ffn_in ffn_out)"))
        if "n_matmul_nbits" in met:
            par = F.as_dict(met.get("parity"))
            hist = F.as_dict(met.get("deployed_bits_histogram"))
            facts = [["accuracy_level", plain(met.get("accuracy_level"))],
                     ["MatMulNBits / GatherBlockQuantized nodes",
                      f"{plain(met.get('n_matmul_nbits'))} / {plain(met.get('n_gather_block_quantized'))}"],
                     ["deployed bits histogram (nodes)",
                      ", ".join(f"{b} bits: {plain(c)}" for b, c in hist.items()) or DASH],
                     ["average bits nominal / deployed (quantized nodes)",
                      f"{plain(met.get('avg_bits_nominal'))} / {plain(met.get('avg_bits_deployed'))}"],
                     ["parity max |Δlogits| vs the fake-quant graph", plain(par.get("max_abs_diff"))],
                     ["parity tolerance", plain(par.get("atol"))],
                     ["kernel paths", plain(met.get("kernel_paths"))]]
            out.append(Table(["fact", label], facts, f"{label}: n-bit deployment"))
    return [Heading("Quantization"), *out] if out else []


# when a binary run's export left no note of its own (e.g. the export has not run)
NO_1BIT_KERNELS = ("ONNX Runtime has no 1-bit kernels: the binary model runs as fp32 MatMuls on ±1 values, so "
                   "its ORT speed is fp32 speed; 1 bit per weight is storage, and FLOPs savings are theoretical.")


def _binary_notes(m: Mapping[str, Any]) -> list[str]:
    """The no-1-bit-kernels statement and the theoretical FLOPs of a binary model."""
    if not F.binary_model(m):
        return []
    notes = [str(n) for n in (F.get(m, "export", "fp32", "notes") or []) if n] or [NO_1BIT_KERNELS]
    par = F.as_dict(F.get(m, "export", "fp32", "parity"))
    if par.get("examples_over_atol"):
        notes.append(f"Sign flips: {plain(par.get('examples_over_atol'))} of {plain(par.get('n_examples'))} parity "
                     f"examples differ from torch past atol {plain(par.get('atol'))} (max |Δlogits| "
                     f"{plain(par.get('max_abs_diff'))}, argmax agreement {plain(par.get('argmax_agreement'))}): a "
                     f"pre-sign value within rounding of 0 took another sign in ORT and the flip cascaded.")
    for key, f in F.as_dict(F.get(m, "export", "fp32", "theoretical_flops")).items():
        f = F.as_dict(f)
        fp32, flops = F.num(f.get("flops_fp32")), F.num(f.get("flops"))
        notes.append(f"Theoretical FLOPs per sequence at {key} (binary MACs count 1/64, BiBERT's accounting; "
                     f"not measured): {plain(fp32 / 1e9 if fp32 else None)} G fp32 vs "
                     f"{plain(flops / 1e9 if flops else None)} G binary, {times(F.num(f.get('flops_ratio')))}.")
    return notes


# how the eval pads a batch (``eval.batch_dependence.<cell>.padding``; records without it were padded so too)
_PADDING = {"longest": "each batch padded to its longest sentence"}


def _batch_dependence_notes(m: Mapping[str, Any]) -> list[str]:
    """One note per scored file whose outputs depend on the batch (eval.batch_dependence): why (one dynamic
    activation range per call, over the batchmates and the padding), its score one sentence per call beside the
    batched one, and how many labels differ."""
    notes = []
    for label, rec in (F.as_dict(F.get(m, "eval", "batch_dependence")) or {}).items():
        rec = F.as_dict(rec)
        flips = rec.get("flips")
        differ = (f"; {count(flips)} of {count(rec.get('n'))} predicted labels differ" if flips is not None else "")
        ops = ", ".join(map(str, rec.get("ops") or []))
        padding = str(rec.get("padding") or "longest")
        notes.append(f"{F.cell_label(m, label)} quantizes activations with one scale per call ({ops}): that dynamic "
                     "range is taken over every token of every sentence in the call, padding positions included, so "
                     "its labels depend on what else is in the batch and how far the batch is padded. Score "
                     f"{pct(F.num(rec.get('score_batched')))} at batch {plain(rec.get('batch_size'))} "
                     f"({_PADDING.get(padding, f'padding: {padding}')}), {pct(F.num(rec.get('score_b1')))} one "
                     f"sentence per call (no padding){differ}. A server that batches otherwise, or pads to a fixed "
                     "length, gets other labels again.")
    return notes


def _ir_source_named(note: str, m: Mapping[str, Any]) -> str:
    """A bench note with the deployed IR's true source: versions before it was named wrote that the deploy stage made
    the int8 IR "of" the pipeline's ONNX file even when it made it from the final model's fp32 export."""
    origin, src = ir_origin(m), F.run_relative(F.get(m, "export", "deployed", "source"), m)
    old = "the int8 IR the deploy stage made of it ("
    if origin is None or not origin[1] or not src or old not in note:
        return note
    return note.replace(old, f"the int8 IR the deploy stage made from {src}, not from it (")


def _notes(m: Mapping[str, Any]) -> list[Block]:
    busy = bool(F.run_load(m).get("busy"))  # said once, in the banner at the top
    notes = [_ir_source_named(str(n), m) for n in (F.get(m, "bench", "notes") or [])
             if n and not (busy and str(n).startswith("MACHINE BUSY"))]
    notes += _binary_notes(m)
    notes += _batch_dependence_notes(m)
    deployed = str(F.get(m, "export", "deployed", "label") or "")
    if F.sparsity_steps(m) and (not deployed or deployed.startswith("ort")) and not any("dense kernels" in n
                                                                                        for n in notes):
        notes.append("ORT runs sparse weights with dense kernels: zeros shrink the compressed "
                      "file, not the latency; speedups come from int8 and removed structure.")
    return [Heading("Notes"), Bullets(notes)] if notes else []


def _hardware_rows(m: Mapping[str, Any]) -> list[list[str]]:
    """The hardware record as one fact per row: ISA flags as one line, library versions left to the
    versions table, and the thread count the run really used."""
    hw = F.as_dict(m.get("hardware"))
    rows: list[list[str]] = []
    for key, v in F.flatten({k: v for k, v in hw.items() if k not in ("libraries", "threads")}).items():
        if "isa" in key.split("."):  # one summary row below
            continue
        rows.append([key, plain(v)])
    isa = F.isa(m)
    if isa:
        have = [k for k, v in isa.items() if v]
        lack = [k for k, v in isa.items() if not v]
        rows.append(["isa", (", ".join(have) or "none of those probed") + (f" (not: {', '.join(lack)})" if lack
                                                                          else "")])
    n, source = F.threads(m)
    rows.append(["threads", f"{plain(n)} ({source})"])
    return rows


class _ConfigDumper(yaml.SafeDumper):
    """Block YAML, except lists of scalars (shapes, names) on one line: ``shapes: [[1, 128], [32, 128]]``."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, Mapping) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ConfigDumper.add_representer(list, _represent_list)


def config_yaml(config: Mapping[str, Any]) -> str:
    """The resolved config as YAML, in the order Hydra composed it (as in ``.hydra/config.yaml``)."""
    return yaml.dump(dict(config), Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True, width=100).rstrip()


def _environment(m: Mapping[str, Any], run_dir: str) -> list[Block]:
    out: list[Block] = [Heading("Environment and reproduction")]
    info = _hardware_rows(m)
    info += [git_row(m) if k == "git_sha" else [k, plain(m.get(k))] for k in
             ("seed", "config_hash", "git_sha", "compresslab_version", "schema_version")]
    out.append(Table(["fact", "value"], info, "Hardware and run identity"))
    out += sessions_table(m)
    versions = F.as_dict(m.get("versions"))
    out.append(Table(["library", "version"], [[k, plain(v)] for k, v in versions.items()])
               if versions else _missing("versions"))
    out.append(_rerun(m, run_dir))
    runs = m.get("invocations")
    if isinstance(runs, list) and len(runs) > 1:
        out.append(Para(f"This run dir was run {len(runs)} times (resumed, or rerun with settings outside the run "
                        "identity: run.*, paths.*); the command and config here are the latest run's, every "
                        "run's overrides are under invocations in manifest.json."))
    if isinstance(m.get("config"), Mapping) and m["config"]:
        out.append(Code(config_yaml(m["config"]), "Resolved config (YAML)"))
    return out


def _shipped_name(m: Mapping[str, Any]) -> str:
    """The ``+pipeline=`` value of the run, without the mark of overridden steps, which is no pipeline's name."""
    return str(m.get("pipeline", "<pipeline>")).removesuffix(CUSTOM_STEPS)


def _rerun(m: Mapping[str, Any], run_dir: str) -> Block:
    """The commands that reproduce the run (each argument quoted for a POSIX shell), then rebuild
    this report: from the working directory the run started in, since relative paths are read
    from there."""
    report = f"python -m compresslab.report {shlex.quote(str(run_dir))}"
    if m.get("pipeline") == "compress" and not m.get("command"):  # made by compresslab.compress(output_dir=...)
        return Code(report, "Made by compresslab.compress(..., output_dir=this dir): the same call again resumes "
                            "it (or finds it finished); rebuild this report:")
    overrides = m.get("overrides")
    cmd = m.get("command")
    if not cmd and isinstance(overrides, list):
        cmd = shlex.join(["python", "-m", "compresslab", *(str(o) for o in overrides)])
    lines = [f"cd {shlex.quote(str(m['cwd']))}"] if cmd and m.get("cwd") else []
    lines += [cmd or f"python -m compresslab +pipeline={_shipped_name(m)}", report]
    how = ("Run (the same command resumes the same run dir, or finds it finished), then rebuild this report:"
           if cmd else "Run, then rebuild this report (the manifest does not record the command-line overrides: "
                       "add the values of the resolved config below that differ from the defaults):")
    return Code("\n".join(lines), how)


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
                 _quant(m), _size(m), export_section(m), speed_section(m), _notes(m), redone_section(m),
                 _environment(m, run_dir)):
        doc.blocks += part
    if plot_errors:
        doc.blocks += [Heading("Plot errors", 3),
                       Bullets([f"{k}: {v}" for k, v in plot_errors.items()])]
    return doc
