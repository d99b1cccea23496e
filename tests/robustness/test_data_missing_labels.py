"""Issue #12, kind 2 (data read loosely): a label with no value must never become a class.

A CSV written by pandas or a spreadsheet marks an empty cell as ``NaN``, ``NA``, ``null`` or ``#N/A``;
JSON Lines has ``null`` and ``NaN``; Python data has ``None``, ``float('nan')`` and pandas' ``NA``.
Each was read as a class name (or, for scores, as a NaN score). Now each is an error naming
file:line (or ``data[i]``) and the label column, unless the declared classes name it; infinities,
whitespace-only cells and booleans mixed with class ids are its siblings.
"""

from __future__ import annotations

import pytest

from _data_files import (POS_NEG, compose_generic, csv_file, jsonl_file, load_generic, refused, run_fails_fast,
                         table_text)
from compresslab.data.tasks import load_task

IDS = [("a good film", 1), ("a bad film", 0), ("great fun", 1), ("awful", 0)]
NAN = "NaN label in a CSV (as pandas writes an empty cell)"
MARKER = "missing-value marker as a label (NA, N/A, null, None, #N/A, <NA>)"
JSONL = "JSONL label null, NaN, empty or whitespace-only"
SCORE = "regression scores: NaN, null, NA or true as a score"

# Files whose labels have no value: each differs from the others only in its data and the message.
REFUSED = [
    *[refused(NAN, "an error at file:line naming the label column: not a finite number; fill it in or drop the row",
              "train.csv", table_text("text,label", POS_NEG + [("x", cell)]),
              rf"train\.csv:6: the label \(column 'label'\) is '{cell}', not a finite number.*drop the row")
      for cell in ["NaN", "nan", "-nan", "inf", "-Infinity"]],
    *[refused(MARKER, "an error at file:line naming the label column: a missing value; fill it in or drop the row, "
                      "or declare it in task.generic.labels if it is a class",
              "train.csv", table_text("text,label", POS_NEG),
              rf"dev\.csv:3: the label \(column 'label'\) is '{cell}', which marks a missing value.*"
              r"task\.generic\.labels=",
              dev=("dev.csv", table_text("text,label", [("nice", "positive"), ("x", cell)])))
      for cell in ["NA", "N/A", "null", "NULL", "None", "#N/A", "<NA>"]],
    *[refused(JSONL, "an error at file:line naming the label column: missing / not finite / empty",
              "train.jsonl", [{"text": t, "label": y} for t, y in IDS] + [{"text": "x", "label": value}],
              rf"train\.jsonl:5: the label \(column 'label'\) is {said}")
      for value, said in [(None, r"missing \(None / null\)"), (float("nan"), "nan, not a finite"), ("", "empty"),
                          ("   ", "empty"), ("\t", "empty")]],
    refused("whitespace-only label cell in a CSV", "an error at file:line: the label is empty",
            "train.csv", table_text("text,label", POS_NEG + [("x", "   ")]), r"train\.csv:6: the label .* is empty"),
    refused("JSONL booleans mixed with class ids (0, 1, 2 and true)",
            "an error naming a true/false and a class id with their file:line (true would be id 1)",
            "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 2}, {"text": "c", "label": 1},
                            {"text": "d", "label": True}],
            r"labels mix true/false \(true at .*train\.jsonl:4\) and class ids \(0 at .*train\.jsonl:1\)"),
    refused("JSONL booleans mixed with class names",
            "an error naming a class name and a true/false with their file:line",
            "train.jsonl", [{"text": "a", "label": "positive"}, {"text": "b", "label": "negative"},
                            {"text": "c", "label": False}],
            r"labels mix class names \('positive' at .*:1\) and class ids \(false at .*:3\)"),
    *[refused(SCORE, "an error at file:line (a NaN score was accepted and trained on)",
              "train.jsonl", [{"text": "a", "score": 0.5}, {"text": "b", "score": 2.5}, {"text": "c", "score": value}],
              rf"train\.jsonl:3: .*{said}", label="score", kind="regression")
      for value, said in [(float("nan"), "nan, not a finite"), ("NaN", "'NaN', not a finite"), (None, "missing"),
                          ("NA", "'NA', a missing value"), (True, "label true is not a score")]],
]


