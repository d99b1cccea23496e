"""What a run was computed from, by content: the model files and the data, hashed byte for byte.

A run dir is named by its config (``outputs/<pipeline>/<config-hash>/``), but a config names its
inputs by path, and the files behind a path change: a retrained model saved over the old one, a
cleaned CSV. The manifest records :func:`input_identity` when a run starts; rerunning in that dir
(to resume, or to find it finished) first compares the inputs again and refuses when any differ
(:class:`InputsChangedError`, naming each file with its old and new sha256 and how to start over),
so old steps are never reused with new inputs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compresslab.manifest import examples_sha256, model_files_sha256, state_dict_sha256, tokenizer_sha256
from compresslab.pipeline.plan import RunDirConflictError

if TYPE_CHECKING:
    from compresslab.pipeline.state import RunState

log = logging.getLogger(__name__)

IDENTITY_VERSION = 1


class InputsChangedError(RunDirConflictError):
    """A run dir whose recorded inputs (model files, data) differ from the ones given now."""


def input_identity(state: "RunState") -> dict[str, Any]:
    """``{"model": {...}, "data": {...}}``: the sha256 of every input the run reads.

    model: ``{"source": dir, "files": {name: sha256}}`` for a model directory (config, tokenizer
    and every weight file, :func:`~compresslab.manifest.model_files`), or ``{"state_dict":
    sha256}`` for a model given in memory. data: ``{split: {"path", "sha256"}}`` for each file
    read, and ``examples``, the sha256 of the examples as parsed (for data given in memory, and
    for changes a file hash cannot see, such as a different label mapping).
    """
    if state.model_source is not None:
        model: dict[str, Any] = {"source": str(state.model_source), "files": model_files_sha256(state.model_source)}
    else:  # the in-process API: the model, its tokenizer and a given teacher are inputs held in memory
        assert state.model is not None, "input_identity needs a model source or a model"
        model = {"state_dict": state_dict_sha256(state.model)}
        if state.tokenizer is not None:
            model["tokenizer"] = tokenizer_sha256(state.tokenizer)
        if state.teacher is not None:
            model["teacher_state_dict"] = state_dict_sha256(state.teacher)
    task = state.task
    files = {split: {"path": f.get("path"), "sha256": f.get("sha256")}
             for split, f in sorted((task.info.get("files") or {}).items()) if isinstance(f, dict)}
    return {"version": IDENTITY_VERSION, "model": model,
            "data": {"files": files, "examples": examples_sha256(task.train, task.validation, task.dev),
                     "labels": list(task.spec.label_names)}}


def _short(h: Any) -> str:
    return str(h)[:12] if h else "absent"


def input_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per input that differs between two :func:`input_identity` records (empty: same)."""
    out: list[str] = []
    om, nm = old.get("model") or {}, new.get("model") or {}
    if "files" in om or "files" in nm:
        of, nf = om.get("files") or {}, nm.get("files") or {}
        where = nm.get("source") or om.get("source")
        for name in sorted(set(of) | set(nf)):
            if of.get(name) != nf.get(name):
                out.append(f"model file {Path(str(where)) / name}: sha256 {_short(of.get(name))} -> "
                           f"{_short(nf.get(name))}")
    for key, what in (("state_dict", "model weights"), ("tokenizer", "tokenizer"),
                      ("teacher_state_dict", "teacher weights")):
        if om.get(key) != nm.get(key):
            out.append(f"{what} (in memory): sha256 {_short(om.get(key))} -> {_short(nm.get(key))}")
    od, nd = old.get("data") or {}, new.get("data") or {}
    of, nf = od.get("files") or {}, nd.get("files") or {}
    for split in sorted(set(of) | set(nf)):
        a, b = of.get(split) or {}, nf.get(split) or {}
        if a.get("sha256") != b.get("sha256"):
            out.append(f"data file {split} ({b.get('path') or a.get('path')}): sha256 {_short(a.get('sha256'))} -> "
                       f"{_short(b.get('sha256'))}")
    if od.get("labels") != nd.get("labels"):
        out.append(f"data label names: {od.get('labels')} -> {nd.get('labels')}")
    if not out and od.get("examples") != nd.get("examples"):
        out.append(f"data examples as parsed: sha256 {_short(od.get('examples'))} -> {_short(nd.get('examples'))}")
    return out


def check_inputs(old_manifest: dict[str, Any], new: dict[str, Any], run_dir: Path, start_over: str) -> None:
    """Refuse to reuse ``run_dir`` when the inputs recorded in its manifest differ from ``new``.

    ``start_over`` says how to start over (the CLI: ``run.overwrite=true`` or another ``run.dir``;
    the API: another ``output_dir``). A manifest written before inputs were recorded is compared by
    its data files only (with a warning that the model files cannot be checked).
    Raises InputsChangedError naming each changed file with its old and new sha256.
    """
    old = old_manifest.get("inputs")
    if old is None:
        files = ((old_manifest.get("data") or {}).get("files")) or {}
        old = {"model": new.get("model"), "data": {**(new.get("data") or {}), "files": {
            s: {"path": f.get("path"), "sha256": f.get("sha256")} for s, f in files.items() if isinstance(f, dict)}}}
        log.warning("%s predates input hashes in the manifest: its data files are compared, its model files "
                    "cannot be (run.overwrite=true starts it over)", run_dir)
    changes = input_changes(old, new)
    if changes:
        status = old_manifest.get("status", "unknown")
        raise InputsChangedError(
            f"{run_dir} ({status}) was computed from other inputs than the ones given now, so its steps and "
            "results cannot be reused. Changed:\n  " + "\n  ".join(changes) + f"\nTo start over: {start_over}")


__all__ = ["IDENTITY_VERSION", "InputsChangedError", "check_inputs", "input_changes", "input_identity"]
