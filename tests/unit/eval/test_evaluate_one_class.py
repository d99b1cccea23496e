"""evaluate() scores a model that already has its head: a slice of dev with one class (a filtered subset) or ids
with a gap is scored against the head's outputs, where compress() (which must learn a head from the labels)
refuses them; a label the head cannot output is still refused, naming the head."""

from __future__ import annotations

import pytest

import compresslab
from compresslab.data.schema import DataFormatError
from compresslab.models.tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def model_tok(tmp_path_factory):
    return tiny_model("bert"), tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("data", [[("good film", 1), ("bad film", 1)],          # one class: a filtered subset
                                  [("good film", 1)],
                                  [("good film", 0), ("bad film", 1)]])        # both: as before
def test_a_one_class_slice_is_scored(model_tok, data):
    model, tok = model_tok
    r = compresslab.evaluate(model, data, tok)
    assert r["n"] == len(data) and r["primary_metric"] == "accuracy"


@pytest.mark.parametrize("label", ["positive", 5])
def test_a_label_the_head_cannot_output_is_refused(model_tok, label):
    model, tok = model_tok
    with pytest.raises(DataFormatError, match=r"not in the model's head \(2 outputs\)"):
        compresslab.evaluate(model, [("x", label)], tok)


def test_named_classes_on_a_default_head_still_score(model_tok):
    model, tok = model_tok
    assert compresslab.evaluate(model, [("a", "negative"), ("b", "positive")], tok)["n"] == 2


@pytest.mark.parametrize("call", [lambda tok: compresslab.evaluate(5, [("a", 1)], tok),
                                  lambda tok: compresslab.benchmark({"a": 5}),
                                  lambda tok: compresslab.benchmark(5)])
def test_what_is_not_a_model_is_named_before_any_work(model_tok, call):
    with pytest.raises(TypeError, match="neither a model|takes a list"):
        call(model_tok[1])


def test_one_path_is_one_model_not_its_letters(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        compresslab.benchmark(str(tmp_path / "nope"))
    assert "nope" in str(e.value)
