"""How busy the machine was while we timed: measured before and during every timing, recorded,
warned about loudly (issue #12: under load ZipLM built and cached another latency table and model,
2.42x measured vs 1.98x idle, and torch timings were 35x off, with no warning).

The measure is the CPU time *other* processes used per wall second: the machine's busy CPU time
(``/proc/stat`` through psutil: user, nice, system, irq, softirq, steal) minus this process's own
(its threads and its children, e.g. the load probe), over a window. 0 means nothing else ran;
1.0 means another process kept one core busy. The 1-minute load average is recorded too, but not
judged: it lags by minutes and counts our own timing threads.

Thresholds (MEASURE.md "Speed": a timing taken while anything else runs is void):

* ``BUSY_OTHER_CPU = 0.2``: other processes using a fifth of a core or more, in the idle probe
  before timing or during it (the whole window or any one measurement in it), make the timing
  *busy*: recorded as ``busy: true`` with the reasons, warned about loudly, and a latency table
  measured busy is never cached. A quiet Linux machine measures 0.00-0.05 (kernel threads, a
  shell); one training thread measures about 1.0.
* ``NOISY_SPREAD = 0.25``: a runner whose repeated runs spread more than this, ``(p90 - p50) /
  p50``, is recorded as noisy and warned about, but does not make the timing busy by itself:
  sub-millisecond runs of tiny models spread that much on a quiet machine too.
* ``PROBE_S = 0.5``: the idle probe before timing (10 ms clock ticks on 2 cores resolve 0.02).

Use :func:`timing_window` around anything that times; it takes the timing lock first
(:mod:`compresslab.runlock`: waits for training and tests, or refuses). Windows nest: an inner
window (``measure_latency`` inside the bench stage) joins the outer one, so a stage is locked and
probed once. Tests inject ``reader`` (fake CPU readings) instead of loading the machine.

Where the records go: every site that times names its window (``timing_window("deploy=auto: ORT
vs OpenVINO")``) and stores ``window.record()`` beside its figures as ``machine_load``; a site that
times several times stores :func:`combine` of its records. Every outermost window this process
closes is also kept in order (:func:`closed_windows`), so a writer of results (``benchmarks/
_results.py``) stamps each figure with the windows that produced it without the script asking.
Figures that are not latency timings (the wall time of a training, a pass, a benchmark item) take
no timing lock; :class:`LoadMeter` measures other processes' CPU use over them.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from compresslab.manifest import find_records  # noqa: F401 - read back here by results writers
from compresslab.runlock import LockReport, timing_lock

log = logging.getLogger(__name__)

BUSY_OTHER_CPU = 0.2
NOISY_SPREAD = 0.25
PROBE_S = 0.5
MIN_INTERVAL_S = 1.0  # a LoadMeter lap shorter than this is not judged (10 ms ticks, 2 cores)
# A timing window or span shorter than this is recorded but not judged busy: the clocks tick in 10 ms, so one tick
# over a 5 ms window reads as 2 CPU s per s (seen: the window around a DeepSparse worker that never started). At
# 0.25 s one tick is 0.04, well under the 0.2 threshold.
MIN_JUDGED_S = 0.25


@dataclass(frozen=True)
class CpuReading:
    """One reading of the CPU clocks."""

    wall_s: float  # time.monotonic()
    machine_busy_s: float  # CPU seconds every core spent working (not idle, not iowait) since boot
    own_s: float  # CPU seconds of this process, its threads and its children


Reader = Callable[[], CpuReading]


def read_cpu() -> CpuReading:
    """The machine's busy CPU seconds and this process's own (threads, live and reaped children)."""
    import psutil

    t = psutil.cpu_times()
    # guest time is already inside user on Linux; steal is time a hypervisor gave to other guests
    busy = sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
    me = psutil.Process()
    c = me.cpu_times()
    own = c.user + c.system + getattr(c, "children_user", 0.0) + getattr(c, "children_system", 0.0)
    for child in me.children(recursive=True):  # children still running (reaped ones are counted above)
        try:
            ct = child.cpu_times()
            own += ct.user + ct.system
        except psutil.Error:
            pass
    return CpuReading(time.monotonic(), busy, own)


def other_cpu(a: CpuReading, b: CpuReading) -> float:
    """Other processes' CPU seconds per wall second between two readings (>= 0)."""
    wall = b.wall_s - a.wall_s
    if wall <= 0:
        return 0.0
    return max(0.0, (b.machine_busy_s - a.machine_busy_s) - (b.own_s - a.own_s)) / wall


