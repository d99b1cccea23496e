"""The model's head in ``compress()`` follows the CLI's rules (trial 47, findings 5 and 7).

With ``"finetune"`` first, a head of another size or kind than the data's is replaced by a fresh seeded one with
the CLI's log line (``model.source`` without ``model.finetuned=true``); the caller's model keeps its head unless
``inplace=True``. Without it the head must fit, and the refusal names calls that work (transformers 5 loads a head of
another size only with ``ignore_mismatched_sizes=True``). A trained head without class names (``LABEL_<i>``) is
used as data class i = head id i, with a warning, in the API and the CLI alike.
"""

from __future__ import annotations

import logging

import pytest
import torch

import compresslab
from compresslab.models.tiny import tiny_model
from compresslab.registry import available_passes, get_pass
from compresslab.testing import api_kw, tiny_sentiment, trained_tiny

THREE = ["complaint", "praise", "question"]
FT = {"name": "finetune", "steps": 1, "batch_size": 8}


def _three(n: int = 48, seed: int = 0) -> list[tuple[str, str]]:
    return [(e.text_a, THREE[i % 3]) for i, e in enumerate(tiny_sentiment(n, seed))]


def _scores(n: int = 48) -> list[tuple[str, float]]:
    return [(e.text_a, 0.25 + 0.5 * e.label + 0.01 * i) for i, e in enumerate(tiny_sentiment(n, 0))]


def _head_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "a fresh" in r.getMessage() and "replaces it" in r.getMessage()]


@pytest.fixture
def no_step_runs(monkeypatch):
    for name in available_passes():
        monkeypatch.setattr(get_pass(name), "apply", lambda *a, **k: pytest.fail("a step ran before the check"))


# --- finding 5: "finetune" first replaces a head of another size or kind, as the CLI does -------------------------

@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_finetune_first_replaces_a_head_of_another_size_with_a_seeded_one(arch, tiny_tok, caplog):
    model = tiny_model(arch, num_labels=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="compresslab"):
        r = compresslab.compress(model, tiny_tok, [FT, "ort_int8_dynamic"], data=_three(), eval_data=_three(12, 1),
                                 **api_kw())
    assert r.model.config.num_labels == 3 and r.model.num_labels == 3
    assert r.model(**tiny_tok(["a good film"], return_tensors="pt")).logits.shape == (1, 3)
    assert r.model.config.id2label == dict(enumerate(THREE))
    assert r.metrics["eval"]["models"]["deployed"]["score"] is not None
    lines = _head_lines(caplog)
    assert len(lines) == 1 and "2-label" in lines[0] and "3-label" in lines[0] and "compress()" in lines[0], lines
    # the caller's model is not changed: its head, its config
    assert model.config.num_labels == 2 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    r.close()


def test_the_fresh_head_is_seeded_and_inplace_replaces_the_callers_head(tiny_tok, monkeypatch):
    import compresslab.api_heads as api_heads

    heads = []
    fit = api_heads.fit_fresh_head

    def recording(work, task, seed):
        fit(work, task, seed)
        heads.append({k: v.clone() for k, v in work.classifier.state_dict().items()})

    monkeypatch.setattr(api_heads, "fit_fresh_head", recording)
    model = tiny_model("bert", num_labels=2)
    for _ in range(2):
        compresslab.compress(model, tiny_tok, [FT], data=_three(), **api_kw()).close()
    assert len(heads) == 2 and all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])  # seeded: one head
    r = compresslab.compress(model, tiny_tok, [FT], data=_three(), inplace=True, **api_kw())
    assert r.model is model and model.classifier.out_features == 3 and model.config.num_labels == 3


@pytest.mark.parametrize("labels, data, kind, want", [(2, _scores, None, 1), (1, _three, "classification", 3)],
                         ids=["class-head-on-scores", "regression-head-on-classes"])
def test_finetune_first_replaces_a_head_of_another_kind(labels, data, kind, want, tiny_tok):
    r = compresslab.compress(tiny_model("bert", num_labels=labels), tiny_tok, [FT], data=data(), kind=kind, **api_kw())
    assert r.model.config.num_labels == want == r.model.classifier.out_features
    assert (r.model.config.problem_type == "regression") == (want == 1)
    r.close()


