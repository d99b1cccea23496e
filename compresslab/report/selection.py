"""The report's "Checkpoint selection" section: for each step whose training kept its best validation check
(``recovery.select_every``; BiBERT's ``eval_every`` before it had a recovery block), which step was kept, its
score, and every check.

A user who sets ``select_every`` must be able to see what the selection did without reading the manifest: in
particular when it kept step 0 (the pass's own weights: the KD recovery never beat them on validation, so the
training's steps were spent and discarded), or the last step (the curve was still rising: a longer recovery may
help). Scores are on the validation split carved from train, never dev (MEASURE.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compresslab.report import facts as F
from compresslab.report.fmt import DASH, plain
from compresslab.report.render import Block, Heading, Table


def _selections(metrics: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], float | None]]:
    """``(selection record, training steps)`` of one step's metrics, at most three levels down: a pass's own
    ``selection`` (oBERT / magnitude one-shot, BiBERT: ``training.recover``'s record plus ``examples``), each
    training record's (``training.recover``'s result: ZipLM's ``recovery``, int8 QAT's and hawq's ``qat``) and
    each family member's (gradual ZipLM's ``family.<S>x.recovery``). The steps: the record's own ``steps`` (since session 40), else its parent's."""
    out: list[tuple[Mapping[str, Any], float | None]] = []

    def visit(node: Mapping[str, Any], depth: int) -> None:
        sel = node.get("selection")
        if isinstance(sel, Mapping) and "best_step" in sel and all(sel != seen for seen, _ in out):
            # (the step's own target is also its family member: one record, listed once)
            out.append((sel, F.num(sel.get("steps")) or F.num(node.get("steps"))))
        if depth < 3:
            for key, child in node.items():
                if key != "selection" and isinstance(child, Mapping):
                    visit(child, depth + 1)

    visit(metrics, 0)
    return out


def _reading(sel: Mapping[str, Any], steps: float | None) -> str:
    """What the kept step means for the user."""
    best = F.num(sel.get("best_step"))
    if best == 0:
        return ("step 0: the weights before training (the pass's own) scored best; no recovery step beat them on "
                "validation, so the recovery's steps were discarded")
    if steps is not None and best == steps:
        return "the last step: the validation score was still rising at the end (a longer recovery may help)"
    return "an intermediate step: later steps scored lower on validation (the weights of the best check kept)"


def _history(sel: Mapping[str, Any]) -> str:
    """``step: score`` for every check, in order."""
    rows = [h for h in sel.get("history") or [] if isinstance(h, Mapping)]
    return ", ".join(f"{plain(h.get('step'))}: {F.num(h.get('score')):.4f}" if F.num(h.get("score")) is not None
                     else f"{plain(h.get('step'))}: {DASH}" for h in rows) or DASH


def selection_section(m: Mapping[str, Any]) -> list[Block]:
    """One facts table per step that selected a checkpoint on validation; nothing when no step did."""
    out: list[Block] = []
    for s in F.steps(m):
        metrics = F.as_dict(F.get(s, "result", "metrics"))
        for sel, steps in _selections(metrics):
            score = F.num(sel.get("best_score"))
            facts = [["split", plain(sel.get("split", "validation"))],
                     ["checks", f"every {plain(sel.get('every'))} steps" if sel.get("every") is not None else DASH],
                     ["kept step", f"{plain(sel.get('best_step'))}"
                                   + (f" of {steps:g}" if steps is not None else "")],
                     ["its score", f"{score:.4f}" if score is not None else DASH],
                     ["reading", _reading(sel, steps)],
                     ["every check (step: score)", _history(sel)]]
            steps_checked = [F.num(h.get("step")) for h in sel.get("history") or [] if isinstance(h, Mapping)]
            # training.recover's records (they say ``every``) score step 0 since session 40; BiBERT's records from
            # before it trained through recover() (design review item 7) have no ``every`` and never scored it
            if "every" in sel and steps_checked and 0 not in steps_checked:
                facts.append(["step 0 (the weights before training)",
                              "not scored: the run was made before they were a candidate (rerun with "
                              "run.overwrite=true to score them)"])
            label = F.step_label(s)
            out.append(Table(["fact", label], facts, f"{label}: the checkpoint kept on validation"))
    return [Heading("Checkpoint selection"), *out] if out else []
