"""Decide what the report says: manifest facts -> formatted tables, notes and plot slots.

Numbers are formatted here once (scores in %, deltas in pt, sizes in MB = 10^6 bytes, latency in
ms) so the Markdown and HTML renderings are identical. A missing section becomes a sentence
saying it is missing, never an exception: a running or failed run still deserves a report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from compresslab.report import facts as F
from compresslab.report.render import Block, Bullets, Code, Document, Heading, Image, Para, Table

DASH = "—"
# Sections a finished run has; listed as missing at the top of the report when absent.
EXPECTED = ("steps", "export", "eval", "size", "bench", "hardware", "versions", "config")


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage without the sign: 0.91055 -> '91.06'."""
    return DASH if x is None else f"{x * 100:.{digits}f}"


def pt(delta: float | None) -> str:
    """A score difference in points (0.01), always signed so a drop cannot be misread."""
    return DASH if delta is None else f"{delta * 100:+.2f}"


def mb(b: float | None) -> str:
    """Bytes as decimal MB; tiny test models keep three decimals so they do not read 0.0."""
    if b is None:
        return DASH
    v = b / 1e6
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def ms(x: float | None) -> str:
    """Milliseconds with about three significant digits."""
    if x is None:
        return DASH
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def times(x: float | None) -> str:
    """A speedup ratio, e.g. '2.41x'."""
    return DASH if x is None else f"{x:.2f}x"


def secs(x: float | None) -> str:
    """A wall time in the unit a person would say it in."""
    if x is None:
        return DASH
    if x < 90:
        return f"{x:.1f} s"
    if x < 5400:
        return f"{int(x // 60)} min {int(x % 60):02d} s"
    return f"{int(x // 3600)} h {int(x % 3600 // 60):02d} min"


def count(x: float | None) -> str:
    """A parameter count in millions/thousands: 22713602 -> '22.71M'."""
    if x is None:
        return DASH
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def plain(x: Any) -> str:
    """Any JSON scalar as text; floats trimmed to 4 significant digits."""
    if x is None:
        return DASH
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _missing(what: str) -> Para:
    return Para(f"Not available: the manifest has no `{what}` section.")


def _status(m: Mapping[str, Any]) -> list[Block]:
    from compresslab.manifest import live_status

    status = live_status(dict(m))  # "crashed": a running manifest whose process is gone (kill -9, OOM)
    out: list[Block] = []
    if status != "finished":
        out.append(Para(f"Run status: {status} (last update {m.get('updated', DASH)}). "
                        "Figures below are partial.", kind="warn"))
    err = m.get("error")
    if isinstance(err, Mapping):
        out.append(Para(f"Error{' in step ' + plain(err.get('step')) if err.get('step') else ''}: "
                        f"{plain(err.get('type'))}: {plain(err.get('message'))}. Rerun the same command to resume "
                        "after the last finished step.", kind="warn"))
    absent = [k for k in EXPECTED if not m.get(k)]
    if absent:
        out.append(Para("Missing from the manifest: " + ", ".join(absent) + ".", kind="warn"))
    out.append(Bullets([f"{k}: {plain(m.get(k))}" for k in
                        ("pipeline", "model_id", "task", "status", "created", "updated")]))
    return out


