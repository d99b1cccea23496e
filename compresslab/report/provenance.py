"""Which code made the run, as the report says it: the commit (with its uncommitted-changes flag) and, for a run
that more than one process worked on, each session's code and what it ran (the manifest's ``sessions``,
:meth:`compresslab.manifest.RunManifest.open_session`). A run resumed after a commit or an edit ran its later
steps and stages on other code than its first ones: the report says so at the top, not only in a table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compresslab.provenance import same_code
from compresslab.report.fmt import DASH
from compresslab.report.render import Block, Para, Table


def _sessions(m: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    s = m.get("sessions")
    return [x for x in s if isinstance(x, Mapping)] if isinstance(s, list) else []


def code_label(rec: Mapping[str, Any]) -> str:
    """``2df9ab10e24d (uncommitted changes), compresslab 0.1.0``: a session's (or the manifest's) code."""
    sha = str(rec.get("git_sha") or "")[:12] or "no git checkout"
    dirty = {True: " (uncommitted changes)", None: ""}.get(rec.get("git_dirty"), "")
    version = rec.get("compresslab_version")
    return f"{sha}{dirty}" + (f", compresslab {version}" if version else "")


def git_row(m: Mapping[str, Any]) -> list[str]:
    """The ``git_sha`` fact: the creating process's commit, flagged when its files had uncommitted changes."""
    sha = m.get("git_sha")
    if not sha:
        return ["git_sha", DASH]
    flag = {True: " (uncommitted changes in compresslab/)", False: " (clean)"}.get(m.get("git_dirty"), "")
    return ["git_sha", f"{sha}{flag}"]


def code_versions(m: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """One session per code version, in order: a run made by one code version has one entry (two uncommitted
    checkouts count as two, since their edits may differ)."""
    out: list[Mapping[str, Any]] = []
    for s in _sessions(m):
        if not any(same_code(s, o) for o in out):
            out.append(s)
    return out


def _ran(s: Mapping[str, Any]) -> str:
    ran = s.get("ran")
    return ", ".join(str(x) for x in ran) if isinstance(ran, list) and ran else "no step or stage"


def _changed(s: Mapping[str, Any]) -> Mapping[str, Any] | None:
    c = s.get("code_changed")
    return c if isinstance(c, Mapping) else None


def _changed_text(s: Mapping[str, Any]) -> str:
    c = _changed(s) or {}
    files = c.get("files") if isinstance(c.get("files"), list) else []
    n = c.get("n_files", len(files))
    return (f"{n} code file(s) edited after its process started ({', '.join(map(str, files[:3]))}"
            f"{', ...' if isinstance(n, int) and n > 3 else ''}), first noticed at {c.get('noticed_at', DASH)}")


def code_banner(m: Mapping[str, Any]) -> list[Block]:
    """A warning at the top when the run was made by more than one code version, naming each and what it ran, or
    when its code files were edited while a session ran (``code_changed``: modules imported later may be the
    edited ones, whatever ``git_sha`` says)."""
    sessions = _sessions(m)
    out: list[Block] = []
    if len(code_versions(m)) >= 2:
        parts = [f"{'resumed' if s.get('resumed') else 'created'} {s.get('started', DASH)} on {code_label(s)}: "
                 f"{_ran(s)}" for s in sessions]
        out.append(Para(f"This run was made by more than one code version ({len(sessions)} sessions): "
                        + "; ".join(parts) + ". Its steps and stages may not all come from the same code; "
                        "run.overwrite=true remakes it with one.", kind="warn"))
    changed = [s for s in sessions if _changed(s)]
    if changed:
        out.append(Para("The code changed while this run ran: " + "; ".join(
            f"the session started {s.get('started', DASH)} on {code_label(s)} saw {_changed_text(s)}"
            for s in changed) + ". What ran from there on may come from the edited code, not the commit "
            "recorded; run.overwrite=true remakes the run on one.", kind="warn"))
    return out


def _ended(s: Mapping[str, Any]) -> str:
    """How a session ended (its ``ended`` record, RunManifest.end_session): ``finished 2026-...``,
    ``interrupted 2026-...: Interrupted by Ctrl-C (SIGINT) during eval, ...``."""
    e = s.get("ended")
    if isinstance(e, Mapping) and e.get("status"):
        cause = e.get("cause")
        if e.get("found_at"):  # ended by a later session that found its process gone: when it died is unknown
            when = f"found {e['found_at']}" + (f", last wrote the manifest {e['last_saved']}" if e.get("last_saved")
                                              else "")
            return f"{e['status']} ({when})" + (f": {cause}" if cause else "")
        return f"{e['status']} {e.get('at', '')}".rstrip() + (f": {cause}" if cause else "")
    # a process killed outright (kill -9, out of memory) writes nothing; nor did sessions before 2026-12-07
    return "not recorded (still running, killed outright, or an older manifest)"


def sessions_table(m: Mapping[str, Any]) -> list[Block]:
    """Every session (when there is more than one, or its code has uncommitted changes): started, created or
    resumed, its code, what it ran and how it ended (finished, stopped, interrupted or failed, and where)."""
    sessions = _sessions(m)
    if len(sessions) < 2 and not any(s.get("git_dirty") or _changed(s) for s in sessions):
        return []
    rows = [[str(i), str(s.get("started", DASH)), "resumed" if s.get("resumed") else "created",
             code_label(s) + (f"; {_changed_text(s)}" if _changed(s) else ""), _ran(s),
             _ended(s)]
            for i, s in enumerate(sessions, 1)]
    return [Table(["#", "started", "how", "code", "ran", "ended"], rows,
                  "Sessions: the processes that worked on this run")]


__all__ = ["code_banner", "code_label", "code_versions", "git_row", "sessions_table"]
