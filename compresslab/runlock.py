"""A machine-wide lock between heavy work and timing (MEASURE.md "Speed": on a shared machine a
timing taken while anything else runs is void).

Three lock files live in one directory, ``$COMPRESSLAB_LOCK_DIR`` (default
``<temp dir>/compresslab-locks``, so every user of the machine sees the same locks):

* ``training.lock``: held *shared* by every training (``training.train``, Fisher statistics) for as
  long as it runs. Many trainings (DDP ranks, two runs) hold it together; training never waits.
* ``tests.lock``: held shared by a pytest session (``make test``), which is load too.
* ``timing.lock``: held *exclusively* by a timing (a bench stage, a latency table, a speedup
  check) for its window, so two timings never run together. Before timing, a timer also waits
  until nobody holds ``training.lock`` or ``tests.lock``.

A timer waits up to ``$COMPRESSLAB_LOCK_WAIT_S`` seconds (default 600), saying what it waits for,
then refuses with :class:`MachineBusyError`, unless ``COMPRESSLAB_TIME_BUSY=1`` asks to time anyway,
in which case the result is marked busy. A training that starts in the middle of a timing is not
stopped; the load measured during the timing (:mod:`compresslab.bench.machine_load`) catches it.

Why ``fcntl.flock``: the kernel drops a process's locks when it exits, however it dies (kill -9
included), so a lock whose holder is gone can never block anyone (no stale locks to clean).
Beside each lock, every holder writes ``<role>.<pid>.json`` (what it does, since when, its command)
so a waiting timer can say who it waits for; files of dead processes are ignored and removed.
Where ``fcntl`` does not exist (Windows) the locks do nothing and only the load measurement is left.

This module imports only the standard library (psutil inside functions), so every layer may use it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

try:
    import fcntl
except ImportError:  # Windows: no flock; timings still measure and record the machine's load
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "COMPRESSLAB_LOCK_DIR"
WAIT_ENV = "COMPRESSLAB_LOCK_WAIT_S"
BUSY_ENV = "COMPRESSLAB_TIME_BUSY"
DEFAULT_WAIT_S = 600.0  # a bench stage is worth waiting 10 minutes for; a day-long training is not
POLL_S = 1.0  # how often a waiting timer looks again
REPORT_EVERY_S = 60.0  # how often a waiting timer repeats what it waits for

F = TypeVar("F", bound=Callable[..., Any])


class Role(str, Enum):
    """Who holds a lock file: its name is the file's stem."""

    TRAINING = "training"
    TESTS = "tests"
    TIMING = "timing"


class MachineBusyError(RuntimeError):
    """A timing refused because training or tests kept running past the wait (the message says which
    processes, and the environment variables that wait longer or time anyway)."""