def _headline(m: Mapping[str, Any], plots: set[str]) -> list[Block]:
    out: list[Block] = [Heading("Headline")]
    rows = F.model_rows(m)
    if not rows:
        return out + [Para("No headline: the manifest has neither `eval` nor `bench` results.")]
    shapes = F.shape_keys(m)
    teacher = F.teacher_score(m)
    metric = F.get(m, "eval", "primary_metric") or "score"
    split = F.get(m, "eval", "split") or "dev"
    with_p = any(r.mcnemar_p is not None for r in rows)
    headers = ["model", f"{split} {metric} (%)", "Δ vs teacher (pt)", "agreement (%)"]
    denom = F.get(m, "bench", "denominator") or "ort_fp32"
    best = F.as_dict(F.get(m, "bench", "best_dense"))
    with_prec = any(r.precision for r in rows)
    headers += ["McNemar p"] * with_p + ["size (MB)"] + ["precision"] * with_prec
    headers += [f"{s} p50 (ms)" for s in shapes]
    headers += [f"vs best_dense {s}" for s in shapes] * bool(best) + [f"vs {denom} {s}" for s in shapes]
    table = []
    for r in rows:
        delta = r.score - teacher if r.score is not None and teacher is not None else None
        cells = [r.label, pct(r.score), pt(delta), pct(r.agreement)]
        cells += [plain(r.mcnemar_p)] * with_p + [mb(r.size_bytes)] + [plain(r.precision)] * with_prec
        cells += [ms(r.p50_ms.get(s)) for s in shapes]
        cells += [times(r.speedup_best.get(s)) for s in shapes] * bool(best)
        cells += [times(r.speedup.get(s)) for s in shapes]
        table.append(cells)
    threads = F.get(m, "bench", "threads")
    caption = (f"Δ in points (0.01) against teacher_torch; size is the on-disk bytes of that "
               f"artifact (MB = 10^6 bytes); latency is the median at {plain(threads)} threads; "
               f"speedup = reference p50 / model p50.")
    if best:
        caption += (" best_dense = the fastest dense teacher over every enabled backend and precision: "
                    + ", ".join(f"{s}: {plain(F.get(v, 'runner'))}" for s, v in best.items()) + ".")
    out.append(Table(headers, table, caption))
    if "eval" not in m:
        out.append(_missing("eval"))
    if "bench" not in m:
        out.append(_missing("bench"))
    if "score_vs_latency.png" in plots:
        out.append(Image("score_vs_latency.png", "score vs latency"))
    return out


def _steps(m: Mapping[str, Any], plots: set[str]) -> list[Block]:
    out: list[Block] = [Heading("Steps")]
    steps = F.steps(m)
    if not steps:
        return out + [_missing("steps")]
    rows = []
    for s in steps:
        after = F.as_dict(s.get("metrics_after"))
        sp = F.num(after.get("sparsity"))
        rows.append([F.step_label(s), plain(s.get("stage")), plain(s.get("status")),
                     secs(F.num(s.get("wall_s"))),
                     pct(F.num(F.get(s, "metrics_before", "score"))),
                     pct(F.num(after.get("score"))),
                     pct(F.num(after.get("agreement"))), count(F.num(after.get("params"))),
                     mb(F.num(after.get("size_bytes"))), pct(sp, 1) if sp is not None else DASH])
    headers = ["step", "stage", "status", "wall time", "score before (%)", "score after (%)",
               "agreement (%)", "params", "size (MB)", "sparsity (%)"]
    out.append(Table(headers, rows, "Scores here are the passes' own evaluation "
                                    "(torch, before export); the headline scores the export."))
    out += [Image(n, n[:-4].replace("_", " ")) for n in
            ("size_per_step.png", "layer_sparsity.png", "structure.png") if n in plots]
    out.append(Heading("Skipped modules", 3))
    skipped = [f"{F.step_label(s)}: {mod} — {why}" for s in steps
               for mod, why in F.as_dict(F.get(s, "result", "skipped")).items()]
    out.append(Bullets(skipped) if skipped else Para("No step skipped a module."))
    return out


def _size(m: Mapping[str, Any]) -> list[Block]:
    size = F.as_dict(m.get("size"))
    if not size:
        return []
    # the dense torch checkpoint when a pass measured it (sparse / packed formats), else the fp32 export
    ref = "fp32" if "fp32" in size else "ort_fp32"
    ref_t = F.num(F.get(size, ref, "total"))
    ref_e = F.num(F.get(size, ref, "encoder"))

    def ratio(v: float | None, ref: float | None) -> str:
        return times(ref / v) if v and ref else DASH

    rows = []
    for fmt, v in size.items():
        enc, tot = F.num(F.get(v, "encoder")), F.num(F.get(v, "total"))
        rows.append([fmt, mb(enc), mb(tot), ratio(enc, ref_e), ratio(tot, ref_t)])
    return [Heading("Size"), Table(["format", "encoder (MB)", "total (MB)", "fp32/x encoder",
                                    "fp32/x total"], rows, "On-disk bytes; the total includes "
                                   "embeddings, the encoder ratio excludes them; ratios are against " + ref + ".")]


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
            facts = [["accuracy_level", plain(met.get("accuracy_level"))],
                     ["MatMulNBits / GatherBlockQuantized nodes",
                      f"{plain(met.get('n_matmul_nbits'))} / {plain(met.get('n_gather_block_quantized'))}"],
                     ["deployed bits histogram (nodes)", plain(met.get("deployed_bits_histogram"))],
                     ["average bits nominal / deployed (quantized nodes)",
                      f"{plain(met.get('avg_bits_nominal'))} / {plain(met.get('avg_bits_deployed'))}"],
                     ["parity max |Δlogits| vs the fake-quant graph", plain(par.get("max_abs_diff"))],
                     ["parity tolerance", plain(par.get("atol"))],
                     ["kernel paths", plain(met.get("kernel_paths"))]]
            out.append(Table(["fact", label], facts, f"{label}: n-bit deployment"))
    return [Heading("Quantization"), *out] if out else []