def test_a_head_that_fits_is_kept_with_finetune_first(tiny_tok, monkeypatch):
    import compresslab.api_heads as api_heads

    monkeypatch.setattr(api_heads, "fit_fresh_head", lambda *a: pytest.fail("a head of the task's size was replaced"))
    compresslab.compress(tiny_model("bert", num_labels=3), tiny_tok, [FT], data=_three(), **api_kw()).close()


def _named(names: list[str]) -> torch.nn.Module:
    m = trained_tiny(num_labels=len(names))
    m.config.id2label, m.config.label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    return m


def test_finetune_first_replaces_a_named_head_of_another_size_whose_names_the_data_lacks(tiny_tok, caplog):
    """A head of another size does not bind the data: its names ('similar', 'unrelated') are not read into it."""
    with caplog.at_level(logging.INFO, logger="compresslab"):
        r = compresslab.compress(_named(["similar", "unrelated"]), tiny_tok, [FT], data=_three(), **api_kw())
    assert r.model.config.id2label == dict(enumerate(THREE)) and r.model.classifier.out_features == 3
    assert len(_head_lines(caplog)) == 1
    r.close()


@pytest.mark.parametrize("names, passes", [(["similar", "unrelated"], ["ort_int8_dynamic"]),
                                           (["complaint", "praise", "other"], [FT])],
                         ids=["no-finetune", "head-of-the-task-size"])
def test_a_head_whose_names_the_data_lacks_still_refuses_when_it_is_kept(names, passes, tiny_tok, no_step_runs):
    """Without "finetune", or with a head of the data's size (kept, fine-tuned from where it is), its names bind the
    data: a label it lacks is refused as before (a typo, or names to map with label2id=)."""
    from compresslab.data.schema import DataFormatError

    with pytest.raises(DataFormatError, match=r"not in the model's config\.label2id.*label2id="):
        compresslab.compress(_named(names), tiny_tok, passes, data=_three(), **api_kw())


# --- finding 5: without "finetune" first the head must fit, and the message names calls that work ------------------

@pytest.mark.parametrize("passes", [["ort_int8_dynamic"], [{"name": "magnitude", "sparsity": 0.5}]])
def test_a_head_of_another_size_without_finetune_first_names_the_working_fixes(passes, tiny_tok, tmp_path,
                                                                               no_step_runs):
    with pytest.raises(ValueError, match=r"has 3 classes .* num_labels=2.*put 'finetune' first in passes: a fresh "
                                         r"3-label classification head .*compresslab\.load_pretrained\(DIR, "
                                         r"num_labels=3\).*from_pretrained\(DIR, num_labels=3, "
                                         r"ignore_mismatched_sizes=True\)"):
        compresslab.compress(trained_tiny(), tiny_tok, passes, data=_three(), output_dir=tmp_path / "r", **api_kw())
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("have, want", [(2, 3), (2, 1), (1, 3)], ids=["size", "to-regression", "to-classes"])
def test_the_calls_the_message_names_do_load_the_head(have, want, tiny_tok, tmp_path):
    """The fix the message gives must work: transformers 5 refuses num_labels= alone for a head of another size."""
    from transformers import AutoModelForSequenceClassification

    from compresslab.data.checks import head_reload_fix

    src = tmp_path / "m"
    tiny_model("bert", num_labels=have).save_pretrained(src)
    tiny_tok.save_pretrained(src)
    fix = head_reload_fix(want)
    ours, transformers_call = fix.removeprefix("model, tokenizer = ").split(", or ")
    namespace = {"compresslab": compresslab, "AutoModelForSequenceClassification": AutoModelForSequenceClassification,
                 "DIR": str(src)}
    for call in (ours, transformers_call):
        loaded = eval(call, namespace)  # noqa: S307 - the message's own text, run as the user would
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        assert model.config.num_labels == want == model.classifier.out_features, call
        assert (model.config.problem_type == "regression") == (want == 1), call


