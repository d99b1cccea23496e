"""Trial 48, 6: an STS-B run's report hid numbers its eval had: the headline showed spearman alone (pearson was in
eval/metrics.json) and "—" for every agreement, though the eval records the regression agreement with the teacher
(``agreement_pearson``: Pearson r of the predictions with the teacher's; deployed 0.9963). For a regression task
the headline, the Summary, the low-agreement verdict and compare now show that r, named as r (a share of identical
labels does not exist there), and the task's other metrics. Fixtures: runs/int8_stsb_smoke.json is the trial's run
(d3fe1849b9d7, r 0.9963); runs/int8_regression_chance_teacher.json a trial-47 STS-style run (r 0.8235: low)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from compresslab.report import facts as F
from compresslab.report.compare import _runs_table, point
from compresslab.report.render import Document, to_markdown
from compresslab.report.verdicts import low_agreement
from compresslab.testing import report_section

RUNS = Path(__file__).with_name("runs")


def _run(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((RUNS / f"{name}.json").read_text()))


def _headline_rows(md: str) -> dict[str, list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return {"": header, **{(cells := [c.strip() for c in ln.strip("|").split("|")])[0]: cells for ln in lines[2:]}}


def test_the_headline_shows_the_agreement_as_r_and_the_secondary_metric():
    rows = _headline_rows(report_section(_run("int8_stsb_smoke"), "Headline"))
    header = rows[""]
    assert header[:5] == ["model", "dev spearman (%)", "Δ (pt)", "r with teacher", "dev pearson (%)"]
    assert rows["deployed_ort_int8"][3:5] == ["0.9963", "-30.28"]
    assert rows["teacher_torch"][3:5] == ["1.0000", "-30.13"]
    assert "agreement (%)" not in header


def test_the_batch_1_row_has_its_own_r_when_the_eval_recorded_it():
    m = _run("int8_stsb_smoke")
    m["eval"]["batch_dependence"]["deployed"]["agreement_pearson_b1"] = 0.9871
    rows = _headline_rows(report_section(m, "Headline"))
    assert rows["deployed_ort_int8 at batch 1 (one sentence per call)"][3] == "0.9871"


def test_the_summary_names_the_regression_agreement():
    summary = report_section(_run("int8_stsb_smoke"), "Summary")
    assert ("Agreement: the deployed model's predictions correlate with the teacher's on the same 64 examples at "
            "r = 0.9963 at batch 32 (Pearson; a regression task has no labels to agree on).") in summary
    assert "of the predictions changed" not in summary and "McNemar" not in summary


def test_a_low_regression_agreement_is_flagged_as_r_not_as_changed_predictions():
    m = _run("int8_regression_chance_teacher")  # deployed r 0.8235 with the teacher
    summary = report_section(m, "Summary")
    assert "low agreement: its predictions correlate with the teacher's at only r = 0.824 (r² = 0.678" in summary
    assert "of the predictions changed" not in summary
    headline = report_section(m, "Headline")
    assert "| 0.8235 ⚠ |" in headline and "an agreement below r = 0.90" in headline


@pytest.mark.parametrize("r, flagged", [(0.8235, True), (0.8999, True), (0.9, False), (0.9963, False)])
def test_the_low_agreement_rule_for_r(r, flagged):
    said = low_agreement(r, 64, correlation=True)
    assert (said is not None) == flagged
    assert said is None or said.startswith(f"its predictions correlate with the teacher's at only r = {r:.3f}")


def test_classification_keeps_its_share_of_labels():
    m = _run("int8_smoke")
    assert not F.agreement_is_r(m)
    assert "agreement (%)" in report_section(m, "Headline")
    assert low_agreement(0.8, 64) == "20.0% of the predictions changed (13 of 64)"


def test_compare_shows_a_regression_runs_r_and_flags_it_low():
    good = point(Path("outputs/int8/d3fe1849b9d7"), _run("int8_stsb_smoke"))
    low = point(Path("outputs/int8/aaaaaaaaaaaa"), _run("int8_regression_chance_teacher"))
    assert good.agreement_r and good.agreement == pytest.approx(0.99626, abs=1e-4) and not good.low_agreement
    assert low.low_agreement
    table = to_markdown(Document("compare", [_runs_table([good, low])]))
    assert "agreement (% or r)" in table and "| r 0.9963 |" in table and "| r 0.8235 ⚠ low |" in table
    assert "Pearson correlation of the deployed model's predictions with its teacher's" in table
    assert "(a regression run: r under 0.90)" in table
