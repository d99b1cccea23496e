"""User data sets from CSV / TSV / JSONL files written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compresslab.data.schema import DataFormatError, DataNotFoundError, SplitUnavailableError
from compresslab.data.tasks import TaskKind, check_data_available, load_task
from compresslab.testing import write_csv




def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_csv_single_sentence_with_string_labels(tmp_path: Path) -> None:
    rows = [["great, really", "pos"], ['a "quoted" bad film', "neg"], ["fine", "neutral"]]
    train = write_csv(tmp_path / "train.csv", ["review", "sentiment"], rows)
    dev = write_csv(tmp_path / "dev.csv", ["review", "sentiment"], rows[:2])
    data = load_task("generic", generic={"train": str(train), "dev": str(dev), "text_a": "review",
                                         "label": "sentiment", "name": "reviews"})
    assert data.spec.name == "reviews" and data.spec.kind is TaskKind.CLASSIFICATION
    assert data.info["label_names"] == ["neg", "neutral", "pos"]  # sorted
    assert data.spec.num_labels == 3
    assert [e.label for e in data.train] == [2, 0, 1]
    assert data.train[0].text_a == "great, really" and data.train[1].text_a == 'a "quoted" bad film'
    assert data.train[0].text_b is None
    assert data.info["files"]["train"]["rows"] == 3 and len(data.info["files"]["train"]["sha256"]) == 64


def test_csv_pairs_regression(tmp_path: Path) -> None:
    rows = [["a cat", "a dog", "2.5"], ["a man", "a person", "4"]]
    path = write_csv(tmp_path / "pairs.csv", ["s1", "s2", "score"], rows)
    data = load_task("sim", generic={"train": str(path), "dev": str(path), "text_a": "s1", "text_b": "s2",
                                     "label": "score", "kind": "regression"})
    assert data.spec.name == "sim" and data.spec.kind is TaskKind.REGRESSION
    assert data.spec.primary_metric == "spearman" and data.spec.num_labels == 1
    assert data.dev[1].text_b == "a person" and data.dev[1].label == 4.0
    assert isinstance(data.dev[1].label, float)


def test_jsonl_single_and_pair_with_integer_and_explicit_labels(tmp_path: Path) -> None:
    single = _write_jsonl(tmp_path / "d.jsonl", [{"text": "good", "label": 1}, {"text": "bad", "label": 0}])
    data = load_task("generic", generic={"dev": str(single)})
    assert [e.label for e in data.dev] == [1, 0] and data.info["label_names"] == ["0", "1"]
    assert len(data.train) == 0
    with pytest.raises(SplitUnavailableError, match="no train file: set task.generic.train"):
        data.require_train()

    pairs = _write_jsonl(tmp_path / "p.jsonl", [
        {"premise": "a", "hypothesis": "b", "y": "contradiction"},
        {"premise": "c", "hypothesis": "d", "y": "entailment"},
    ])
    data = load_task("generic", generic={"train": str(pairs), "text_a": "premise", "text_b": "hypothesis",
                                         "label": "y", "labels": ["entailment", "neutral", "contradiction"]})
    assert [e.label for e in data.train] == [2, 0]
    assert data.spec.num_labels == 3 and data.train[0].text_b == "b"
    assert data.info["label_names"] == ["entailment", "neutral", "contradiction"]


def test_relative_paths_fall_back_to_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _write_jsonl(root / "d.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    monkeypatch.chdir(tmp_path)
    data = load_task("generic", root, generic={"dev": "d.jsonl"})
    assert len(data.dev) == 2
    check_data_available("generic", root, generic={"dev": "d.jsonl"})
    with pytest.raises(DataNotFoundError, match="missing.jsonl"):
        check_data_available("generic", root, generic={"dev": "missing.jsonl"})


def test_generic_errors_are_specific(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"text": "x", "label": "a"}, {"txt": "y", "label": "b"}])
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['text_col'\\]"):
        load_task("generic", generic={"dev": str(path), "text_col": "text"})
    with pytest.raises(DataFormatError, match="d.jsonl:2: no key 'text'"):
        load_task("generic", generic={"dev": str(path)})
    with pytest.raises(ValueError, match="task=generic needs a file"):
        load_task("generic", generic={})
    with pytest.raises(ValueError, match="use one of csv, tsv, jsonl"):
        load_task("generic", generic={"dev": str(path), "format": "parquet"})
    good = _write_jsonl(tmp_path / "g.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    with pytest.raises(ValueError, match="at least 2 class names"):
        load_task("generic", generic={"dev": str(good), "labels": ["a"]})
    with pytest.raises(DataFormatError, match="not in task.generic.labels"):
        load_task("generic", generic={"dev": str(good), "labels": ["a", "c"]})
    bad = write_csv(tmp_path / "r.csv", ["text", "label"], [["x", "high"]])
    with pytest.raises(DataFormatError, match="r.csv:2: label 'high' is not a number"):
        load_task("generic", generic={"dev": str(bad), "kind": "regression"})


def test_generic_typos_get_a_did_you_mean(tmp_path: Path) -> None:
    """A misspelled task.generic key, and a column name off by a letter, name the close match (validate.did_you_mean)."""
    from compresslab.data.generic import GenericConfig

    with pytest.raises(ValueError, match=r"task\.generic: unknown key\(s\) \['lables'\] \('lables': did you mean "
                                         r"'labels'\?\); allowed: "):
        GenericConfig.from_dict({"dev": "d.jsonl", "lables": ["a", "b"]})
    path = write_csv(tmp_path / "d.csv", ["txt", "label"], [["x", "a"], ["y", "b"]])
    with pytest.raises(DataFormatError, match=r"no column 'text' \(task\.generic\.text_a\).*\('text': did you mean "
                                              r"'txt'\?\)"):
        load_task("generic", generic={"dev": str(path)})
    records = _write_jsonl(tmp_path / "d.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "lable": "b"}])
    with pytest.raises(DataFormatError, match=r"d\.jsonl:2: no key 'label' \(task\.generic\.label\).*\('label': did "
                                              r"you mean 'lable'\?\)"):
        load_task("generic", generic={"dev": str(records)})