def test_a_teacher_of_another_size_is_told_to_be_one_fine_tuned_on_the_classes(tiny_tok, no_step_runs):
    with pytest.raises(ValueError, match=r"teacher: .*num_labels=2, problem_type=None; pass a teacher fine-tuned on "
                                         r"these classes, or teacher=None with 'finetune' first in passes"):
        compresslab.compress(trained_tiny(num_labels=3), tiny_tok, [{"name": "magnitude", "sparsity": 0.5}],
                             data=_three(), teacher=trained_tiny(), **api_kw())


# --- finding 7: a head without class names is used as data class i = head id i, said once --------------------------

def _order_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "no class names" in r.getMessage()]


@pytest.mark.parametrize("case, named, data, passes, warned", [
    ("unnamed head as the teacher", False, _three, ["ort_int8_dynamic"], True),
    ("named head", True, _three, ["ort_int8_dynamic"], False),
    ("integer labels", False, lambda: [(t, THREE.index(y)) for t, y in _three()], ["ort_int8_dynamic"], False),
    ("finetune first trains the head", False, _three, [FT], False),
])
def test_an_unnamed_head_kept_as_trained_says_which_class_is_which_id(case, named, data, passes, warned, tiny_tok,
                                                                       caplog, no_step_runs):
    model = trained_tiny(num_labels=3)
    if named:
        model.config.id2label = dict(enumerate(THREE))
        model.config.label2id = {n: i for i, n in enumerate(THREE)}
    with caplog.at_level(logging.INFO, logger="compresslab"), pytest.raises(pytest.fail.Exception):
        compresslab.compress(model, tiny_tok, passes, data=data(), eval_data=data()[:6], **api_kw())  # stops at a step
    lines = _order_warnings(caplog)
    if warned:
        assert len(lines) == 1 and "the model" in lines[0], lines
        assert "0='complaint', 1='praise', 2='question'" in lines[0] and "label2id=" in lines[0]
    else:
        assert not lines, (case, lines)


def test_an_unnamed_teacher_says_which_class_is_which_id(tiny_tok, caplog, no_step_runs):
    with caplog.at_level(logging.INFO, logger="compresslab"), pytest.raises(pytest.fail.Exception):
        compresslab.compress(trained_tiny(num_labels=3), tiny_tok, [{"name": "magnitude", "sparsity": 0.5}],
                             data=_three(), label2id={n: i for i, n in enumerate(THREE)},
                             teacher=trained_tiny(num_labels=3), **api_kw())
    # the teacher's ids are what the student learns (the model's own head is distilled towards them)
    assert [line.split(":")[0] for line in _order_warnings(caplog)] == ["teacher="]


def test_evaluate_says_which_class_is_which_id_of_an_unnamed_head(tiny_tok, caplog):
    with caplog.at_level(logging.INFO, logger="compresslab"):
        compresslab.evaluate(trained_tiny(num_labels=3), _three(12), tiny_tok, max_length=32)
        compresslab.evaluate(trained_tiny(num_labels=3), [(t, THREE.index(y)) for t, y in _three(12)], tiny_tok,
                             max_length=32)  # integer ids: nothing assumed
    lines = _order_warnings(caplog)
    assert len(lines) == 1 and lines[0].startswith("evaluate(): the model") and "1='praise'" in lines[0], lines
    assert "saved config.json" not in lines[0]  # evaluate() saves nothing (trial 47b B8)


def test_label2id_names_the_unnamed_heads_ids_so_nothing_is_said(tiny_tok, caplog, no_step_runs):
    # trial 47b B8: evaluate(..., label2id={'praise': 0, ...}) on a LABEL_0..2 head still told the user to pass it
    order = {n: i for i, n in enumerate(THREE)}
    with caplog.at_level(logging.INFO, logger="compresslab"):
        compresslab.evaluate(trained_tiny(num_labels=3), _three(12), tiny_tok, max_length=32, label2id=order)
    with caplog.at_level(logging.INFO, logger="compresslab"), pytest.raises(pytest.fail.Exception):
        compresslab.compress(trained_tiny(num_labels=3), tiny_tok, ["ort_int8_dynamic"], data=_three(),
                             eval_data=_three()[:6], label2id=order, **api_kw())  # the model's head, kept
    assert not _order_warnings(caplog)
