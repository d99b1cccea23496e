"""What a model's head says about the task: its last Linear, the task kind, its label names.

The in-process API reads these before any work to check the user's data against the model.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from compresslab.models.loading import TASK_KEY


def head_linear(model: nn.Module) -> nn.Module | None:
    """The last Linear of the sequence-classification head, or None for a bare encoder."""
    head = getattr(model, "classifier", None)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if head is not None else []
    return linears[-1] if linears else None


def task_kind_of(model: nn.Module) -> str | None:
    """The task kind the model implies: embedding for a bare encoder, regression for a 1-output
    regression head, None (the labels decide) for a classifier."""
    if model.config.__dict__.get(TASK_KEY) == "embedding":
        return "embedding"
    if head_linear(model) is None:
        raise ValueError(f"{type(model).__name__} has no sequence-classification head: load the model with "
                         "AutoModelForSequenceClassification (num_labels=<classes>), or pass kind='embedding' "
                         "for sentence-pair similarity data")
    if getattr(model.config, "problem_type", None) == "regression" or int(model.config.num_labels) == 1:
        return "regression"
    return None


def config_label2id(config: Any) -> dict[str, int] | None:
    """The head's label names when they are real names (not transformers' LABEL_0 defaults)."""
    l2i = dict(getattr(config, "label2id", None) or {}) if config is not None else {}
    if not l2i or all(str(k).upper() == f"LABEL_{v}" for k, v in l2i.items()):
        return None
    return {str(k): int(v) for k, v in l2i.items()}


def set_class_names(config: Any, names: Sequence[str]) -> None:
    """Write class names (in id order) into ``config.id2label`` / ``config.label2id``.

    Every ``config.json`` saved from the model (steps, export dirs, the deployed dir) then carries
    them, so tools that read only the directory (transformers pipelines, optimum's
    ``ORTModelForSequenceClassification``) print ``positive`` instead of ``LABEL_1``. Does nothing
    when ``names`` does not name every output of the head (regression, embeddings).
    """
    names = [str(n) for n in names]
    if not names or len(names) != int(getattr(config, "num_labels", -1)):
        return
    config.id2label = dict(enumerate(names))
    config.label2id = {n: i for i, n in enumerate(names)}


def head_is_untrained(model: nn.Module) -> bool:
    """A freshly initialised classification head: transformers zeroes its bias, and any training step
    moves it. False for a bare encoder (no head) or a head without a bias."""
    lin = head_linear(model)
    return lin is not None and lin.bias is not None and not bool(lin.bias.detach().abs().sum())


__all__ = ["config_label2id", "head_is_untrained", "head_linear", "set_class_names", "task_kind_of"]
