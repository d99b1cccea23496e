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


def _state(model: nn.Module, examples: list, tok: object) -> SimpleNamespace:
    return SimpleNamespace(settings=SimpleNamespace(eval=SimpleNamespace(batch_size=8, split="dev"), max_length=32),
                           task=SimpleNamespace(spec=CLS), eval_examples=examples, tokenizer=tok, scores={},
                           teacher_or_initial=lambda: model)


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
    assert "train a better teacher first" in warnings[0]


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
