"""Save and reload compresslab checkpoints: plain Hugging Face directories that rebuild themselves.

A checkpoint is config.json + model.safetensors + tokenizer files. When a pass changed shapes,
``config.json`` carries ``compresslab_structure`` (per-layer heads and FFN widths) so :func:`load`
rebuilds the exact module shapes before loading the weights, and ``compresslab_quant`` names the
n-bit ``FakeQuantLinear`` modules (bits, group shape) rebuilt frozen before their buffers load,
``compresslab_qdq`` the int8 QDQ ``QDQLinear`` modules (int8 QAT) rebuilt frozen likewise, and
``compresslab_binary`` the frozen BiBERT modules (``BinaryLinear`` / ``BinaryEmbedding``) and the
attention mode, rebuilt with Bi-Attention as the attention function; a directory that holds only a
compressed encoding (e.g. ``model.sparse.safetensors``) is decoded through its format.

The same :func:`load` reads any model given as input (:func:`load_pretrained` is the CLI's
``model.source``): plain Hugging Face directories through ``from_pretrained``, and transformers-4
``pruned_heads`` checkpoints rebuilt like compresslab's own shrunk ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compresslab.checkpoint.formats import FORMATS, check_stamps, write_formats
from compresslab.checkpoint.packed_binary import stamp_binary
from compresslab.models.adapters import check_supported
from compresslab.models.binary import BINARY_KEY, apply_binary
from compresslab.models.loading import (
    EMBEDDED, TASK_KEY, CheckpointError, auto_class, check_source_files, check_tokenizer_fits, find_weights, fit_head,
    load_hf, load_tokenizer, read_config, read_state, resolve_source, save_tokenizer, saved_kind)
from compresslab.models.quiet import no_progress_bars
from compresslab.models.structure import STRUCTURE_KEY, apply_structure, stamp_structure
from compresslab.models.quantized import QUANT_KEY, apply_quant, stamp_quant
from compresslab.models.qdq import QDQ_KEY, apply_qdq, stamp_qdq
from compresslab.manifest import publish_mode
from compresslab.validate import check_writable

DENSE_FILE = "model.safetensors"
FORMAT_FILES = tuple(f.file for f in FORMATS.values())  # compressed encodings that also hold a model's weights


def _move_files_into(tmp: Path, final: Path) -> None:
    """Move every file of ``tmp`` into ``final`` with ``os.replace`` (each file atomic), keeping
    files a pass wrote there itself (e.g. a sparse copy); the step is marked done only afterwards. Each file gets
    the umask's mode first: safetensors writes 0600."""
    final.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        publish_mode(f)
        os.replace(f, final / f.name)
    tmp.rmdir()


def save(model: nn.Module, out_dir: str | os.PathLike, tokenizer: Any = None, formats: list[str] = ()) -> Path:
    """Save a model (and tokenizer) as safetensors + config, atomically, rebuildable by :func:`load`.

    ``formats`` names extra encodings to write beside the dense file (``checkpoint.FORMATS``, e.g.
    ``["sparse_int8"]``); ValueError for an unknown name, and for a model that cannot be saved as it
    runs (fake-quant or binary modules still dynamic: freeze them first). SettingsError (a
    ValueError) naming ``out_dir`` before any work when it cannot be written: read-only, no
    permission, a file in the way. Returns ``out_dir``.
    """
    final = Path(out_dir)
    # written beside out_dir, then moved in: the parent must be writable, and out_dir when it exists
    # (a read-only dir, or a file of that name, would fail only after the weights were written)
    check_writable(final.parent, "out_dir", final)
    if final.exists():
        check_writable(final, "out_dir")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        stamp_structure(model)
        stamp_quant(model)
        stamp_qdq(model)
        stamp_binary(model)
        # safe_serialization would refuse tied/shared tensors only; none in encoders
        with no_progress_bars():  # transformers 5 draws a "Writing model shards" bar per save
            model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp)
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