def lock_dir() -> Path:
    """``$COMPRESSLAB_LOCK_DIR``, else ``<temp dir>/compresslab-locks`` (shared by the machine's users)."""
    env = os.environ.get(LOCK_DIR_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / "compresslab-locks"


def wait_limit_s() -> float:
    """Seconds a timer waits for training/tests: ``$COMPRESSLAB_LOCK_WAIT_S`` (default 600).

    Raises ValueError naming the variable when it is not a number >= 0.
    """
    raw = os.environ.get(WAIT_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{WAIT_ENV}={raw!r}: give the seconds to wait for a running training, a number >= 0 "
                         f"(e.g. {WAIT_ENV}=1800)")
    return value


def time_busy_allowed() -> bool:
    """``COMPRESSLAB_TIME_BUSY=1``: time even while training runs (results are marked busy).

    Raises ValueError naming the variable for a value other than 1/0/true/false/yes/no.
    """
    raw = (os.environ.get(BUSY_ENV) or "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ValueError(f"{BUSY_ENV}={raw!r}: use {BUSY_ENV}=1 to time on a busy machine (results marked busy) "
                     f"or unset it")


@dataclass(frozen=True)
class Holder:
    """One process holding a lock file, as its ``<role>.<pid>.json`` says."""

    pid: int
    role: str
    what: str
    since: float  # time.time() when it took the lock
    command: str = ""

    def describe(self, now: float | None = None) -> str:
        """e.g. ``training pid 4242 (finetune, for 12 min: python -m compresslab +pipeline=obert)``."""
        age = max(0.0, (now or time.time()) - self.since)
        span = f"{age:.0f} s" if age < 120 else f"{age / 60:.0f} min" if age < 7200 else f"{age / 3600:.1f} h"
        cmd = f": {self.command[:120]}" if self.command else ""
        return f"{self.role} pid {self.pid} ({self.what}, for {span}{cmd})"


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.AccessDenied:  # another user's live process
        return True
    except psutil.Error:
        return False


def holders(role: Role, directory: Path | None = None) -> list[Holder]:
    """Live processes that wrote a holder file for ``role``; files of dead processes are removed."""
    d = directory or lock_dir()
    out = []
    for f in sorted(d.glob(f"{role.value}.*.json")) if d.is_dir() else []:
        try:
            h = Holder(**json.loads(f.read_text()))
        except (OSError, ValueError, TypeError):
            continue  # being written, or not ours
        if _pid_alive(h.pid):
            out.append(h)
        else:
            f.unlink(missing_ok=True)  # a stale record: its process is gone, and so is its flock
    return out


def _open(path: Path) -> int | None:
    """An fd of the lock file (created world-writable, so other users can lock it too), or None."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent == Path(tempfile.gettempdir()) / "compresslab-locks":
            try:  # the shared default dir works for every user, like /tmp (sticky bit)
                os.chmod(path.parent, 0o1777)
            except OSError:
                pass
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        try:  # another user's lock file we may not write: a read-only fd can be flocked too
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            log.warning("cannot open the lock file %s (%s): timings and training do not see each other; "
                        "set %s to a writable directory", path, e, LOCK_DIR_ENV)
            return None
    return fd


def _flock(fd: int, exclusive: bool, blocking: bool) -> bool:
    op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, op)
    except BlockingIOError:
        return False
    return True


@dataclass
class _Hold:
    fd: int | None
    count: int = 0
    record: Path | None = None


# (lock dir, role) -> this process's hold; training is shared by all training in the process
_HOLDS: dict[tuple[str, Role], _Hold] = {}
_HOLDS_LOCK = threading.Lock()


def held_here(role: Role, directory: Path | None = None) -> bool:
    """Whether this process holds ``role``'s lock now."""
    h = _HOLDS.get((str(directory or lock_dir()), role))
    return h is not None and h.count > 0


def _write_record(d: Path, role: Role, what: str) -> Path | None:
    rec = Holder(pid=os.getpid(), role=role.value, what=what, since=time.time(), command=" ".join(sys.argv)[:300])
    path = d / f"{role.value}.{os.getpid()}.json"
    try:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(rec.__dict__))
        os.replace(tmp, path)
    except OSError:
        return None  # the flock still works; only the waiting message loses the name
    return path


_Key = tuple[str, Role]


def _acquire(role: Role, what: str, exclusive: bool, blocking: bool) -> _Key | None:
    """Take (or re-enter) this process's hold of ``role``; the key to release it, or None when
    non-blocking and taken. The key fixes the directory, in case the variable changes meanwhile."""
    d = lock_dir()
    key = (str(d), role)
    with _HOLDS_LOCK:
        h = _HOLDS.get(key)
        if h is not None and h.count > 0:
            h.count += 1
            return key
        fd = _open(d / f"{role.value}.lock") if fcntl is not None else None
        if fd is not None and not _flock(fd, exclusive, blocking):
            os.close(fd)
            return None
        _HOLDS[key] = _Hold(fd, 1, _write_record(d, role, what) if fd is not None else None)
        return key


