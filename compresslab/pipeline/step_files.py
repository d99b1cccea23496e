"""A finished step is reused on resume only when its files are still the ones it wrote.

:func:`~compresslab.pipeline.steps.finish_step` records the sha256 of every file of a step's dir
(``artifacts`` in the manifest). Before a resume restores a step, :func:`first_broken_step` hashes
them again, once (a few hundred MB for BERT-base: seconds). A step whose dir is gone, or one of whose
files is missing, unreadable or changed (edited, truncated, replaced), is not reused: :func:`redo_from`
warns, naming each file and why, and drops that step and every later one (their input was its
output) with the stages after the steps (export, deploy, eval, sizes, bench, report), so the run
computes them again and ends as an uninterrupted run would. The manifest's ``redone`` list records
each such event. The files the stages after the steps wrote are checked the same way, after the steps'
(:mod:`compresslab.pipeline.stage_files`); :func:`first_broken` does both, hashing each file once per resume, for
an interrupted run and a finished one alike. A read-only reader of a run (``pipeline.restore``) cannot redo
anything: :func:`check_steps_intact` refuses there instead, saying how to redo the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from compresslab.manifest import RunManifest, StepRecord, now
from compresslab.pipeline.stage_files import drop_stages, file_problem, first_broken_stage, remove_path

log = logging.getLogger(__name__)


def step_problems(rec: StepRecord, run_dir: Path) -> list[str]:
    """Why the finished step ``rec`` cannot be reused as it is on disk: one line per file that is missing,
    unreadable or whose sha256 is not the one recorded when the step finished; its dir when that is gone.
    Empty when every recorded file is intact."""
    step_dir = run_dir / rec.dir
    if not step_dir.is_dir():
        return [f"{rec.dir}/ is missing (the step's whole dir)"]
    out: list[str] = []
    for name, recorded in sorted(rec.artifacts.items()):
        problem = file_problem(step_dir / name, f"{rec.dir}/{name}", recorded, "the step finished")
        if problem:
            out.append(problem)
    onnx = rec.result.get("onnx_path")  # relative to the run dir; inside the step dir (hashed above) as a rule
    if onnx and not (run_dir / onnx).is_file() and not any(line.startswith(f"{onnx} ") for line in out):
        out.append(f"{onnx} is missing (the step's ONNX file)")
    return out


def first_broken_step(manifest: RunManifest, run_dir: Path) -> tuple[StepRecord, list[str]] | None:
    """The first finished step (by index) whose files fail :func:`step_problems`, with its problems; None when
    every finished step is intact. Later steps are not hashed: they are redone with it."""
    for rec in sorted((s for s in manifest.steps if s.status == "done"), key=lambda s: s.index):
        problems = step_problems(rec, run_dir)
        if problems:
            return rec, problems
    return None


def redo_from(manifest: RunManifest, run_dir: Path, rec: StepRecord, problems: list[str],
              step_dirs: Iterable[str] = ()) -> None:
    """Make the run redo step ``rec`` and every later one: warn (naming each of ``problems``), drop their
    manifest records and their dirs (``rec.dir``, each later record's, and ``step_dirs``: the plan's
    ``steps/<NN>_<name>`` of the steps from ``rec`` on, so a later step's half-written dir or training
    checkpoint, made from the old output, is not resumed), and what the stages after the steps made from
    them. Redoing a torch step drops the export too; redoing an ONNX step keeps it (the export is its input).
    Appends the event to the manifest's ``redone`` list and saves it."""
    later = sorted((s for s in manifest.steps if s.index >= rec.index), key=lambda s: s.index)
    names = [s.name for s in later if s.status == "done"]
    log.warning("step %d: %s is finished but cannot be reused: %s. Redoing it%s, and the stages after the steps",
                rec.index, rec.name, "; ".join(problems),
                f" and every later step ({', '.join(n for n in names if n != rec.name)})" if len(names) > 1 else "")
    steps_root = run_dir / "steps"
    for d in {*(s.dir for s in later), *step_dirs}:
        path = run_dir / d
        if path.parent == steps_root:  # only a step dir of this run
            remove_path(path)
    manifest.data["steps"] = [s for s in manifest.data.get("steps", []) if s["index"] < rec.index]
    # an ONNX step's input is the export: kept (its sha256 too); a torch step's output is the export's input
    drop_stages(manifest, run_dir, "deploy" if rec.stage == "onnx" else "export")
    if rec.stage != "onnx":
        remove_path(run_dir / "export")
    manifest.data.setdefault("redone", []).append(
        {"at": now(), "step": rec.name, "index": rec.index, "problems": problems, "steps": names})
    manifest.save()


@dataclass(frozen=True)
class Broken:
    """What a resume's check found first: a finished step whose files fail (``step``), else the first stage after
    the steps whose files do (``stage``), with one line per file and why (``problems``)."""

    problems: list[str]
    step: StepRecord | None = None
    stage: str | None = None


def first_broken(manifest: RunManifest, run_dir: Path) -> Broken | None:
    """The first finished step whose files fail their sha256 (:func:`first_broken_step`), else the first stage after
    the steps whose files do (:func:`~compresslab.pipeline.stage_files.first_broken_stage`); None when every
    recorded file is intact. Each file is hashed at most once; after a broken step nothing is hashed (the step, every
    later one and every stage are redone)."""
    step = first_broken_step(manifest, run_dir)
    if step is not None:
        return Broken(step[1], step=step[0])
    stage = first_broken_stage(manifest, run_dir)
    return Broken(stage[1], stage=stage[0]) if stage is not None else None


def check_steps_intact(manifest: RunManifest, run_dir: Path) -> None:
    """For readers that restore a run without running it (``pipeline.restore``): CheckpointError naming the
    first finished step whose files fail :func:`step_problems`, or the export / deploy stage whose recorded files
    fail their sha256 (what a restored run hands out), each file and why, and how to redo it."""
    from compresslab.models.loading import CheckpointError

    broken = first_broken_step(manifest, run_dir)
    if broken is not None:
        rec, problems = broken
        raise CheckpointError(
            f"{run_dir}: step {rec.index} ({rec.name}) cannot be restored: {'; '.join(problems)}. Rerun the run's "
            "command to redo it and the steps after it, or use another run")
    # an older run recorded no sha256 for these: nothing to check, and this reader cannot redo them
    stage = first_broken_stage(manifest, run_dir, stages=("export", "deploy"), legacy=False)
    if stage is not None:
        raise CheckpointError(
            f"{run_dir}: the {stage[0]} stage's files cannot be restored: {'; '.join(stage[1])}. Rerun the run's "
            "command to redo that stage and the ones after it, or use another run")


__all__ = ["Broken", "check_steps_intact", "first_broken", "first_broken_step", "redo_from", "step_problems"]
