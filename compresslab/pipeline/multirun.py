"""A multirun (``python -m compresslab -m seed=1,2 ...``) checked before Hydra starts its first job.

The sweeps are expanded as Hydra's basic sweeper expands them (``config.sweep_lists``) and every job (or every
swept value, see :func:`jobs_to_check`) has its config checked; no two checked jobs may write the same directory
(:func:`check_own_dirs`: a fixed ``run.dir``, or jobs that differ only outside a run's identity); then, when something
is swept, each checked job gets the checks a run makes before its first step: the data (``RunState.prepare``) and the
loaded model (:func:`~compresslab.pipeline.preflight.check_with_model`, the driver's own list). A later job's bad block
size, data file or run dir would otherwise stop it only after the earlier jobs ran to the end.

How one job's config is checked is the caller's (``cli._check_job``): a job may be a search (``+search=NAME``),
which checks its own candidates and is planned above this package.
"""

from __future__ import annotations

import itertools
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from compresslab.config import as_multirun_job, sweep_lists
from compresslab.pipeline.preflight import bad_input_errors

if TYPE_CHECKING:
    from compresslab.pipeline.plan import Step

# A multirun of at most this many jobs has every job checked up front; a larger one has every swept
# value checked (each in one job), since each check composes a config (~0.1 s).
MAX_CHECKED_JOBS = 64


@dataclass
class JobPlan:
    """What checking one job's config found: where it writes and what its model checks need."""

    out_dir: Path  # the directory the job writes: its run dir, or a search's search dir
    setting: str  # the setting that names such a dir: "run.dir", or "search.dir" for a search
    fixed: bool  # the setting is set (the dir does not come from the config's identity)
    model_check: "tuple[Any, list[Step]] | None" = None  # config and steps for check_job_with_model; None: a search

    @property
    def kind(self) -> str:
        return "search" if self.setting == "search.dir" else "run"


# one job's overrides -> its plan (the config composed and checked); raises the job's bad-input error
JobCheck = Callable[[list[str]], JobPlan]


@dataclass
class SweepJob:
    """One job of a multirun, numbered as Hydra numbers it (``hydra.job.num``: the product of the sweeps, in order)."""

    num: int
    overrides: list[str]
    label: str  # what sets it apart: its swept values (``seed=2``); its overrides when nothing is swept
    out_dir: Path | None = None  # the directory it writes, where the check composed it

    @property
    def name(self) -> str:
        return f"#{self.num} ({self.label})"


class MultirunJobError(ValueError):
    """A bad input in one job of a sweep: the job's error, in one line, followed by the job's swept values
    (``... (in the multirun job with seed=abc; no job was started)``). ``job``: that job's overrides; the job's
    own error is the ``__cause__``."""

    def __init__(self, error: BaseException, job: list[str], values: str) -> None:
        super().__init__(f"{' '.join(str(error).split())} (in the multirun job with {values}; no job was started)")
        self.job = job


class SharedDirError(ValueError):
    """Two or more jobs of one multirun would write the same directory (:func:`check_own_dirs`)."""


def sweep_jobs(overrides: list[str]) -> list[SweepJob]:
    """Every job of the multirun ``overrides``, numbered and labelled (nothing composed). Raises ConfigError for a
    sweep Hydra's basic sweeper cannot expand."""
    lists = sweep_lists(overrides)
    swept = [i for i, v in enumerate(lists) if len(v) > 1]
    return [SweepJob(num, list(job), " ".join(job[i] for i in swept) if swept else " ".join(job))
            for num, job in enumerate(itertools.product(*lists))]


def jobs_to_check(lists: list[list[str]]) -> list[int]:
    """The numbers of the jobs of a multirun (one pick from each of ``lists``, see ``config.sweep_lists``; numbered in
    the order of their product) that the pre-Hydra check composes: all of them up to :data:`MAX_CHECKED_JOBS`, else a
    covering set in which every swept value appears (job i takes value i of each sweep, wrapping around)."""
    total = math.prod(len(v) for v in lists)
    if total <= MAX_CHECKED_JOBS:
        return list(range(total))
    nums = []
    for i in range(max(len(v) for v in lists)):
        num = 0
        for v in lists:  # the product's number of the picks: the last list varies fastest
            num = num * len(v) + i % len(v)
        nums.append(num)
    return nums


