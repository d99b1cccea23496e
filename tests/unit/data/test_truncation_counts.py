"""Every tokenization a run does says how many examples it cut at max_length (trial 48 #3: a ~1080-token dev row
was scored on its first 64 tokens with no line and no count).

``count_truncated`` agrees with what ``tokenize_examples`` actually cuts, for every input shape (single sentences,
sentence pairs cut together, embedding pairs cut side by side); a run records the counts per split (``data.truncated``)
and for the scored split (``eval.truncated``), logs ``N of M <split> examples truncated at max_length=L`` for each,
calibration included, and its report shows the count beside the eval's n.
"""

from __future__ import annotations

import logging

import pytest

from compresslab.data.loaders import count_truncated, tokenize_examples
from compresslab.data.schema import Example, TaskKind
from compresslab.testing import tiny_sentiment

LONG = " ".join(["good"] * 40)


def _cut(examples, tok, max_length, kind) -> int:
    """The examples tokenize_examples shortens: the definition count_truncated must match."""
    short = tokenize_examples(examples, tok, max_length, kind=kind)
    whole = tokenize_examples(examples, tok, 10_000, kind=kind)
    keys = [k for k in whole[0] if k.startswith("input_ids")]
    return sum(any(len(a[k]) != len(b[k]) for k in keys) for a, b in zip(short, whole))


CASES = {
    "singles": ([Example(e.text_a, None, e.label) for e in tiny_sentiment(24, 0)] + [Example(LONG, None, 1)],
                TaskKind.CLASSIFICATION),
    "pairs": ([Example(e.text_a, e.text_a, e.label) for e in tiny_sentiment(24, 1)]
              + [Example("short", LONG, 0), Example("a b", "c d", 1)], TaskKind.CLASSIFICATION),
    "mixed": ([Example(e.text_a, None if i % 2 else e.text_a, e.label) for i, e in enumerate(tiny_sentiment(24, 2))],
              TaskKind.CLASSIFICATION),
    "embedding_pairs": ([Example(e.text_a, LONG if i == 3 else "ok", 0.5) for i, e in enumerate(tiny_sentiment(16, 3))],
                        TaskKind.EMBEDDING),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("max_length", [6, 9, 12, 64])
def test_the_count_is_what_tokenizing_cuts(tiny_tok, case, max_length):
    examples, kind = CASES[case]
    assert count_truncated(examples, tiny_tok, max_length, kind=kind) == _cut(examples, tiny_tok, max_length, kind)


def test_the_long_row_alone_is_counted(tiny_tok):
    rows = [Example("fine", None, 0), Example(LONG, None, 1)]
    assert count_truncated(rows, tiny_tok, 16) == 1


def test_a_run_records_and_says_each_splits_count_and_the_report_shows_it(tmp_path, caplog):
    """A tiny int8 run at max_length 8 (the tiny sentences run to 11 tokens): data.truncated for train,
    validation and dev, eval.truncated for the scored rows, a log line each, and the Summary's score line names
    the count beside n."""
    from compresslab.config import compose
    from compresslab.data.loaders import truncation_line
    from compresslab.manifest import read_json
    from compresslab.pipeline import run
    from compresslab.report.summary import truncated_note
    from compresslab.testing import tiny_generic_run

    over = ["+pipeline=int8", *tiny_generic_run(tmp_path, "int8"), "bench=off", "deploy=ort", "run.threads=1",
            "task.max_length=8", "report=true"]
    with caplog.at_level(logging.INFO):
        d = run(compose(over), overrides=over)
    m = read_json(d / "manifest.json")
    counts = m["data"]["truncated"]
    assert set(counts) == {"train", "validation", "dev"}
    for split, rec in counts.items():
        assert rec["of"] == m["data"]["sizes"][split] and rec["max_length"] == 8
        assert any(truncation_line(rec["n"], rec["of"], split, 8) in r.getMessage() for r in caplog.records), split
    assert counts["dev"]["n"] > 0  # the tiny sentences are longer than 8 tokens: the fixture exercises a cut
    ev = m["eval"]["truncated"]
    assert ev == {"n": counts["dev"]["n"], "of": m["eval"]["n"], "max_length": 8}
    note = truncated_note(m)
    assert note == f", {ev['n']} truncated at max_length=8"
    assert f"({m['eval']['n']} examples{note})" in (d / "report.md").read_text()
    assert truncated_note({"eval": {"n": 10, "truncated": {"n": 0, "of": 10, "max_length": 8}}}) == ""


def test_calibration_says_its_count(tiny_tok, tmp_path, caplog):
    from compresslab.testing import tiny_context

    ctx = tiny_context(tiny_tok, tmp_path, max_length=6)  # shorter than most tiny sentences
    with caplog.at_level(logging.INFO):
        list(ctx.calibration_batches(12, batch_size=4, setting="int8.num_calibration"))
    line = next(r.getMessage() for r in caplog.records
                if "calibration" in r.getMessage() and "truncated" in r.getMessage())
    assert line.endswith("of 12 calibration (int8.num_calibration) examples truncated at max_length=6")
    assert not line.startswith("0 of"), line
