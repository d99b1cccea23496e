"""The report's account of what a resume redid: the manifest's ``redone`` list, one line per event.

A resume (an interrupted run's, or a rerun of a finished one) reuses a finished step or a stage after the steps only
while its files are the ones it wrote (``pipeline/step_files.py``, ``pipeline/stage_files.py``); each time one was
not, the run redid it and what read it, and appended an event: when, the step (``step``, ``steps``: every step
redone) or the stage (``stage``, ``stages``), and ``problems``: each file and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compresslab.report.render import Block, Bullets, Heading, Para


def _line(event: Mapping[str, Any]) -> str:
    """``<at>: step hawq redone (with the later steps nbits, and the stages after the steps): <problems>``."""
    problems = "; ".join(str(p) for p in event.get("problems") or []) or "no reason recorded"
    if event.get("step") is not None:
        later = [str(s) for s in event.get("steps") or [] if s != event["step"]]
        what = (f"step {event['step']} redone" + (f" with the later steps {', '.join(later)}" if later else "") +
                ", and the stages after the steps")
    else:
        stage = str(event.get("stage") or "?")
        later = [str(s) for s in event.get("stages") or [] if s != stage]
        what = f"the {stage} stage redone" + (f" with the stages after it {', '.join(later)}" if later else "")
    return f"{event.get('at') or '?'}: {what}: {problems}"


def redone_section(m: Mapping[str, Any]) -> list[Block]:
    """A section listing every event of the manifest's ``redone`` list; nothing when it is empty."""
    events = [e for e in m.get("redone") or [] if isinstance(e, Mapping)]
    if not events:
        return []
    return [Heading("Redone on resume"),
            Para("A resume found files of this run that were not the ones written (missing, unreadable or changed): "
                 "what they belonged to, and everything that read them, was computed again. The figures in this "
                 "report are from the files as redone."),
            Bullets([_line(e) for e in events])]


__all__ = ["redone_section"]
