"""The Summary's verdicts that the tolerance alone does not give (new-user trial, session 47: findings 2, 3, 4).

* A low agreement with the teacher is flagged on its own: McNemar tests the change in accuracy, so 25 of 64
  predictions that changed both ways read "not a significant difference" (the trial's BiBERT, 60.9%; a constant
  model, 45.3%), and the within-noise advice must not call such a model noise.
* A teacher no better than chance (within two binomial standard errors of the majority-class share, one class
  predicted, a correlation <= 0) is warned about: every Δ then reads "+0.00 pt ... within the tolerance".
* The advice after a drop names the settings of the passes that ran (an int8 PTQ pass has no recovery and no
  sparsity).
* A correlation score (regression) gets a Noise line as accuracy does (Fisher's z).
* A deployed file slower than the dense teacher gets a warning, apart from the machine-busy one.

Fixtures: runs/bibert_low_agreement.json and runs/int8_regression_chance_teacher.json are the trial's own run
manifests (bibert on a DistilBERT fine-tune; int8 on an STS-style CSV with a RoBERTa teacher at Spearman -16.1%).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from compresslab.report import facts as F
from compresslab.report.render import to_markdown
from compresslab.report.sections import build_document
from compresslab.report.verdicts import LOW_AGREEMENT, pass_levers, score_standard_error, slower_than_dense
from compresslab.testing import report_section

RUNS = Path(__file__).with_name("runs")


def _run(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((RUNS / f"{name}.json").read_text()))


def _set_deployed(m: dict[str, Any], score: float, agreement: float, p: float = 1.0) -> dict[str, Any]:
    m["eval"]["models"]["deployed"].update(score=score, accuracy=score, agreement=agreement, mcnemar_p=p)
    m["eval"].pop("batch_dependence", None)
    return m


def _usable_teacher(m: dict[str, Any]) -> dict[str, Any]:
    m["eval"]["majority_share"] = 0.3
    return m


# ----------------------------------------------------------------------------------------------- agreement


def test_a_low_agreement_is_flagged_though_mcnemar_finds_no_significant_difference() -> None:
    summary = report_section(_run("bibert_low_agreement"), "Summary")  # 60.9% agreement (39 of 64), McNemar p 0.8388
    assert ("(McNemar p = 0.8388: not a significant difference in accuracy); ⚠ low agreement: 39.1% of the "
            "predictions changed (25 of 64).") in summary
    # its 3.12 pt drop is under one standard error (±5.7 pt), but the model is not the teacher: no "noise" comfort
    assert "says little about the compression" not in summary
    assert ("The drop alone is within noise (±5.7 pt on these 64 examples), but the changed predictions are not "
            "noise.") in summary
    assert "the deployed model no longer predicts what the teacher predicts" in summary


def test_a_low_agreement_is_flagged_when_the_score_is_within_the_tolerance() -> None:
    m = _set_deployed(_usable_teacher(_run("bibert_low_agreement")), score=0.703125, agreement=0.453125)
    # the constant model of finding 1: the teacher's score, 35 of 64 predictions changed
    summary = report_section(m, "Summary")
    assert "within the tolerance of 1.00 pt" in summary
    assert "⚠ low agreement: 54.7% of the predictions changed (35 of 64)." in summary
    assert "Low agreement with the teacher: 54.7% of the predictions changed (35 of 64), though the score is " \
           "within the tolerance." in summary
    assert "or set eval.max_drop" not in summary  # no drop to accept


@pytest.mark.parametrize("agreement, flagged", [(LOW_AGREEMENT, False), (0.9415, False), (0.890625, True)])
def test_the_agreement_bar_is_ninety_percent(agreement: float, flagged: bool) -> None:
    # 0.9415: tests/unit/report/manifest_full.json's deployed SST-2 model, a normal pruned model: not flagged
    m = _set_deployed(_usable_teacher(_run("bibert_low_agreement")), 0.703125, agreement)
    summary = report_section(m, "Summary")
    assert ("low agreement" in summary) is flagged


def test_a_drop_within_noise_with_a_high_agreement_keeps_the_noise_advice() -> None:
    m = _set_deployed(_usable_teacher(_run("bibert_low_agreement")), score=0.671875, agreement=0.953125)
    summary = report_section(m, "Summary")
    assert "That is within noise (one standard error on these 64 examples is ±5.7 pt), so it says little" in summary
    assert "low agreement" not in summary.lower()


# ----------------------------------------------------------------------------------------------- teacher


def test_a_regression_teacher_with_a_negative_correlation_is_warned_about() -> None:
    summary = report_section(_run("int8_regression_chance_teacher"), "Summary")  # Spearman -16.10%
    assert ("The teacher is no better than chance on dev (64 examples): its spearman -16.10% is at or below 0, "
            "where predictions unrelated to the labels are.") in summary
    assert summary.index("The teacher is no better than chance") < summary.index("- Score:")  # read first


def test_with_a_teacher_at_chance_the_advice_is_to_fix_the_teacher_not_the_passes() -> None:
    m = _set_deployed(_run("int8_smoke"), score=0.3, agreement=0.95)  # 20 pt below a teacher at 50.00%
    m["eval"]["majority_share"] = 0.5
    summary = report_section(m, "Summary")
    assert "The deployed model is 20.00 pt below the teacher" in summary
    assert "First give the run a teacher better than chance (above)." in summary
    assert "pipeline.passes.int8" not in summary


@pytest.mark.parametrize("teacher, said", [(0.5, "is at or below the share of the most frequent class (50.00%)"),
                                           (0.484375, "is at or below the share of the most frequent class (50.00%)"),
                                           # trial 47b's SST-2 smoke teachers: within one standard error of 50%
                                           (0.515625, "is not distinguishable from the share of the most frequent "
                                                      "class (50.00%), what always predicting that class scores: "
                                                      "+1.56 pt above it, where telling the two apart takes more "
                                                      "than +12.50 pt (2 binomial standard errors of 6.25 pt on 64 "
                                                      "examples)"),
                                           (0.609375, "is not distinguishable"),
                                           (0.625, None), (0.640625, None)])
def test_a_teacher_within_two_standard_errors_of_the_majority_share_is_warned_about(teacher: float,
                                                                                     said: str | None) -> None:
    m = _run("int8_smoke")  # 64 examples: one binomial standard error of a 50% share is 6.25 pt, the bar 62.50%
    for k in ("teacher_torch", "torch_final", "ort_fp32", "deployed"):
        m["eval"]["models"][k].update(score=teacher, accuracy=teacher)
    m["eval"]["majority_share"] = 0.5
    summary = report_section(m, "Summary")
    assert ("The teacher is no better than chance" in summary) is (said is not None)
    if said:
        assert f"its accuracy {teacher * 100:.2f}% {said}" in summary


def test_a_teacher_predicting_one_class_is_warned_about() -> None:
    m = _run("int8_smoke")
    m["eval"]["majority_share"] = 0.3  # above it: only the constant prediction gives it away
    m["eval"]["models"]["teacher_torch"]["predicted_classes"] = 1
    assert "it predicts the same class for every example" in report_section(m, "Summary")
    m["eval"]["models"]["teacher_torch"]["predicted_classes"] = 2
    assert "The teacher is no better than chance" not in report_section(m, "Summary")


def test_an_older_manifest_takes_the_majority_share_from_the_label_counts_of_the_split_file() -> None:
    m = _run("int8_openvino_smoke")  # teacher 46.88%; dev file 15 / 17
    assert "eval" in m and "majority_share" not in m["eval"]
    assert ("its accuracy 46.88% is at or below the share of the most frequent class (53.12% of the 32 rows of "
            "the dev file)") in report_section(m, "Summary")


def test_a_given_teacher_is_told_to_be_fine_tuned_rather_than_trained_longer() -> None:
    m = _run("int8_regression_chance_teacher")
    m["config"]["model"]["finetuned"] = True
    assert "the model given as the teacher (model.finetuned=true) is used as it is" in report_section(m, "Summary")


# ----------------------------------------------------------------------------------------------- advice


def test_the_advice_names_only_the_settings_the_passes_that_ran_have() -> None:
    int8 = _set_deployed(_usable_teacher(_run("int8_smoke")), score=0.3, agreement=0.95)
    summary = report_section(int8, "Summary")
    assert "What the passes that ran offer: pipeline.passes.int8.fp32_fallback=guided" in summary
    assert "recovery" not in summary and "sparsity" not in summary and "speedup" not in summary
    obert = pass_levers(_run("obert_int8_smoke"))
    assert "a milder obert: pipeline.passes.obert.sparsity lower than 0.8" in obert
    assert any(x.startswith("more recovery for obert: pipeline.passes.obert.recovery.steps above ") for x in obert)
    bibert = " ".join(pass_levers(_run("bibert_low_agreement")))
    assert "pipeline.passes.bibert.recovery.steps above 6 (budget=bench sets more than budget=smoke's)" in bibert
    assert "sparsity" not in bibert and "finetune" not in bibert


def test_a_setting_already_chosen_is_not_offered_again() -> None:
    m = _run("int8_smoke")
    next(s for s in m["steps"] if s["name"] == "int8")["pass"]["fp32_fallback"] = "guided"
    assert not any("fp32_fallback" in x for x in pass_levers(m))


# ----------------------------------------------------------------------------------------------- noise


def test_a_correlation_score_gets_a_noise_line() -> None:
    summary = report_section(_run("int8_regression_chance_teacher"), "Summary")
    assert ("Noise: one standard error of spearman on these 64 examples is ±12.6 pt (Fisher's z); smaller "
            "differences are within noise.") in summary
    assert score_standard_error("pearson", 0.0, 64) == pytest.approx(1 / math.sqrt(61))
    assert score_standard_error("spearman", 0.0, 64) == pytest.approx(1 / math.sqrt(61))
    assert score_standard_error("pearson", 0.9, 1003) == pytest.approx(0.19 / math.sqrt(1000))
    assert score_standard_error("accuracy", 0.5, 64) == pytest.approx(0.0625)
    assert score_standard_error("matthews_corr", 0.3, 64) is None


# ----------------------------------------------------------------------------------------------- speed


def test_a_deployed_file_slower_than_the_dense_teacher_is_warned_about() -> None:
    summary = report_section(_run("bibert_low_agreement"), "Summary")  # 0.47x ort_fp32 at b4xs32
    assert "0.47x the fastest dense backend timed here, ort_int8 ⚠: slower than the dense teacher." in summary
    assert ("The deployed file is slower than the dense teacher: 0.47x ort_fp32 and 0.47x ort_int8 (the fastest "
            "dense backend) at b4xs32; 0.46x ort_fp32 at b1xs32") in summary
    assert "MACHINE BUSY" not in summary


def test_a_faster_deployed_file_gets_no_speed_warning() -> None:
    summary = report_section(_run("int8_smoke"), "Summary")  # 1.22x
    assert "slower than the dense teacher" not in summary


def test_the_speed_warning_stays_apart_from_the_busy_one() -> None:
    m = _run("magnitude_int8_busy")  # 0.92x at b4xs32, timed on a busy machine
    md = to_markdown(build_document(m, set(), {}, "outputs/x/y"))
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "MACHINE BUSY while timing" in md.split("## Summary", 1)[0]  # the banner, as before
    assert "The deployed file is slower than the dense teacher: 0.92x ort_fp32 at b4xs32" in summary
    assert "These timings were taken while the machine was busy" in summary


def test_a_bullet_is_marked_only_for_its_own_shape_and_a_same_file_best_is_not_slower() -> None:
    m = _run("int8_smoke")
    m["bench"]["speedups"]["deployed"]["b1xs32"] = 0.9  # slower at b1 only: the b4xs32 bullet stays unmarked
    summary = report_section(m, "Summary")
    assert "ort_fp32 ⚠" not in summary and "0.90x ort_fp32 at b1xs32" in summary
    row = next(r for r in F.model_rows(m) if r.key == "deployed")
    m["bench"]["deployed_same_file_as"] = "ort_fp32"  # the deployed file is the dense teacher's, byte for byte
    assert slower_than_dense(m, row) is None


def test_a_file_no_smaller_is_not_called_smaller() -> None:
    """A 1-bit model's fp32 export (17.1 MB beside the 17.0 MB dense one) read "1.00x smaller" (trial 47)."""
    from compresslab.report.summary import size_ratio

    assert size_ratio(17.0e6, 17.1e6) == "0.6% larger"
    assert size_ratio(90e6, 23e6) == "3.91x smaller"
    assert size_ratio(5e6, 5e6) == "the same size"


def test_a_regression_files_batch_dependence_speaks_of_outputs_not_labels() -> None:
    from compresslab.report import facts as F

    assert not F.is_classification({"data": {"kind": "regression"}})
    assert F.is_classification({"data": {"kind": "classification"}}) and F.is_classification({})
