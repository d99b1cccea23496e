"""The suite's cell cache: one directory per cell and config hash, a cell finished once is never built again.

``<root>/<cell name>/<key>/`` holds the cell's files (the artifact the tool wrote, under ``work/``),
``cell.json`` (the record: artifact, score, build time, error) and ``preds.npy`` (its dev predictions,
for agreement and the paired tests). ``key`` is a hash of everything the artifact depends on (the
cell's settings, the teacher's weights, the task and data, the budget, tool versions): change any of
them and the cell is built again in a new directory, the old one is left as it was.

A cell is finished when ``cell.json`` says ``status: finished``; it is written last and atomically
(:func:`write_aside`: the record holds no timing), so a suite stopped mid-build starts that cell over
(its ``work/`` is cleared) and keeps every cell finished before it. A failed build is recorded
(``status: failed`` and its exact error) and tried again on the next run.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from compresslab.manifest import read_json, stable_hash

from ._results import write_aside

KEY_CHARS = 16

log = logging.getLogger("suite")


def cell_key(spec: Mapping[str, Any]) -> str:
    """The config hash of a cell (its settings as JSON, key order ignored)."""
    return stable_hash(dict(spec), KEY_CHARS)


class CellStore:
    """Cells of one task under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def dir(self, name: str, key: str) -> Path:
        return self.root / name / key

    def record(self, name: str, key: str) -> dict[str, Any] | None:
        """The cell's record (finished or failed), or None when it was never built or its record cannot be
        read (written atomically, so damaged from outside: the cell is built again, with a warning)."""
        f = self.dir(name, key) / "cell.json"
        if not f.is_file():
            return None
        try:
            rec = read_json(f)
        except (OSError, ValueError) as e:
            log.warning("cell %s: its record %s cannot be read (%s): building the cell again", name, f, e)
            return None
        if not isinstance(rec, dict):
            log.warning("cell %s: its record %s is not a JSON object: building the cell again", name, f)
            return None
        if rec.get("status") == "finished" and not (self.dir(name, key) / "preds.npy").is_file():
            log.warning("cell %s: finished but its predictions %s are missing: building the cell again", name,
                        self.dir(name, key) / "preds.npy")
            return None
        return rec

    def finished(self, name: str, key: str) -> dict[str, Any] | None:
        rec = self.record(name, key)
        return rec if rec is not None and rec.get("status") == "finished" else None

    def begin(self, name: str, key: str) -> Path:
        """A fresh ``work/`` directory for building the cell (a stopped build's leftovers removed)."""
        work = self.dir(name, key) / "work"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        return work

    def finish(self, name: str, key: str, record: Mapping[str, Any], preds: np.ndarray) -> dict[str, Any]:
        d = self.dir(name, key)
        tmp = d / ".preds.tmp.npy"
        np.save(tmp, np.asarray(preds))
        tmp.replace(d / "preds.npy")
        rec = {**record, "status": "finished", "key": key}
        write_aside(d / "cell.json", rec)
        return rec

    def fail(self, name: str, key: str, record: Mapping[str, Any]) -> dict[str, Any]:
        d = self.dir(name, key)
        d.mkdir(parents=True, exist_ok=True)
        rec = {**record, "status": "failed", "key": key}
        write_aside(d / "cell.json", rec)
        return rec

    def preds(self, name: str, key: str) -> np.ndarray:
        return np.load(self.dir(name, key) / "preds.npy")