def _release(key: _Key) -> None:
    with _HOLDS_LOCK:
        h = _HOLDS.get(key)
        if h is None or h.count == 0:
            return
        h.count -= 1
        if h.count:
            return
        if h.record is not None:
            h.record.unlink(missing_ok=True)
        if h.fd is not None:
            os.close(h.fd)  # closing the last fd drops the flock
        del _HOLDS[key]


@contextmanager
def hold(role: Role, what: str) -> Iterator[None]:
    """Hold ``role``'s lock shared while the block runs (training, tests). Never waits: only timers
    take these files exclusively, and only for a moment (to look whether anyone holds them)."""
    if role is Role.TIMING:
        raise ValueError("hold() takes the shared roles (training, tests); timings use timing_lock()")
    key = _acquire(role, what, exclusive=False, blocking=True)
    try:
        yield
    finally:
        if key is not None:
            _release(key)


def holds_training_lock(what: str) -> Callable[[F], F]:
    """Decorator: the function holds the training lock while it runs (re-entrant in a process)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with hold(Role.TRAINING, str(kwargs.get("desc") or what)):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def is_free(role: Role, directory: Path | None = None) -> bool:
    """Whether no *other* process holds ``role``'s lock (a brief non-blocking exclusive probe)."""
    if fcntl is None:
        return True
    d = directory or lock_dir()
    path = d / f"{role.value}.lock"
    if not path.exists():
        return True
    fd = _open(path)
    if fd is None:
        return True
    try:
        if not _flock(fd, exclusive=True, blocking=False):
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _busy_roles(roles: tuple[Role, ...]) -> list[Role]:
    return [r for r in roles if not is_free(r)]


def describe_holders(roles: list[Role]) -> str:
    """Who holds ``roles`` (from the holder records), or the lock files when no record says."""
    now, found = time.time(), []
    for r in roles:
        hs = holders(r)
        found += [h.describe(now) for h in hs] or [f"a process holding {lock_dir() / (r.value + '.lock')}"]
    return "; ".join(found)


@dataclass
class LockReport:
    """What the timing lock found: for the manifest's ``machine_load.lock``."""

    waited_s: float = 0.0
    free: bool = True  # False: timed while training/tests/another timing held a lock (override)
    holders: list[str] = field(default_factory=list)  # who held it when the wait ended
    override: bool = False  # COMPRESSLAB_TIME_BUSY=1 made it time anyway
    own_training: bool = False  # this very process holds the training lock (timing inside training)
    lock_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _wait(what: str, ready: Callable[[], list[Role]], deadline: float, start: float,
          clock: Callable[[], float], sleep: Callable[[float], None],
          notify: Callable[[str], None] | None = None) -> list[Role]:
    """Poll ``ready()`` (the roles still held) until it is empty or the deadline; returns what is held.
    Says what it waits for at once and every minute (``notify``, default a log warning)."""
    busy = ready()
    next_report = clock()
    while busy and clock() < deadline:
        if clock() >= next_report:
            (notify or log.warning)(
                f"{what}: waiting (up to {max(0.0, deadline - clock()):.0f} s more) for {describe_holders(busy)} "
                f"to finish: a timing taken while it runs is void. {BUSY_ENV}=1 goes ahead at once (results "
                f"marked busy); {WAIT_ENV}=<seconds> changes the wait")
            next_report = clock() + REPORT_EVERY_S
        sleep(min(POLL_S, max(0.0, deadline - clock())))
        busy = ready()
    return busy


