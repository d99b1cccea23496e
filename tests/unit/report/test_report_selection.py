"""The report's "Checkpoint selection" section: which validation check a recovery kept, what that means (step 0:
the pass's own weights, the recovery discarded; the last step: still rising), and every check. Without it a user
who set ``recovery.select_every`` could not tell from the report that 2,000 KD steps were thrown away."""

from __future__ import annotations

from typing import Any

import pytest

from compresslab.report.render import Document, to_markdown
from compresslab.report.selection import selection_section


def _manifest(best: int, *, key: str = "recovery") -> dict[str, Any]:
    history = [{"step": s, "score": 0.9 + (0.01 if s == best else 0.0)} for s in (0, 200, 400)]
    sel = {"split": "validation", "every": 200, "best_step": best, "best_score": 0.91, "history": history}
    metrics = ({key: {"steps": 400, "selection": sel}} if key in ("recovery", "qat")
               else {"steps": 400, "selection": sel})
    return {"steps": [{"index": 0, "name": "finetune", "result": {"metrics": {}}},
                      {"index": 1, "name": "ziplm", "result": {"metrics": metrics}}]}


def _md(m: dict[str, Any]) -> str:
    doc = Document("t", [])
    doc.blocks += selection_section(m)
    return to_markdown(doc)


@pytest.mark.parametrize("best, reading", [(0, "step 0: the weights before training"),
                                           (200, "an intermediate step"), (400, "the last step")])
@pytest.mark.parametrize("key", ["recovery", "qat", "selection"])  # training.recover's record (ZipLM's, QAT's) / a
# pass's own
def test_the_kept_step_and_its_meaning_are_stated(best: int, reading: str, key: str) -> None:
    md = _md(_manifest(best, key=key))
    assert "## Checkpoint selection" in md and "01 ziplm: the checkpoint kept on validation" in md
    assert f"| kept step | {best} of 400 |" in md and "| its score | 0.9100 |" in md
    assert reading in md and "| checks | every 200 steps |" in md
    assert "0: 0.9" in md and "400: 0.9" in md  # every check listed


def test_no_section_without_a_selection() -> None:
    m = _manifest(0)
    m["steps"][1]["result"]["metrics"] = {"recovery": {"steps": 400}}
    assert selection_section(m) == [] and selection_section({}) == []



def test_a_run_made_before_step_0_was_scored_says_so() -> None:
    m = _manifest(200)
    sel = m["steps"][1]["result"]["metrics"]["recovery"]["selection"]
    sel["history"] = [h for h in sel["history"] if h["step"]]  # an older run: checks from step 200 on
    assert "not scored: the run was made before they were a candidate" in _md(m)
    assert "not scored" not in _md(_manifest(200))


def test_an_old_bibert_selection_which_never_scored_step_0_gets_no_such_note() -> None:
    """BiBERT's own loop (before design review item 7) wrote no ``every`` and never scored step 0; since, its
    record is recover()'s (``every``, step 0 scored) and reads as every other recovery's."""
    m = _manifest(200, key="selection")
    sel = m["steps"][1]["result"]["metrics"]["selection"]
    sel.pop("every")
    sel["examples"] = 100
    sel["history"] = [h for h in sel["history"] if h["step"]]
    assert "not scored" not in _md(m)


def test_a_family_members_selection_and_a_records_own_steps_are_read() -> None:
    """Gradual ZipLM keeps each member's recovery under ``family.<S>x.recovery``; oBERT's record has no parent
    ``steps``, so the record carries its own (the review of session 40 found both missing)."""
    m = _manifest(400, key="selection")
    metrics = m["steps"][1]["result"]["metrics"]
    sel = metrics.pop("selection")
    metrics.pop("steps")
    metrics["family"] = {"2x": {"recovery": {"selection": {**sel, "steps": 400}}}}
    md = _md(m)
    assert "| kept step | 400 of 400 |" in md and "the last step" in md


def test_the_steps_own_target_listed_again_as_a_family_member_is_shown_once() -> None:
    m = _manifest(200)
    metrics = m["steps"][1]["result"]["metrics"]
    metrics["family"] = {"2x": {"recovery": dict(metrics["recovery"])}}
    assert _md(m).count("the checkpoint kept on validation") == 1
