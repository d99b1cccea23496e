"""How an error or an interruption is written down: an exception as text for a record (never
``Type: `` with nothing after it), and the sentence a stopped run's manifest and report give: what
stopped it, where (a step by name, or a stage such as bench after all steps), and how to resume.

Here, on the ground floor (standard library only), so that the manifest (which records a stopped
run), the stages (which record a skipped backend's error) and the report (which reads both) say it
one way.
"""

from __future__ import annotations

from typing import Any, Mapping

# What stopped an interrupted run, by the exception's type: KeyboardInterrupt is Python's SIGINT
# handler's, Terminated the CLI's SIGTERM handler's (compresslab.cli.terminate_as_interrupt).
INTERRUPTS = {"KeyboardInterrupt": "Ctrl-C (SIGINT)", "Terminated": "SIGTERM (a kill, or a scheduler's time limit)"}


def error_text(e: BaseException, *, typed: bool = True, limit: int | None = None) -> str:
    """``e`` for a record: ``Type: message``, or the type alone where the message is empty
    (KeyboardInterrupt, SystemExit, a bare ``RuntimeError()``). ``typed=False``: the message alone, the
    type standing in for an empty one. ``limit``: at most that many characters of the message. The
    message keeps its own line breaks: a record that must be one line folds them (the search's, a
    multirun's summary: ``" ".join(error_text(e).split())``)."""
    msg = str(e).strip()[:limit]
    if not msg:
        return type(e).__name__
    return f"{type(e).__name__}: {msg}" if typed else msg


def stop_summary(err: Mapping[str, Any], api: bool = False) -> str:
    """The sentence on a stopped run, from its manifest's ``error`` record (``type``, ``message``,
    ``step``, ``stage``, ``after_steps``, ``interrupted``; a record written before ``stage`` existed
    gives the step alone): what stopped it, where, and how to resume. ``api``: a run made by
    ``compresslab.compress(output_dir=...)``, resumed by the same call, not by a command."""
    kind = str(err.get("type") or "error")
    msg = str(err.get("message") or "").strip()
    step, stage = err.get("step"), err.get("stage")
    after = bool(err.get("after_steps")) and not step
    if step:
        where = f" in step {step}"
    elif stage:
        where = f" during {stage}" + (", after all steps had finished" if after else "")
    else:
        where = ""
    if err.get("interrupted", kind in INTERRUPTS):
        # Terminated's message only repeats "SIGTERM"; a KeyboardInterrupt with one was raised by code, not Ctrl-C
        if kind in INTERRUPTS and not (kind == "KeyboardInterrupt" and msg):
            what = f"Interrupted by {INTERRUPTS[kind]}{where}"
        else:
            what = f"Interrupted ({kind}: {msg}){where}" if msg else f"Interrupted ({kind}){where}"
    else:
        what = f"Error{where}: {kind}: {msg.rstrip('.')}" if msg else f"Error{where}: {kind} (no message)"
    how = ("Call compresslab.compress again with the same output_dir to resume" if api
           else "Rerun the same command to resume")
    how += ": the finished steps are kept" if after else " after the last finished step"
    return f"{what}. {how}."


__all__ = ["INTERRUPTS", "error_text", "stop_summary"]