@pytest.mark.parametrize("bad", REFUSED)
def test_refused(tmp_path, expect_clear, bad):
    bad.expect_refused(tmp_path, expect_clear)


@pytest.mark.case(name="a class really named like a missing value (None), declared in task.generic.labels", kind=2,
                  bad_input=False, expected="accepted: 'None' is the declared class, in the declared order")
def test_declared_class_named_none(tmp_path, observe):
    rows = [("no pain", "None"), ("some pain", "mild"), ("much pain", "severe"), ("ok", "None")]
    path = csv_file(tmp_path / "train.csv", table_text("text,label", rows))
    data = load_generic(train=path, dev=path, labels=["None", "mild", "severe"])
    assert data.spec.label_names == ("None", "mild", "severe") and [e.label for e in data.dev] == [0, 1, 2, 0]
    observe(f"classes {data.spec.label_names}, labels {[e.label for e in data.dev]}")


@pytest.mark.case(name="JSONL labels all true/false", kind=2, bad_input=False,
                  expected="accepted as class ids 0 (false) and 1 (true)")
def test_all_bools_are_ids(tmp_path, observe):
    records = [{"text": t, "label": bool(y)} for t, y in IDS]
    path = jsonl_file(tmp_path / "train.jsonl", records)
    data = load_generic(train=path, dev=path)
    assert [e.label for e in data.dev] == [1, 0, 1, 0] and data.spec.label_names == ("0", "1")
    observe(f"labels {[e.label for e in data.dev]}, classes {data.spec.label_names}")


@pytest.mark.case(name="a GLUE regression file (STS-B) with a 'nan' score", kind=2,
                  expected="an error at file:line: not a finite number (float() read it as NaN)")
def test_glue_regression_nan(tmp_path, expect_clear):
    d = tmp_path / "glue" / "STS-B"
    d.mkdir(parents=True)
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    (d / "train.tsv").write_text(head + "0\tm\tf\t2012\t0\tn\tn\tA man.\tA man.\t5.000\n"
                                 "1\tm\tf\t2012\t1\tn\tn\tA dog.\tA cat.\tnan\n", encoding="utf-8")
    (d / "dev.tsv").write_text(head + "0\tm\tf\t2012\t0\tn\tn\tA man.\tA man.\t5.000\n", encoding="utf-8")
    expect_clear(lambda: load_task("stsb", tmp_path), match=r"STS-B/train\.tsv:3: label 'nan' is not a finite number")


@pytest.mark.case(name="API: None, NaN, 'NA' and pandas NA labels in compress(data=...)", kind=2,
                  expected="an error naming data[i] and the missing value, as for files")
@pytest.mark.parametrize("value", [None, float("nan"), "NA", "pd.NA"])
def test_api_missing_label(expect_clear, value):
    from compresslab.data.user import task_from_user_data

    if value == "pd.NA":
        import pandas as pd

        value = pd.NA
    expect_clear(lambda: task_from_user_data(POS_NEG + [("x", value)]),
                 match=r"data\[4\]: the label .*(missing|not a finite number)")


@pytest.mark.case(name="a NaN label through the composed config and pipeline.run", kind=2,
                  expected="refused before any model is loaded, naming file:line and the label column")
def test_nan_label_fails_before_work(tmp_path, expect_clear):
    train = csv_file(tmp_path / "train.csv", table_text("text,label", POS_NEG * 4 + [("x", "NaN")]))
    cfg = compose_generic(tmp_path, f"task.generic.train={train}", f"task.generic.dev={train}")
    expect_clear(lambda: run_fails_fast(cfg), match=r"train\.csv:18: the label \(column 'label'\) is 'NaN'")
