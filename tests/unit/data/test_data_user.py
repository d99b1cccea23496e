"""User-held data as a task (the data half of compresslab.compress): tuples, dicts, datasets, files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from compresslab.data.schema import DataNotFoundError, Example, MissingSplit, SplitUnavailableError, TaskKind
from compresslab.data.checks import check_labels_match_head, check_tokenizable
from compresslab.data.user import task_from_user_data
from compresslab.testing import write_csv

SENTS = ["good film", "bad film", "very good", "not good", "the plot", "a movie", "it was bad", "very bad"]


def _pos_neg(n: int) -> list[tuple[str, str]]:
    return [(f"{SENTS[i % len(SENTS)]} {i}", "pos" if i % 3 else "neg") for i in range(n)]


def _all(task) -> list[Example]:
    return list(task.train) + list(task.validation)


# ---- tuples ----------------------------------------------------------------------------------

def test_single_tuples_string_labels_sorted_mapping_and_seeded_carve() -> None:
    data = _pos_neg(100)
    task = task_from_user_data(data, [("good", "pos"), ("bad", "neg")], name="mine")
    assert task.spec.kind is TaskKind.CLASSIFICATION and task.spec.num_labels == 2
    assert task.spec.label_names == ("neg", "pos") and task.spec.name == "mine"
    assert task.info["label2id"] == {"neg": 0, "pos": 1} and task.info["label_source"] == "sorted_strings"
    # validation is min(1000, 5%) = 5, carved from data; train + validation == data, disjoint, in order
    assert len(task.validation) == 5 and len(task.train) == 95
    expected = {(t, 1 if lab == "pos" else 0) for t, lab in data}
    got = [(e.text_a, e.label) for e in _all(task)]
    assert set(got) == expected and len(got) == 100
    assert [e.text_a for e in task.train] == [t for t, _ in data if t in {e.text_a for e in task.train}]
    assert all(e.text_b is None for e in _all(task))
    assert task.dev == [Example("good", None, 1), Example("bad", None, 0)]
    assert task.info["sizes"] == {"train": 95, "validation": 5, "dev": 2} and task.info["val_seed"] == 42
    again = task_from_user_data(data, seed=42)
    other = task_from_user_data(data, seed=7)
    assert again.validation == task.validation and other.validation != task.validation
    assert task_from_user_data(data, val_size=10).info["val_size"] == 10


def test_pair_tuples_int_labels_and_no_eval_data_gives_missing_dev() -> None:
    data = [("a man", "a person", 1), ("a cat", "a car", 0), ("the dog", "a dog", 2)] * 10
    task = task_from_user_data(data, val_size=0)
    assert task.spec.num_labels == 3 and task.spec.label_names == ("0", "1", "2")
    assert task.info["label_source"] == "ids" and task.spec.text_b is not None
    assert task.train[:3] == [Example("a man", "a person", 1), Example("a cat", "a car", 0),
                              Example("the dog", "a dog", 2)]
    assert isinstance(task.dev, MissingSplit) and len(task.dev) == 0 and task.validation == []
    assert "no eval_data" in task.info["missing_splits"]["dev"]
    with pytest.raises(SplitUnavailableError, match="no eval_data"):
        from compresslab.data.schema import require_examples

        require_examples(task.dev, "evaluate")


def test_numpy_scalar_labels_are_plain_numbers() -> None:
    import numpy as np

    task = task_from_user_data([("a", np.int64(1)), ("b", np.int64(0))], [("c", np.float32(1.0))])
    assert [e.label for e in task.train] == [1, 0] and type(task.train[0].label) is int
    assert task.dev[0].label == 1 and type(task.dev[0].label) is int


def test_int_labels_keep_their_ids_and_every_class_needs_a_training_example() -> None:
    task = task_from_user_data([("good", 1), ("good film", 1), ("bad", 0)], [("bad", 0)])
    assert task.spec.num_labels == 2 and [e.label for e in task.train] == [1, 1, 0] and task.dev[0].label == 0
    # as in files: a class id only in eval_data could never be learned (label2id declares it on purpose)
    with pytest.raises(ValueError, match=r"eval_data\[0\]: class id 2 appears in eval_data but never in data"):
        task_from_user_data([("good", 1), ("bad", 0)], [("x", 2)])
    with pytest.raises(ValueError, match=r"eval_data\[0\]: class id 0 appears in eval_data but never in data"):
        task_from_user_data([("good", 1), ("good film", 1)], [("bad", 0)])
    declared = task_from_user_data([("good", 1), ("good film", 1)], [("bad", 0)], label2id={"0": 0, "1": 1})
    assert [e.label for e in declared.train] == [1, 1] and declared.dev[0].label == 0


def test_float_labels_are_regression_and_eval_ints_become_floats() -> None:
    data = [("a cat", "a dog", 2.5), ("a man", "a person", 4.0), ("x", "y", 0.2)]
    task = task_from_user_data(data, [("p", "q", 3)])
    assert task.spec.kind is TaskKind.REGRESSION and task.spec.num_labels == 1
    assert task.spec.primary_metric == "spearman" and task.spec.label_names == ()
    assert [e.label for e in task.train] == [2.5, 4.0, 0.2]
    assert task.dev[0].label == 3.0 and isinstance(task.dev[0].label, float)
    assert task.info["label_source"] == "scores" and task.info["label2id"] is None


def test_kind_override() -> None:
    as_cls = task_from_user_data([("a", 1.0), ("b", 0.0)], kind="classification")
    assert [e.label for e in as_cls.train] == [1, 0] and isinstance(as_cls.train[0].label, int)
    with pytest.raises(ValueError, match=r"data\[1\]: label 0\.5 is not a class id"):
        task_from_user_data([("a", 1.0), ("b", 0.5)], kind="classification")
    as_reg = task_from_user_data([("a", 1), ("b", 0)], kind="regression")
    assert as_reg.spec.kind is TaskKind.REGRESSION and as_reg.train[0].label == 1.0
    emb = task_from_user_data([("a", "b", 1.0)], kind=TaskKind.EMBEDDING)
    assert emb.spec.kind is TaskKind.EMBEDDING
    with pytest.raises(ValueError, match="unknown kind 'regresion'; allowed: classification, regression"):
        task_from_user_data([("a", 1.0)], kind="regresion")


def test_eval_data_uses_the_data_mapping_and_names_unknown_labels() -> None:
    task = task_from_user_data([("a", "zebra"), ("b", "apple"), ("c", "mango")],
                               [("d", "mango"), ("e", "zebra"), ("f", "apple")])
    assert [e.label for e in task.train] == [2, 0, 1] and [e.label for e in task.dev] == [1, 2, 0]
    with pytest.raises(ValueError, match=r"eval_data\[1\]: label 'kiwi' appears in eval_data but never in data"):
        task_from_user_data([("a", "zebra"), ("b", "apple")], [("d", "apple"), ("e", "kiwi")])


def test_label2id_sets_ids_case_insensitively_for_data_and_eval() -> None:
    label2id = {"POSITIVE": 0, "NEGATIVE": 1}
    task = task_from_user_data([("a", "negative"), ("b", "positive")], [("c", "NEGATIVE")], label2id=label2id)
    assert [e.label for e in task.train] == [1, 0] and task.dev[0].label == 1
    assert task.spec.label_names == ("POSITIVE", "NEGATIVE") and task.info["label_source"] == "label2id"
    # label2id names classes the data never shows: num_labels still comes from label2id
    three = task_from_user_data([("a", "b"), ("c", "b")], label2id={"a": 0, "b": 1, "c": 2})
    assert three.spec.num_labels == 3 and [e.label for e in three.train] == [1, 1]
    # int labels are ids in label2id's range
    assert task_from_user_data([("a", 1), ("b", 0)], label2id=label2id).train[0].label == 1
    with pytest.raises(ValueError, match=r"data\[1\]: label 'neutral' is not in label2id=\['POSITIVE', 'NEGATIVE'\]"):
        task_from_user_data([("a", "positive"), ("b", "neutral")], label2id=label2id)
    with pytest.raises(ValueError, match="looks like id2label"):
        task_from_user_data([("a", "x")], label2id={0: "x", 1: "y"})
    with pytest.raises(ValueError, match="ids 0..1 once each"):
        task_from_user_data([("a", "x")], label2id={"x": 0, "y": 2})


# ---- dict records --------------------------------------------------------------------------

def test_dict_records_guess_glue_columns_and_take_explicit_ones() -> None:
    pairs = [{"sentence1": "a b", "sentence2": "c d", "label": "yes", "idx": 0},
             {"sentence1": "e f", "sentence2": "g h", "label": "no", "idx": 1}]
    task = task_from_user_data(pairs)
    assert task.train == [Example("a b", "c d", 1), Example("e f", "g h", 0)]
    assert (task.spec.text_a, task.spec.text_b, task.spec.label) == ("sentence1", "sentence2", "label")
    single = task_from_user_data([{"sentence": "good", "labels": 1}, {"sentence": "bad", "labels": 0}])
    assert single.train == [Example("good", None, 1), Example("bad", None, 0)]
    named = task_from_user_data([{"review": "good", "stars": 5.0, "text": "ignored"}],
                                text_column="review", label_column="stars")
    assert named.train == [Example("good", None, 5.0)]
    with pytest.raises(ValueError, match=r"label column 'stars' not found; columns found: \['sentence', 'labels'\]"):
        task_from_user_data([{"sentence": "good", "labels": 1}], label_column="stars")
    with pytest.raises(ValueError, match=r"no label column found .*columns found: \['sentence', 'y'\]"):
        task_from_user_data([{"sentence": "good", "y": 1}])
    with pytest.raises(ValueError, match=r"no text column found .*columns found: \['body', 'label'\]"):
        task_from_user_data([{"body": "good", "label": 1}])
    with pytest.raises(ValueError, match=r"data\[1\]: no key\(s\) \['label'\]"):
        task_from_user_data([{"text": "a", "label": 1}, {"text": "b"}])


# ---- datasets.Dataset --------------------------------------------------------------------------

@pytest.fixture
def datasets():
    return pytest.importorskip("datasets")


def _classlabel_ds(datasets, texts: list[str], ids: list[int], names: list[str]):
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({"sentence": texts, "label": ids}, features=features)


def test_dataset_classlabel_names_give_the_mapping_and_label2id_remaps_them(datasets) -> None:
    # names deliberately not sorted: ids must follow the ClassLabel order, not alphabetical
    ds = _classlabel_ds(datasets, ["good", "bad", "fine"], [0, 1, 0], ["positive", "negative"])
    dev = _classlabel_ds(datasets, ["ok"], [1], ["positive", "negative"])
    task = task_from_user_data(ds, dev)
    assert task.spec.label_names == ("positive", "negative") and task.info["label_source"] == "class_label"
    assert [e.label for e in task.train] == [0, 1, 0] and task.dev == [Example("ok", None, 1)]
    assert task.info["sources"] == {"train": "datasets.Dataset", "dev": "datasets.Dataset"}
    # the model's label2id wins: ids are remapped through the names
    remapped = task_from_user_data(ds, dev, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    assert [e.label for e in remapped.train] == [1, 0, 1] and remapped.dev[0].label == 0
    # tuples with int ids against a ClassLabel mapping are ids in that mapping
    assert task_from_user_data(ds, [("x", 1)]).dev[0].label == 1
    with pytest.raises(ValueError, match=r"data\[0\].*class id -1 is outside 0\.\.1"):
        task_from_user_data(_classlabel_ds(datasets, ["x", "y"], [-1, -1], ["a", "b"]))


def test_dataset_pairs_float_labels_and_column_errors(datasets) -> None:
    ds = datasets.Dataset.from_dict({"question": ["what?", "who?"], "sentence": ["that.", "him."],
                                     "label": [0.5, 4.5]})
    task = task_from_user_data(ds)
    assert task.spec.kind is TaskKind.REGRESSION
    assert task.train == [Example("what?", "that.", 0.5), Example("who?", "him.", 4.5)]
    found = r"columns found: \['question', 'sentence', 'label'\]"
    with pytest.raises(ValueError, match=r"label column 'gold' not found; " + found):
        task_from_user_data(ds, label_column="gold")
    with pytest.raises(ValueError, match="DatasetDict.*ds\\['train'\\]"):
        task_from_user_data(datasets.DatasetDict({"train": ds}))
    with pytest.raises(ValueError, match="empty Dataset"):
        task_from_user_data(ds.select([]))


# ---- files ---------------------------------------------------------------------------------



def test_csv_and_jsonl_paths(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", ["review", "sentiment"],
                       [["great, really", "pos"], ['a "quoted" bad film', "neg"], ["fine", "neutral"]])
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"review": "meh", "sentiment": "neutral"}) + "\n", encoding="utf-8")
    task = task_from_user_data(train, str(dev), text_column="review", label_column="sentiment")
    assert task.train == [Example("great, really", None, 2), Example('a "quoted" bad film', None, 0),
                          Example("fine", None, 1)]
    assert task.dev == [Example("meh", None, 1)]
    assert task.info["files"]["train"]["rows"] == 3 and len(task.info["files"]["dev"]["sha256"]) == 64
    assert task.spec.train_file == str(train)
    # numeric cells are numbers: ints -> class ids, floats -> regression
    scores = write_csv(tmp_path / "s.csv", ["sentence1", "sentence2", "score"], [["a", "b", "2.5"], ["c", "d", "4"]])
    reg = task_from_user_data(scores)
    assert reg.spec.kind is TaskKind.REGRESSION and reg.train == [Example("a", "b", 2.5), Example("c", "d", 4.0)]
    ints = tmp_path / "i.jsonl"
    ints.write_text(json.dumps({"text": "good", "label": 1}) + "\n" + json.dumps({"text": "bad", "label": 0}) + "\n")
    assert [e.label for e in task_from_user_data(ints).train] == [1, 0]
    empty_cell = write_csv(tmp_path / "e.csv", ["text", "label"], [["good", "1"], ["bad", ""]])
    with pytest.raises(ValueError, match=r"e\.csv:3: the label \(column 'label'\) is empty"):
        task_from_user_data(empty_cell)
    with pytest.raises(DataNotFoundError, match="nope.csv"):
        task_from_user_data(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="cannot tell the format"):
        task_from_user_data(write_csv(tmp_path / "x.txt", ["text", "label"], [["a", "1"]]))


def test_real_sst2_tsv_matches_the_glue_reader(data_root: Path) -> None:
    from compresslab.data.tasks import load_task

    path = data_root / "glue" / "SST-2" / "dev.tsv"
    task = task_from_user_data(path, path, val_size=0)
    glue = load_task("sst2", data_root, val_size=0)
    assert len(task.dev) == 872 and task.dev == glue.dev
    assert task.spec.label_names == ("0", "1") and task.info["files"]["train"]["path"] == str(path)


# ---- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "match"), [
    ([], r"data is empty"),
    (None, r"data is None"),
    ([("a", 1), ("b", "c", 0)], r"data\[1\] has 3 items but data\[0\] has 2"),
    ([("a", 1, 2, 3)], r"expected \(text, label\) or \(text_a, text_b, label\), got 4"),
    ([("a", 1), ("b",)], r"data\[1\].*got 1 items"),
    ([("a", 1), (5, 0)], r"data\[1\]: text must be a str, got int 5"),
    ([("a", "b", 1), ("c", None, 0)], r"data\[1\]: text pair must be a str, got NoneType"),
    ([("a", 1), ("   ", 0)], r"data\[1\]: text is empty"),
    ([("a", 1), ("b", None)], r"data\[1\]: the label is missing \(None"),
    ([("a", 1.0), ("b", math.nan)], r"data\[1\]: the label is nan"),
    ([("a", [0, 1])], r"data\[0\]: the label is a list \(\[0, 1\]\); expected a class name"),
    ([("a", "pos"), ("b", 1)], r"labels mix class names \('pos' at data\[0\]\) and class ids \(1 at data\[1\]\)"),
    ([("a", "pos"), ("b", "pos")], r"at least 2 classes; the data has only \['pos'\]"),
    (["just text"], r"data\[0\]: expected a \(text, label\) tuple or a dict record, got str"),
    ([("a", 1), {"text": "b", "label": 0}], r"data\[1\]: expected a tuple"),
    ({"text": ["a"], "label": [1]}, r"data is a dict with keys \['text', 'label'\]"),
    (42, r"unsupported type int"),
])
def test_bad_data_raises_a_clear_value_error(data, match) -> None:
    with pytest.raises(ValueError, match=match):
        task_from_user_data(data)


def test_eval_data_errors() -> None:
    with pytest.raises(ValueError, match="data holds single sentences but eval_data holds sentence pairs"):
        task_from_user_data([("a", 1), ("b", 0)], [("c", "d", 1)])
    with pytest.raises(ValueError, match="eval_data is empty"):
        task_from_user_data([("a", 1), ("b", 0)], [])
    with pytest.raises(ValueError, match=r"mix class names \('pos' at eval_data\[0\]\) and class ids \(1 at data\[0\]"):
        task_from_user_data([("a", 1), ("b", 0)], [("c", "pos")])
    with pytest.raises(ValueError, match=r"mix class names \('x' at data\[0\]\) and class ids \(1 at eval_data\[0\]"):
        task_from_user_data([("a", "x"), ("b", "y")], [("c", 1)])
    with pytest.raises(ValueError, match="val_size=2 would leave no training examples"):
        task_from_user_data([("a", 1), ("b", 0)], val_size=2)
    with pytest.raises(ValueError, match="val_size must be a non-negative integer"):
        task_from_user_data([("a", 1), ("b", 0)], val_size=-1)


# ---- the model head ----------------------------------------------------------------------------

def _config(**kw):
    from transformers import BertConfig

    return BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                      intermediate_size=8, **kw)


def test_check_labels_match_head() -> None:
    cls3 = task_from_user_data([("a", "x"), ("b", "y"), ("c", "z")])
    check_labels_match_head(cls3, _config(num_labels=3))  # default LABEL_i names: nothing to compare
    with pytest.raises(ValueError, match=r"3 classes \['x', 'y', 'z'\] but the model head has num_labels=2"):
        check_labels_match_head(cls3, _config())
    with pytest.raises(ValueError, match="regression head"):
        check_labels_match_head(cls3, _config(num_labels=3, problem_type="regression"))
    with pytest.raises(ValueError, match="only single-label"):
        check_labels_match_head(cls3, _config(num_labels=3, problem_type="multi_label_classification"))
    reg = task_from_user_data([("a", 0.5), ("b", 1.5)])
    check_labels_match_head(reg, _config(num_labels=1))
    with pytest.raises(ValueError, match="is regression .* num_labels=2"):
        check_labels_match_head(reg, _config())
    emb = task_from_user_data([("a", "b", 0.5)], kind="embedding")
    check_labels_match_head(emb, _config())  # no head to check


def test_check_labels_match_head_compares_names_with_id2label() -> None:
    model = _config(id2label={0: "NEGATIVE", 1: "POSITIVE"})
    ok = task_from_user_data([("a", "negative"), ("b", "positive")])
    check_labels_match_head(ok, model)  # same names per id, case aside
    swapped = task_from_user_data([("a", "neg"), ("b", "pos")], label2id={"pos": 0, "neg": 1})
    with pytest.raises(ValueError, match=r"id 0: data 'pos', model 'NEGATIVE'.*label2id=model\.config\.label2id"):
        check_labels_match_head(swapped, model)
    mapped = task_from_user_data([("a", "negative"), ("b", "positive")], label2id=model.label2id)
    check_labels_match_head(mapped, model)
    ids_only = task_from_user_data([("a", 1), ("b", 0)])  # int ids carry no names: not compared
    check_labels_match_head(ids_only, model)


# ---- tokenization ----------------------------------------------------------------------------

def test_check_tokenizable(tiny_tokenizer) -> None:
    task = task_from_user_data([("good film", 1), ("bad plot", 0)] * 20, [("very good", 1)], val_size=4)
    check_tokenizable(task, tiny_tokenizer, 16)
    check_tokenizable(task, tiny_tokenizer, 16, chunk=3)
    task.dev.append(Example("it was", None, 1))
    task.dev.append(Example("", None, 0))
    with pytest.raises(ValueError, match=r"dev\[2\] text_a must be a non-empty str, got ''"):
        check_tokenizable(task, tiny_tokenizer, 16)
    task.dev[2] = Example("\u200b\u200b", None, 0)  # dropped by BERT's normaliser: no tokens at all
    with pytest.raises(ValueError, match=r"dev\[2\] text '\\u200b\\u200b' yields no tokens"):
        check_tokenizable(task, tiny_tokenizer, 16)
    task.dev[2] = Example("a", 7, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dev\[2\] text_b must be a non-empty str, got 7"):
        check_tokenizable(task, tiny_tokenizer, 16)
    with pytest.raises(ValueError, match="max_length must be an integer >= 1"):
        check_tokenizable(task, tiny_tokenizer, 0)


def test_check_tokenizable_names_the_example_the_tokenizer_fails_on(tiny_tokenizer) -> None:
    def picky(texts, *args, **kw):
        if any("boom" in t for t in texts):
            raise RuntimeError("cannot encode boom")
        return tiny_tokenizer(texts, *args, **kw)

    task = task_from_user_data([("good", 1), ("bad", 0), ("a boom b", 1), ("film", 0)], val_size=0)
    failed = r"failed on train\[2\] Example\(text_a='a boom b'.*RuntimeError: cannot encode boom"
    with pytest.raises(ValueError, match=failed):
        check_tokenizable(task, picky, 8, chunk=2)


@pytest.mark.parametrize("col", ["text_column", "text_pair_column", "label_column"])
def test_column_names_with_tuples_are_refused_not_ignored(col) -> None:
    # tuples are read by position: a review found compress(..., text_column=...) silently ignored with tuple data
    with pytest.raises(ValueError, match=f"list of tuples, read by position .*{col}='x'"):
        task_from_user_data([("good", "pos"), ("bad", "neg")], None, **{col: "x"})