def _export(m: Mapping[str, Any]) -> list[Block]:
    out: list[Block] = [Heading("Export and parity")]
    exp = F.as_dict(m.get("export"))
    if not exp:
        return out + [_missing("export")]
    rows = [[name, plain(v.get("label", name)), plain(v.get("path")),
             mb(F.num(v.get("size_bytes"))),
             plain(v.get("exporter")), plain(v.get("fused_attention_nodes"))]
            for name, v in ((n, F.as_dict(x)) for n, x in exp.items())]
    out.append(Table(["artifact", "label", "path", "size (MB)", "exporter",
                      "fused attention nodes"], rows))
    parity = F.as_dict(F.get(exp, "fp32", "parity"))
    if parity:
        diff, atol = F.num(parity.get("max_abs_diff")), F.num(parity.get("atol"))
        if isinstance(parity.get("passed"), bool):  # a rule other than max |diff| <= atol (binary models)
            verdict = "ok" if parity["passed"] else "FAILED"
        else:
            verdict = DASH if diff is None or atol is None else "ok" if diff <= atol else "FAILED"
        out.append(Table(["check", "value"], [["verdict", verdict]] +
                         [[k, plain(v)] for k, v in parity.items()],
                         "ONNX Runtime vs PyTorch outputs on the fp32 export."))
    else:
        out.append(Para("No parity record for the fp32 export."))
    return out


def _bench(m: Mapping[str, Any]) -> list[Block]:
    out: list[Block] = [Heading("Speed")]
    bench = F.as_dict(m.get("bench"))
    if not bench:
        return out + [_missing("bench")]
    out.append(Para(f"threads: {plain(bench.get('threads'))}; denominator: "
                    f"{plain(bench.get('denominator'))}; shapes: {', '.join(F.shape_keys(m))}."))
    prec, files = F.as_dict(bench.get("precision")), F.as_dict(bench.get("files"))
    best = F.as_dict(bench.get("speedups_best_dense"))
    lat = [[model, plain(prec.get(model)), shape, ms(F.num(F.get(v, "p50_ms"))), ms(F.num(F.get(v, "p90_ms"))),
            plain(F.get(v, "throughput")), times(F.num(F.get(best, model, shape))), plain(files.get(model))]
           for model, per in F.as_dict(bench.get("latency")).items()
           for shape, v in F.as_dict(per).items()]
    if lat:
        out.append(Table(["model", "precision", "shape", "p50 (ms)", "p90 (ms)", "throughput (seq/s)",
                          "vs best_dense", "file"], lat))
    for backend, why in F.as_dict(bench.get("skipped")).items():
        out.append(Para(f"{backend} skipped: {why}"))
    for key, title in (("real_length", "Real token lengths (dynamic padding)"),
                       ("load", "Load time and peak memory")):
        sec = F.as_dict(bench.get(key))
        cols = list(dict.fromkeys(c for v in sec.values() for c in F.as_dict(v)))
        if sec and cols:
            out.append(Table(["model", *cols], [[k, *(plain(F.get(v, c)) for c in cols)]
                                                for k, v in sec.items()], title))
    gpu = F.as_dict(bench.get("gpu"))
    if "skipped" in gpu:
        out.append(Para(f"GPU benchmark skipped: {gpu['skipped']}"))
    elif gpu:
        rows = [[model, shape, ms(F.num(F.get(v, "p50_ms"))), ms(F.num(F.get(v, "p90_ms")))]
                for model, per in F.as_dict(gpu.get("latency")).items()
                for shape, v in F.as_dict(per).items()]
        out.append(Table(["model", "shape", "p50 (ms)", "p90 (ms)"], rows,
                         f"GPU: {plain(gpu.get('backend'))} on {plain(gpu.get('device'))}"))
    return out + _deepsparse(F.as_dict(bench.get("deepsparse")))


