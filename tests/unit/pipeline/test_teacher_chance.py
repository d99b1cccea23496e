"""A teacher no better than chance is said when it is made, and the eval record carries what the report needs to say
it again (new-user trial, session 47, finding 3: smoke teachers at 35.94% on 3 classes, a constant prediction, and an
API teacher always predicting 'praise', all compared as "+0.00 pt ... within the tolerance").

``eval.majority_share`` (the share of the eval split's most frequent class) and ``predicted_classes`` per model are
recorded for classifiers; the first scoring of the teacher logs a warning through report/verdicts.weak_teacher.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from compresslab.data.tasks import TaskKind, TaskSpec
from compresslab.eval.evaluate import Scored, compare, majority_share
from compresslab.pipeline.evaluate import teacher_scored
from compresslab.testing import tiny_sentiment

CLS = TaskSpec("t", TaskKind.CLASSIFICATION, 2, "accuracy")
REG = TaskSpec("r", TaskKind.REGRESSION, 1, "spearman", metrics=("spearman",))


class _Fixed(nn.Module):
    """A classifier whose logits favour ``cls`` for every input (a constant model), or the gold label when given."""

    def __init__(self, cls: int | None = None, gold: list[int] | None = None) -> None:
        super().__init__()
        self.cls, self.gold, self.seen = cls, gold, 0

    def forward(self, input_ids: torch.Tensor, **_: object) -> SimpleNamespace:
        n = input_ids.shape[0]
        labels = [self.cls] * n if self.cls is not None else self.gold[self.seen:self.seen + n]
        self.seen += n
        return SimpleNamespace(logits=nn.functional.one_hot(torch.tensor(labels), 2).float())


def _state(model: nn.Module, examples: list, tok: object, **origin: bool) -> SimpleNamespace:
    origin = {"input_is_teacher": False, "api": False, "teacher_as_given": False, **origin}  # RunState's fields
    return SimpleNamespace(settings=SimpleNamespace(eval=SimpleNamespace(batch_size=8, split="dev"), max_length=32),
                           task=SimpleNamespace(spec=CLS), eval_examples=examples, tokenizer=tok, scores={},
                           teacher_or_initial=lambda: model, **origin)


def test_a_constant_teacher_is_logged_when_it_is_first_scored(tiny_tok, caplog) -> None:
    examples = tiny_sentiment(16, seed=3)
    majority = int(np.bincount([e.label for e in examples]).argmax())
    state = _state(_Fixed(cls=majority), examples, tiny_tok)
    with caplog.at_level(logging.WARNING, logger="compresslab.pipeline.evaluate"):
        teacher_scored(state)
        teacher_scored(state)  # computed once, said once
    warnings = [r.getMessage() for r in caplog.records if "no better than chance" in r.getMessage()]
    assert len(warnings) == 1
    assert "teacher: no better than chance on the 16 eval examples: it predicts the same class for every example; " \
           "its accuracy" in warnings[0]
    assert "budget=quick or budget=bench" in warnings[0]


def _near_majority(examples: list) -> list[int]:
    """Predictions right on the majority class and on one example of the other: just above the majority share."""
    gold = [e.label for e in examples]
    majority = int(np.bincount(gold).argmax())
    preds, fixed = [], False
    for g in gold:
        preds.append(g if g == majority or not fixed else majority)
        fixed = fixed or g != majority
    return preds


def test_a_teacher_within_two_standard_errors_of_the_majority_share_is_logged(tiny_tok, caplog) -> None:
    # trial 47b: SST-2 smoke teachers at 51.56% on 64 examples of a 50% share (one standard error: 6.25 pt)
    examples = tiny_sentiment(64, seed=3)
    state = _state(_Fixed(gold=_near_majority(examples)), examples, tiny_tok)
    with caplog.at_level(logging.WARNING, logger="compresslab.pipeline.evaluate"):
        acc = teacher_scored(state).metrics["accuracy"]
    share = majority_share(state.scores["teacher_torch"])
    assert share < acc < share + 0.1
    assert "is not distinguishable from the share of the most frequent class" in caplog.text
    assert "2 binomial standard errors of" in caplog.text and "on 64 examples" in caplog.text


@pytest.mark.parametrize("origin, said, unsaid", [
    ({"api": True}, "the finetune pass's settings", "budget="),
    ({"api": True, "teacher_as_given": True}, "put 'finetune' first in passes", "model.finetuned"),
    ({"input_is_teacher": True}, "(model.finetuned=true) is used as it is", "'finetune' first in passes"),
])
def test_the_logged_advice_is_the_reports_in_the_entry_points_terms(tiny_tok, caplog, origin, said, unsaid) -> None:
    from compresslab.report.verdicts import teacher_fix

    examples = tiny_sentiment(16, seed=3)
    state = _state(_Fixed(cls=0), examples, tiny_tok, **origin)
    with caplog.at_level(logging.WARNING, logger="compresslab.pipeline.evaluate"):
        teacher_scored(state)
    assert said in caplog.text and unsaid not in caplog.text
    assert teacher_fix(given=state.input_is_teacher or state.teacher_as_given, api=state.api) in caplog.text


def test_a_deployed_model_predicting_one_class_is_logged(caplog) -> None:
    from compresslab.pipeline.evaluate import _warn_if_one_class

    with caplog.at_level(logging.WARNING, logger="compresslab.pipeline.evaluate"):
        _warn_if_one_class({"teacher_torch": {"predicted_classes": 2}, "deployed": {"predicted_classes": 1,
                                                                                    "accuracy": 0.5}}, 0.5, 64)
        assert "the deployed model predicts the same class for every one of the 64 eval examples" in caplog.text
        caplog.clear()
        _warn_if_one_class({"teacher_torch": {"predicted_classes": 1}, "deployed": {"predicted_classes": 1}}, 0.5, 64)
        _warn_if_one_class({"teacher_torch": {"predicted_classes": 2}, "deployed": {"predicted_classes": 2}}, 0.5, 64)
        _warn_if_one_class({"deployed": {"predicted_classes": 1}}, 1.0, 64)  # one class in the split: right
    assert not caplog.text


def test_a_teacher_that_beats_the_majority_class_is_not_logged(tiny_tok, caplog) -> None:
    examples = tiny_sentiment(16, seed=3)
    state = _state(_Fixed(gold=[e.label for e in examples]), examples, tiny_tok)
    with caplog.at_level(logging.WARNING, logger="compresslab.pipeline.evaluate"):
        assert teacher_scored(state).metrics["accuracy"] == 1.0
    assert "no better than chance" not in caplog.text


def test_the_eval_record_carries_predicted_classes_and_the_majority_share() -> None:
    labels = np.array([0, 0, 0, 1])
    constant = Scored({"accuracy": 0.75, "score": 0.75}, np.array([0, 0, 0, 0]), labels)
    assert majority_share(constant) == 0.75
    assert compare(constant, None, CLS)["predicted_classes"] == 1
    assert compare(constant, constant, CLS)["predicted_classes"] == 1
    reg = Scored({"spearman": 0.2, "score": 0.2}, np.array([0.1, 0.4, 0.3]), np.array([1.0, 2.0, 3.0]))
    assert "predicted_classes" not in compare(reg, reg, REG)
