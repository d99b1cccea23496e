"""Refuse to time on a machine that is not quiet, before anything is timed (MEASURE.md "Speed").

:func:`~compresslab.bench.machine_load.timing_window` waits for training and *records* other load
(``busy: true``); a long benchmark that times many models at the end (``benchmarks/suite.py``)
should rather not start at all when its figures would be void. :func:`require_quiet` checks, in
this order and without waiting:

1. no process holds the training or the tests lock (:mod:`compresslab.runlock`): something trains;
2. an idle probe of ``probe_s`` seconds: other processes' CPU use below ``busy_cpu`` (the same
   threshold and measure as ``machine_load``).

It raises :class:`~compresslab.runlock.MachineBusyError` naming what it found and how to go ahead
anyway (``COMPRESSLAB_TIME_BUSY=1``: the caller's timing window then marks the results busy).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from compresslab.bench.machine_load import BUSY_OTHER_CPU, CpuReading, other_cpu, read_cpu
from compresslab.runlock import BUSY_ENV, MachineBusyError, Role, describe_holders, is_free, time_busy_allowed

QUIET_PROBE_S = 2.0  # longer than the window's own probe: a refusal should not hinge on one 10 ms tick


def quiet_report(*, probe_s: float = QUIET_PROBE_S, busy_cpu: float = BUSY_OTHER_CPU,
                 reader: Callable[[], CpuReading] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """What the machine is doing now: ``{"quiet": bool, "reasons": [...], "other_cpu": float | None,
    "locks": [roles held]}``. The probe is skipped when a lock is held already (the answer is known)."""
    held = [r for r in (Role.TRAINING, Role.TESTS) if not is_free(r)]
    reasons = [f"{describe_holders(held)} holds the {' and '.join(r.value for r in held)} lock"] if held else []
    busy = None
    if not held:
        read = reader or read_cpu
        a = read()
        sleep(probe_s)
        b = read()
        busy = round(other_cpu(a, b), 3)
        if busy >= busy_cpu:
            reasons.append(f"other processes used {busy:.2f} CPU s per s over a {probe_s:.1f} s probe "
                           f"(threshold {busy_cpu})")
    return {"quiet": not reasons, "reasons": reasons, "other_cpu": busy, "locks": [r.value for r in held],
            "threshold_other_cpu": busy_cpu}


def require_quiet(what: str, *, allow_busy: bool | None = None, **probe: Any) -> dict[str, Any]:
    """Return :func:`quiet_report` when the machine is quiet (or busy timing is allowed); otherwise raise
    :class:`MachineBusyError` saying why and what to do. ``allow_busy`` defaults to ``$COMPRESSLAB_TIME_BUSY``."""
    report = quiet_report(**probe)
    busy_ok = time_busy_allowed() if allow_busy is None else bool(allow_busy)
    if not report["quiet"] and not busy_ok:
        raise MachineBusyError(
            f"{what}: not timing, the machine is not quiet: {'; '.join(report['reasons'])}. Every figure timed now "
            "would be void (a timing taken while anything else runs is: README, 'Timing on a shared machine'). "
            f"Rerun when it is idle, or set {BUSY_ENV}=1 to time anyway (results marked busy: true)")
    return report
