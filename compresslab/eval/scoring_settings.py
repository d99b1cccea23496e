"""The settings an exported folder's score depends on, written beside its graph: ``compresslab_eval.json``.

A run scores its exported files at ``task.max_length`` and ``eval.batch_size``, padded to the longest
sentence of each batch; an ORT dynamic-int8 graph's labels move with the batch (one activation scale per
call) and with the padding, an OpenVINO IR's with the compiled precision (bf16 on AVX512_BF16 / AMX CPUs).
``compresslab.evaluate(folder, data)`` of a run's folder must score the way the run did by default, so the
export stage writes these settings into the folder (:func:`write_scoring_settings`); ONNX passes copy them
into their step folders with the config and tokenizer (``export.ort_quant.copy_model_files``), the deploy
stage adds the OpenVINO precision to the IR folder it deploys, and :func:`read_scoring_settings` reads them
back. The file is an extra JSON beside ``config.json``: optimum's ORTModel / OVModel loaders ignore it.

A deployer reads none of it: they load the folder's tokenizer and call ``tok(x, truncation=True)``, which cuts at
``tokenizer_config.json``'s ``model_max_length`` (512 for BERT), not at the length the run scored. Writing the
record therefore also pins that tokenizer to the run's ``max_length`` (:func:`pin_tokenizer_length`), keeping
the value it had in the record (``tokenizer_model_max_length``); every copy of the folder carries both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from compresslab.manifest import atomic_write_json

SCORING_FILE = "compresslab_eval.json"
SCHEMA = 1
PADDING = "longest"  # the loaders pad each batch to its longest sentence (data.loaders.make_loader)
# the keys evaluate() reads as its defaults; the rest (task, split, written_by) are for people
SETTINGS = ("max_length", "batch_size", "kind", "primary_metric", "openvino_precision")
TOKENIZER_CONFIG = "tokenizer_config.json"
ORIGINAL_LENGTH = "tokenizer_model_max_length"  # the tokenizer's own model_max_length before the pin


def scoring_settings(*, max_length: int, batch_size: int, kind: str, primary_metric: str, task: str,
                     split: str) -> dict[str, Any]:
    """The record :func:`write_scoring_settings` writes: what the run scored with (``split``: the split its
    report scores, ``dev`` or ``validation``)."""
    from compresslab.manifest import package_version

    return {"schema": SCHEMA, "max_length": int(max_length), "batch_size": int(batch_size), "padding": PADDING,
            "kind": str(kind), "primary_metric": str(primary_metric), "task": str(task), "split": str(split),
            "written_by": f"compresslab {package_version()}"}


def write_scoring_settings(folder: str | Path, settings: Mapping[str, Any], **more: Any) -> Path:
    """Write ``settings`` (and ``more`` over them: ``openvino_precision`` for an IR folder) into ``folder``'s
    :data:`SCORING_FILE`, atomically (a hard link to another run's copy is replaced, never written through)."""
    path = Path(folder) / SCORING_FILE
    record = {**dict(settings), **more}
    if record.get("max_length") is not None:
        found, original = pin_tokenizer_length(folder, int(record["max_length"]))
        if found:  # a record written again (add_scoring_settings, a copied folder) keeps the first original
            record.setdefault(ORIGINAL_LENGTH, original)
    atomic_write_json(path, record)
    return path


def pin_tokenizer_length(folder: str | Path, max_length: int) -> tuple[bool, int | None]:
    """Set ``folder``'s ``tokenizer_config.json`` ``model_max_length`` (what ``truncation=True`` cuts at, in
    transformers and optimum's pipelines) and its ``max_length`` (the truncation a fast tokenizer's backend was
    saved with, when the file has one) to ``max_length``, atomically. Returns (whether the folder has a tokenizer
    config, the ``model_max_length`` it had: None when unset or transformers' "no limit" 1e30). The file is left
    untouched when already pinned (its sha256, recorded in the manifest, stays valid)."""
    path = Path(folder) / TOKENIZER_CONFIG
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return False, None
    if not isinstance(raw, dict):
        return False, None
    original = raw.get("model_max_length")
    pinned = {**raw, "model_max_length": int(max_length)}
    if "max_length" in raw:
        pinned["max_length"] = int(max_length)
    if pinned != raw:
        atomic_write_json(path, pinned)
    return True, int(original) if isinstance(original, (int, float)) and original < 1e12 else None


def add_scoring_settings(folder: str | Path, **more: Any) -> Path:
    """Add ``more`` to ``folder``'s record (an IR folder gets its record from the ONNX folder it was converted from;
    the deploy stage adds ``openvino_precision``); a folder without one gets a record of ``more`` alone."""
    path = Path(folder) / SCORING_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        raw = {"schema": SCHEMA}
    return write_scoring_settings(folder, raw if isinstance(raw, dict) else {"schema": SCHEMA}, **more)


def read_scoring_settings(folder: str | Path) -> dict[str, Any]:
    """The settings recorded in ``folder`` (:data:`SETTINGS` only, values as written); ``{}`` when it holds no
    :data:`SCORING_FILE` (a folder exported before the file existed, or not by compresslab) or an unreadable one."""
    path = Path(folder) / SCORING_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: raw[k] for k in SETTINGS if isinstance(raw, dict) and raw.get(k) is not None}


__all__ = ["ORIGINAL_LENGTH", "PADDING", "SCORING_FILE", "SETTINGS", "TOKENIZER_CONFIG", "add_scoring_settings",
           "pin_tokenizer_length", "read_scoring_settings",
           "scoring_settings", "write_scoring_settings"]
