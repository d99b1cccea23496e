"""A stage after the steps reuses a file only while it is the one that stage wrote.

The stages after the steps (:func:`~compresslab.pipeline.driver.finish`: export, deploy, eval, sizes, bench,
run.keep, report) write files under the run dir: the ONNX export of the final torch model and of the teacher
(``export/``, ``export/teacher/``), the OpenVINO IRs deploy converts (``export/openvino*/``),
``eval/metrics.json``, the bench's files (``bench/``, ``export/deepsparse/``) and the report. Each stage records the
sha256 of every file under its paths (:data:`STAGE_PATHS`) when it writes them (:func:`record_stage`: the manifest's
``stage_files.<stage>``, path relative to the run dir -> sha256).

A resume (an interrupted run's, or a rerun of a finished one) hashes them again once, after the steps'
(:func:`first_broken_stage`). The first stage one of whose files is missing, unreadable or changed is redone with
every stage after it, each of which read its output (:func:`redo_stages_from`: one WARNING naming each file and why,
an entry in the manifest's ``redone`` list); a stage whose record is intact is not run again (:func:`stage_done`), and
a file is reused within a stage (the export before an ONNX step, an IR, a DeepSparse int8 file) only while its sha256
is recorded (:func:`recorded`), i.e. was checked at this resume's start. A stage recorded without sha256 (a run
written before they were) is redone as a changed one is. The report is a view of the manifest, rewritten at any
time by ``python -m compresslab.report``: only a missing report file counts (:data:`VIEWS`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

from compresslab.manifest import RunManifest, now, sha256_file

log = logging.getLogger(__name__)

# The stages after the steps, in the order finish() runs them
STAGES = ("export", "deploy", "eval", "sizes", "bench", "keep", "report")
# What each stage writes, relative to the run dir: every file under a dir, at any depth; ``export/*``: the files of
# export/ itself (the final model's export), not its subdirs (the teacher's export and other stages' files)
STAGE_PATHS: dict[str, tuple[str, ...]] = {
    "export": ("export/*", "export/teacher"),
    "deploy": ("export/openvino", "export/openvino_nncf", "DEPLOYED.txt"),
    "eval": ("eval",),
    "bench": ("bench", "export/deepsparse"),
    "report": ("report.md", "report.html", "plots"),
}
# Stages whose files are a view of the manifest alone, rebuilt at any time by design (``python -m compresslab.report``
# rewrites them, another run-dir spelling or version in them): only a missing file of theirs is a problem
VIEWS = ("report",)
# The manifest records of each stage: (section, key in it; None: the whole section)
STAGE_RECORDS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "export": (("export", "fp32"), ("export", "teacher_fp32")),
    "deploy": (("export", "openvino"), ("export", "deployed"), ("deploy", None)),
    "eval": (("eval", None),),
    "sizes": (("size", None),),
    "bench": (("bench", None),),
    "keep": (("disk", None),),
    "report": (),
}
# The record each stage writes last: present, the stage ran to its end (the report: its files' sha256)
_DONE: dict[str, tuple[str, str | None] | None] = {
    "export": ("export", "fp32"), "deploy": ("deploy", None), "eval": ("eval", None), "sizes": ("size", None),
    "bench": ("bench", None), "keep": ("disk", None), "report": None}
KEY = "stage_files"


def _files_under(run_dir: Path, pattern: str) -> Iterator[Path]:
    """The regular files a :data:`STAGE_PATHS` entry names (hidden ones aside: a stage's work dirs)."""
    if pattern.endswith("/*"):
        root = run_dir / pattern[:-2]
        found = sorted(p for p in root.iterdir() if p.is_file()) if root.is_dir() else []
    else:
        root = run_dir / pattern
        found = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() \
            else []
    for p in found:
        if not any(part.startswith(".") for part in p.relative_to(run_dir).parts):
            yield p


def _record(manifest: RunManifest, stage: str) -> dict[str, str] | None:
    return (manifest.data.get(KEY) or {}).get(stage)


def record_stage(manifest: RunManifest, run_dir: Path, stage: str) -> dict[str, str]:
    """Record the sha256 of every file under ``stage``'s paths now (replacing its record), as it has just written
    them; not saved (the stage's next save writes it). Returns the record."""
    files = {str(p.relative_to(run_dir)): sha256_file(p) for pattern in STAGE_PATHS[stage]
             for p in _files_under(run_dir, pattern)}
    manifest.data.setdefault(KEY, {})[stage] = files
    return files


def record_files(manifest: RunManifest, run_dir: Path, stage: str, paths: Iterable[Path]) -> None:
    """Add the sha256 of ``paths`` (files a stage has just written, before its end) to ``stage``'s record, so a
    resume reuses them once checked (:func:`recorded`); not saved."""
    rec = manifest.data.setdefault(KEY, {}).setdefault(stage, {})
    for p in paths:
        rec[str(Path(p).relative_to(run_dir))] = sha256_file(p)


def recorded(manifest: RunManifest, run_dir: Path, path: Path, stage: str) -> bool:
    """Whether ``path`` (a file of ``stage``) has a recorded sha256: written by this run, and checked at this
    resume's start (a changed file's record is gone by then), so it may be reused."""
    rec = _record(manifest, stage) or {}
    try:
        return str(Path(path).relative_to(run_dir)) in rec and Path(path).is_file()
    except ValueError:  # outside the run dir: not one of its stage's files
        return False


def _present(manifest: RunManifest, where: tuple[str, str | None]) -> bool:
    section, key = where
    value = manifest.data.get(section)
    return bool(value) if key is None else isinstance(value, dict) and key in value


def stage_done(manifest: RunManifest, stage: str) -> bool:
    """Whether ``stage`` ran to its end and its files (if it writes any) have their sha256 recorded: a resume keeps
    it (its files were checked at the resume's start)."""
    done = _DONE[stage]
    if done is not None and not _present(manifest, done):
        return False
    return stage not in STAGE_PATHS or _record(manifest, stage) is not None


def stage_problems(manifest: RunManifest, run_dir: Path, stage: str) -> list[str]:
    """Why ``stage``'s files cannot be reused: one line per recorded file that is missing, unreadable or whose
    sha256 is not the one recorded when the stage wrote it (of a view, the report: only a missing one); one line
    when the stage has records but no sha256 (a run written before they were recorded). Empty when intact, or when
    the stage has recorded nothing."""
    rec = _record(manifest, stage)
    if rec is None:
        has = [f"{s}.{k}" if k else s for s, k in STAGE_RECORDS[stage] if _present(manifest, (s, k))]
        if stage in STAGE_PATHS and has:
            return [f"the {stage} stage's files have no recorded sha256 ({', '.join(has)} written before compresslab "
                    "recorded them), so they cannot be checked"]
        return []
    out: list[str] = []
    for rel, want in sorted(rec.items()):
        path = run_dir / rel
        if stage in VIEWS:
            problem = None if path.is_file() else f"{rel} is missing"
        else:
            problem = file_problem(path, rel, want, f"the {stage} stage wrote it")
        if problem:
            out.append(problem)
    return out


def file_problem(path: Path, shown: str, recorded: str, written: str) -> str | None:
    """Why ``path`` (named ``shown``) is not the file whose sha256 ``recorded`` was taken when ``written`` (e.g.
    ``the step finished``): missing, unreadable, or changed; None when intact. One hash of the file."""
    if not path.is_file():
        return f"{shown} is missing"
    try:
        found = sha256_file(path)
    except OSError as e:
        return f"{shown} is unreadable ({e.strerror or e})"
    if found != recorded:
        return (f"{shown} changed after {written} (edited, truncated or replaced: sha256 {recorded[:12]} recorded, "
                f"{found[:12]} now, {path.stat().st_size} bytes)")
    return None


def first_broken_stage(manifest: RunManifest, run_dir: Path, stages: Iterable[str] = STAGES,
                       legacy: bool = True) -> tuple[str, list[str]] | None:
    """The first of ``stages`` (in run order) whose files fail :func:`stage_problems`, with its problems; None when
    every recorded file is intact. Later stages are not hashed: they are redone with it. ``legacy=False``: a stage
    recorded without sha256 is not a problem (a read-only reader of an older run)."""
    for stage in (s for s in STAGES if s in set(stages)):
        problems = stage_problems(manifest, run_dir, stage)
        if not legacy and _record(manifest, stage) is None:
            problems = []
        if problems:
            return stage, problems
    return None


def remove_path(path: Path) -> None:
    """Remove a file, link or directory of the run (never following a link out of it)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def drop_stages(manifest: RunManifest, run_dir: Path, first: str) -> list[str]:
    """Drop stage ``first`` and every later one: their manifest records, sha256 and files (so no stale file is taken
    for theirs, and a file hard-linked by ``run.keep=minimal`` is replaced, never written through), and the run's
    ``finished``. Returns the stages that had run (any record), in order. Not saved."""
    later = STAGES[STAGES.index(first):]
    ran = [s for s in later if _record(manifest, s) is not None
           or any(_present(manifest, r) for r in STAGE_RECORDS[s])]
    files = manifest.data.get(KEY) or {}
    for stage in later:
        for rel in (files.pop(stage, None) or {}):
            if (run_dir / rel).is_file() or (run_dir / rel).is_symlink():
                (run_dir / rel).unlink()
        for pattern in STAGE_PATHS.get(stage, ()):
            if pattern.endswith("/*"):
                for p in list(_files_under(run_dir, pattern)):
                    remove_path(p)
            else:
                remove_path(run_dir / pattern)
        for section, key in STAGE_RECORDS[stage]:
            if key is None:
                manifest.data.pop(section, None)
            elif isinstance(manifest.data.get(section), dict):
                manifest.data[section].pop(key, None)
    if isinstance(manifest.data.get("export"), dict) and not manifest.data["export"]:
        manifest.data.pop("export")
    if not files:
        manifest.data.pop(KEY, None)
    manifest.data.pop("finished", None)
    return ran


def redo_stages_from(manifest: RunManifest, run_dir: Path, stage: str, problems: list[str]) -> None:
    """Make the run redo ``stage`` and every later stage: warn once (naming each of ``problems``), drop their
    records and files (:func:`drop_stages`), append the event to the manifest's ``redone`` list and save it."""
    ran = drop_stages(manifest, run_dir, stage)
    after = [s for s in ran if s != stage]
    log.warning("the %s stage cannot be reused: %s. Redoing it%s", stage, "; ".join(problems),
                f" and the stages after it that read it ({', '.join(after)})" if after else "")
    entry: dict[str, Any] = {"at": now(), "stage": stage, "problems": problems, "stages": ran or [stage]}
    manifest.data.setdefault("redone", []).append(entry)
    manifest.save()


__all__ = ["STAGES", "STAGE_PATHS", "drop_stages", "first_broken_stage", "record_files", "record_stage",
           "recorded", "redo_stages_from", "remove_path", "stage_done", "stage_problems"]