@contextmanager
def timing_lock(what: str, *, wait_s: float | None = None, allow_busy: bool | None = None,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> Iterator[LockReport]:
    """Hold the timing lock for a timing window, after waiting for training and tests to finish.

    ``wait_s`` defaults to ``$COMPRESSLAB_LOCK_WAIT_S``, ``allow_busy`` to ``$COMPRESSLAB_TIME_BUSY``.
    Yields a :class:`LockReport`. Raises :class:`MachineBusyError` (naming the holders and both
    variables) when a lock is still held after the wait and busy timing is not allowed; ValueError
    for a malformed variable. Re-entrant: a nested call in the same process yields at once.
    """
    busy_ok = time_busy_allowed() if allow_busy is None else bool(allow_busy)
    # asked to time while others run: at once, marked busy (waiting first would only delay what was asked for)
    wait = 0.0 if busy_ok else wait_limit_s() if wait_s is None else float(wait_s)
    report = LockReport(lock_dir=str(lock_dir()))
    if held_here(Role.TIMING):
        yield report
        return
    if held_here(Role.TRAINING) or held_here(Role.TESTS):
        # waiting for ourselves would never end: time now, and let the caller mark the result busy
        report.own_training, report.free = True, False
        report.holders = [f"this process (pid {os.getpid()}) holds the training lock"]
        yield report
        return
    start = clock()
    deadline = start + wait
    got = _acquire(Role.TIMING, what, exclusive=True, blocking=False)
    if got is None:  # another timing: wait for it, it is short
        def timing_busy() -> list[Role]:
            nonlocal got
            got = got or _acquire(Role.TIMING, what, exclusive=True, blocking=False)
            return [] if got else [Role.TIMING]

        _wait(what, timing_busy, deadline, start, clock, sleep)
    busy = [] if got else [Role.TIMING]
    if got:
        busy = _wait(what, lambda: _busy_roles((Role.TRAINING, Role.TESTS)), deadline, start, clock, sleep)
    report.waited_s = round(clock() - start, 3)
    try:
        if busy:
            report.free, report.holders = False, [describe_holders(busy)]
            if not busy_ok:
                raise MachineBusyError(
                    f"{what}: {describe_holders(busy)} still running after {report.waited_s:.0f} s of waiting "
                    f"(locks in {lock_dir()}); a timing taken now would be void. Rerun when it has finished, "
                    f"set {WAIT_ENV}=<seconds> to wait longer, or {BUSY_ENV}=1 to time anyway (the results "
                    "are then marked busy: true and no latency table is cached)")
            report.override = True
            log.warning("%s: timing while %s runs (%s=1): the results are marked busy", what,
                        report.holders[0], BUSY_ENV)
        yield report
    finally:
        if got is not None:
            _release(got)


def wait_for_training(what: str, *, wait_s: float | None = None, allow_busy: bool | None = None,
                      notify: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> LockReport:
    """Wait until no process holds the training lock (``make test`` does this before it starts).

    Returns a :class:`LockReport` (``free=False`` when it went ahead under ``COMPRESSLAB_TIME_BUSY=1``);
    raises :class:`MachineBusyError` after ``wait_s`` (default ``$COMPRESSLAB_LOCK_WAIT_S``) otherwise.
    """
    busy_ok = time_busy_allowed() if allow_busy is None else bool(allow_busy)
    wait = 0.0 if busy_ok else wait_limit_s() if wait_s is None else float(wait_s)  # busy allowed: go on at once
    start = clock()
    busy = _wait(what, lambda: _busy_roles((Role.TRAINING,)), start + wait, start, clock, sleep, notify)
    report = LockReport(waited_s=round(clock() - start, 3), lock_dir=str(lock_dir()))
    if busy:
        report.free, report.holders = False, [describe_holders(busy)]
        if not busy_ok:
            raise MachineBusyError(
                f"{what}: {report.holders[0]} still running after {report.waited_s:.0f} s of waiting (locks in "
                f"{lock_dir()}): tests now would slow it and void its timings. Rerun when it has finished, set "
                f"{WAIT_ENV}=<seconds> to wait longer, or {BUSY_ENV}=1 to run anyway")
        report.override = True
    return report


__all__ = ["BUSY_ENV", "DEFAULT_WAIT_S", "LOCK_DIR_ENV", "WAIT_ENV", "Holder", "LockReport", "MachineBusyError",
           "Role", "describe_holders", "held_here", "hold", "holders", "holds_training_lock", "is_free", "lock_dir",
           "time_busy_allowed", "timing_lock", "wait_for_training", "wait_limit_s"]
