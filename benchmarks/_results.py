"""A benchmark's results file: nested JSON keys, written atomically after every item, every write
stamped with how busy the machine was (issue #12 kind 4: a figure timed beside other work is void).

Every benchmark writes ``benchmarks/results/<topic>.json`` through :class:`ResultsFile`, and only
through it (``tests/robustness/test_timing_sites.py`` reads the scripts and fails on any other
writer), so a new benchmark cannot leave its figures without the machine's load. The script does
nothing for it: each write (:meth:`ResultsFile.put` of one item, :meth:`ResultsFile.write` of the
whole file) records in ``meta.machine_load``

* ``timings``: every timing window this process closed since the file's previous write
  (:func:`compresslab.bench.machine_load.closed_windows`: ``measure_latency``, a latency table, a
  script's own ``timing_window``), each tagged with the ``item`` written next (its keys joined by
  ``/``; ``*`` for a whole-file write): the item that holds those figures;
* ``intervals``: per item, other processes' CPU use since the previous write (what a wall time, a
  training's seconds or a pass's cost were measured under: those take no timing lock);
* ``runs``: the ``machine_load`` records of pipeline runs whose figures the script copies from their
  manifests (:meth:`ResultsFile.note_run`: the bench stage, ``deploy=auto``, latency tables, guided int8);
* ``busy`` (any of these busy) and ``busy_items`` (item -> why).

Entries written by earlier processes are kept (a resumed benchmark), so an item measured busy stays
flagged until the file is made afresh, or until every speed figure is measured again in one phase
(:meth:`ResultsFile.restart_timings`, the suite's timing of a task, or its keeping of an earlier phase's figures;
the windows a build closed, which time no figure, go under ``runs`` then). Files that are not results (a list of
run dirs, a provenance tag, ``_timed.py``'s record) are written with :func:`write_aside`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from compresslab.bench.machine_load import BUSY_OTHER_CPU, LoadMeter, closed_windows, combine, find_records
from compresslab.manifest import atomic_write_json, read_json

_MISSING = object()
WHOLE = "*"  # the item of a whole-file write
HOW = ("timings: the timing windows closed before each write, tagged with the item written; intervals: other "
       "processes' CPU s per s since the previous write, per item (wall times); runs: pipeline runs whose figures "
       f"were copied; busy at >= {BUSY_OTHER_CPU} CPU s per s of other processes")


def write_aside(path: str | Path, data: Any) -> None:
    """Write a JSON file that is not a results file atomically, unstamped: one that holds no figures (a run
    list, a provenance tag) or a record that carries its own ``machine_load`` (``_timed.py``)."""
    atomic_write_json(Path(path), data)


def jsonable(v: Any) -> Any:
    """``v`` as a results file holds it: through JSON and back, anything JSON has no type for as its ``str``."""
    return json.loads(json.dumps(v, default=str))


def since(t0: float) -> float:
    """Wall seconds since ``t0`` (a ``time.perf_counter()`` reading), to 0.1 s, as results record a build or phase."""
    return round(time.perf_counter() - t0, 1)


class ResultsFile:
    """``benchmarks/results/<topic>.json`` as a nested dict: ``put(["a", "b"], v)`` sets ``data["a"]["b"]``
    and rewrites the file atomically, so a stopped benchmark keeps every finished item; every write
    stamps ``meta.machine_load`` (this module's docstring).

    Make it when the script starts (its first interval runs from then). ``meter`` is for tests (a
    :class:`~compresslab.bench.machine_load.LoadMeter` on fake CPU readings).
    """

    def __init__(self, path: str | Path, *, meter: LoadMeter | None = None) -> None:
        self.path = Path(path)
        self._meter = meter or LoadMeter(what="since the previous write")
        # the process's timing windows closed before the file was opened belong to no item of it
        self._stamped = len(closed_windows())
        self._runs: dict[str, dict[str, Any]] = {}
        self._fresh_timings = False  # restart_timings(): earlier processes' windows describe no figure any more
        self._keep_timings: frozenset[str] = frozenset()  # ...but these (restart_timings' keep)

    def load(self) -> dict:
        return read_json(self.path) if self.path.is_file() else {}

    def put(self, keys: Sequence[str], value: Any) -> None:
        """Set the item at ``keys`` (a ``meta`` replaced whole keeps its ``machine_load``) and write."""
        data = self.load()
        kept = _load_of(data)
        node = data
        *parents, last = keys
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
        self._write(data, "/".join(map(str, keys)), kept)

    def write(self, data: Mapping[str, Any]) -> None:
        """Replace the whole file with ``data`` (a script that builds its file itself), stamped the same way;
        the machine_load entries the file (or ``data``) held are kept."""
        data = dict(data)
        self._write(data, WHOLE, _merge(_load_of(self.load()), _load_of(data)))

    def note_run(self, name: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Record the machine's load of a pipeline run whose figures this file copies (every ``machine_load``
        in its manifest, combined); stored under ``meta.machine_load.runs[name]`` at the next write."""
        rec = {**combine(find_records(manifest)), "run": manifest.get("config_hash") or manifest.get("run_dir")}
        self._runs[name] = rec
        return rec

    def restart_timings(self, before: int | None = None, builds: str = "builds before the timing phase",
                        keep: Collection[str] = ()) -> None:
        """Every speed figure of the file is about to come from one phase: measured again, all together (the
        suite's timing of a task), or kept from the earlier phase in ``keep`` (a run that did not time): forget the
        other timing windows recorded so far, so a window that no longer describes any figure (an earlier run's,
        or a build's) cannot void them.

        Windows this process closed before the call (a cell build's own speed checks: a ZipLM latency table
        while it trained, a runtime choice) time no figure of the file: they are not lost, but combined into one
        record under ``meta.machine_load.runs[builds]`` (a busy one still flags the file, naming the builds),
        never under ``timings`` (what voids the figures; the report's "speed figures void" banner reads it).
        Earlier processes' timing windows are dropped at the next write, but those whose id is in ``keep``
        (the earlier phase whose figures a run that did not time kept); intervals and runs are kept.
        ``before``: the process's count of closed windows (``len(closed_windows())``) when the phase began,
        for a call made after the phase succeeded; the windows from there on are the phase's own and stay in
        ``timings``. Default: every window so far. A run that did not time names in ``keep`` the windows of the
        earlier phase whose figures it kept (none kept: nothing describes a figure, so none stay).
        """
        end = len(closed_windows()) if before is None else before
        windows = closed_windows(self._stamped)[:max(0, end - self._stamped)]
        self._stamped = max(self._stamped, end)
        if windows:
            self._runs[builds] = {**combine(windows), "run": "this process, before the timing phase"}
        self._fresh_timings, self._keep_timings = True, frozenset(keep)

    def get(self, keys: Sequence[str], default: Any = None) -> Any:
        node: Any = self.load()
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return default
            node = node[k]
        return node

    def has(self, keys: Sequence[str]) -> bool:
        return self.get(keys, _MISSING) is not _MISSING

    def _write(self, data: dict, item: str, kept: Mapping[str, Any]) -> None:
        windows = closed_windows(self._stamped)
        self._stamped += len(windows)
        timings = {t["id"]: t for t in kept.get("timings") or [] if isinstance(t, Mapping) and "id" in t
                   and (not self._fresh_timings or t["id"] in self._keep_timings)}
        # once: what this write keeps is the file's timings from now on (a later write, such as the suite's
        # rewrite with voided verdicts, must not drop the phase's windows it just wrote)
        self._fresh_timings, self._keep_timings = False, frozenset()
        timings.update({w["id"]: _compact(w, item) for w in windows})
        intervals = dict(kept.get("intervals") or {})
        lap = self._meter.lap()
        if lap is not None:  # None: under a second since the last write, too short to judge
            intervals[item] = lap
        runs = {**(kept.get("runs") or {}), **self._runs}
        meta = data.get("meta")
        data["meta"] = meta = dict(meta) if isinstance(meta, Mapping) else {}
        meta["machine_load"] = _verdict(list(timings.values()), intervals, runs)
        atomic_write_json(self.path, data)


def _load_of(data: Any) -> dict[str, Any]:
    meta = data.get("meta") if isinstance(data, Mapping) else None
    load = meta.get("machine_load") if isinstance(meta, Mapping) else None
    return dict(load) if isinstance(load, Mapping) else {}


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two machine_load stamps as one: timings by id, intervals and runs by name (``b`` wins)."""
    timings = {t["id"]: t for t in [*(a.get("timings") or []), *(b.get("timings") or [])]
               if isinstance(t, Mapping) and "id" in t}
    return {"timings": list(timings.values()),
            "intervals": {**(a.get("intervals") or {}), **(b.get("intervals") or {})},
            "runs": {**(a.get("runs") or {}), **(b.get("runs") or {})}}


def _compact(window: Mapping[str, Any], item: str) -> dict[str, Any]:
    """One closed timing window, as a results file keeps it."""
    before, during = window.get("before") or {}, window.get("during") or {}
    return {"id": window["id"], "item": item, "what": window.get("what"), "busy": bool(window.get("busy")),
            "reasons": list(window.get("reasons") or []), "other_cpu_before": before.get("other_cpu"),
            "max_other_cpu_during": during.get("max_other_cpu"), "window_s": during.get("window_s"),
            "noisy": bool((window.get("spread") or {}).get("noisy")), "closed_at": window.get("closed_at"),
            "pid": window.get("pid")}


def _verdict(timings: list[dict[str, Any]], intervals: Mapping[str, Any], runs: Mapping[str, Any]) -> dict[str, Any]:
    why: dict[str, list[str]] = {}
    for t in timings:
        if t.get("busy"):
            why.setdefault(t["item"], []).extend(f"{t.get('what')}: {r}" for r in t.get("reasons") or [])
    for item, lap in intervals.items():
        if isinstance(lap, Mapping) and lap.get("busy"):
            why.setdefault(item, []).append(f"other processes used {lap.get('other_cpu')} CPU s per s over the "
                                            f"{lap.get('wall_s')} s before it was written")
    for name, rec in runs.items():
        if isinstance(rec, Mapping) and rec.get("busy"):
            why.setdefault(f"run {name}", []).extend(rec.get("reasons") or ["timed on a busy machine"])
    return {"busy": bool(why), "busy_items": why, "what": "results file",
            "reasons": [f"{item}: {r}" for item, rs in why.items() for r in rs],  # as combine() reads a record
            "threshold_other_cpu": BUSY_OTHER_CPU, "timings": timings, "intervals": dict(intervals),
            "runs": dict(runs), "how": HOW}
