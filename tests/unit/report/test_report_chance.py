"""A teacher at chance, and a deployed model that predicts one class, are said wherever runs are judged (new-user
trial 47b, findings B1 and B9).

* B1: every SST-2 smoke teacher scored 51.56% on 64 examples against a 50.00% majority share (one binomial standard
  error: 6.25 pt) and passed the old rule (at or below the share); the magnitude sparsity=0.7 model predicted one
  class (50.00%) with no flag in the Summary or in compare.md, which named it on the Pareto front.
* B9: what to do about such a teacher is one wording (verdicts.teacher_fix), in the terms of the entry point that
  ran: CLI overrides for a CLI run, compress()'s passes and keywords for a run it made (manifest pipeline
  "compress").
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from compresslab.report.compare import _runs_table, _sweep, point
from compresslab.report.verdicts import chance_bar, teacher_fix, teacher_origin, weak_teacher
from compresslab.testing import report_section

RUNS = Path(__file__).with_name("runs")


def _run(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((RUNS / f"{name}.json").read_text()))


def _one_class_run(teacher: float = 0.75) -> dict[str, Any]:
    """int8_smoke (64 dev examples, majority share 50%) with a usable teacher and a deployed model predicting one
    class: the trial's magnitude sparsity=0.7 model."""
    m = _run("int8_smoke")
    m["eval"]["majority_share"] = 0.5
    m["eval"]["models"]["teacher_torch"].update(score=teacher, accuracy=teacher, predicted_classes=2)
    m["eval"]["models"]["deployed"].update(score=0.5, accuracy=0.5, predicted_classes=1, agreement=0.75)
    m["eval"].pop("batch_dependence", None)
    return m


def test_the_bar_is_two_standard_errors_of_the_majority_share() -> None:
    assert chance_bar(0.5, 64) == pytest.approx((0.625, 0.0625))
    assert chance_bar(0.5, None) is None
    # without a count the rule is the old one: at or below the share
    assert weak_teacher({"accuracy": 0.515625}, "accuracy", 0.5) is None
    assert weak_teacher({"accuracy": 0.515625}, "accuracy", 0.5, n=64) is not None
    assert weak_teacher({"accuracy": 0.515625}, "accuracy", 0.5, n=10_000) is None  # 2 x 0.5 pt: told apart
    # an eval split of one class: predicting it is right, never "chance"
    assert weak_teacher({"accuracy": 1.0, "predicted_classes": 1}, "accuracy", 1.0, n=64) is None


def test_the_correlation_rule_stays_at_zero() -> None:
    assert weak_teacher({"score": 0.05}, "spearman", None, n=64) is None
    assert "at or below 0" in weak_teacher({"score": -0.01}, "spearman", None, n=64)


def test_a_deployed_model_predicting_one_class_is_flagged_in_the_summary() -> None:
    summary = report_section(_one_class_run(), "Summary")
    assert ("The deployed model predicts the same class for every example of dev (64 examples), scoring 50.00%: "
            "the compression left a constant model, whatever its Δ says.") in summary
    assert "The teacher is no better than chance" not in summary
    m = _one_class_run()
    m["eval"]["models"]["deployed"]["predicted_classes"] = 2
    assert "predicts the same class" not in report_section(m, "Summary")


def test_a_one_class_teacher_is_said_once_not_again_for_the_deployed_copy() -> None:
    m = _one_class_run(teacher=0.5)
    m["eval"]["models"]["teacher_torch"]["predicted_classes"] = 1
    summary = report_section(m, "Summary")
    assert "The teacher is no better than chance" in summary
    assert "The deployed model predicts the same class" not in summary


def test_compare_marks_a_one_class_model_and_a_chance_teacher(tmp_path: Path) -> None:
    good = dataclasses.replace(point(tmp_path / "a", _one_class_run()), name="r07")
    assert good.one_class and not good.chance_teacher
    m = _one_class_run(teacher=0.515625)  # the trial's SST-2 smoke teacher
    m["eval"]["models"]["deployed"]["predicted_classes"] = 2
    weak = dataclasses.replace(point(tmp_path / "b", m), name="r05")
    assert weak.chance_teacher and not weak.one_class
    rows = {r[0]: r for r in _runs_table([good, weak]).rows}
    assert rows[good.name][3] == "50.00 ⚠ one class" and "chance" not in rows[good.name][2]
    assert rows[weak.name][2] == "51.56 ⚠ chance" and "one class" not in rows[weak.name][3]
    table = _runs_table([good, weak]).caption  # it says what the marks mean
    assert "⚠ one class = a deployed model that predicts the same class" in table
    assert "⚠ chance = a teacher no better than chance" in table
    good = dataclasses.replace(good, settings={"pipeline.passes.magnitude.sparsity": 0.7})
    weak = dataclasses.replace(weak, settings={"pipeline.passes.magnitude.sparsity": 0.5})
    sweep = " ".join(_sweep(("p", "t"), [good, weak])[-1].items)
    assert "Predicts the same class for every example (a constant model, wherever it ranks): " \
           "magnitude.sparsity=0.7." in sweep
    assert "Teacher no better than chance, so Δ and tolerance say nothing about the compression: " \
           "magnitude.sparsity=0.5." in sweep


@pytest.mark.parametrize("pipeline, passes, finetuned, said", [
    ("int8", None, None, "budget=quick or budget=bench, or pipeline.passes.finetune.steps / epochs"),
    ("int8", None, True, "the model given as the teacher (model.finetuned=true) is used as it is"),
    ("compress", [{"name": "finetune"}, {"name": "ort_int8_dynamic"}], None,
     "train it longer (the finetune pass's settings, e.g. {'name': 'finetune', 'epochs': 3})"),
    ("compress", [{"name": "ort_int8_dynamic"}], None,
     "with no 'finetune' pass, the teacher (compress()'s teacher=, else its model) is used as it is"),
])
def test_the_teacher_advice_speaks_the_terms_of_the_entry_point(pipeline: str, passes: Any, finetuned: Any,
                                                                 said: str) -> None:
    m = _run("int8_smoke")  # its teacher: 50.00% on 64 examples of a 50% share
    m["eval"]["majority_share"] = 0.5
    m["pipeline"] = pipeline
    if passes is not None:
        m["config"] = {"passes": passes}
    if finetuned is not None:
        m["config"]["model"]["finetuned"] = finetuned
    summary = report_section(m, "Summary")
    assert said in summary
    cli = ("budget=", "model.finetuned", "pipeline.passes")
    assert (pipeline == "compress") is not any(w in summary.split("no better than chance", 1)[1].split("\n")[0]
                                               for w in cli)
    assert teacher_fix(**teacher_origin(m)) in summary
