"""Which timing phase a suite results file's speed figures come from, and which of its machine-load records
belong to that phase and which to the cells' builds (``benchmarks/suite.py``, ``suite_timing.py``,
``suite_report.py``).

A task's speed figures all come from ONE timing phase: this run's (``meta.timing.status == "timed"``) or,
when this run did not time (``--no-timing``, or the phase was refused on a busy machine), an earlier run's,
kept for the cells whose deployed files did not change (``meta.timing.earlier_phase``). That phase's timing
windows (``meta.machine_load.timings``; their ids in ``windows``) are the only ones that can void a speed
figure. A build's own speed checks (ZipLM's latency table during training, a pass's speedup probe) are timing
windows too, but of the build: they are filed under ``meta.machine_load.runs`` and judge what the build chose,
never the suite's figures. Files written before the phase recorded its window ids are read by the phase
window's name (:data:`PHASE_WHAT`), the only window the phase opens.
"""

from __future__ import annotations

from typing import Any, Mapping

PHASE_WHAT = "suite {task}: every cell, fixed shapes and real lengths"  # the phase's one timing window
TIMED, SKIPPED, REFUSED = "timed", "skipped", "refused"  # meta.timing.status
NO_TIMING = "--no-timing"  # meta.timing.reason of a skipped phase
BUILDS = "builds before the timing phase"  # meta.machine_load.runs key of this process's build windows


def phase_what(task: str) -> str:
    return PHASE_WHAT.format(task=task)


def status_of(timing: Mapping[str, Any]) -> tuple[str, str]:
    """``(status, reason)`` of ``meta.timing``: ``timed``, ``skipped`` (reason ``--no-timing``), ``refused`` (the
    busy check's message) or the raw status of anything else. Files before 2026-12-07 wrote ``skipped
    (--no-timing)`` as the status itself."""
    status, reason = str(timing.get("status") or ""), str(timing.get("reason") or "")
    if status.startswith(f"{SKIPPED} (") and status.endswith(")"):
        return SKIPPED, reason or status[len(SKIPPED) + 2:-1]
    return status, reason


def _windows(meta: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    load = meta.get("machine_load") or {}
    return [t for t in load.get("timings") or [] if isinstance(t, Mapping)]


def _named_phase(meta: Mapping[str, Any], task: str) -> list[Mapping[str, Any]]:
    return [t for t in _windows(meta) if t.get("what") == phase_what(task)]


def figures_phase(data: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The timing phase a results file's speed figures come from (``{}`` when none): its own when it was timed,
    else the one it kept. Filled where the file did not record them: the window ids and the time (the phase
    window's), and the git sha (a timed file's own)."""
    meta = data.get("meta") or {}
    phase = dict(phase_of(meta))
    if not phase:
        return {}
    phase.pop("earlier_phase", None)
    if not phase.get("windows") and (named := _named_phase(meta, task)):
        phase["windows"] = [t["id"] for t in named if "id" in t]
        phase.setdefault("at", max(str(t.get("closed_at") or "") for t in named) or None)
    if status_of(meta.get("timing") or {})[0] == TIMED:  # the file's own phase: its git sha is the file's
        phase.setdefault("git_sha", meta.get("git_sha"))
    return phase


def phase_of(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """The phase this file's speed figures come from: this run's when it timed, else the kept earlier one."""
    timing = meta.get("timing") or {}
    return timing if status_of(timing)[0] == TIMED else timing.get("earlier_phase") or {}


def split_windows(meta: Mapping[str, Any], task: str) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """``meta.machine_load.timings`` as (the timing phase's windows, every other): the first can void the speed
    figures; the others describe none of them (builds' speed checks an older suite filed among the timings, or a
    phase whose figures are no longer in the file). No phase (nothing timed or kept): every window is other."""
    phase_rec = phase_of(meta)
    ids = set(phase_rec.get("windows") or ())
    phase: list[Mapping[str, Any]] = []
    other: list[Mapping[str, Any]] = []
    for t in _windows(meta):
        mine = bool(phase_rec) and (t.get("id") in ids if ids else t.get("what") == phase_what(task))
        (phase if mine else other).append(t)
    return phase, other


def busy_reasons(meta: Mapping[str, Any], task: str) -> list[str]:
    """Why the timing phase the figures come from was busy (empty: quiet, or no phase): what voids them."""
    return [f"{t.get('what')}: {r}" for t in split_windows(meta, task)[0] if t.get("busy")
            for r in t.get("reasons") or ["busy"]]