def loadavg() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def spread(p50: float, p90: float) -> float:
    """Relative spread of repeated runs, ``(p90 - p50) / p50`` (0 for a zero median)."""
    return (p90 - p50) / p50 if p50 > 0 else 0.0


class MachineLoad:
    """One timing window: what the lock found, the load before (an idle probe) and during, the
    spread of the runs, and the verdict. Built by :func:`timing_window`."""

    def __init__(self, what: str, lock: LockReport | None = None, *, reader: Reader | None = None,
                 probe_s: float | None = None, busy_cpu: float | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.what, self.lock = what, lock or LockReport()
        self._reader = reader
        self.probe_s = PROBE_S if probe_s is None else float(probe_s)
        self.busy_cpu = BUSY_OTHER_CPU if busy_cpu is None else float(busy_cpu)
        self._sleep = sleep
        self.before: dict[str, Any] = {}
        self.spans: list[dict[str, Any]] = []
        self.worst_spread: dict[str, Any] = {"max": 0.0, "runner": None, "shape": None}
        self._start: CpuReading | None = None
        self._end: CpuReading | None = None
        self._load_end: list[float] | None = None

    def read(self) -> CpuReading:
        return (self._reader or read_cpu)()  # read_cpu looked up now, so tests may replace it

    def probe_before(self) -> None:
        """Measure the load with nothing of ours running, for ``probe_s`` seconds."""
        a = self.read()
        self._sleep(self.probe_s)
        b = self.read()
        self.before = {"other_cpu": round(other_cpu(a, b), 3), "window_s": round(b.wall_s - a.wall_s, 3),
                       "loadavg": loadavg()}
        self._start = b

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        """Measure the load during one measurement (a short burst is diluted in a long window)."""
        a = self.read()
        try:
            yield
        finally:
            b = self.read()
            self.spans.append({"name": name, "other_cpu": round(other_cpu(a, b), 3),
                               "window_s": round(b.wall_s - a.wall_s, 3)})

    def note_spread(self, results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        """Keep the widest ``(p90 - p50) / p50`` of ``{runner: {shape: {p50_ms, p90_ms}}}``."""
        for name, per_shape in results.items():
            for shape, st in per_shape.items():
                if "p50_ms" in st and "p90_ms" in st:
                    s = spread(float(st["p50_ms"]), float(st["p90_ms"]))
                    if s > self.worst_spread["max"]:
                        self.worst_spread = {"max": round(s, 3), "runner": name, "shape": shape}

    def finish(self) -> None:
        """Close the window, and warn loudly when it was busy or noisy."""
        self._end = self.read()
        self._load_end = loadavg()
        rec = self.record()
        if rec["busy"]:
            log.warning("MACHINE BUSY while timing (%s): %s. These timings are void (a timing taken while "
                        "anything else runs is: README, 'Timing on a shared machine'); they are recorded with "
                        "machine_load.busy=true. Rerun on a quiet machine (stop other jobs; training takes a lock "
                        "that timings wait for).",
                        self.what, "; ".join(rec["reasons"]))
        elif rec["spread"]["noisy"]:
            log.warning("noisy timings (%s): %s at %s spread %.0f%% between median and p90 (over %.0f%%); "
                        "check for other load or raise bench.runs", self.what, rec["spread"]["runner"],
                        rec["spread"]["shape"], 100 * rec["spread"]["max"], 100 * NOISY_SPREAD)

    def _during(self) -> dict[str, Any]:
        end = self._end or self.read()
        window = end.wall_s - self._start.wall_s if self._start is not None else 0.0
        whole = other_cpu(self._start, end) if self._start is not None else 0.0
        judged = [x for x, w in ((whole, window), *((sp["other_cpu"], sp["window_s"]) for sp in self.spans))
                  if w >= MIN_JUDGED_S]  # shorter readings are one clock tick or two: recorded, not judged
        out = {"other_cpu": round(whole, 3), "max_other_cpu": round(max(judged, default=0.0), 3),
               "window_s": round(window, 3), "measurements": len(self.spans), "loadavg": self._load_end or loadavg()}
        if (short := 1 + len(self.spans) - len(judged)) and self._start is not None:
            out["not_judged"] = f"{short} reading(s) over less than {MIN_JUDGED_S} s (clock ticks of 10 ms)"
        return out

    def reasons(self, during: dict[str, Any] | None = None) -> list[str]:
        """Why this window is busy (empty when it was quiet)."""
        during = during or self._during()
        out = []
        if self.lock.own_training:
            out.append(f"this process (pid {os.getpid()}) was training while it timed")
        elif not self.lock.free:
            out.append(f"timed while {'; '.join(self.lock.holders)} held a lock")
        if self.before.get("other_cpu", 0.0) >= self.busy_cpu:
            out.append(f"other processes used {self.before['other_cpu']:.2f} CPU s per s before timing "
                       f"(threshold {self.busy_cpu})")
        if during["max_other_cpu"] >= self.busy_cpu:
            out.append(f"other processes used up to {during['max_other_cpu']:.2f} CPU s per s while timing "
                       f"(threshold {self.busy_cpu})")
        return out

    def record(self) -> dict[str, Any]:
        """The manifest's ``machine_load``: busy, reasons, before, during, spread, lock, cpus."""
        during = self._during()
        reasons = self.reasons(during)
        return {"busy": bool(reasons), "reasons": reasons, "what": self.what, "threshold_other_cpu": self.busy_cpu,
                "before": dict(self.before), "during": during,
                "spread": {**self.worst_spread, "noisy": self.worst_spread["max"] > NOISY_SPREAD,
                           "threshold": NOISY_SPREAD},
                "lock": self.lock.to_dict(), "cpus": os.cpu_count()}


_ACTIVE: ContextVar[MachineLoad | None] = ContextVar("compresslab_timing_window", default=None)
# Every outermost window this process closed, in order (nested windows join their outer one).
_CLOSED: list[dict[str, Any]] = []


def closed_windows(since: int = 0) -> list[dict[str, Any]]:
    """The records of the timing windows this process closed, from the ``since``-th on (copies).

    Each is :meth:`MachineLoad.record` plus ``id`` (unique across processes), ``pid`` and
    ``closed_at`` (UTC, ISO 8601): what a results writer stamps beside the figures they produced.
    """
    return [dict(r) for r in _CLOSED[since:]]


def active_window() -> MachineLoad | None:
    """The timing window this code runs in, if any."""
    return _ACTIVE.get()


@contextmanager
def timing_window(what: str, *, reader: Reader | None = None, probe_s: float | None = None,
                  busy_cpu: float | None = None, wait_s: float | None = None,
                  allow_busy: bool | None = None) -> Iterator[MachineLoad]:
    """Take the timing lock, probe the load, and yield the :class:`MachineLoad` to record.

    Inside another window this joins it (no second lock or probe). ``wait_s`` and ``allow_busy``
    default to ``$COMPRESSLAB_LOCK_WAIT_S`` and ``$COMPRESSLAB_TIME_BUSY``. Raises
    :class:`~compresslab.runlock.MachineBusyError` when training or tests hold their lock past
    the wait and busy timing is not allowed.
    """
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer
        return
    with timing_lock(what, wait_s=wait_s, allow_busy=allow_busy) as lock:
        window = MachineLoad(what, lock, reader=reader, probe_s=probe_s, busy_cpu=busy_cpu)
        window.probe_before()
        token = _ACTIVE.set(window)
        try:
            yield window
        finally:
            _ACTIVE.reset(token)
            window.finish()
            now = time.time()
            _CLOSED.append({**window.record(), "id": f"{os.getpid()}-{now:.6f}-{len(_CLOSED)}", "pid": os.getpid(),
                            "closed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})


def combine(records: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """One verdict over several timing windows (a method that times more than once, a run's manifest,
    a results file): busy when any was, each reason prefixed by what its window timed.

    ``windows`` counts the records; with none, ``busy`` is false and ``max_other_cpu`` None (nothing
    was timed, so nothing is void).
    """
    recs = [r for r in records if r]
    reasons: list[str] = []
    for r in recs:
        for why in r.get("reasons") or []:
            line = f"{r.get('what') or 'timing'}: {why}"
            if line not in reasons:
                reasons.append(line)
    # a results file's verdict (benchmarks/_results.py) keeps its windows under "timings", compacted to flat keys
    # (other_cpu_before, max_other_cpu_during, noisy); a combined record has max_other_cpu and noisy on top
    windows = [w for r in recs for w in (r, *[t for t in r.get("timings") or [] if isinstance(t, Mapping)])]
    peaks = [float(v) for w in windows  # a window's before / during, a LoadMeter lap's own figure
             for v in ((w.get("before") or {}).get("other_cpu"), (w.get("during") or {}).get("max_other_cpu"),
                       w.get("other_cpu"), w.get("other_cpu_before"), w.get("max_other_cpu_during"),
                       w.get("max_other_cpu"))
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {"busy": any(bool(r.get("busy")) for r in recs), "reasons": reasons, "windows": len(recs),
            "busy_windows": sum(bool(r.get("busy")) for r in recs),
            "max_other_cpu": round(max(peaks), 3) if peaks else None,
            "noisy": any(bool((w.get("spread") or {}).get("noisy") or w.get("noisy") is True) for w in windows),
            "threshold_other_cpu": BUSY_OTHER_CPU}


class LoadMeter:
    """Other processes' CPU use between laps, for figures that are not latency timings: the wall
    time of a training, a pass or a benchmark item takes no timing lock, but a busy machine stretches
    it too. ``lap()`` judges the time since the previous lap (or since ``start``) by the same
    threshold as a timing window."""

    def __init__(self, start: CpuReading | None = None, *, what: str = "wall time",
                 reader: Reader | None = None) -> None:
        self.what, self._reader = what, reader
        self._last = start if start is not None else self.read()

    def read(self) -> CpuReading:
        return (self._reader or read_cpu)()  # read_cpu looked up now, so tests may replace it

    def lap(self, min_s: float | None = None) -> dict[str, Any] | None:
        """``{what, busy, reasons, other_cpu, wall_s, loadavg}`` since the previous lap (a ``machine_load``
        record, as :func:`combine` reads them); None (and the lap goes on) when less than ``min_s``
        (default :data:`MIN_INTERVAL_S`) passed, too short to judge."""
        now = self.read()
        wall = now.wall_s - self._last.wall_s
        if wall < (MIN_INTERVAL_S if min_s is None else min_s):
            return None
        used = other_cpu(self._last, now)
        self._last = now
        busy = used >= BUSY_OTHER_CPU
        reasons = [f"other processes used {used:.2f} CPU s per s over {wall:.1f} s (threshold {BUSY_OTHER_CPU})"]
        return {"what": self.what, "busy": busy, "reasons": reasons if busy else [], "other_cpu": round(used, 3),
                "wall_s": round(wall, 3), "loadavg": loadavg()}


__all__ = ["BUSY_OTHER_CPU", "MIN_INTERVAL_S", "MIN_JUDGED_S", "NOISY_SPREAD", "PROBE_S", "CpuReading", "LoadMeter",
           "MachineLoad", "active_window", "closed_windows", "combine", "find_records", "loadavg", "other_cpu", "read_cpu", "spread",
           "timing_window"]
