"""Which code made a run: the git commit of the package's checkout, whether its files were edited since, and
compresslab's version; read once per process (:func:`code_version`). A run's manifest records it per process
that worked on the run (``sessions``, :meth:`compresslab.manifest.RunManifest.open_session`), so a run resumed
after a commit or an edit says that its later steps ran on other code."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Mapping


PACKAGE_DIR = Path(__file__).resolve().parent


def _git(*args: str, folder: Path | None = None) -> str | None:
    """``git <args>`` run in ``folder`` (the package's): its stdout stripped, None when git or the checkout is absent
    (an installed wheel) or the command fails."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=folder or PACKAGE_DIR)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_sha(folder: Path | None = None) -> str | None:
    """The commit the package's checkout (or ``folder``'s) is at (``git rev-parse HEAD``); None outside a git
    checkout."""
    return _git("rev-parse", "HEAD", folder=folder) or None


def git_dirty(folder: Path | None = None) -> bool | None:
    """Whether the package's own files (``compresslab/``: code and ``conf/``; or ``folder``'s) differ from the
    commit :func:`git_sha` names: tracked files edited, staged or deleted (untracked files are not counted: scratch
    files beside the code are not the code). None outside a git checkout."""
    out = _git("status", "--porcelain", "--untracked-files=no", "--", ".", folder=folder)
    return None if out is None else bool(out)


_CODE_VERSION: dict[str, Any] = {}


def code_version() -> dict[str, Any]:
    """The code this process runs: ``git_sha``, ``git_dirty`` (:func:`git_dirty`) and ``compresslab_version``.
    Read on the first call and kept for the process: the modules it imported are the ones it runs, whatever is
    committed or edited later."""
    if not _CODE_VERSION:
        _CODE_VERSION.update(git_sha=git_sha(), git_dirty=git_dirty(), compresslab_version=package_version())
    return dict(_CODE_VERSION)


def edited_since(t0: float, folder: Path | None = None) -> list[str]:
    """The package's code files (``*.py`` and ``conf/**/*.yaml`` under ``folder``, default the package) modified
    after ``t0`` (epoch seconds), relative and sorted. :func:`code_version` is read once per process, but much of
    the package is imported inside functions, when first needed: a file edited (or checked out) while a run goes
    on can be the code of its later stages. File times, not git: a stat per file, cheap enough for every stage."""
    root = folder or PACKAGE_DIR
    out = []
    for pattern in ("**/*.py", "conf/**/*.yaml"):
        for f in root.glob(pattern):
            try:
                if f.stat().st_mtime > t0:
                    out.append(f.relative_to(root).as_posix())
            except OSError:  # removed while we looked: an edit too
                out.append(f.relative_to(root).as_posix())
    return sorted(set(out))


def same_code(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two :func:`code_version` records name the same code: the same commit, version, and neither with
    uncommitted changes (two dirty checkouts of one commit may hold different edits)."""
    keys = ("git_sha", "compresslab_version")
    return all(a.get(k) == b.get(k) for k in keys) and not a.get("git_dirty") and not b.get("git_dirty")


def package_version() -> str:
    """compresslab's installed version (from the package metadata, so no import of the package face)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("compresslab")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


__all__ = ["code_version", "git_dirty", "git_sha", "package_version", "same_code"]