def _deepsparse(ds: Mapping[str, Any]) -> list[Block]:
    """DeepSparse engine timings (own process, interleaved with ort_fp32) and scores of those engines."""
    if not ds or "skipped" in ds:
        return []
    speed = F.runner_major(F.as_dict(ds.get("speedups")))
    scores = F.as_dict(ds.get("scores"))
    rows = [[model, shape, ms(F.num(F.get(v, "p50_ms"))), times(F.num(F.get(speed, model, shape))),
             pct(F.num(F.get(scores, model, "score"))), pct(F.num(F.get(scores, model, "agreement")))]
            for model, per in F.runner_major(F.as_dict(ds.get("latency"))).items()
            for shape, v in F.as_dict(per).items()]
    out: list[Block] = [Table(["model", "shape", "p50 (ms)", "vs ort_fp32", "dev score", "agreement"], rows,
                              f"DeepSparse {plain(ds.get('deepsparse_version'))} (static shapes, seq "
                              f"{plain(ds.get('seq'))})")]
    notes = [str(n) for n in ds.get("notes") or []]
    return out + ([Bullets(notes)] if notes else [])


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


def _notes(m: Mapping[str, Any]) -> list[Block]:
    notes = [str(n) for n in (F.get(m, "bench", "notes") or []) if n]
    notes += _binary_notes(m)
    deployed = str(F.get(m, "export", "deployed", "label") or "")
    if F.sparsity_steps(m) and (not deployed or deployed.startswith("ort")):
        notes.append("ORT runs sparse weights with dense kernels: zeros shrink the compressed "
                     "file, not the latency; speedups come from int8 and removed structure.")
    return [Heading("Notes"), Bullets(notes)] if notes else []


def _environment(m: Mapping[str, Any], run_dir: str) -> list[Block]:
    out: list[Block] = [Heading("Environment and reproduction")]
    hw = F.as_dict(m.get("hardware"))
    isa = F.as_dict(hw.pop("isa", None))
    info = [[k, plain(v)] for k, v in hw.items()]
    if isa:
        info.append(["isa", ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in isa.items())])
    info += [[k, plain(m.get(k))] for k in
             ("seed", "config_hash", "git_sha", "compresslab_version", "schema_version")]
    out.append(Table(["fact", "value"], info, "Hardware and run identity"))
    versions = F.as_dict(m.get("versions"))
    out.append(Table(["library", "version"], [[k, plain(v)] for k, v in versions.items()])
               if versions else _missing("versions"))
    cmd = m.get("command") or f"python -m compresslab +pipeline={m.get('pipeline', '<pipeline>')}"
    overrides = m.get("overrides")
    if not m.get("command") and isinstance(overrides, list) and overrides:
        cmd += " " + " ".join(str(o) for o in overrides)
    out.append(Code(f"{cmd}\npython -m compresslab.report {run_dir}",
                    "Run (same config resumes the same run dir), then rebuild this report:"))
    if m.get("config"):
        out.append(Code(json.dumps(m["config"], indent=2, sort_keys=True, default=str),
                        "Resolved config"))
    return out


def build_document(m: Mapping[str, Any], plots: set[str], plot_errors: Mapping[str, str],
                   run_dir: str) -> Document:
    """The whole report as blocks; ``plots`` names the PNGs that were actually drawn."""
    title = (f"compresslab: {m.get('pipeline', '?')} on {m.get('model_id', '?')} "
             f"({m.get('task', '?')})")
    doc = Document(title, _status(m))
    for part in (_headline(m, plots), _steps(m, plots), _quant(m), _size(m), _export(m), _bench(m),
                 _notes(m), _environment(m, run_dir)):
        doc.blocks += part
    if plot_errors:
        doc.blocks += [Heading("Plot errors", 3),
                       Bullets([f"{k}: {v}" for k, v in plot_errors.items()])]
    return doc
