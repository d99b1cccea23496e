"""The report's Summary: what was deployed (its name, its file and the file it was made from), its score in every
serving mode the eval measured judged against the tolerance, its agreement with the teacher, the noise on those
figures, and how much faster and smaller it is.

A file whose labels depend on the batch (ORT's dynamic int8: ``eval.batch_dependence``) was scored at the eval batch
size and one sentence per call; both are ways to serve it, so the tolerance verdict takes the worse of them and
names the batch size that failed. A drop the report itself calls noise (under one standard error) keeps its ⚠ but
gets no advice to retrain, unless the agreement with the teacher is low: that is flagged on its own
(report/verdicts.py), since McNemar tests the change in accuracy, not how many predictions changed. A teacher no
better than chance and a deployed file slower than the dense teacher are warned about too; the advice after a drop
names the settings of the passes that ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from compresslab.report import facts as F
from compresslab.report.facts import Serving, serving_scores
from compresslab.report.export import deploy_choice
from compresslab.report.fmt import mb, pct, plain, pt, times
from compresslab.report.render import Block, Bullets, Heading, Para
from compresslab.report.verdicts import (low_agreement, lowest_agreement, one_class_warning, pass_levers,
                                         score_standard_error, slower_than_dense, teacher_warning)

OVER = " ⚠"  # marks a drop over the tolerance (eval.max_drop), a significant difference, a low agreement, a slowdown
SIGNIFICANT = 0.05  # McNemar p below it: the report calls the difference from the teacher real, not noise


def over_tolerance(delta: float | None, tolerance: float) -> bool:
    """Whether a score change is a drop larger than the tolerance (a gain never is)."""
    return delta is not None and -delta > tolerance + 1e-12


def standard_error(m: Mapping[str, Any]) -> float | None:
    """One standard error of the teacher's score on the eval split (accuracy, or a Pearson / Spearman correlation;
    None for other metrics): how far apart two scores must be before they mean anything (MEASURE.md "Scores and
    noise")."""
    return score_standard_error(F.get(m, "eval", "primary_metric"), F.teacher_score(m), F.get(m, "eval", "n"))


def _of(share: float | None, n: Any) -> str:
    """``share`` of ``n`` examples as a count: ``47 of 64``; "" when either is unknown."""
    n = F.num(n)
    return f"{round(share * n)} of {n:.0f}" if share is not None and n else ""


def _step_of(m: Mapping[str, Any], path: str | None) -> str | None:
    """The label of the step whose ONNX file is ``path`` (``01 int8 (ort_int8_dynamic)``)."""
    hit = [s for s in F.steps(m) if path and F.run_relative(F.get(s, "result", "onnx_path"), m) == path]
    return F.step_label(hit[-1]) if hit else None


def _ir_method(m: Mapping[str, Any]) -> str:
    """How the deploy stage quantized the deployed int8 IR, in words (from ``export.openvino.quantization``)."""
    ov = F.as_dict(F.get(m, "export", "openvino"))
    q = F.as_dict(ov.get("quantization"))
    n = F.num(q.get("n_calibration_examples"))
    on = f" on {n:.0f} train examples" if n else ""
    if ov.get("int8_method") == "nncf" or F.get(m, "export", "deployed", "method") == "peer":
        return f"NNCF's post-training static int8, calibrated{on}"
    alpha = F.num(F.get(q, "smoothquant", "alpha"))
    return "our static int8 calibration" + (f" with SmoothQuant α={plain(alpha)}" if alpha is not None else "") + on


def ir_origin(m: Mapping[str, Any], brief: bool = False) -> tuple[str, bool] | None:
    """Where the deployed OpenVINO IR came from, in words, and whether that is another file than the pipeline's own
    ONNX file (``export.deployed.onnx_path``): deploy converts that file's plain graph when OpenVINO reads it (its
    twin, in the same folder), else it quantizes or converts the final model's fp32 export, and the IR is then
    another model than the pipeline's last step. ``brief``: the source and the method only (a caption adds the
    rest). None when no IR is deployed or its source is not recorded."""
    dep = F.as_dict(F.get(m, "export", "deployed"))
    src, onnx = F.run_relative(dep.get("source"), m), F.run_relative(dep.get("onnx_path"), m)
    if dep.get("runtime") != "openvino" or not src:
        return None
    if not onnx or PurePosixPath(src).parent == PurePosixPath(onnx).parent:
        return f"converted from {src}" + (f", the plain graph of the pipeline's {onnx}" if onnx and onnx != src
                                          else ""), False
    step = _step_of(m, onnx)
    bench_prec = str(F.get(m, "bench", "precision", "deployed_onnx_ort") or "")
    dynamic = bool(F.get(m, "eval", "batch_dependence", "deployed_onnx_ort"))
    int8 = bool(dep.get("int8")) and (dynamic or bench_prec.startswith("int8") or "int8" in (step or ""))
    if brief:
        return f"made by the deploy stage from {src}" + (f" ({_ir_method(m)})" if dep.get("int8") else ""), True
    text = f"made by the deploy stage from {src}, not from the pipeline's own {onnx}" + (
        f", the file of step {step}" if step else "")
    if int8:
        text += (f": {_ir_method(m)}, a different int8 method than that step's"
                 + (" dynamic int8 (activations quantized per call)" if dynamic else ""))
    ran = {*F.as_dict(F.get(m, "eval", "models")), *F.as_dict(F.get(m, "bench", "latency"))}
    if "deployed_onnx_ort" in ran:
        text += f"; {onnx} is scored and timed on ORT as deployed_onnx_ort"
    return text, True


def _deployed_line(m: Mapping[str, Any]) -> Para:
    """``Deployed: <name>, <file>``, and for an IR the file it was made from."""
    path = plain(F.run_relative(F.get(m, "export", "deployed", "path"), m))
    text = f"Deployed: {F.deployed_label(m)}, {path}"
    if (origin := ir_origin(m)) is not None:
        text += f" (an OpenVINO IR: .xml + .bin), {origin[0]}"
    return Para(text + ".")


def _precision_note(m: Mapping[str, Any], teacher: float, tol: float) -> str:
    """For an IR compiled bf16: the score holds on CPUs with bf16, with the same IR's f32 score where bench has it."""
    dep = F.as_dict(F.get(m, "export", "deployed"))
    if dep.get("runtime") != "openvino" or dep.get("compiled_precision") != "bf16":
        return ""
    text = (" Compiled as bf16 on this CPU: that score holds on CPUs with bf16 support (AVX512_BF16 or AMX); "
            "on others OpenVINO compiles f32")
    prec = F.as_dict(F.get(m, "bench", "precision"))
    f32 = [k for k, v in prec.items() if k.startswith("deployed_openvino_") and str(v).endswith("f32")]
    score = F.num(F.get(m, "bench", "scores", f32[0], "score")) if f32 else None
    if score is None:
        return text + ", which this run did not score (bench.openvino_precisions with f32 scores it)."
    delta = score - teacher
    return (text + f", where the same IR scores {pct(score)}% ({f32[0]}, {pt(delta)} pt"
            f"{OVER if over_tolerance(delta, tol) else ''})." )


def truncated_note(m: Mapping[str, Any]) -> str:
    """``, K truncated at max_length=L`` when the eval cut K of its examples (eval.truncated), else ``""``: their
    scores rest on part of the text."""
    t = F.get(m, "eval", "truncated")
    return f", {t['n']} truncated at max_length={t['max_length']}" if isinstance(t, dict) and t.get("n") else ""


def _score_line(m: Mapping[str, Any], modes: list[Serving], teacher: float, tol: float) -> str:
    metric = F.get(m, "eval", "primary_metric") or "score"
    split, n = F.get(m, "eval", "split") or "dev", F.get(m, "eval", "n")
    on = f"{metric} on {split}{f' ({n} examples{truncated_note(m)})' if n else ''}"
    rule = f"the tolerance of {tol * 100:.2f} pt"
    deltas = [s.score - teacher for s in modes]
    marks = [OVER if over_tolerance(d, tol) else "" for d in deltas]
    if len(modes) == 1:
        verdict = "over" if marks[0] else "within"
        return (f"Score: {pct(modes[0].score)}% {on}, {pt(deltas[0])} pt{marks[0]} against the teacher's "
                f"{pct(teacher)}%: {verdict} {rule} (eval.max_drop={plain(tol)}).")
    each = ", and ".join(f"{pct(s.score)}% {s.mode}, {pt(d)} pt{mark}" for s, d, mark in zip(modes, deltas, marks))
    failed = [s.mode.split(" (", 1)[0] for s, mark in zip(modes, marks) if mark]
    verdict = (f"over {rule} {' and '.join(failed)}" if failed else f"within {rule} in every serving mode measured")
    bd = F.as_dict(F.get(m, "eval", "batch_dependence", "deployed"))
    flips = bd.get("flips")
    # "depend on the batch, 0 of 64 differ" read as a contradiction (trial 48b): the file *can* change its outputs
    # with the batch (one activation range per call); whether it did on this split is the count
    differ = ("" if flips is None else f"; here none of the {plain(bd.get('n'))} differed between them" if flips == 0
              else f", {plain(flips)} of {plain(bd.get('n'))} labels differ between them")
    outputs = "labels" if F.is_classification(m) else "outputs"  # a regression or embedding file has no labels
    return (f"Score: {on}: {each}, against the teacher's {pct(teacher)}%: {verdict} (eval.max_drop={plain(tol)}; "
            f"the deployed file's {outputs} can depend on the batch{differ}, so every serving mode measured is judged "
            "and the worst decides).")


def size_ratio(reference_bytes: float, deployed_bytes: float) -> str:
    """``2.41x smaller``, or ``1.3% larger`` when the deployed file is not smaller (a 1-bit model's fp32 export with
    its extra sign ops: "1.00x smaller" read as a saving that is not there)."""
    if deployed_bytes < reference_bytes:
        return f"{times(reference_bytes / deployed_bytes)} smaller"
    return f"{pct(deployed_bytes / reference_bytes - 1, 1)}% larger" if deployed_bytes > reference_bytes else "the same size"


def _agreement_line(m: Mapping[str, Any], modes: list[Serving], delta: float | None) -> str | None:
    """Agreement with the teacher, as a share and a count per serving mode; ⚠ when McNemar calls the difference in
    accuracy real and the score is lower, and ⚠ on its own when the agreement is low (verdicts.LOW_AGREEMENT):
    McNemar does not see predictions that changed both ways."""
    if modes[0].agreement is None:
        return None
    n = F.get(m, "eval", "n")
    if F.agreement_is_r(m):  # a regression task: no labels to agree on, so no share and no McNemar
        rs = [f"r = {s.agreement:.4f}{f' {s.mode}' if s.mode else ''}" for s in modes if s.agreement is not None]
        text = (f"Agreement: the deployed model's predictions correlate with the teacher's on the same {plain(n)} "
                "examples at " + " and ".join(rs) + " (Pearson; a regression task has no labels to agree on)")
        if changed := low_agreement(lowest_agreement(modes), n, correlation=True):
            return text + f";{OVER} low agreement: {changed}."
        return text + "."
    shares = []
    for i, s in enumerate(modes):
        if s.agreement is not None:
            count = _of(s.agreement, n)
            shares.append(f"{pct(s.agreement, 1)}%{' of the examples' if i == 0 else ''}"
                          f"{f' ({count})' if count else ''}{f' {s.mode}' if s.mode else ''}")
    text = "Agreement: the deployed model predicts what the teacher predicts on " + " and ".join(shares)
    p = F.num(F.get(m, "eval", "models", "deployed", "mcnemar_p"))
    if p is not None:
        at = f" {modes[0].mode}" if len(modes) > 1 else ""
        text += (f" (McNemar p = {plain(p)}{at}: "
                 + ("a real difference in accuracy" + (OVER if delta is not None and delta < 0 else "")
                    if p < SIGNIFICANT else "not a significant difference in accuracy") + ")")
    if changed := low_agreement(lowest_agreement(modes), F.get(m, "eval", "n")):
        return text + f";{OVER} low agreement: {changed}."
    return text + "."


def _levers(m: Mapping[str, Any], over: bool) -> str:
    """What the passes that ran offer to give score back (verdicts.pass_levers), as one sentence."""
    levers = pass_levers(m)
    tail = ", or set eval.max_drop to the drop you accept." if over else "."
    if not levers:
        return " None of the passes that ran has a recovery, a strength or a precision setting to change" + tail
    return " What the passes that ran offer: " + "; ".join(levers) + tail


def _advice(m: Mapping[str, Any], modes: list[Serving], teacher: float, tol: float) -> Para | None:
    """What to do about a drop over the tolerance or a low agreement with the teacher: retrain only for a drop
    larger than the noise, or for any drop when many predictions changed (then it is the compression, not noise)."""
    worst = min(modes, key=lambda s: s.score)
    drop, over = teacher - worst.score, over_tolerance(worst.score - teacher, tol)
    n = F.get(m, "eval", "n")
    is_r = F.agreement_is_r(m)
    changed = low_agreement(lowest_agreement(modes), n, correlation=is_r)
    if not over and not changed:
        return None
    text = ""
    if over:
        at = f" {worst.mode}" if len(modes) > 1 else ""
        text = (f"The deployed model is {drop * 100:.2f} pt below the teacher{at}, more than the tolerance of "
                f"{tol * 100:.2f} pt.")
    se = standard_error(m)
    noise = over and se is not None and drop < se  # the Noise line's own rule: a smaller difference is noise
    if noise and not changed:
        return Para(text + f" That is within noise (one standard error on these {n} examples is ±{se * 100:.1f} "
                           "pt), so it says little about the compression: score on more examples (a larger "
                           "task.max_dev, or the whole split) before acting on it, or set eval.max_drop to the drop "
                           "you accept.", kind="warn")
    if changed:
        text += (f"{' ' if text else ''}Low agreement with the teacher: {changed}"
                 + (f". The drop alone is within noise (±{se * 100:.1f} pt on these {n} examples), but the changed "
                    "predictions are not noise" if noise else "")
                 + (", though the score is within the tolerance" if not over else "")
                 + (": the deployed model no longer predicts what the teacher predicts." if is_r else
                    ". McNemar tests only the change in accuracy, where predictions that changed both ways cancel "
                    "out: the deployed model no longer predicts what the teacher predicts."))
    if teacher_warning(m):
        return Para(text + " First give the run a teacher better than chance (above).", kind="warn")
    return Para(text + _levers(m, over), kind="warn")


def _speed_warning(m: Mapping[str, Any], slower: str) -> Para:
    """The deployed file is slower than the dense teacher; a busy machine's timings say so apart (its banner)."""
    text = (f"The deployed file is slower than the dense teacher: {slower} (> 1x: faster). Serving the teacher "
            "uncompressed would be faster on this CPU.")
    if (F.get(m, "deploy", "requested") or F.get(m, "config", "deploy", "runtime")) != "auto":
        text += " deploy=auto times ORT and OpenVINO on this machine and deploys the faster of the two."
    if F.run_load(m).get("busy"):
        text += (" These timings were taken while the machine was busy (the busy-machine banner at the top): rerun "
                 "bench on a quiet machine before acting on them.")
    return Para(text, kind="warn")


# the checkpoint formats that store a fake-quant model's weights at their true width (a pass's ``result.formats``)
PACKED_FORMATS = ("packed_binary", "packed_nbits")


def _held_line(m: Mapping[str, Any]) -> str:
    """What the deployed file holds when it is the fp32 export of a binary or n-bit fake-quant model (its ±1 or
    grid values stored as fp32, so it is no smaller than the dense file), and the size of the packed checkpoint the
    run wrote of that model; "" for a file that stores its weights at the width it computes with."""
    fp32 = F.as_dict(F.get(m, "export", "fp32"))
    fmt, precision = fp32.get("format"), fp32.get("precision")
    deployed = F.as_dict(F.get(m, "export", "deployed"))
    source = deployed.get("onnx_path") or deployed.get("path")  # an IR: the ONNX file it was made from
    # export.onnx.graph_format words such a graph "<precision> (... as <precision> values)"
    if not fmt or fmt == precision or "values" not in str(fmt) or source != fp32.get("path"):
        return ""  # the file stores what it computes with (a plain fp32, int8 or MatMulNBits graph)
    why = ("ONNX Runtime has no 1-bit kernels" if F.binary_model(m)
           else "an ort_matmul_nbits step would deploy the n-bit weights packed")
    text = f": the file is {plain(fmt)}, not packed ({why})"
    packed = [(s, f, b) for s in F.steps(m) for f, b in F.step_formats(s).items() if f in PACKED_FORMATS]
    if packed:
        s, f, b = packed[-1]
        where = s.get("dir") or F.step_label(s)
        full = F.num(F.get(s, "result", "metrics", "size", "fp32", "total"))
        ratio = f", {times(full / b)} smaller than its fp32 checkpoint" if full and b else ""
        text += f"; the packed checkpoint ({f}, in {plain(where)}) is {mb(b)} MB{ratio}"
    return text


def summary(m: Mapping[str, Any]) -> list[Block]:
    """The first look: what was deployed, how much score it lost, and how much faster and smaller it is."""
    rows = {r.key: r for r in F.model_rows(m)}
    dep, teacher = rows.get("deployed"), F.teacher_score(m)
    modes = serving_scores(m)
    if dep is None or not modes or teacher is None:
        return []
    tol = F.max_drop(m)
    items = [_score_line(m, modes, teacher, tol) + _precision_note(m, teacher, tol)]
    if agree := _agreement_line(m, modes, modes[0].score - teacher):
        items.append(agree)
    n = F.get(m, "eval", "n")
    if (se := standard_error(m)) is not None:
        metric = F.get(m, "eval", "primary_metric")
        how = "" if metric == "accuracy" else " (Fisher's z)"
        items.append(f"Noise: one standard error of {metric} on these {n} examples is ±{se * 100:.1f} pt{how}; "
                     "smaller differences are within noise.")
    shape = F.big_shape(F.shape_keys(m))
    denom = F.get(m, "bench", "denominator") or "ort_fp32"
    if shape and shape in dep.speedup:
        best = F.get(m, "bench", "best_dense", shape, "runner")
        text = (f"Speed (> 1x: faster): {times(dep.speedup[shape])} {F.denominator_text(denom)} ({denom}) "
                f"at {shape}{f' on a CPU with {isa}' if (isa := F.isa_have(m)) else ''}")
        if shape in dep.speedup_best:
            text += f", {times(dep.speedup_best[shape])} the fastest dense backend timed here, {plain(best)}"
            if best is not None and best == F.get(m, "bench", "deployed_same_file_as"):
                text += " (the deployed file itself, byte for byte: the gap is noise)"
        items.append(text + (f"{OVER}: slower than the dense teacher." if slower_than_dense(m, dep, [shape]) else "."))
    ref = rows.get("ort_fp32")
    if dep.size_bytes and ref is not None and ref.size_bytes:
        items.append(f"Size: {mb(dep.size_bytes)} MB on disk against {mb(ref.size_bytes)} MB for the fp32 "
                     f"export ({size_ratio(ref.size_bytes, dep.size_bytes)}){_held_line(m)}.")
    if choice := deploy_choice(m):  # what the user set beside what an ``auto`` chose
        items.insert(0, f"Deploy: {choice}.")
    out: list[Block] = [Heading("Summary"), _deployed_line(m)]
    if weak := teacher_warning(m):  # every verdict below is measured against it
        out.append(Para(weak, kind="warn"))
    if constant := one_class_warning(m):  # a constant model, whatever its Δ against the teacher
        out.append(Para(constant, kind="warn"))
    out.append(Bullets(items))
    notes = F.get(m, "deploy", "notes")
    notes = [str(n) for n in notes] if isinstance(notes, list) else [str(notes)] if notes else []
    if notes:  # why the deployed runtime is not the one asked for, an IR made from another file, ...
        requested = F.get(m, "deploy", "requested")
        out += [Para(f"Deploy notes (deploy.runtime={plain(requested)}):"
                     if requested else "Deploy notes:"), Bullets(notes)]
    if advice := _advice(m, modes, teacher, tol):
        out.append(advice)
    if slower := slower_than_dense(m, dep):
        out.append(_speed_warning(m, slower))
    return out
