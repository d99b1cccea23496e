"""Which runs a comparison reads (``python -m compresslab.report --compare PATH...``) and where it writes.

Kept apart from :mod:`compresslab.report.compare` (what the comparison says about the runs): finding run
directories among the paths a shell glob gave, and passing over what is not a run, is a job of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from compresslab.report import MANIFEST, ManifestError, load_manifest

COMPARE_MD = "compare.md"
REPLACED = ".replaced-"  # run.overwrite=true moves a run dir aside to <hash>.replaced-<unix time>


def collect(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """The manifests under ``paths`` (run directories) and a line for each path that is not a run.

    A ``manifest.json`` given as a path stands for its run. Plain files (logs beside the runs) and
    a comparison's own output (a folder holding ``compare.md``, and what is in it) are passed over
    silently, so ``outputs/*/*`` can be given again after a first comparison wrote ``outputs/compare``.

    A run moved aside by ``run.overwrite=true`` (``<hash>.replaced-<time>``) holds the same
    pipeline and config hash as the live run beside it: when that live run is given too (a glob
    such as ``outputs/*/*``), the replaced one is passed over and counted in one line; given
    without its live run, it is compared and labelled as replaced (:func:`point`).
    """
    runs: list[tuple[Path, dict[str, Any]]] = []
    skipped: list[str] = []
    seen: set[Path] = set()
    paths = [Path(p) for p in paths]
    given = {(p.parent if p.name == MANIFEST else p).resolve() for p in paths}
    replaced = 0
    for p in paths:
        if p.name == MANIFEST and p.is_file():
            p = p.parent
        if p.is_file() or any((d / COMPARE_MD).is_file() for d in (p, p.parent, p.parent.parent)):
            continue
        if not (p / MANIFEST).is_file():
            skipped.append(f"{p}: {'no such directory' if not p.exists() else 'no ' + MANIFEST} (not a run directory)")
            continue
        key = p.resolve()
        if key in seen:
            continue
        seen.add(key)
        live = key.with_name(key.name.split(REPLACED)[0])
        if REPLACED in key.name and live in given and (live / MANIFEST).is_file():
            replaced += 1
            continue
        try:
            runs.append((p, load_manifest(p)))
        except ManifestError as e:
            skipped.append(f"{p}: {e}")
    if replaced:
        skipped.append(f"{replaced} replaced run{'s' if replaced > 1 else ''} (<hash>{REPLACED}<time>: moved aside by "
                       "run.overwrite=true, superseded by the live run given too); pass one without its live run "
                       "to compare it")
    return runs, skipped


def default_out(run_dirs: Sequence[Path]) -> Path:
    """``compare/`` beside the runs: under their common parent folder (``outputs/compare`` for
    ``outputs/*/*``)."""
    return Path(os.path.commonpath([str(d.resolve().parent) for d in run_dirs])) / "compare"
