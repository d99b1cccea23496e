"""Content hashes: what identifies a file, a directory, a model directory as loaded, task examples, a model or
tokenizer held in memory, and a JSON-able config (run dirs and caches are keyed by it)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from compresslab.fileio import json_default


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def sha256_dir(path: str | os.PathLike) -> dict[str, str]:
    """sha256 of every regular file in a directory (non-recursive), for manifests."""
    return {p.name: sha256_file(p) for p in sorted(Path(path).iterdir()) if p.is_file() and not p.name.startswith(".")}


# What transformers (and compresslab.load) read from a model directory: config, tokenizer and weight
# files. Other frameworks' weights (tf_model.h5, flax_model.msgpack, rust_model.ot, ONNX) and docs are
# never loaded, so their bytes are not part of a model's identity (and a README edit changes nothing).
_MODEL_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin", ".pt", ".pth")


def model_files(path: str | os.PathLike) -> list[Path]:
    """The files of a local model directory that define the model as loaded, sorted by name.

    Top-level regular files named ``*.json`` (config, tokenizer, shard index), ``*.txt`` (vocab,
    merges), ``*.model`` (SentencePiece) and weights (every ``*.safetensors`` shard; ``*.bin`` /
    ``*.pt`` only when no ``model.safetensors[.index.json]`` is there, since transformers then loads
    the safetensors and never reads the pickle). Hidden files are skipped.
    """
    d = Path(path)
    files = [p for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")
             and p.suffix in _MODEL_SUFFIXES]
    if (d / "model.safetensors").is_file() or (d / "model.safetensors.index.json").is_file():
        files = [p for p in files if p.suffix not in (".bin", ".pt", ".pth")]
    return files


def model_files_sha256(path: str | os.PathLike) -> dict[str, str]:
    """``{file name: sha256}`` of :func:`model_files` (every byte read: size and mtime are not identity)."""
    return {p.name: sha256_file(p) for p in model_files(path)}


def examples_sha256(*splits: Any) -> str:
    """sha256 over the examples of one or more splits (text_a, text_b, label per example, in order).

    The identity of data as a pass sees it: files, in-memory lists and data sets alike, after
    parsing, label mapping, the validation carve and any subset. ``1`` and ``1.0`` differ.
    """
    h = hashlib.sha256()
    for i, split in enumerate(splits):
        h.update(f"split {i}\n".encode())
        try:
            rows = list(split or [])
        except (TypeError, ValueError):  # a split the task does not have (MissingSplit refuses iteration)
            rows = []
        for ex in rows:
            h.update(json.dumps([ex.text_a, ex.text_b, ex.label], ensure_ascii=False).encode())
            h.update(b"\n")
    return h.hexdigest()


def state_dict_sha256(model: Any) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in order): an in-memory model's identity."""
    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # bytes as stored (bf16/bool too), no copy
    return h.hexdigest()


def tokenizer_sha256(tokenizer: Any) -> str:
    """sha256 of what a tokenizer does: a fast tokenizer's full definition (normalizer, pre-tokenizer,
    model and vocabulary, post-processor), else its class, vocabulary and settings. For tokenizers
    held in memory; a model directory's tokenizer files are covered by :func:`model_files_sha256`."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        kwargs = {k: v for k, v in (getattr(tokenizer, "init_kwargs", None) or {}).items()
                  if isinstance(v, (str, int, float, bool, type(None)))}
        text = json.dumps([type(tokenizer).__name__, tokenizer.get_vocab(), kwargs], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stable_hash(obj: Any, n: int = 12) -> str:
    """Short content hash of a JSON-able object (sorted keys), used for run dirs and caches."""
    blob = json.dumps(obj, sort_keys=True, default=json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]
