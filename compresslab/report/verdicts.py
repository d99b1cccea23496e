"""The rules behind the Summary's warnings that the tolerance (eval.max_drop) does not give: an agreement with the
teacher too low to call the deployed model the teacher compressed, a teacher no better than chance, a deployed file
slower than the dense teacher, the noise on a correlation score, and the settings of the passes that ran that trade
speed or size for score (the advice after a drop). Plain numbers and manifest records in, words out: the pipeline
logs the teacher rule in the same words when it first scores the teacher (pipeline/evaluate.teacher_scored).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from compresslab.report import facts as F
from compresslab.report.fmt import pct, plain, times

# Agreement with the teacher below this share is flagged on its own, whatever the score and McNemar say. McNemar
# weighs only the examples one model gets right and the other wrong, so 25 flips of 64 that cancel out read "not a
# significant difference" (trial 47's BiBERT, 60.9% agreement; a constant model, 45.3%). 0.9 is the bar the export
# already sets on the share of examples that must keep torch's outputs for a file whose activations can flip
# (export.parity.MIN_EXACT_FRACTION: fewer is a broken file, not a few flips); a pruned MiniLM at budget=bench keeps
# 0.94-0.95 on SST-2 (benchmarks/RESULTS.md; tests/unit/report/manifest_full.json 0.9415), so a normal compression
# is not flagged, while a model that changed one prediction in ten or more no longer predicts what the teacher does.
# For a regression task the agreement is Pearson r of the predictions with the teacher's (facts.AGREEMENT_KEYS) and the
# same bar holds: r < 0.9 (r² < 0.81) leaves over a fifth of the deployed model's variation unexplained by the
# teacher's, while a faithful int8 STS-B file keeps r > 0.99 (trial 48: 0.9963).
LOW_AGREEMENT = 0.9

# Correlation metrics whose noise is given through Fisher's z (MEASURE.md "Scores and noise" asks for the noise of
# every score the report judges; the accuracy one is the binomial standard error).
_CORRELATIONS = ("pearson", "spearman")


def low_agreement(agreement: float | None, n: Any, correlation: bool = False) -> str | None:
    """``39.1% of the predictions changed (25 of 64)`` when the agreement is below :data:`LOW_AGREEMENT`; else None.
    ``correlation`` (a regression task, ``facts.agreement_is_r``): the agreement is Pearson r with the teacher's
    predictions, said so: ``its predictions correlate with the teacher's at only r = 0.850 (r² = 0.723)``."""
    if agreement is None or agreement >= LOW_AGREEMENT:
        return None
    if correlation:
        return (f"its predictions correlate with the teacher's at only r = {agreement:.3f} "
                f"(r² = {agreement ** 2:.3f}, under {LOW_AGREEMENT:.2f})")
    changed, total = 1.0 - agreement, F.num(n)
    count = f" ({round(changed * total)} of {total:.0f})" if total else ""
    return f"{pct(changed, 1)}% of the predictions changed{count}"


def lowest_agreement(modes: Sequence[F.Serving]) -> float | None:
    """The lowest agreement with the teacher over the serving modes the eval measured (``F.serving_scores``): a
    batch-dependent file is judged at its worst, as the tolerance judges its score."""
    shares = [s.agreement for s in modes if s.agreement is not None]
    return min(shares) if shares else None


def score_standard_error(metric: Any, score: float | None, n: Any) -> float | None:
    """One standard error of the teacher's ``metric`` on ``n`` examples: binomial for accuracy; for a Pearson or
    Spearman correlation r, Fisher's z has standard error 1/sqrt(n-3) (Spearman: sqrt((1 + r²/2)/(n-3)), Bonett &
    Wright 2000), carried back to r by dr/dz = 1 - r². None for other metrics or too few examples."""
    n = F.num(n)
    if score is None or not n:
        return None
    if metric == "accuracy":
        return math.sqrt(max(score * (1 - score), 0.0) / n)
    if metric in _CORRELATIONS and n > 3 and abs(score) < 1:
        var_z = (1 + score * score / 2 if metric == "spearman" else 1.0) / (n - 3)
        return (1 - score * score) * math.sqrt(var_z)
    return None


