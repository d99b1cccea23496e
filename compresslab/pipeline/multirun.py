"""A multirun (``python -m compresslab -m seed=1,2 ...``) checked before Hydra starts its first job.

The sweeps are expanded as Hydra's basic sweeper expands them (``config.sweep_lists``) and every job (or every
swept value, see :func:`jobs_to_check`) has its config checked; then, when something is swept, each checked job
gets the checks a run makes before its first step: the data (``RunState.prepare``) and the loaded model
(:func:`~compresslab.pipeline.preflight.check_with_model`, the driver's own list). A later job's bad block size or
data file would otherwise stop it only after the earlier jobs ran to the end.

How one job's config is checked is the caller's (``cli._check_job``): a job may be a search (``+search=NAME``),
which checks its own candidates and is planned above this package.
"""

from __future__ import annotations

import itertools
import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from compresslab.config import sweep_lists
from compresslab.pipeline.preflight import bad_input_errors

if TYPE_CHECKING:
    from compresslab.pipeline.plan import Step

# A multirun of at most this many jobs has every job checked up front; a larger one has every swept
# value checked (each in one job), since each check composes a config (~0.1 s).
MAX_CHECKED_JOBS = 64

# one job's overrides -> its composed config and steps (preflighted), or None when the job checks itself (a search)
JobCheck = Callable[[list[str]], "tuple[Any, list[Step]] | None"]


class MultirunJobError(ValueError):
    """A bad input in one job of a sweep: the job's error, in one line, followed by the job's swept values
    (``... (in the multirun job with seed=abc; no job was started)``). ``job``: that job's overrides; the job's
    own error is the ``__cause__``."""

    def __init__(self, error: BaseException, job: list[str], values: str) -> None:
        super().__init__(f"{' '.join(str(error).split())} (in the multirun job with {values}; no job was started)")
        self.job = job


def jobs_to_check(lists: list[list[str]]) -> list[list[str]]:
    """The jobs of a multirun (one pick from each of ``lists``, see ``config.sweep_lists``) that the
    pre-Hydra check composes: all of them up to :data:`MAX_CHECKED_JOBS`, else a covering set in
    which every swept value appears (job i takes value i of each sweep, wrapping around)."""
    if math.prod(len(v) for v in lists) <= MAX_CHECKED_JOBS:
        return [list(job) for job in itertools.product(*lists)]
    return [[v[i % len(v)] for v in lists] for i in range(max(len(v) for v in lists))]


def check_multirun(overrides: list[str], check_job: JobCheck) -> None:
    """Check every job of the multirun ``overrides`` (or every swept value, see :func:`jobs_to_check`) with
    ``check_job`` before any job starts, then, when something is swept, each job's data and model
    (:func:`check_job_with_model`). Nothing is written. The configs of all jobs are checked first (a fraction of a
    second each), then the data and the models (seconds each).

    Raises ConfigError for a sweep Hydra's basic sweeper cannot expand; a job's own bad-input error
    (:func:`~compresslab.pipeline.preflight.bad_input_errors`) when nothing is swept (one job: the same error as
    without ``-m``); else :class:`MultirunJobError` naming the job's swept values. Other errors (a crash) propagate
    as they are.
    """
    lists = sweep_lists(overrides)
    swept = [i for i, v in enumerate(lists) if len(v) > 1]
    checked = []
    for job in jobs_to_check(lists):
        with _refused_as(job, swept):
            checked.append((job, check_job(job)))
    for job, planned in checked if swept else ():
        if planned is not None:
            with _refused_as(job, swept):
                check_job_with_model(*planned)


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
