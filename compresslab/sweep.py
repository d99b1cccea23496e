"""The jobs of a multirun (``python -m compresslab -m seed=1,2 ...``) as Hydra's basic launcher runs them: one after
the other, in this process.

Each job's outcome is recorded here (:class:`Sweep`); a job that fails, for a bad input found only once it ran or a
crash, does not stop the jobs after it (Hydra's own rule for a failing job; the CLI's one-line errors exit the process,
which would end the sweep), and the sweep ends with :meth:`Sweep.summary`: each job's number, swept values, status,
directory and error. Ctrl-C or SIGTERM stops the whole sweep. The CLI (``cli.py``) prints and exits; this module only
keeps the record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from compresslab.pipeline.multirun import SweepJob

FINISHED = ("finished", "stopped")  # a run that did what was asked (stopped: run.stop_after)


@dataclass
class Outcome:
    """How one job of a sweep ended."""

    job: SweepJob
    status: str  # finished | stopped (run.stop_after) | failed | crashed | interrupted
    code: int  # the exit status the job would have had alone: 0, 2 (bad input), 1 (a crash), 3 (a search chose none)
    out_dir: Path | None  # its run dir (or search dir), when known
    error: str | None = None  # one line

    @property
    def ok(self) -> bool:
        return self.status in FINISHED


class Sweep:
    """The jobs of one multirun and the outcome of each that ran. ``jobs``: every job as the check before Hydra
    numbered them (``multirun.check_multirun``); empty when Hydra parsed the command line alone, and then each job is
    known as it comes (:meth:`job`)."""

    def __init__(self, jobs: list[SweepJob]) -> None:
        self.jobs = {job.num: job for job in jobs}
        self.outcomes: dict[int, Outcome] = {}

    def job(self, num: int, overrides: list[str]) -> SweepJob:
        """Job ``num`` (``hydra.job.num``); ``overrides``: its own, as Hydra gives them (its label when the sweep was
        not numbered before Hydra started it)."""
        if num not in self.jobs:
            self.jobs[num] = SweepJob(num, list(overrides), " ".join(overrides))
        return self.jobs[num]

    def record(self, outcome: Outcome) -> None:
        self.outcomes[outcome.job.num] = outcome

    def written_by(self, out_dir: Path) -> SweepJob | None:
        """The earlier job of this sweep that used ``out_dir``, if any. The check before Hydra refuses such jobs up to
        its :data:`~compresslab.pipeline.multirun.MAX_CHECKED_JOBS`; above that it checks every swept value, not every
        pair of jobs."""
        target = os.path.abspath(out_dir)
        for o in self.outcomes.values():
            if o.out_dir is not None and os.path.abspath(o.out_dir) == target:
                return o.job
        return None

    @property
    def failed(self) -> list[Outcome]:
        return [o for _, o in sorted(self.outcomes.items()) if not o.ok]

    def exit_code(self) -> int:
        """0 when every job that ran finished, else the exit status of the first failed job (by number)."""
        return self.failed[0].code if self.failed else 0

    def summary(self) -> str:
        """Every job, one line each: ``#1 seed=2: failed (exit 2), /out/1: <error>``; jobs never started are listed
        too (after Ctrl-C)."""
        counts: dict[str, int] = {}
        lines = []
        for num in sorted(self.jobs):
            job, o = self.jobs[num], self.outcomes.get(num)
            status = o.status if o is not None else "not started"
            counts[status] = counts.get(status, 0) + 1
            line = f"  #{num} {job.label}: {status}"
            if o is not None and not o.ok:
                line += f" (exit {o.code})"
            if o is not None and o.out_dir is not None:
                line += f", {o.out_dir}"
            if o is not None and o.error:
                line += f": {o.error}"
            lines.append(line)
        head = f"multirun: {len(self.jobs)} job{'s' if len(self.jobs) != 1 else ''}: " + \
            ", ".join(f"{n} {status}" for status, n in counts.items())
        return "\n".join([head, *lines])
