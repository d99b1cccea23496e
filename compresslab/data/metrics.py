"""Task metrics and the paired statistics MEASURE.md asks for (agreement, McNemar).

Inputs may be lists, numpy arrays or torch tensors; outputs are plain Python floats so they go
straight into JSON. scipy is imported inside the functions that need it, to keep imports light.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compresslab.data.schema import TaskKind, TaskSpec


def _as_array(values: Any, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on GPU or requiring grad
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    return arr


def _class_ids(values: Any, what: str) -> np.ndarray:
    """Class ids from ids (N,) or logits / probabilities (N, C)."""
    arr = _as_array(values, what)
    if arr.ndim == 2:
        arr = arr.argmax(axis=-1)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be class ids (N,) or scores (N, C), got shape {arr.shape}")
    return arr.astype(np.int64)


def _scores(values: Any, what: str) -> np.ndarray:
    arr = _as_array(values, what).astype(np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one score per example (N,) or (N, 1), got shape {arr.shape}")
    return arr


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    """Fraction of examples predicted correctly."""
    return float(np.mean(pred == gold))


def f1(pred: np.ndarray, gold: np.ndarray, *, binary: bool | None = None) -> float:
    """F1 of class 1 for binary tasks (GLUE's MRPC convention), else macro F1.

    ``binary=None`` infers it from the ids seen (all in {0, 1}). Macro F1 averages over the
    classes present in gold or predictions; 0/0 counts as 0.
    """
    classes = np.union1d(pred, gold)
    if binary is None:
        binary = set(classes.tolist()) <= {0, 1}
    if binary:
        classes = np.array([1])
    per_class = []
    for c in classes:
        tp = np.sum((pred == c) & (gold == c))
        denom = np.sum(pred == c) + np.sum(gold == c)
        per_class.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(per_class))


def matthews_corr(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation (multi-class form); 0 when undefined (a constant predictor), as sklearn does."""
    classes = np.union1d(pred, gold)
    index = {c: i for i, c in enumerate(classes.tolist())}
    cm = np.zeros((len(classes), len(classes)), dtype=np.float64)  # (true, predicted)
    for g, p in zip(gold.tolist(), pred.tolist()):
        cm[index[g], index[p]] += 1
    t, p = cm.sum(axis=1), cm.sum(axis=0)
    s, c = cm.sum(), np.trace(cm)
    denom = np.sqrt((s * s - np.dot(p, p)) * (s * s - np.dot(t, t)))
    return float((c * s - np.dot(t, p)) / denom) if denom else 0.0


def pearson(pred: np.ndarray, gold: np.ndarray) -> float:
    """Pearson r; 0 when a side is constant (r is undefined there and scipy would warn)."""
    from scipy import stats

    if np.ptp(pred) == 0 or np.ptp(gold) == 0:
        return 0.0
    return float(stats.pearsonr(pred, gold)[0])


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    """Spearman rank correlation (ties get average ranks); 0 when a side is constant."""
    from scipy import stats

    if np.ptp(pred) == 0 or np.ptp(gold) == 0:
        return 0.0
    return float(stats.spearmanr(pred, gold)[0])


_METRIC_FNS = {"accuracy": accuracy, "f1": f1, "matthews_corr": matthews_corr,
               "pearson": pearson, "spearman": spearman}


def compute_metrics(spec: TaskSpec, predictions: Any, labels: Any) -> dict[str, float]:
    """Every metric of ``spec.metrics`` plus ``score`` (= the primary metric, ``spec.primary_metric``).

    Classification takes class ids or logits (argmax is applied); regression takes one score per
    example; embedding tasks take the similarity of each pair (e.g. cosine) against the gold score.
    """
    if spec.kind is TaskKind.CLASSIFICATION:
        pred, gold = _class_ids(predictions, "predictions"), _class_ids(labels, "labels")
    else:
        pred, gold = _scores(predictions, "predictions"), _scores(labels, "labels")
    if pred.shape != gold.shape:
        raise ValueError(f"predictions ({pred.shape[0]}) and labels ({gold.shape[0]}) differ in length")
    binary = spec.kind is TaskKind.CLASSIFICATION and spec.num_labels == 2
    out = {name: (f1(pred, gold, binary=binary) if name == "f1" else _METRIC_FNS[name](pred, gold))
           for name in spec.metrics}
    out["score"] = out[spec.primary_metric]
    return out


def agreement(pred_a: Any, pred_b: Any) -> float:
    """Fraction of examples where two models predict the same class (logits are argmaxed)."""
    a, b = _class_ids(pred_a, "pred_a"), _class_ids(pred_b, "pred_b")
    if a.shape != b.shape:
        raise ValueError(f"pred_a ({a.shape[0]}) and pred_b ({b.shape[0]}) differ in length")
    return float(np.mean(a == b))


def mcnemar_counts(correct_a: Any, correct_b: Any) -> tuple[int, int]:
    """The discordant pairs: (only A correct, only B correct)."""
    a, b = _as_array(correct_a, "correct_a").astype(bool), _as_array(correct_b, "correct_b").astype(bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"correct_a {a.shape} and correct_b {b.shape} must be 1-D and the same length")
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def mcnemar_pvalue(correct_a: Any, correct_b: Any) -> float:
    """Exact two-sided McNemar p-value for two models scored on the same examples.

    Only the discordant pairs carry information; under "equally good" each is a fair coin, so
    the test is a binomial test of min(b, c) out of b + c at p = 0.5. No discordant pairs -> 1.0.
    """
    from scipy import stats

    b, c = mcnemar_counts(correct_a, correct_b)
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue)
