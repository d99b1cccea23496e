"""compress() says a teacher at chance in its own terms (trial 47b, finding B9): the log named the CLI's budget= and
model.finetuned=true to an API caller. A run with a 'finetune' pass is told that pass's settings; a run without one
(the model, or teacher=, used as it is) is told to fine-tune it or put 'finetune' first. The words are the report's
(report/verdicts.teacher_fix; the manifest says pipeline "compress")."""

from __future__ import annotations

import json
import logging

import pytest

import compresslab
from compresslab.report.verdicts import teacher_fix, teacher_origin
from compresslab.testing import tiny_sentiment, trained_tiny

THREE = ["complaint", "praise", "question"]


def _three(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Labels that cycle regardless of the text: no teacher beats chance on them."""
    return [(e.text_a, THREE[i % 3]) for i, e in enumerate(tiny_sentiment(n, seed))]


@pytest.mark.parametrize("passes, given", [
    ([{"name": "finetune", "steps": 1, "batch_size": 8}], False),
    ([{"name": "magnitude", "sparsity": 0.5, "recovery": {"steps": 1}}], True),
])
def test_compress_says_a_chance_teacher_in_its_own_terms(passes, given, tiny_tok, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="compresslab"):
        r = compresslab.compress(trained_tiny(num_labels=3), tiny_tok, passes, data=_three(48), eval_data=_three(12, 1),
                                 label2id={n: i for i, n in enumerate(THREE)}, output_dir=tmp_path / "run",
                                 max_length=32, batch_size=8, progress=False)
    r.close()
    # the result says it too, in the report's rule set (verdicts.run_flags), and shows it in its repr
    assert r.warnings and r.warnings[0].startswith("teacher no better than chance on eval_data: ")
    assert repr(r).endswith(f"warnings={r.warnings!r})") and "BertForSequenceClassification" not in repr(r)
    # output_dir given: the run dir is the caller's and stays; the repr does not call it temporary
    assert "temporary" not in repr(r)
    lines = [rec.getMessage() for rec in caplog.records if "no better than chance" in rec.getMessage()]
    assert len(lines) == 1, caplog.text
    fix = teacher_fix(given=given, api=True)
    assert lines[0].endswith(fix)
    assert not any(w in lines[0] for w in ("budget=", "model.finetuned", "pipeline.passes"))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert teacher_origin(manifest) == {"given": given, "api": True}  # the report gives the same advice
