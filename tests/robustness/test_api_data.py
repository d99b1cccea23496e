"""Issue #12, kind 2 (sibling): the Python API reads labels by the same rules as the CLI's files.

``compresslab.compress(..., data=..., eval_data=...)`` takes tuples, dict records, a
``datasets.Dataset`` or a path; its labels go through :mod:`compresslab.data.labels` like the files
of ``task=generic``, with errors that name the example (``data[3]``, ``eval_data[1]``) and the
argument to change (``label2id=``, ``kind=``). Most cases call ``task_from_user_data`` (what
``compress`` calls first); two go through ``compress`` itself to show the refusal comes before any
pass runs, and one compares the CLI's reader with the API's on the same files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from compresslab.data.schema import DataFormatError, TaskKind
from compresslab.data.user import task_from_user_data

POS_NEG = [("a good film", "positive"), ("a bad film", "negative"), ("great fun", "positive"), ("awful", "negative")]
IDS = [("a good film", 1), ("a bad film", 0), ("great fun", 1), ("awful", 0)]


def _labels(task) -> tuple[list, list]:
    return [e.label for e in task.train], [e.label for e in task.dev] if task.dev else []


# ---------------------------------------------------------------- the cases, through the API
@pytest.mark.case(name="API: 'Positive' only in eval_data (data has 'positive')", kind=2,
                  expected="an error at eval_data[i]: label only in eval_data, did you mean 'positive', label2id=")
def test_case_variant_only_in_eval_data(expect_clear):
    expect_clear(lambda: task_from_user_data(POS_NEG, [("nice", "positive"), ("fine", "Positive")]),
                 match=r"eval_data\[1\]: label 'Positive' appears in eval_data but never in data "
                       r"\(did you mean 'positive'\?\).*label2id=")


@pytest.mark.case(name="API: labels 1 and 1.0 in one list", kind=2, bad_input=False,
                  expected="classification with 2 classes (1.0 is class id 1), not regression")
def test_int_and_float_spelling_are_one_class(observe):
    task = task_from_user_data([("a good film", 1), ("a bad film", 0), ("great", 1.0), ("awful", 0.0)])
    assert task.spec.kind is TaskKind.CLASSIFICATION and task.spec.num_labels == 2
    assert _labels(task)[0] == [1, 0, 1, 0] and all(type(y) is int for y in _labels(task)[0])
    observe(f"kind={task.spec.kind.value}, num_labels={task.spec.num_labels}, labels {_labels(task)[0]}")


@pytest.mark.case(name="API: one stray label 7 among 0/1", kind=2,
                  expected="an error: head of 8 classes, 2-6 empty, naming data[i] of the 7 and label2id=")
def test_stray_label(expect_clear):
    data = IDS + [("meh", 7)]
    expect_clear(lambda: task_from_user_data(data),
                 match=r"head of 8 classes.*class\(es\) 2-6.*fix it at data\[4\].*label2id=\{str\(i\): i for i in "
                       r"range\(8\)\}")


@pytest.mark.case(name="API: class ids in data, class names in eval_data", kind=2,
                  expected="an error: labels mix class names and ids, naming eval_data[i] and data[i]")
def test_ids_mixed_with_names(expect_clear):
    expect_clear(lambda: task_from_user_data(IDS, [("nice", "positive")]),
                 match=r"mix class names \('positive' at eval_data\[0\]\) and class ids \(1 at data\[0\]\).*label2id=")


@pytest.mark.case(name="API: numpy integer labels (np.int64, np.int32, np.float32 1.0)", kind=2, bad_input=False,
                  expected="plain int class ids 0/1, one class per value")
def test_numpy_labels(observe):
    np = pytest.importorskip("numpy")
    task = task_from_user_data([(t, np.int64(y)) for t, y in IDS], [("fine", np.int32(1)), ("meh", np.float32(0.0))])
    train, dev = _labels(task)
    assert train == [1, 0, 1, 0] and dev == [1, 0] and all(type(y) is int for y in train + dev)
    assert task.spec.num_labels == 2 and task.spec.kind is TaskKind.CLASSIFICATION
    observe(f"train {train}, dev {dev}, types {sorted({type(y).__name__ for y in train + dev})}")


@pytest.mark.case(name="API: torch scalar labels (torch.tensor(1), a 0-d float tensor)", kind=2, bad_input=False,
                  expected="plain int class ids; a many-element tensor is an error naming data[i]")
def test_torch_scalar_labels(observe, expect_clear):
    import torch

    task = task_from_user_data([(t, torch.tensor(y)) for t, y in IDS], [("fine", torch.tensor(1.0))])
    train, dev = _labels(task)
    assert train == [1, 0, 1, 0] and dev == [1] and all(type(y) is int for y in train + dev)
    detail = expect_clear(lambda: task_from_user_data(IDS + [("x", torch.tensor([0, 1]))]),
                          match=r"data\[4\]: the label is a Tensor")
    observe(f"train {train}, dev {dev}; a 2-element tensor: {detail[:120]}")


@pytest.mark.case(name="API: datasets.Dataset with a ClassLabel feature", kind=2, bad_input=False,
                  expected="the ClassLabel names, in their order, become config.id2label of the compressed model "
                           "and of its saved config.json")
def test_classlabel_names_become_id2label(tiny_tok, tmp_path, observe):
    datasets = pytest.importorskip("datasets")
    import json

    import torch

    import compresslab
    from compresslab.models.tiny import tiny_model
    from compresslab.testing import tiny_sentiment

    names = ["positive", "negative"]  # not sorted: the ClassLabel order must win
    ex = tiny_sentiment(40, 0)
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"sentence": [e.text_a for e in ex], "label": [1 - e.label for e in ex]},
                                    features=features)
    model = tiny_model("bert")
    with torch.no_grad():  # a trained head: the model as given is the teacher eval_data is scored against
        model.classifier.bias.add_(0.05)
    r = compresslab.compress(model, tiny_tok, [{"name": "magnitude", "sparsity": 0.5, "recovery": {"steps": 0}}],
                             data=ds, eval_data=[(e.text_a, 1 - e.label) for e in ex[:8]], max_length=32,
                             batch_size=8, progress=False)
    try:
        assert r.model.config.id2label == {0: "positive", 1: "negative"}
        assert r.metrics["data"]["label_source"] == "class_label"
        saved = json.loads((r.save(tmp_path / "ck") / "config.json").read_text())
        assert saved["id2label"] == {"0": "positive", "1": "negative"}
    finally:
        r.close()
    observe(f"config.id2label {r.model.config.id2label}; saved config.json id2label {saved['id2label']}")


# ---------------------------------------------------------------- siblings
@pytest.mark.case(name="API: labels differing only in case within data", kind=2,
                  expected="an error naming both spellings and where they are")
def test_case_variants_within_data(expect_clear):
    expect_clear(lambda: task_from_user_data(POS_NEG + [("so good", "Positive")]),
                 match=r"'Positive' \(data\[4\]\) and 'positive' \(data\[0\].*\) differ only in case")


@pytest.mark.case(name="API: 1-based class ids 1-4", kind=2,
                  expected="an error: class 0 would be empty; suggests label2id={'1': 0, '2': 1, '3': 2, '4': 3}")
def test_one_based_ids(expect_clear):
    data = [(f"title {i}", i % 4 + 1) for i in range(8)]
    expect_clear(lambda: task_from_user_data(data),
                 match=r"1-based.*class 0 would be empty.*label2id=\{'1': 0, '2': 1, '3': 2, '4': 3\}")


@pytest.mark.case(name="API: 1-based ids declared with label2id={'1': 0, ...}", kind=2, bad_input=False,
                  expected="accepted: id 0 is named '1', as task.generic.labels=[1, 2, 3, 4] does for files")
def test_one_based_ids_declared(observe):
    data = [(f"title {i}", i % 4 + 1) for i in range(8)]
    task = task_from_user_data(data, label2id={"1": 0, "2": 1, "3": 2, "4": 3})
    assert task.spec.label_names == ("1", "2", "3", "4") and _labels(task)[0][:5] == [0, 1, 2, 3, 0]
    observe(f"classes {task.spec.label_names}, labels {_labels(task)[0]}")


@pytest.mark.case(name="API: a fractional label with kind='classification'", kind=2,
                  expected="an error at data[i] suggesting kind='regression'")
def test_fraction_on_classification(expect_clear):
    expect_clear(lambda: task_from_user_data(IDS + [("x", 0.5)], kind="classification"),
                 match=r"data\[4\]: label 0\.5 is not a class id.*kind='regression'")


@pytest.mark.case(name="API: a label not in label2id (typo)", kind=2,
                  expected="an error at data[i] naming label2id with a did-you-mean")
def test_label_not_in_label2id(expect_clear):
    expect_clear(lambda: task_from_user_data(POS_NEG + [("x", "postive")], label2id={"negative": 0, "positive": 1}),
                 match=r"data\[4\]: label 'postive' is not in label2id=\['negative', 'positive'\] "
                       r"\(did you mean 'positive'\?\)")


RECORDS = [{"review": t, "sentiment": y} for t, y in POS_NEG]


@pytest.mark.parametrize("columns, match", [
    pytest.param({"text_column": "sentiment", "label_column": "sentiment"},
                 r"data: the label column 'sentiment' is also the text column.*text_column=.*label_column=",
                 marks=pytest.mark.case(name="API: text_column and label_column name the same column", kind=2,
                                        expected="an error naming text_column= and label_column=, not a model "
                                                 "that reads its label"), id="text_is_label"),
    pytest.param({"text_column": "review", "text_pair_column": "sentiment", "label_column": "sentiment"},
                 r"data: the label column 'sentiment' is also the text pair column",
                 marks=pytest.mark.case(name="API: text_pair_column and label_column name the same column", kind=2,
                                        expected="an error naming the columns to set"), id="pair_is_label"),
    pytest.param({"text_column": "review", "text_pair_column": "review", "label_column": "sentiment"},
                 r"data: text_column and text_pair_column both name 'review'",
                 marks=pytest.mark.case(name="API: text_pair_column names the text column again", kind=2,
                                        expected="an error: each text would be paired with itself"), id="pair_is_text"),
])
def test_one_column_in_two_roles(expect_clear, columns, match):
    expect_clear(lambda: task_from_user_data(RECORDS, **columns), match=match)


@pytest.mark.case(name="API: a pandas DataFrame as data and eval_data", kind=2, bad_input=False,
                  expected="its rows read as dict records (not its column names as examples); a NaN label is an "
                           "error naming data[i]")
def test_pandas_dataframe(observe, expect_clear):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(RECORDS)
    task = task_from_user_data(df, df.iloc[:2], text_column="review", label_column="sentiment")
    assert task.spec.label_names == ("negative", "positive") and _labels(task) == ([1, 0, 1, 0], [1, 0])
    assert task.info["sources"] == {"train": "pandas.DataFrame", "dev": "pandas.DataFrame"}
    holes = pd.DataFrame([*RECORDS, {"review": "meh", "sentiment": float("nan")}])
    expect_clear(lambda: task_from_user_data(holes, text_column="review", label_column="sentiment"),
                 match=r"data\[4\]: the label .*nan")
    observe(f"classes {task.spec.label_names}, labels {_labels(task)}, sources {task.info['sources']}")


@pytest.mark.case(name="API: text labels '1' and '0' next to int labels", kind=2, bad_input=False,
                  expected="one class per id: '1' is class id 1, as in a CSV cell")
def test_text_ids_are_ids(observe):
    task = task_from_user_data([("a", "1"), ("b", 0), ("c", 1), ("d", " 0 ")])
    assert task.spec.label_names == ("0", "1") and _labels(task)[0] == [1, 0, 1, 0]
    observe(f"classes {task.spec.label_names}, labels {_labels(task)[0]}")


@pytest.mark.case(name="API: a column of float scores (5.0, 3.0) without kind", kind=2, bad_input=False,
                  expected="regression (a column of floats is scores); ints next to floats stay classification")
def test_float_column_is_regression(observe):
    reg = task_from_user_data([("a", 5.0), ("b", 3.0), ("c", 1.0)])
    assert reg.spec.kind is TaskKind.REGRESSION and _labels(reg)[0] == [5.0, 3.0, 1.0]
    observe(f"kind={reg.spec.kind.value}, labels {_labels(reg)[0]}")


@pytest.mark.case(name="API: a ClassLabel Dataset with -1 labels (a test split)", kind=2,
                  expected="an error at data[i]: -1 marks unlabelled rows, with the filter to drop them")
def test_classlabel_unlabelled_rows(expect_clear):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    ds = datasets.Dataset.from_dict({"sentence": ["good", "bad", "unknown"], "label": [1, 0, -1]}, features=features)
    expect_clear(lambda: task_from_user_data(ds),
                 match=r"data\[2\]: class id -1 is outside 0\.\.1.*unlabelled.*filter\(lambda r: r\['label'\] >= 0\)")


@pytest.mark.case(name="API: int labels next to a ClassLabel Dataset", kind=2, bad_input=False,
                  expected="ids into the ClassLabel names (both hold ids), not 'ids mixed with names'")
def test_int_eval_next_to_classlabel(observe):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["positive", "negative"])})
    ds = datasets.Dataset.from_dict({"sentence": ["good", "bad"], "label": [0, 1]}, features=features)
    task = task_from_user_data(ds, [("fine", 1), ("great", 0)])
    assert task.spec.label_names == ("positive", "negative") and _labels(task) == ([0, 1], [1, 0])
    observe(f"classes {task.spec.label_names}, eval labels {_labels(task)[1]}")


# ---------------------------------------------------------------- through compress(): refused before any pass
def _no_training(monkeypatch) -> None:
    import compresslab.api as api

    def boom(*a, **k):
        raise AssertionError("the passes started before the bad labels were refused")

    monkeypatch.setattr(api, "_run", boom)


@pytest.mark.case(name="compress(): a stray label 7 among 0/1", kind=2,
                  expected="refused before any pass, naming data[i] and label2id=; nothing written")
def test_compress_stray_label(tiny_tok, tmp_path, monkeypatch, expect_clear):
    import compresslab
    from compresslab.models.tiny import tiny_model

    _no_training(monkeypatch)
    data = IDS * 5 + [("meh", 7)]
    expect_clear(lambda: compresslab.compress(tiny_model("bert"), tiny_tok, ["ort_int8_dynamic"], data=data,
                                              output_dir=tmp_path / "run", max_length=32, progress=False),
                 match=r"head of 8 classes.*data\[20\].*label2id=")
    assert not (tmp_path / "run").exists()


@pytest.mark.case(name="compress(): a model naming its classes (NEGATIVE/POSITIVE) and data 'neg'/'posit'", kind=2,
                  expected="refused before any pass: 'neg' is not in the model's config.label2id, did you mean")
def test_compress_label_not_in_model_names(tiny_tok, monkeypatch, expect_clear):
    import compresslab
    from compresslab.models.tiny import tiny_model

    _no_training(monkeypatch)
    model = tiny_model("bert")
    model.config.id2label, model.config.label2id = {0: "NEGATIVE", 1: "POSITIVE"}, {"NEGATIVE": 0, "POSITIVE": 1}
    data = [(t, "neg" if y == "negative" else "posit") for t, y in POS_NEG]
    expect_clear(lambda: compresslab.compress(model, tiny_tok, ["ort_int8_dynamic"], data=data, max_length=32,
                                              progress=False),
                 match=r"data\[0\]: label 'posit' is not in the model's config\.label2id=\['NEGATIVE', 'POSITIVE'\] "
                       r"\(did you mean 'POSITIVE'\?\).*label2id=")


@pytest.mark.case(name="API: the model's names NEGATIVE/POSITIVE, data 'negative'/'positive'", kind=2,
                  bad_input=False, expected="accepted: declared names match ignoring case (in the model's id order), "
                                            "with a log line")
def test_declared_names_match_ignoring_case(observe, caplog):
    with caplog.at_level(logging.INFO, logger="compresslab"):
        task = task_from_user_data(POS_NEG, label2id={"NEGATIVE": 0, "POSITIVE": 1},
                                   label2id_from="the model's config.label2id")
    assert task.spec.label_names == ("NEGATIVE", "POSITIVE") and _labels(task)[0] == [1, 0, 1, 0]
    assert "ignoring case" in caplog.text
    observe(f"classes {task.spec.label_names}, labels {_labels(task)[0]}")


# ---------------------------------------------------------------- one set of rules: files vs the API
RULES = {  # label column -> what both readers must do: the classes, or the rule that refuses it
    "1 and 1.0": (["1", "0", "1.0", "0.0"], ("0", "1")),
    "stray 7": (["1", "0", "1", "7"], "head of 8 classes"),
    "1-based": (["1", "2", "3", "1"], "1-based"),
    "mixed": (["1", "0", "positive", "0"], "mix class names"),
    "case": (["positive", "negative", "Positive", "negative"], "differ only in case"),
    "fraction": (["1", "0", "0.5", "0"], "is not a class id"),
    "one class": (["pos", "pos", "pos", "pos"], "at least 2 classes"),
}


@pytest.mark.case(name="the same CSV read by the CLI (task=generic) and the API (data=path)", kind=2,
                  bad_input=False, expected="both give the same classes, or both refuse by the same rule, each "
                                            "naming its own setting (task.generic.* / label2id= / kind=)")
def test_files_and_api_apply_one_set_of_rules(tmp_path: Path, observe):
    from compresslab.data.tasks import load_task

    seen = {}
    for case, (labels, want) in RULES.items():
        path = tmp_path / f"{case.replace(' ', '_')}.csv"
        path.write_text("text,label\n" + "".join(f"text {i},{y}\n" for i, y in enumerate(labels)), encoding="utf-8")
        outcomes = []
        for read in (lambda: load_task("generic", generic={"train": str(path), "dev": str(path)}),
                     lambda: task_from_user_data(path, path, kind="classification")):
            try:
                outcomes.append(read().spec.label_names)
            except DataFormatError as e:
                outcomes.append(str(e))
        cli, api = outcomes
        if isinstance(want, tuple):
            assert cli == api == want, (case, cli, api)
        else:
            assert want in cli and want in api, (case, cli, api)
            assert "label2id" not in cli and "task.generic" not in api, (case, cli, api)
        seen[case] = "classes " + ", ".join(want) if isinstance(want, tuple) else f"both refuse: {want}"
    observe("; ".join(f"{k}: {v}" for k, v in seen.items()))


@pytest.mark.case(name="CLI: task.generic.labels=[World,Sports] names 0-based ids in the file", kind=2,
                  bad_input=False, expected="accepted as the API does with label2id: id 0 = 'World', id 1 = 'Sports'")
def test_cli_labels_name_ids(tmp_path: Path, observe):
    from compresslab.data.tasks import load_task

    path = tmp_path / "news.csv"
    path.write_text("text,label\nstocks fall,0\ngoal scored,1\nmarkets up,0\n", encoding="utf-8")
    data = load_task("generic", generic={"train": str(path), "dev": str(path), "labels": ["World", "Sports"]})
    assert data.spec.label_names == ("World", "Sports") and [e.label for e in data.dev] == [0, 1, 0]
    observe(f"classes {data.spec.label_names}, dev labels {[e.label for e in data.dev]}")


@pytest.mark.case(name="CLI: a class id outside task.generic.labels", kind=2,
                  expected="an error at file:line: id 2 is outside 0..1, naming task.generic.labels")
def test_cli_id_outside_declared(tmp_path: Path, expect_clear):
    from compresslab.data.tasks import load_task

    path = tmp_path / "news.csv"
    path.write_text("text,label\nstocks fall,0\ngoal scored,1\nrain,2\n", encoding="utf-8")
    expect_clear(lambda: load_task("generic", generic={"train": str(path), "dev": str(path),
                                                       "labels": ["World", "Sports"]}),
                 match=r"news\.csv:4: class id 2 is outside 0\.\.1: task\.generic\.labels names 2 classes")


@pytest.mark.case(name="CLI: file spelled 'POSITIVE'/'NEGATIVE', task.generic.labels=[negative,positive]", kind=2,
                  bad_input=False, expected="accepted: declared names match ignoring case (no two differ only in "
                                            "case), logged")
def test_cli_declared_names_ignoring_case(tmp_path: Path, observe, caplog):
    from compresslab.data.tasks import load_task

    path = tmp_path / "d.csv"
    path.write_text("text,label\ngood,POSITIVE\nbad,NEGATIVE\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="compresslab"):
        data = load_task("generic", generic={"train": str(path), "dev": str(path), "labels": ["negative", "positive"]})
    assert data.spec.label_names == ("negative", "positive") and [e.label for e in data.dev] == [1, 0]
    assert "ignoring case: 'POSITIVE' -> 'positive'" in caplog.text
    observe(f"classes {data.spec.label_names}, dev labels {[e.label for e in data.dev]}")


@pytest.mark.parametrize("bad", [None, "linear"], ids=["None", "nn.Linear"])
@pytest.mark.case(name="compress() given something that is not a Hugging Face model", kind=1,
                  expected="an error naming what model= accepts, not an AttributeError")
def test_compress_refuses_a_non_model(bad, tiny_tok, expect_clear):
    import torch

    import compresslab

    model = None if bad is None else torch.nn.Linear(2, 2)
    expect_clear(lambda: compresslab.compress(model, tiny_tok, ["ort_int8_dynamic"], data=[("a", "x"), ("b", "y")]),
                 match=r"model must be a Hugging Face sequence-classification model",
                 errors=(TypeError,))


@pytest.mark.case(name="API: a column name off by a letter", kind=2,
                  expected="an error listing the columns found with the CLI's did-you-mean (trial 47)")
@pytest.mark.parametrize("as_", ["records", "file", "dataset"])
def test_a_misspelled_column_gets_the_clis_did_you_mean(as_, tmp_path, expect_clear):
    data: object = RECORDS
    if as_ == "file":
        data = tmp_path / "d.csv"
        data.write_text("review,sentiment\n" + "".join(f"{r['review']},{r['sentiment']}\n" for r in RECORDS))
    elif as_ == "dataset":
        datasets = pytest.importorskip("datasets")
        data = datasets.Dataset.from_list(RECORDS)
    expect_clear(lambda: task_from_user_data(data, text_column="review", label_column="sentimnt"),
                 match=r"label column 'sentimnt' not found; columns found: \['review', 'sentiment'\] "
                       r"\('sentimnt': did you mean 'sentiment'\?\)")
    expect_clear(lambda: task_from_user_data(data, text_column="reveiw", label_column="sentiment"),
                 match=r"text column 'reveiw' not found.*\('reveiw': did you mean 'review'\?\)")
    # a later record lacking a key the first has: the key it has instead
    if as_ == "records":
        expect_clear(lambda: task_from_user_data([*RECORDS, {"review": "meh", "sentimnt": "negative"}],
                                                         text_column="review", label_column="sentiment"),
                     match=r"data\[4\]: no key\(s\) \['sentiment'\].*\('sentiment': did you mean 'sentimnt'\?\)")