# A classifier teacher must beat always predicting the majority class by this many binomial standard errors to count
# as better than chance. The standard error is that of a model at the majority share p on the n examples scored,
# sqrt(p(1-p)/n): the one-sided binomial z-test of "no better than the majority class" (a teacher below the bar fails to
# reject it at about 2.3%). One error was too lenient: trial 47b's SST-2 smoke teachers scored 51.56% on 64 examples
# against a 50.00% share (one error is 6.25 pt) and passed even the old rule (at or below the share). Two keep a real
# teacher clear: a budget=bench SST-2 teacher (~90%) beats 50% + 2 x 1.7 pt on the 872 dev examples, and +12.5 pt on a
# 64-example smoke slice.
CHANCE_SE = 2.0


def chance_bar(share: float, n: Any) -> tuple[float, float] | None:
    """(the accuracy a classifier must exceed to be told apart from always predicting the majority class, one
    binomial standard error of that share on ``n`` examples); None without a count."""
    n = F.num(n)
    if not n:
        return None
    se = math.sqrt(max(share * (1 - share), 0.0) / n)
    return share + CHANCE_SE * se, se


def weak_teacher(record: Mapping[str, Any], metric: Any, majority_share: float | None = None,
                 majority_of: str = "", n: Any = None) -> str | None:
    """Why the teacher is no better than chance, in words; None when nothing recorded says so. ``record``: the
    teacher's eval metrics (``accuracy``, ``score``, ``predicted_classes``); ``majority_share``: the share of the
    most frequent class among the examples it was scored on (``majority_of`` says which examples, when not those);
    ``n``: how many examples were scored. A classifier whose accuracy does not beat that share by
    :data:`CHANCE_SE` standard errors (:func:`chance_bar`; at or below it without ``n``), or one that predicts a
    single class, or a correlation at or below 0, makes every Δ of the run +0.00 pt "within the tolerance": the
    comparison says nothing about the compression."""
    reasons = []
    informative = majority_share is None or majority_share < 1  # an eval split of one class: one class is right
    if F.num(record.get("predicted_classes")) == 1 and informative:
        reasons.append("it predicts the same class for every example")
    acc = F.num(record.get("accuracy"))
    if acc is not None and majority_share is not None and informative:
        share = f"({pct(majority_share)}%{majority_of}), what always predicting that class scores"
        bar = chance_bar(majority_share, n)
        if acc <= majority_share + 1e-9:
            reasons.append(f"its accuracy {pct(acc)}% is at or below the share of the most frequent class {share}")
        elif bar is not None and acc < bar[0] - 1e-9:
            reasons.append(f"its accuracy {pct(acc)}% is not distinguishable from the share of the most frequent "
                           f"class {share}: {(acc - majority_share) * 100:+.2f} pt above it, where telling the two "
                           f"apart takes more than {CHANCE_SE * bar[1] * 100:+.2f} pt ({CHANCE_SE:g} binomial "
                           f"standard errors of {bar[1] * 100:.2f} pt on {plain(n)} examples)")
    score = F.num(record.get("score"))
    if score is not None and score <= 0 and metric in (*_CORRELATIONS, "matthews_corr"):
        reasons.append(f"its {metric} {pct(score)}% is at or below 0, where predictions unrelated to the labels are")
    return "; ".join(reasons) or None


def one_class(record: Mapping[str, Any], majority_share: float | None) -> bool:
    """A classifier that predicts one class for every example of a split that holds more than one (a constant model,
    whatever its score: always the majority class scores the majority share)."""
    return F.num(record.get("predicted_classes")) == 1 and (majority_share is None or majority_share < 1)


def teacher_fix(*, given: bool | None, api: bool) -> str:
    """What to do about a teacher no better than chance, in the terms of the entry point that ran: ``given``, the
    teacher is a model used as it is (CLI ``model.finetuned=true``; with compress(), no 'finetune' pass: its
    ``teacher=`` or its model), else one a finetune step trained, None where not known (the search's verdict: both
    CLI cases); ``api``, the run came from compresslab.compress()."""
    if given and api:
        return ("with no 'finetune' pass, the teacher (compress()'s teacher=, else its model) is used as it is: "
                "fine-tune it on this task first, or put 'finetune' first in passes")
    if given:
        return ("the model given as the teacher (model.finetuned=true) is used as it is: fine-tune it on this task "
                "first, or drop model.finetuned=true so the finetune step trains one")
    if api:
        return ("train it longer (the finetune pass's settings, e.g. {'name': 'finetune', 'epochs': 3}) and check "
                "that the label column matches the text")
    trained = ("train it longer (a larger budget: budget=quick or budget=bench, or pipeline.passes.finetune.steps / "
               "epochs) and check that the label column matches the text")
    if given is None:
        return (f"{trained}; with model.finetuned=true, the model given is used as it is: fine-tune it on this task "
                "first")
    return trained