def pruned_heads_structure(raw: dict[str, Any], config_file: Path) -> list[dict[str, int]] | None:
    """transformers-4 ``pruned_heads`` ({layer: [head, ...]}) as compresslab's per-layer structure.

    transformers 4 stored a head-pruned model's Q/K/V/O already sliced (the kept heads in order) and
    rebuilt the shapes from ``pruned_heads`` on load; transformers 5 no longer does, so the saved
    slices meet full-size modules. Keeping the first ``heads - len(pruned)`` slots gives the same
    shapes and, the weights being compact, the same function. None when nothing was pruned."""
    pruned = raw.get("pruned_heads") or {}
    if not pruned:
        return None
    layers = int(raw.get("num_hidden_layers", raw.get("n_layers", 0)))
    heads = int(raw.get("num_attention_heads", raw.get("n_heads", 0)))
    ffn = int(raw.get("intermediate_size", raw.get("hidden_dim", 0)))
    structure = [{"heads": heads, "ffn": ffn} for _ in range(layers)]
    try:
        for layer, gone in dict(pruned).items():
            i, gone = int(layer), {int(h) for h in gone}
            if not (0 <= i < layers) or any(not 0 <= h < heads for h in gone):
                raise ValueError(f"layer {layer} / heads {sorted(gone)} out of range ({layers} layers, {heads} heads)")
            structure[i]["heads"] = heads - len(gone)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{config_file}: unreadable pruned_heads {pruned!r}: {e}") from e
    return structure


def rebuild_needed(path: Path, raw: dict[str, Any]) -> bool:
    """True when plain ``from_pretrained`` cannot load ``path``: compresslab's shape / quantization /
    binary stamps, transformers-4 ``pruned_heads``, or only a compressed encoding on disk."""
    stamped = any(raw.get(k) for k in (STRUCTURE_KEY, QUANT_KEY, QDQ_KEY, BINARY_KEY, "pruned_heads"))
    return stamped or find_weights(path) is None


def _weights_and_reader(path: Path) -> tuple[Path, Any]:
    """The file holding the dense weights (plain layouts first, then compresslab's encodings)."""
    weights = find_weights(path)
    if weights is not None:
        return weights, read_state
    for fmt in FORMATS.values():
        if (path / fmt.file).is_file():
            return path / fmt.file, fmt.read_state
    # raises, naming what is there (an exported graph: what reads it)
    check_source_files(path, extra_weights=FORMAT_FILES, tokenizer=False, given="compresslab.load()")
    raise CheckpointError(f"no weights compresslab can read in {path}")


