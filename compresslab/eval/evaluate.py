"""Score a model on a task split: the torch model or the exported ONNX file, same metrics.

Outputs are plain dicts; predictions are kept so agreement with the teacher and McNemar tests
can be computed on the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from compresslab.data.loaders import make_loader
from compresslab.data.metrics import agreement, compute_metrics, mcnemar_pvalue
from compresslab.data.tasks import Example, TaskKind, TaskSpec
from compresslab.failure import raise_if_interrupted
from compresslab.training.losses import MODEL_INPUTS


@dataclass
class Scored:
    """Metrics plus the raw predictions they came from (class ids, regression values or similarities)."""

    metrics: dict[str, float]
    predictions: np.ndarray
    labels: np.ndarray


Forward = Callable[[dict[str, torch.Tensor]], np.ndarray]


def torch_forward(model: nn.Module, device: torch.device | str = "cpu") -> Forward:
    """Batch -> first output (logits, or last hidden state for bare encoders) as numpy."""

    def run(batch: dict[str, torch.Tensor]) -> np.ndarray:
        raise_if_interrupted()  # a validation check runs inside a training step: stop between batches
        inputs = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}
        with torch.inference_mode():
            out = model(**inputs)
        first = out.logits if hasattr(out, "logits") else out.last_hidden_state
        return first.float().cpu().numpy()

    return run


def onnx_forward(runner: Any) -> Forward:
    """Wrap an :class:`~compresslab.eval.onnx_runner.OnnxRunner` as a Forward."""

    def run(batch: dict[str, torch.Tensor]) -> np.ndarray:
        raise_if_interrupted()
        return np.asarray(runner.run({k: v.numpy() for k, v in batch.items() if k != "labels"}))

    return run


def _pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(hidden.dtype)
    return (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)


def _embed(forward: Forward, examples: Sequence[Example], side: str, tokenizer: Any, batch_size: int,
           max_length: int) -> np.ndarray:
    texts = [Example(getattr(e, side), None, e.label) for e in examples]
    loader = make_loader(texts, tokenizer, batch_size, max_length, shuffle=False)
    return np.concatenate([_pool(forward(b), b["attention_mask"].numpy()) for b in loader])


def predict(forward: Forward, spec: TaskSpec, examples: Sequence[Example], tokenizer: Any, *,
            batch_size: int = 64, max_length: int = 128) -> Scored:
    """Run ``forward`` over ``examples`` and score the predictions with the task's metrics."""
    labels = np.array([e.label for e in examples])
    if spec.kind == TaskKind.EMBEDDING:
        a = _embed(forward, examples, "text_a", tokenizer, batch_size, max_length)
        b = _embed(forward, examples, "text_b", tokenizer, batch_size, max_length)
        preds = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    else:
        loader = make_loader(list(examples), tokenizer, batch_size, max_length, shuffle=False)
        out = np.concatenate([forward(b) for b in loader])
        preds = out[:, 0] if spec.kind == TaskKind.REGRESSION else out.argmax(-1)
    return Scored(compute_metrics(spec, preds, labels), preds, labels)


def majority_share(scored: Scored) -> float:
    """The share of the most frequent class among the gold labels: what always predicting that class scores in
    accuracy, the floor a classifier must beat to be better than chance."""
    _, counts = np.unique(scored.labels, return_counts=True)
    return float(counts.max() / counts.sum()) if counts.size else 0.0


def compare(scored: Scored, reference: Scored | None, spec: TaskSpec) -> dict[str, float]:
    """Metrics plus agreement with (and McNemar p-value against) a reference such as the teacher; for a classifier
    also ``predicted_classes``, how many classes it predicts at all (1: a constant model)."""
    out = dict(scored.metrics)
    if spec.kind == TaskKind.CLASSIFICATION:
        out["predicted_classes"] = int(np.unique(scored.predictions).size)
    if reference is None:
        return out
    if spec.kind == TaskKind.CLASSIFICATION:
        out["agreement"] = agreement(scored.predictions, reference.predictions)
        out["mcnemar_p"] = mcnemar_pvalue(scored.predictions == scored.labels,
                                          reference.predictions == reference.labels)
    else:  # continuous outputs: how closely the predictions track the reference
        out["agreement_pearson"] = float(np.corrcoef(scored.predictions, reference.predictions)[0, 1])
    return out
