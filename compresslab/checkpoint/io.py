"""Save and reload compresslab checkpoints: plain Hugging Face directories that rebuild themselves.

A checkpoint is config.json + model.safetensors + tokenizer files. When a pass changed shapes,
``config.json`` carries ``compresslab_structure`` (per-layer heads and FFN widths) so :func:`load`
rebuilds the exact module shapes before loading the weights, and ``compresslab_quant`` names the
n-bit ``FakeQuantLinear`` modules (bits, group shape) rebuilt frozen before their buffers load, and
``compresslab_binary`` the frozen BiBERT modules (``BinaryLinear`` / ``BinaryEmbedding``) and the
attention mode, rebuilt with Bi-Attention as the attention function; a directory that holds only a
compressed encoding (e.g. ``model.sparse.safetensors``) is decoded through its format.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compresslab.checkpoint.formats import FORMATS, write_formats
from compresslab.checkpoint.packed_binary import stamp_binary
from compresslab.models.adapters import check_supported
from compresslab.models.binary import BINARY_KEY, apply_binary
from compresslab.models.loading import TASK_KEY, CheckpointError, auto_class, read_config
from compresslab.models.structure import STRUCTURE_KEY, apply_structure, stamp_structure
from compresslab.models.quantized import QUANT_KEY, apply_quant, stamp_quant

DENSE_FILE = "model.safetensors"


def _move_files_into(tmp: Path, final: Path) -> None:
    """Move every file of ``tmp`` into ``final`` with ``os.replace`` (each file atomic), keeping
    files a pass wrote there itself (e.g. a sparse copy); the step is marked done only afterwards."""
    final.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        os.replace(f, final / f.name)
    tmp.rmdir()


def save(model: nn.Module, out_dir: str | os.PathLike, tokenizer: Any = None, formats: list[str] = ()) -> Path:
    """Save a model (and tokenizer) as safetensors + config, atomically, rebuildable by :func:`load`.

    ``formats`` names extra encodings to write beside the dense file (``checkpoint.FORMATS``, e.g.
    ``["sparse_int8"]``); ValueError for an unknown name, and for a model that cannot be saved as it
    runs (fake-quant or binary modules still dynamic: freeze them first). Returns ``out_dir``.
    """
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        stamp_structure(model)
        stamp_quant(model)
        stamp_binary(model)
        # safe_serialization would refuse tied/shared tensors only; none in encoders
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_formats(model, tmp, list(formats))
        _move_files_into(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _check_shapes(model: nn.Module, state: dict[str, torch.Tensor], weights: Path) -> None:
    """CheckpointError naming the tensors whose shapes in the file differ from the model built from config.json."""
    have = model.state_dict()
    bad = [f"{k}: {tuple(v.shape)} in the file, {tuple(have[k].shape)} in the model"
           for k, v in state.items() if k in have and tuple(v.shape) != tuple(have[k].shape)]
    if bad:
        raise CheckpointError(f"{weights} does not match its config.json (edited, or from another model?): "
                              f"{len(bad)} tensor(s) differ in shape, e.g. {bad[:3]}")


def load(path: str | os.PathLike, *, attn_implementation: str = "sdpa") -> nn.Module:
    """Load any checkpoint compresslab saved, including shrunk ones plain ``from_pretrained`` rejects.

    ``attn_implementation`` applies to full-precision attention; a binarized (BiBERT) model always
    runs its Bi-Attention function (``models.binary.BI_ATTENTION``), as it was saved."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    path = Path(path)
    raw = read_config(path)
    check_supported(str(raw.get("model_type", "?")))
    weights, reader = path / DENSE_FILE, lambda p: load_file(str(p))
    if not weights.is_file():  # a checkpoint kept only in a compressed encoding (e.g. bitmask + int8)
        for fmt in FORMATS.values():
            if (path / fmt.file).is_file():
                weights, reader = path / fmt.file, fmt.read_state
                break
        else:
            raise CheckpointError(f"no {DENSE_FILE} (or {', '.join(f.file for f in FORMATS.values())}) in {path}")
    try:
        state = reader(weights)
    except Exception as e:  # safetensors raises its own error types for truncated headers/data
        raise CheckpointError(f"cannot read {weights} (truncated or corrupt?): {e}") from e
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    config._attn_implementation = attn_implementation
    kind = raw.get(TASK_KEY, "classification")
    model = auto_class(kind).from_config(config)
    try:
        if raw.get(STRUCTURE_KEY):
            apply_structure(model, raw[STRUCTURE_KEY])
        if raw.get(QUANT_KEY):
            apply_quant(model, raw[QUANT_KEY])
        if raw.get(BINARY_KEY):
            apply_binary(model, raw[BINARY_KEY])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path / 'config.json'} does not fit the model it builds: {e}") from e
    _check_shapes(model, state, weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # position_ids buffers and tied weights may be absent from the file; anything else is an error
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match its config.json (its layers or compresslab_* "
                              f"stamps edited, or from another model?): missing={missing[:5]} unexpected={unexpected[:5]}")
    return model.eval()