def _rebuild(path: Path, raw: dict[str, Any], attn_implementation: str) -> nn.Module:
    """Build the saved model from config.json, give it the saved shapes, then load the weights strictly."""
    from transformers import AutoConfig

    weights, reader = _weights_and_reader(path)
    try:
        state = reader(weights)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types for truncated headers/data
        raise CheckpointError(f"cannot read {weights} (truncated or corrupt?): {e}") from e
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    config._attn_implementation = attn_implementation
    kind = saved_kind(raw)
    model = auto_class(kind).from_config(config, dtype=torch.float32)
    structure = raw.get(STRUCTURE_KEY) or pruned_heads_structure(raw, path / "config.json")
    try:
        if structure:
            apply_structure(model, structure)
        if raw.get(QUANT_KEY):
            apply_quant(model, raw[QUANT_KEY])
        if raw.get(QDQ_KEY):
            apply_qdq(model, raw[QDQ_KEY])
        if raw.get(BINARY_KEY):
            apply_binary(model, raw[BINARY_KEY])
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # AttributeError: a stamp of the wrong type
        raise CheckpointError(f"{path / 'config.json'} does not fit the model it builds: {e}") from e
    # the structure stamp now describes the shapes, so a transformers-4 input's pruned_heads goes (kept,
    # transformers 4 would prune the saved, already pruned modules again). Removed, never set to {}: transformers 5
    # has no such attribute, and an empty one would be saved into every later config.json, so a resumed run's files
    # would differ from an uninterrupted run's (which never loaded its model back)
    model.config.__dict__.pop("pruned_heads", None)
    have = model.state_dict()
    state = {k: v for k, v in state.items() if k in have or v.numel()}  # a layer pruned to 0 heads: empty Q/K/V
    _check_shapes(model, state, weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # position_ids buffers and tied weights may be absent from the file; anything else is an error
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match its config.json (its layers or compresslab_* "
                              f"stamps edited, or from another model?): missing={missing[:5]} unexpected={unexpected[:5]}")
    # last: an edit that still fits the weights (BiBERT's attention mode) is caught by the stamp the
    # packed file recorded; the checks above name the edits that do not fit
    check_stamps(path, raw)
    model.config.__dict__.setdefault(TASK_KEY, kind)
    return model.eval()


def load(path: str | os.PathLike, *, attn_implementation: str = "sdpa") -> nn.Module:
    """Load a model directory as saved, in float32: any checkpoint compresslab saved (shrunk ones
    plain ``from_pretrained`` rejects, quantized, binarized, or kept only in a compressed encoding),
    and any Hugging Face directory of a supported architecture (``model.safetensors`` or shards,
    ``pytorch_model.bin``, transformers-4 ``pruned_heads``).

    ``attn_implementation`` applies to full-precision attention; a binarized (BiBERT) model always
    runs its Bi-Attention function (``models.binary.BI_ATTENTION``), as it was saved. Raises
    CheckpointError (a ValueError) naming the file that is missing, truncated or does not match
    config.json, UnsupportedArchitectureError for other architectures."""
    path = Path(path)
    raw = read_config(path, FORMAT_FILES, "compresslab.load()")
    check_supported(str(raw.get("model_type", "?")))
    if rebuild_needed(path, raw):
        return _rebuild(path, raw, attn_implementation)
    return load_hf(path, raw, attn_implementation=attn_implementation)


def check_source(source: str | os.PathLike, *, given: str = "model.source") -> Path:
    """The directory of a source model (``embedded`` or a path), checked before any expensive work:
    config.json, a supported architecture, weights present and intact (any layout :func:`load`
    reads), tokenizer files. ``given``: what the path was given as (the CLI's ``model.source``, or
    ``load_pretrained()``), named in the fix. Raises FileNotFoundError / CheckpointError /
    UnsupportedArchitectureError."""
    path = resolve_source(source, FORMAT_FILES, given)
    check_source_files(path, extra_weights=FORMAT_FILES, given=given)
    return path


def load_pretrained(source: str | os.PathLike = EMBEDDED, *, kind: str = "classification", num_labels: int = 2,
                    finetuned: bool = False, seed: int | None = None,
                    attn_implementation: str = "sdpa") -> tuple[nn.Module, Any]:
    """A source model and its tokenizer, ready for a task: what ``model.source`` loads in the CLI.

    The directory is read by :func:`load` (so the CLI reads what ``compresslab.load`` reads, shrunk
    checkpoints included), then :func:`~compresslab.models.loading.fit_head` gives it the head the
    task needs: ``kind`` ("classification", "regression" or "embedding" for a bare encoder) and
    ``num_labels``: a fresh head initialised from ``seed`` (a log line says what it replaces), or, with
    ``finetuned`` (the model is already fine-tuned on the task), the model's own head, which must
    be of that kind and size (else ValueError naming ``model.finetuned``). Raises
    as :func:`check_source` and :func:`load` do, and CheckpointError for a tokenizer that is missing
    or has more tokens than the model's embedding table."""
    path = check_source(source, given="load_pretrained()")
    model = load(path, attn_implementation=attn_implementation)
    model = fit_head(model, kind=kind, num_labels=num_labels, finetuned=finetuned, source=str(path), seed=seed)
    tokenizer = load_tokenizer(path)
    check_tokenizer_fits(tokenizer, model.config, f"model {path}")
    return model.eval(), tokenizer
