"""How an error or an interruption is written down: an exception as text for a record (never
``Type: `` with nothing after it), and the sentence a stopped run's manifest, report and terminal give:
what stopped it, where (a step by name, or a stage such as bench after all steps), and how to resume.
And how a SIGTERM becomes an interruption (:class:`Terminated`), for the CLI and ``compress()`` alike, and
where long work stops when a signal is held (:func:`raise_if_interrupted`).

Here, on the ground floor (standard library only), so that the manifest (which records a stopped
run), the stages (which record a skipped backend's error), the report (which reads both), the CLI
and the benchmarks (whose peer workers load this file alone, in venvs without compresslab) say it
one way.
"""

from __future__ import annotations

import re
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Protocol

# What stopped an interrupted run, by the exception's type: KeyboardInterrupt is Python's SIGINT
# handler's, Terminated the SIGTERM handler's (raise_terminated: the CLI's, and compress()'s while it runs).
INTERRUPTS = {"KeyboardInterrupt": "Ctrl-C (SIGINT)", "Terminated": "SIGTERM (a kill, or a scheduler's time limit)"}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour codes (torch bolds part of its message): noise in a record


def clipped(text: str, limit: int | None) -> str:
    """``text`` (stripped) in at most ``limit`` characters: its start, where an error says what went wrong (a
    tail-cut once lost torch's "Weights only load failed" and began mid-word, "ion. Do it only if..."), cut
    at the last word boundary before the limit and ended with "…"; unchanged where it fits (or ``limit`` is
    None). Every quote of a caught exception's text that must be short goes through here."""
    text = text.strip()
    if limit is None or len(text) <= limit:
        return text
    cut = text[:max(limit - 1, 1)]
    words = re.match(r"(?s)(.*\S)\s", cut)  # up to the last whitespace: no word is cut in two
    if words and len(words.group(1)) >= limit // 2:  # one very long token (a path, a hex dump): cut inside it
        cut = words.group(1)
    return cut.rstrip() + "…"