def teacher_origin(m: Mapping[str, Any]) -> dict[str, bool]:
    """``teacher_fix``'s keywords for a run manifest: compress() runs record pipeline "compress" and their passes (a
    'finetune' pass makes the teacher, replacing a teacher= given: steps.apply_declarations); CLI runs record
    model.finetuned."""
    if m.get("pipeline") == "compress":
        passes = F.get(m, "config", "passes")
        trains = isinstance(passes, list) and any(F.as_dict(p).get("name") == "finetune" for p in passes)
        return {"given": not trains, "api": True}
    return {"given": F.get(m, "config", "model", "finetuned") is True, "api": False}


def majority_share(m: Mapping[str, Any]) -> tuple[float | None, str]:
    """The share of the most frequent class in the eval split (``eval.majority_share``), or, for a manifest written
    before it was recorded, in the split's whole file (``data.label_counts``: before task.max_dev), with words that
    say so. (None, "") when neither is recorded."""
    share = F.num(F.get(m, "eval", "majority_share"))
    if share is not None:
        return share, ""
    split = F.get(m, "eval", "split") or "dev"
    counts = [c for c in F.as_dict(F.get(m, "data", "label_counts", split)).values() if F.num(c) is not None]
    if len(counts) < 2 or not sum(counts):
        return None, ""
    return max(counts) / sum(counts), f" of the {sum(counts)} rows of the {split} file"


def run_weak_teacher(m: Mapping[str, Any]) -> str | None:
    """:func:`weak_teacher` on a run's manifest: its teacher's eval record, metric, majority share and example count
    (what the Summary and the search's verdict both judge)."""
    share, of = majority_share(m)
    return weak_teacher(F.as_dict(F.get(m, "eval", "models", "teacher_torch")), F.get(m, "eval", "primary_metric"),
                        share, of, F.get(m, "eval", "n"))


def teacher_warning(m: Mapping[str, Any]) -> str | None:
    """The Summary's warning about a teacher no better than chance, with what to do; None for a usable teacher."""
    split, n = F.get(m, "eval", "split") or "dev", F.get(m, "eval", "n")
    why = run_weak_teacher(m)
    if why is None:
        return None
    return (f"The teacher is no better than chance on {split}{f' ({plain(n)} examples)' if n else ''}: {why}. Every "
            "comparison with it (the Δ, the tolerance verdict, the agreement) then says nothing about the "
            f"compression: {teacher_fix(**teacher_origin(m))}.")


def run_one_class(m: Mapping[str, Any]) -> str | None:
    """A run's deployed classifier predicting one class (:func:`one_class`), in words
    (``the deployed model predicts the same class for every example of dev (64 examples), scoring 50.00%``); None
    otherwise, and when its teacher does too (:func:`teacher_warning` says so, and the deployed one only copies it)."""
    share, _ = majority_share(m)
    models = F.as_dict(F.get(m, "eval", "models"))
    dep = F.as_dict(models.get("deployed"))
    if not one_class(dep, share) or one_class(F.as_dict(models.get("teacher_torch")), share):
        return None
    split, n = F.get(m, "eval", "split") or "dev", F.get(m, "eval", "n")
    acc = F.num(dep.get("accuracy"))
    return (f"the deployed model predicts the same class for every example of {split}"
            f"{f' ({plain(n)} examples)' if n else ''}{f', scoring {pct(acc)}%' if acc is not None else ''}")


def one_class_warning(m: Mapping[str, Any]) -> str | None:
    """The Summary's warning about a deployed classifier that predicts one class (:func:`run_one_class`); None
    otherwise."""
    why = run_one_class(m)
    if why is None:
        return None
    return (f"{why[0].upper()}{why[1:]}: the compression left a constant model, whatever its Δ says. Try a milder "
            "setting or more recovery.")