def check_multirun(overrides: list[str], check_job: JobCheck) -> list[SweepJob]:
    """Check every job of the multirun ``overrides`` (or every swept value, see :func:`jobs_to_check`) with
    ``check_job`` before any job starts, then that no two of them write the same directory (:func:`check_own_dirs`),
    then, when something is swept, each job's data and model (:func:`check_job_with_model`). Nothing is written. The
    configs of all jobs are checked first (a fraction of a second each), then the data and the models (seconds each).
    A job's ``${hydra:job.num}`` reads its number, as in the job (``config.as_multirun_job``). Returns every job of
    the sweep, those checked with the directory each writes.

    Raises ConfigError for a sweep Hydra's basic sweeper cannot expand; a job's own bad-input error
    (:func:`~compresslab.pipeline.preflight.bad_input_errors`) when nothing is swept (one job: the same error as
    without ``-m``); else :class:`MultirunJobError` naming the job's swept values, or :class:`SharedDirError`. Other
    errors (a crash) propagate as they are.
    """
    lists = sweep_lists(overrides)
    swept = [i for i, v in enumerate(lists) if len(v) > 1]
    jobs = sweep_jobs(overrides)
    checked: list[tuple[SweepJob, JobPlan]] = []
    for num in jobs_to_check(lists):
        job = jobs[num]
        with _refused_as(job.overrides, swept), as_multirun_job(job.overrides, job.num):
            plan = check_job(job.overrides)
        job.out_dir = plan.out_dir
        checked.append((job, plan))
    check_own_dirs(checked)
    for job, plan in checked if swept else ():
        if plan.model_check is not None:
            with _refused_as(job.overrides, swept), as_multirun_job(job.overrides, job.num):
                check_job_with_model(*plan.model_check)
    return jobs


def check_own_dirs(checked: list[tuple[SweepJob, JobPlan]]) -> None:
    """Refuse (:class:`SharedDirError`) jobs that would write one directory: a fixed ``run.dir`` (or ``search.dir``)
    for jobs that differ, or jobs that differ only in settings outside a run's identity (``run.*``, ``paths.*``).
    Hydra runs them one after the other: the later would be refused ("belongs to another config") or only find the
    earlier's run, after the earlier ran to the end (hours on a real budget). The message names the jobs and the
    setting that gives each its own dir."""
    by_dir: dict[str, list[tuple[SweepJob, JobPlan]]] = {}
    for job, plan in checked:
        by_dir.setdefault(os.path.abspath(plan.out_dir), []).append((job, plan))
    for out_dir, group in by_dir.items():
        if len(group) > 1:
            raise SharedDirError(_shared_dir_message(out_dir, group))


def own_dir_setting(out_dir: str | Path, setting: str, fixed: bool) -> str:
    """The override that gives each job of a multirun its own dir where several would write ``out_dir``: under it
    when ``setting`` (``run.dir``, ``search.dir``) is fixed; else beside it, since the dir is made from the identity
    the jobs share (``<paths.output_dir>/<pipeline>/<hash>``). Named by the job's number; quoted for the shell."""
    base = f"{out_dir}/" if fixed else f"{Path(out_dir).parent}/sweep-"
    return f"{setting}='{base}${{hydra:job.num}}'"


def _shared_dir_message(out_dir: str, group: list[tuple[SweepJob, JobPlan]]) -> str:
    names = [job.name for job, _ in group]
    named = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    first, second = group[0][0].name, group[1][0].name
    plan = group[0][1]
    setting, kind = plan.setting, plan.kind
    if plan.fixed:
        own = f"{own_dir_setting(out_dir, setting, fixed=True)} (quoted for the shell: the job's number, 0, 1, ...)"
        default = "<paths.output_dir>/search/<hash>" if kind == "search" else \
            "<paths.output_dir>/<pipeline>/<config hash>"
        return (f"{setting}={out_dir}: jobs {named} of this multirun would all write that dir, one after the other: "
                f"{second} would start there only after {first} ran to the end, and find its {kind} (refused as "
                f"another config's, or nothing left to do); give each job its own dir, {own}, or leave {setting} "
                f"unset (each config then gets its own {default}); no job was started")
    own = f"{own_dir_setting(out_dir, setting, fixed=False)} (quoted for the shell: the job's number)"
    outside = "run.*, paths.*, search.time_budget_s" if kind == "search" else "run.*, paths.*"
    return (f"jobs {named} of this multirun are one {kind}: what they differ in is not part of a {kind}'s identity "
            f"({outside}), so all would use {out_dir}, where the jobs after {first} would only resume its {kind} or "
            f"find it finished (nothing redone); sweep a setting of the {kind}, or give each job its own dir to run "
            f"each anew, {own}; no job was started")


def check_job_with_model(cfg: Any, steps: list["Step"]) -> None:
    """The checks the driver makes before its first step, for one job: the data (columns, labels, splits:
    ``RunState.prepare``), then the loaded model (``RunState.load_initial``, then
    :func:`~compresslab.pipeline.preflight.check_with_model`). Seconds per job (the data read, the model loaded); no
    run dir is written. Raises the bad-input errors those raise (ValueError, FileNotFoundError, SettingsError)."""
    from compresslab.pipeline.preflight import check_with_model
    from compresslab.pipeline.state import RunState

    state = RunState.prepare(cfg, steps)
    state.load_initial()
    check_with_model(state.settings, steps, state.model, state.tokenizer)


@contextmanager
def _refused_as(job: list[str], swept: list[int]) -> Iterator[None]:
    """A bad-input error of ``job`` raised as it is when nothing is swept, else as a :class:`MultirunJobError`
    naming the job's values at the ``swept`` positions."""
    try:
        yield
    except bad_input_errors() as e:
        if not swept:  # one job: the same error as without -m
            raise
        raise MultirunJobError(e, job, " ".join(job[i] for i in swept)) from e
