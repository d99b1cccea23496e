"""A run whose deployed file quantizes activations per call says so in its report's notes, with the score one
sentence per call beside the batched one, and why the labels move: the per-call range spans the batchmates AND the
padding (new-user trial, session 45, F8: padding to max_length moved 3 pt of the score at batch 32); a run without
such a file says nothing of it."""

from __future__ import annotations

import json
from pathlib import Path

from compresslab.report.render import to_markdown
from compresslab.report.sections import build_document

FIXTURE = Path(__file__).with_name("manifest_full.json")


def _markdown(m: dict) -> str:
    return to_markdown(build_document(m, set(), {}, "outputs/int8/x"))


def test_batch_dependent_file_gets_a_note_with_both_scores():
    m = json.loads(FIXTURE.read_text())
    m["eval"]["batch_dependence"] = {"deployed": {
        "ops": ["DynamicQuantizeLinear"], "batch_size": 64, "n": 872, "score_b1": 0.8876, "score_batched": 0.8922,
        "flips": 21, "agreement_b1_vs_batched": 1 - 21 / 872, "agreement_b1": 0.9794}}
    notes = _markdown(m).split("## Notes", 1)[1].split("\n## ", 1)[0]
    assert "deployed_ort_int8 quantizes activations with one scale per call (DynamicQuantizeLinear)" in notes
    assert ("that dynamic range is taken over every token of every sentence in the call, padding positions included, "
            "so its labels depend on what else is in the batch and how far the batch is padded") in notes
    assert ("Score 89.22 at batch 64 (each batch padded to its longest sentence), 88.76 one sentence per call (no "
            "padding); 21 of 872 predicted labels differ. A server that batches otherwise, or pads to a fixed length, "
            "gets other labels again.") in notes


def test_no_note_without_a_batch_dependent_file():
    m = json.loads(FIXTURE.read_text())
    m["eval"].pop("batch_dependence", None)
    assert "one scale per call" not in _markdown(m)