def error_text(e: BaseException, *, typed: bool = True, limit: int | None = None) -> str:
    """``e`` for a record: ``Type: message``, or the type alone where the message is empty
    (KeyboardInterrupt, SystemExit, a bare ``RuntimeError()``). ``typed=False``: the message alone, the
    type standing in for an empty one. ``limit``: at most that many characters of the message, its start
    (:func:`clipped`), without terminal colour codes. The message keeps its own line breaks: a record that must be one line folds them
    (the search's, a multirun's summary: ``" ".join(error_text(e).split())``)."""
    msg = clipped(_ANSI.sub("", str(e)), limit)
    if not msg:
        return type(e).__name__
    return f"{type(e).__name__}: {msg}" if typed else msg


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit) seen as an interrupt, so the manifest records the
    run as ``interrupted`` at its step instead of leaving it ``running`` until the pid check."""


def raise_terminated(signum: int, frame: object) -> None:
    """The SIGTERM handler that makes the signal a :class:`Terminated` in the main thread."""
    raise Terminated(f"stopped by signal {signum} (SIGTERM)")


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated`, so that a run records itself ``interrupted`` at
    its step or stage as on Ctrl-C; the handler found is put back when the block ends, and a SIGTERM
    received in it is then handed to that handler as if it came now: the default one ends the process (as
    the signal would have, the record written first), the caller's own runs (a host's shutdown flag is
    set). Nothing is installed outside the main thread (Python sets handlers there only: a SIGTERM then
    does what the process's handler does), where SIGTERM is ignored or handled outside Python, or where
    it raises Terminated already (the CLI's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None or previous is signal.SIG_IGN or previous is raise_terminated:
        yield
        return
    received = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal received
        received = True
        raise_terminated(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if received:  # also when the block swallowed the Terminated: a kill is never dropped
            signal.raise_signal(signal.SIGTERM)


class SignalDeferral(Protocol):
    """What :func:`raise_if_interrupted` needs of a deferral (``training.resume.DeferredSignals``)."""

    pending: int | None  # the signal held, if any

    def let_go(self) -> int | None:
        """Put back the handlers it replaced; return the held signal (no longer held), if any."""
        ...

    def hold_again(self) -> None:
        """Replace the handlers again (the held signal's handler returned: the work goes on, deferred)."""
        ...


# The deferrals in force, outermost first: DeferredSignals registers itself while its block runs
_DEFERRALS: list[SignalDeferral] = []


def register_deferral(deferral: SignalDeferral) -> None:
    _DEFERRALS.append(deferral)


def unregister_deferral(deferral: SignalDeferral) -> None:
    if deferral in _DEFERRALS:
        _DEFERRALS.remove(deferral)


def raise_if_interrupted() -> None:
    """Long work calls this between its pieces (a Fisher gradient, a block of inverses, an evaluation batch).

    Without a deferral holding a signal it is one check: outside one, Python's own handler stops the work
    between any two bytecodes. Inside one (the training loop holds SIGINT/SIGTERM to the end of the step, to
    checkpoint whole steps), a held signal would otherwise wait for the step's long work (an oBERT Fisher
    rebuild: minutes): here the work in progress is dropped at once instead. Every deferral lets go, innermost
    first (so handlers go back in the order they were installed), handing its signal to the handler it
    replaced: an enclosing deferral (which then holds it and lets go next), then the process's handler, whose
    KeyboardInterrupt (Terminated for SIGTERM) stops the run as a stop at a step's end does. Nothing of the
    dropped step is written, so a rerun resumes from the last checkpoint written. Where every handler returns
    (a caller's own that only notes the request) the work goes on, deferred again. Only in the main thread,
    where signal handlers live; another thread's check does nothing (the main thread's next one acts)."""
    if not any(d.pending is not None for d in _DEFERRALS):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    held = list(_DEFERRALS)
    for d in reversed(held):
        signum = d.let_go()
        if signum is not None:
            signal.raise_signal(signum)
    for d in held:
        d.hold_again()


# The attributes an interrupt carries for its record (RunManifest.mark_failed): the error that was already
# stopping the work when a held signal was raised (DeferredSignals), and the sentence the manifest recorded.
_ERROR_BEHIND, _SUMMARY = "_compresslab_error_behind", "_compresslab_stop_summary"


def held_over(stop: BaseException, error: BaseException) -> None:
    """Mark ``stop`` (a held signal's interrupt) as raised when ``error`` had already stopped the same work:
    the run is recorded as interrupted, keeping ``error`` in the record (:func:`error_behind`)."""
    setattr(stop, _ERROR_BEHIND, error)


def error_behind(stop: BaseException) -> BaseException | None:
    """The error :func:`held_over` marked ``stop`` with, or None."""
    return getattr(stop, _ERROR_BEHIND, None)


def note_summary(e: BaseException, summary: str) -> None:
    """Keep on ``e`` the sentence its run's manifest recorded, for the CLI's line (:func:`recorded_summary`)."""
    setattr(e, _SUMMARY, summary)


def recorded_summary(e: BaseException) -> str | None:
    """The sentence a manifest recorded for ``e`` (:func:`note_summary`); None where no run recorded it."""
    return getattr(e, _SUMMARY, None)


def stop_cause(err: Mapping[str, Any]) -> str:
    """What stopped a run and where, from its manifest's ``error`` record (``type``, ``message``, ``step``,
    ``stage``, ``after_steps``, ``interrupted``; a record written before ``stage`` existed gives the step
    alone; ``error``: the error that had already stopped the work when a held signal interrupted it), e.g.
    ``Interrupted by Ctrl-C (SIGINT) during eval, after all steps had finished``: the first half of
    :func:`stop_summary`, and what a session's ``ended`` record keeps (``RunManifest.end_session``)."""
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
        if err.get("error"):
            what += f"; it had also failed with {str(err['error']).strip().rstrip('.')}"
        return what
    return f"Error{where}: {kind}: {msg.rstrip('.')}" if msg else f"Error{where}: {kind} (no message)"


def stop_summary(err: Mapping[str, Any], api: bool = False) -> str:
    """The sentence on a stopped run, from its manifest's ``error`` record: what stopped it, where
    (:func:`stop_cause`), and how to resume. ``api``: a run made by ``compresslab.compress(output_dir=...)``,
    resumed by the same call, not by a command."""
    after = bool(err.get("after_steps")) and not err.get("step")
    how = ("Call compresslab.compress again with the same output_dir to resume" if api
           else "Rerun the same command to resume")
    how += ": the finished steps are kept" if after else " after the last finished step"
    return f"{stop_cause(err)}. {how}."


__all__ = ["INTERRUPTS", "SignalDeferral", "Terminated", "error_behind", "error_text", "held_over", "note_summary",
           "raise_if_interrupted", "raise_terminated", "recorded_summary", "register_deferral", "sigterm_interrupts",
           "stop_cause", "stop_summary", "unregister_deferral"]
