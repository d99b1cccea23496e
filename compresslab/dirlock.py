"""One writer per directory: a second process that would write the same search or suite task is refused at
once, naming the first, instead of both building into the same files (one ``CellStore.begin`` would delete
the other's half-built cell; two searches would run the same candidate into one run dir).

``fcntl.flock`` on ``<dir>/.lock``: the kernel drops it when its process exits however it dies, so a lock
never outlives its holder. The holder writes its pid and command into the file for the refusal message.
Where ``fcntl`` does not exist (Windows) nothing is locked. Standard library only.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class DirectoryBusyError(RuntimeError):
    """Another live process holds the directory's lock; the message names it and the directory."""


@contextmanager
def exclusive(directory: str | Path, what: str) -> Iterator[Path]:
    """Hold ``directory``'s lock (the directory is created) for the ``with`` block; ``what`` names the work
    in the refusal ("the search", "the suite's task sst2"). Raises DirectoryBusyError without waiting
    when another process holds it. Not re-entrant across processes, re-entrant in none: one holder."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / LOCK_NAME
    if fcntl is None:  # pragma: no cover
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise DirectoryBusyError(f"{what} is already running in {d} ({holder}); wait for it to end, or stop it "
                                     "(a stopped run resumes when started again)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)}".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