def slower_than_dense(m: Mapping[str, Any], row: F.ModelRow, shapes: list[str] | None = None) -> str | None:
    """The shapes (all timed, or ``shapes``) where the deployed file is slower than the dense teacher, on the speed
    denominator or on the fastest dense backend timed (not when that backend ran the deployed file itself, byte for
    byte), in words (``0.81x ort_fp32 and 0.70x openvino_default (the fastest dense backend) at b4xs32``), the
    largest shape first; None when it is slower nowhere."""
    denom = F.get(m, "bench", "denominator") or "ort_fp32"
    same = F.get(m, "bench", "deployed_same_file_as")
    keys = F.shape_keys(m)
    big = F.big_shape(keys)
    timed = set(row.speedup) | set(row.speedup_best)
    order = ([big] if big else []) + [k for k in keys if k != big] + sorted(timed - set(keys))
    parts = []
    for shape in [k for k in order if shapes is None or k in shapes]:
        slow = []
        if (x := row.speedup.get(shape)) is not None and x < 1 and same != denom:
            slow.append(f"{times(x)} {denom}")
        best = F.get(m, "bench", "best_dense", shape, "runner")
        if (x := row.speedup_best.get(shape)) is not None and x < 1 and best not in (None, same, denom):
            slow.append(f"{times(x)} {plain(best)} (the fastest dense backend)")
        if slow:
            parts.append(f"{' and '.join(slow)} at {shape}")
    return "; ".join(parts) or None


def run_flags(m: Mapping[str, Any]) -> list[str]:
    """Every warning of the Summary that the tolerance (eval.max_drop) does not give, one short phrase each, in the
    Summary's order: a teacher no better than chance, a deployed classifier that predicts one class, a low agreement
    with the teacher (at the worst serving mode), a deployed file slower than the dense teacher. The one rule set for
    every place a run's result is summed up (the report's Summary and Headline, the pipeline's last lines, a search's
    verdict, compress()'s result), so none of them calls a run fine that another flags. [] for a run with none."""
    flags = []
    if why := run_weak_teacher(m):
        flags.append(f"teacher no better than chance on {F.get(m, 'eval', 'split') or 'dev'}: {why}")
    if why := run_one_class(m):
        flags.append(why)
    if changed := low_agreement(lowest_agreement(F.serving_scores(m)), F.get(m, "eval", "n")):
        flags.append(f"low agreement with the teacher: {changed}")
    dep = next((r for r in F.model_rows(m) if r.key == "deployed"), None)
    if dep is not None and (slower := slower_than_dense(m, dep)):
        busy = " (timed while the machine was busy: void)" if F.run_load(m).get("busy") else ""
        flags.append(f"the deployed file is slower than the dense teacher: {slower}{busy}")
    return flags


# Per pass: the setting that trades speed or size for score, and which way is milder.
_MILDER = {"obert": ("sparsity", "lower"), "magnitude": ("sparsity", "lower"), "ziplm": ("speedup", "lower"),
           "structured_l1": ("speedup", "lower"), "layer_drop": ("num_layers", "higher"),
           "hawq": ("avg_bits", "higher")}
# Per post-training pass (no recovery, no strength): its settings that give score back, as (key, value, what for).
_PTQ = {"ort_int8_dynamic": [("fp32_fallback", "guided", "the MatMuls that lose most stay fp32, chosen on validation"),
                             ("outliers", "split", "each FFN block's outlier channels on an fp32 side path"),
                             ("activations", "per_token", "one scale per token: outputs no longer depend on "
                                                          "the batch")],
        "ort_int8_static": [("calibrate_method", "entropy", "activation ranges that clip outliers")],
        "ort_matmul_nbits": [("accuracy_level", 0, "fp32 activations")]}


def pass_levers(m: Mapping[str, Any]) -> list[str]:
    """What each compression step of the run offers to give score back, as config overrides with their current
    values: more recovery (``recovery.steps``), a milder strength (``_MILDER``), a post-training pass's options
    (``_PTQ``, only those not already set). The teacher's step (finetune) is not a lever here."""
    out = []
    budget = F.get(m, "config", "budget", "name")
    for s in F.steps(m):
        p, name = F.as_dict(s.get("pass")), str(s.get("name"))
        kind, key = p.get("name"), f"pipeline.passes.{name}"
        if kind == "finetune":
            continue
        if kind == "hawq" and p.get("bits") is not None:
            milder: tuple[str, str] | None = ("bits", "higher")
        else:
            milder = _MILDER.get(str(kind))
        if milder and p.get(milder[0]) is not None:
            out.append(f"a milder {name}: {key}.{milder[0]} {milder[1]} than {plain(p[milder[0]])}")
        n_steps = F.num(F.get(p, "recovery", "steps"))
        if n_steps is not None:
            bigger = f" (budget=bench sets more than budget={budget}'s)" if budget and budget != "bench" else ""
            out.append(f"more recovery for {name}: {key}.recovery.steps above {n_steps:.0f}{bigger}")
        for opt, value, why in _PTQ.get(str(kind), []):
            if opt in p and p[opt] != value:
                out.append(f"{key}.{opt}={value} ({why})")
    return out
