"""The Summary's verdicts as a user acts on them (new-user trial, session 45: F1, F11).

* A deployed file whose labels depend on the batch (ORT dynamic int8) was scored at the eval batch size and one
  sentence per call; the tolerance verdict judges both, the worse decides, and the Summary names the batch size
  that failed with ⚠ (the trial's ziplm_int8: 53.12 at batch 32 "within the tolerance", 48.44 one sentence per
  call, 3.1 pt below the teacher, only in the Notes). The Headline and the cross-run table judge both too.
* Agreement with the teacher is given as a count as well, per serving mode; McNemar's p below 0.05 for a lower score
  gets ⚠ in the Summary (a low agreement gets its own ⚠: test_report_verdicts.py).
* A drop under one standard error (what the report's Noise line calls noise) keeps its ⚠ but gets no advice to
  retrain; a larger one does.
* An OpenVINO IR compiled bf16 says its score holds on CPUs with bf16 support, beside the same IR's f32 score.
* deploy=auto's validation agreements come with their counts (n of N) and what one example is worth.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from compresslab.report.compare import _runs_table, point
from compresslab.report.render import to_markdown
from compresslab.report.sections import build_document
from compresslab.testing import md_section

RUNS = Path(__file__).with_name("runs")


def _run(name: str = "int8_smoke") -> dict[str, Any]:
    return copy.deepcopy(json.loads((RUNS / f"{name}.json").read_text()))


def _batch_dependent(batched: float, b1: float, *, teacher: float = 0.515625, flips: int = 7,
                     agreement: float = 0.734375, agreement_b1: float = 0.71875) -> dict[str, Any]:
    """The recorded int8 smoke run (64 dev examples) with the trial's figures: its deployed ORT dynamic int8 file
    scored ``batched`` at batch 32 and ``b1`` one sentence per call."""
    m = _run()
    models = m["eval"]["models"]
    for k in ("teacher_torch", "torch_final", "ort_fp32"):
        models[k].update(score=teacher, accuracy=teacher)
    models["deployed"].update(score=batched, accuracy=batched, agreement=agreement, mcnemar_p=1.0)
    m["eval"]["batch_dependence"] = {"deployed": {
        "ops": ["DynamicQuantizeLinear", "QAttention"], "padding": "longest", "batch_size": 32, "n": 64,
        "score_b1": b1, "score_batched": batched, "flips": flips, "agreement_b1_vs_batched": 1 - flips / 64,
        "agreement_b1": agreement_b1}}
    return m


def _md(m: dict[str, Any]) -> str:
    return to_markdown(build_document(m, set(), {}, "outputs/int8/x"))


def test_a_batch_1_score_over_the_tolerance_fails_the_run_and_the_summary_names_batch_1() -> None:
    md = _md(_batch_dependent(0.53125, 0.484375))  # the trial's ziplm_int8
    summary = md_section(md, "Summary")
    assert ("53.12% at batch 32, +1.56 pt, and 48.44% at batch 1 (one sentence per call), -3.12 pt ⚠, against the "
            "teacher's 51.56%: over the tolerance of 1.00 pt at batch 1 (eval.max_drop=0.01; the deployed file's "
            "labels can depend on the batch, 7 of 64 labels differ between them") in summary
    assert "within the tolerance" not in summary
    assert "The deployed model is 3.12 pt below the teacher at batch 1 (one sentence per call)" in summary
    head = md_section(md, "Headline")
    # 71.88% agreement: under verdicts.LOW_AGREEMENT, marked in the cell and flagged under the table as in the Summary
    assert "| deployed_ort_int8 at batch 1 (one sentence per call) | 48.44 | -3.12 ⚠ | 71.88 ⚠ |" in head
    assert "Also flagged (the Summary says why and what to do): low agreement with the teacher: 28.1%" in head
    assert "Over the tolerance of 1.00 pt (eval.max_drop): deployed_ort_int8 at batch 1 (one sentence per call)" in head


def test_no_label_differing_is_not_worded_as_a_contradiction() -> None:
    """Trial 48b: "labels depend on the batch, 0 of 64 labels differ between them" read as a contradiction. The file
    can change its labels with the batch (one activation range per call); on this split none did, said so."""
    summary = md_section(_md(_batch_dependent(0.515625, 0.515625, flips=0)), "Summary")
    assert ("the deployed file's labels can depend on the batch; here none of the 64 differed between them, so every "
            "serving mode measured is judged") in summary
    assert "0 of 64" not in summary


def test_whichever_mode_falls_decides_and_both_within_says_every_mode() -> None:
    batched_over = md_section(_md(_batch_dependent(0.5, 0.515625, flips=1)), "Summary")  # the trial's runs/int8
    assert "50.00% at batch 32, -1.56 pt ⚠, and 51.56% at batch 1 (one sentence per call), +0.00 pt" in batched_over
    assert "over the tolerance of 1.00 pt at batch 32 (" in batched_over
    both = md_section(_md(_batch_dependent(0.45, 0.46)), "Summary")
    assert "over the tolerance of 1.00 pt at batch 32 and at batch 1 (" in both
    assert "below the teacher at batch 32, more than" in both  # the worse of the two is named in the warning
    # a high agreement: a low one is flagged on its own (test_report_verdicts.py)
    fine = md_section(_md(_batch_dependent(0.53125, 0.515625, agreement=0.984375, agreement_b1=0.96875)), "Summary")
    assert "within the tolerance of 1.00 pt in every serving mode measured" in fine and "⚠" not in fine


def test_a_file_that_does_not_depend_on_the_batch_keeps_one_verdict_with_its_mark() -> None:
    m = _batch_dependent(0.49, 0.49)
    del m["eval"]["batch_dependence"]
    summary = md_section(_md(m), "Summary")
    assert ("Score: 49.00% accuracy on dev (64 examples), -2.56 pt ⚠ against the teacher's 51.56%: over the "
            "tolerance of 1.00 pt (eval.max_drop=0.01).") in summary
    assert "batch 1" not in summary


def test_agreement_is_counted_per_serving_mode_and_a_significant_lower_difference_is_marked() -> None:
    m = _batch_dependent(0.53125, 0.484375)
    summary = md_section(_md(m), "Summary")
    assert ("Agreement: the deployed model predicts what the teacher predicts on 73.4% of the examples (47 of 64) at "
            "batch 32 and 71.9% (46 of 64) at batch 1 (one sentence per call) (McNemar p = 1 at batch 32: not a "
            "significant difference in accuracy); ⚠ low agreement: 28.1% of the predictions changed (18 of 64).") \
        in summary
    m["eval"]["models"]["deployed"].update(score=0.40, mcnemar_p=0.01)
    m["eval"]["batch_dependence"]["deployed"]["score_batched"] = 0.40
    assert "(McNemar p = 0.01 at batch 32: a real difference in accuracy ⚠)" in md_section(_md(m), "Summary")


def test_a_drop_within_noise_gets_no_retrain_advice_and_a_real_one_does() -> None:
    noise = md_section(_md(_batch_dependent(0.5, 0.515625, flips=1, agreement=0.984375, agreement_b1=0.96875)),
                     "Summary")  # -1.56 pt, one SE is ±6.2 pt, few predictions changed
    assert "Noise: one standard error of accuracy on these 64 examples is ±6.2 pt" in noise
    assert "That is within noise (one standard error on these 64 examples is ±6.2 pt)" in noise
    assert "score on more examples" in noise and "recovery" not in noise and "milder" not in noise
    m = _batch_dependent(0.35, 0.35)  # 16.6 pt below: past any noise on 64 examples
    real = md_section(_md(m), "Summary")
    assert "What the passes that ran offer: pipeline.passes.int8.fp32_fallback=guided" in real
    assert "within noise (" not in real


def test_the_cross_run_table_marks_a_run_whose_batch_1_score_is_over(tmp_path: Path) -> None:
    over = point(tmp_path / "int8" / "a", _batch_dependent(0.53125, 0.484375))
    ok = point(tmp_path / "int8" / "b", _batch_dependent(0.53125, 0.515625))
    assert [r[4] for r in _runs_table([over]).rows] == ["+1.56 ⚠"]  # Δ shown at batch 32, judged at batch 1 too
    assert [r[4] for r in _runs_table([ok]).rows] == ["+1.56"]


def test_a_bf16_ir_score_says_it_holds_on_bf16_cpus_beside_the_f32_score() -> None:
    m = _run("int8_openvino_smoke")
    m["bench"]["scores"]["deployed_openvino_f32"]["score"] = m["eval"]["models"]["teacher_torch"]["score"] - 0.03125
    summary = md_section(_md(m), "Summary")
    assert ("Compiled as bf16 on this CPU: that score holds on CPUs with bf16 support (AVX512_BF16 or AMX); on "
            "others OpenVINO compiles f32, where the same IR scores 43.75% (deployed_openvino_f32, -3.12 pt ⚠).") \
        in summary
    del m["bench"]["scores"]["deployed_openvino_f32"]
    assert ("which this run did not score (bench.openvino_precisions with f32 scores it)"
            in md_section(_md(m), "Summary"))
    m["export"]["deployed"]["compiled_precision"] = "f32"
    assert "Compiled as bf16" not in _md(m)


def test_deploy_choices_in_percent_come_with_their_counts() -> None:
    m = _run("int8_openvino_smoke")
    summary = md_section(_md(m), "Summary")
    assert ("deploy.int8=auto: chose ours (validation agreement on 32 examples (one is 3.12 pt): ours 100.00% (32 of "
            "32), nncf 100.00% (32 of 32)") in summary
    m["deploy"].update(requested="auto", auto={
        "chosen": "openvino", "agreement_key": "agreement", "tolerance": 0.005, "n": 32,
        "eligible": ["ort", "openvino"],
        "validation": {"ort": {"agreement": 0.96875}, "openvino": {"agreement": 1.0}}, "shape": "b32xs32",
        "p50_ms": {"ort": 700.0, "openvino": 476.0}})
    assert ("chose openvino (validation agreement on 32 examples (one is 3.12 pt): ort 96.88% (31 of 32), openvino "
            "100.00% (32 of 32); eligible (within 0.50 pt of ORT's)") in md_section(_md(m), "Summary")
