"""One process per run dir: a run holds its dir's lock (:mod:`compresslab.dirlock`) from the moment it looks
at the dir until it ends, so the same command started twice (same config hash, same dir) is refused at once
instead of both writing one manifest and one set of checkpoints.

The manifest's own guard (:func:`compresslab.pipeline.rundir.check_not_running`) sees a live run only once it
has marked itself ``running``, after its model is loaded; the lock closes that window (two fresh starts, or
two resumes of one stopped run). The kernel drops the lock when its process dies, however it dies, so a
crashed run's dir resumes as before. This is not the machine-wide training/timing lock of
:mod:`compresslab.runlock`: that one lets many trainings run together and only keeps timings apart.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from compresslab.dirlock import LOCK_NAME, DirectoryBusyError, exclusive


@contextmanager
def locked_run_dir(run_dir: Path, another: str = "run.dir=<another dir> keeps both") -> Iterator[Path]:
    """Hold ``run_dir``'s lock for the ``with`` block (the dir is created); yields ``run_dir``.

    Raises :class:`~compresslab.dirlock.DirectoryBusyError` at once, before the block runs, while another
    live process holds it: the message names that process's pid and command, says to wait for it or stop it
    (it resumes when started again) and, with ``another``, how to run beside it. A dir (and its parents) that
    this call created and that holds nothing but the lock when the block ends is removed again, so a run
    refused before it wrote anything leaves nothing behind.
    """
    run_dir = Path(run_dir)
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]  # deepest first
    stack = ExitStack()
    try:
        stack.enter_context(exclusive(run_dir, "this run"))
    except DirectoryBusyError as e:  # only the lock's own refusal: the block's errors pass through untouched
        raise DirectoryBusyError(f"{e}; {another}") from None
    with stack:
        try:
            yield run_dir
        finally:
            if created:
                _remove_if_empty(run_dir, created)


def _remove_if_empty(run_dir: Path, created: list[Path]) -> None:
    """Remove the lock file and the ``created`` dirs, deepest first, while nothing else is in them. Runs
    while the lock is still held: a process that opens the lock file meanwhile is refused, one that comes
    after finds no dir and starts afresh."""
    try:
        if [p.name for p in run_dir.iterdir()] != [LOCK_NAME]:
            return
        (run_dir / LOCK_NAME).unlink()
        for d in created:
            d.rmdir()  # OSError once a dir holds something else (another run's dir beside ours)
    except OSError:
        pass  # leaving an empty dir behind is harmless; failing the run for it would not be
