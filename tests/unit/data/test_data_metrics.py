"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compresslab.data.metrics import (
    agreement,
    compute_metrics,
    f1,
    matthews_corr,
    mcnemar_counts,
    mcnemar_pvalue,
    spearman,
)
from compresslab.data.tasks import TASKS, TaskKind, TaskSpec


def test_accuracy_from_ids_and_from_logits() -> None:
    labels = [1, 0, 1, 1]
    out = compute_metrics(TASKS["sst2"], [1, 0, 0, 1], labels)
    assert out == {"accuracy": 0.75, "score": 0.75}
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.3, 0.2], [0.0, 1.0]], requires_grad=True)
    assert compute_metrics(TASKS["rte"], logits, torch.tensor(labels))["accuracy"] == 0.75
    assert all(type(v) is float for v in out.values())


def test_matthews_on_a_known_confusion_matrix() -> None:
    # TP=6, FN=2, FP=1, TN=3 -> MCC = (6*3 - 1*2) / sqrt(7*8*4*5) = 16 / sqrt(1120)
    gold = np.array([1] * 8 + [0] * 4)
    pred = np.array([1] * 6 + [0] * 2 + [1] * 1 + [0] * 3)
    expected = 16 / math.sqrt(1120)
    assert matthews_corr(pred, gold) == pytest.approx(expected)
    out = compute_metrics(TASKS["cola"], pred, gold)
    assert out["matthews_corr"] == pytest.approx(expected) and out["score"] == out["matthews_corr"]
    assert out["accuracy"] == pytest.approx(9 / 12)
    assert matthews_corr(np.ones(5, dtype=int), np.array([1, 0, 1, 0, 1])) == 0.0  # constant predictor
    assert matthews_corr(gold, gold) == pytest.approx(1.0)
    assert matthews_corr(1 - gold, gold) == pytest.approx(-1.0)


def test_mrpc_f1_is_f1_of_the_positive_class() -> None:
    # Same matrix: F1 = 2*6 / (2*6 + 1 + 2) = 12/15
    gold = [1] * 8 + [0] * 4
    pred = [1] * 6 + [0] * 2 + [1] + [0] * 3
    out = compute_metrics(TASKS["mrpc"], pred, gold)
    assert out["f1"] == pytest.approx(0.8) and out["score"] == out["f1"]
    assert out["accuracy"] == pytest.approx(0.75)
    # Three classes -> macro F1: class 0: 2/3, class 1: 2/3, class 2: 0 -> 4/9
    assert f1(np.array([0, 1, 1, 0]), np.array([0, 1, 2, 2])) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_spearman_of_a_known_permutation_and_pearson() -> None:
    gold = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # Ranks [2,1,4,3,5]: sum d^2 = 4 -> rho = 1 - 6*4 / (5*24) = 0.8
    pred = np.array([20.0, 10.0, 40.0, 30.0, 50.0])
    assert spearman(pred, gold) == pytest.approx(0.8)
    out = compute_metrics(TASKS["stsb"], pred.reshape(-1, 1), gold)
    assert out["spearman"] == pytest.approx(0.8) and out["score"] == out["spearman"]
    assert out["pearson"] == pytest.approx(0.8)  # ranks are an affine map of the values here
    assert compute_metrics(TASKS["stsb_embedding"], 2 * gold + 1, gold)["pearson"] == pytest.approx(1.0)
    assert compute_metrics(TASKS["stsb"], np.ones(5), gold)["pearson"] == 0.0  # constant: undefined -> 0


def test_compute_metrics_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        compute_metrics(TASKS["sst2"], [1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="empty"):
        compute_metrics(TASKS["sst2"], [], [])
    with pytest.raises(ValueError, match="one score per example"):
        compute_metrics(TASKS["stsb"], np.zeros((3, 2)), np.zeros(3))


def test_generic_spec_metrics() -> None:
    spec = TaskSpec("g", TaskKind.CLASSIFICATION, 3, "f1", metrics=("accuracy",))
    out = compute_metrics(spec, [0, 1, 1, 0], [0, 1, 2, 2])
    assert set(out) == {"f1", "accuracy", "score"} and out["score"] == pytest.approx(4 / 9)


def test_mcnemar_on_a_known_table() -> None:
    # 20 both right, b = 1 only A right, c = 9 only B right, 5 both wrong.
    a = np.array([1] * 20 + [1] * 1 + [0] * 9 + [0] * 5, dtype=bool)
    b = np.array([1] * 20 + [0] * 1 + [1] * 9 + [0] * 5, dtype=bool)
    assert mcnemar_counts(a, b) == (1, 9)
    # Exact: 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11/1024
    assert mcnemar_pvalue(a, b) == pytest.approx(22 / 1024)
    assert mcnemar_pvalue(b, a) == pytest.approx(22 / 1024)
    assert mcnemar_pvalue(a, a) == 1.0
    assert mcnemar_pvalue([True, False], [False, True]) == 1.0  # b = c -> capped at 1
    with pytest.raises(ValueError, match="same length"):
        mcnemar_pvalue([True], [True, False])


def test_agreement() -> None:
    assert agreement([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert agreement(np.array([[0.2, 0.8], [0.9, 0.1]]), [1, 0]) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        agreement([1], [1, 0])
