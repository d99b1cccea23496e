"""The report's Notes: the bench's notes (a deployed IR's true source named), a binary model's missing kernels and
theoretical FLOPs, each scored file whose labels depend on the batch, and why sparse weights do not speed up ORT."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compresslab.report import facts as F
from compresslab.report.fmt import count, pct, plain, times
from compresslab.report.render import Block, Bullets, Heading
from compresslab.report.summary import ir_origin


# when a binary run's export left no note of its own (e.g. the export has not run)
NO_1BIT_KERNELS = ("ONNX Runtime has no 1-bit kernels: the binary model runs as fp32 MatMuls on ±1 values, so "
                   "its ORT speed is fp32 speed; 1 bit per weight is storage, and FLOPs savings are theoretical.")


def _binary_notes(m: Mapping[str, Any]) -> list[str]:
    """The no-1-bit-kernels statement and the theoretical FLOPs of a binary model."""
    if not F.binary_model(m):
        return []
    notes = [str(n) for n in (F.get(m, "export", "fp32", "notes") or []) if n] or [NO_1BIT_KERNELS]
    par = F.as_dict(F.get(m, "export", "fp32", "parity"))
    if par.get("examples_over_atol"):
        notes.append(f"Sign flips: {plain(par.get('examples_over_atol'))} of {plain(par.get('n_examples'))} parity "
                     f"examples differ from torch past atol {plain(par.get('atol'))} (max |Δlogits| "
                     f"{plain(par.get('max_abs_diff'))}, argmax agreement {plain(par.get('argmax_agreement'))}): a "
                     f"pre-sign value within rounding of 0 took another sign in ORT and the flip cascaded.")
    for key, f in F.as_dict(F.get(m, "export", "fp32", "theoretical_flops")).items():
        f = F.as_dict(f)
        fp32, flops = F.num(f.get("flops_fp32")), F.num(f.get("flops"))
        notes.append(f"Theoretical FLOPs per sequence at {key} (binary MACs count 1/64, BiBERT's accounting; "
                     f"not measured): {plain(fp32 / 1e9 if fp32 else None)} G fp32 vs "
                     f"{plain(flops / 1e9 if flops else None)} G binary, {times(F.num(f.get('flops_ratio')))}.")
    return notes


# how the eval pads a batch (``eval.batch_dependence.<cell>.padding``; records without it were padded so too)
_PADDING = {"longest": "each batch padded to its longest sentence"}


def _batch_dependence_notes(m: Mapping[str, Any]) -> list[str]:
    """One note per scored file whose outputs depend on the batch (eval.batch_dependence): why (one dynamic
    activation range per call, over the batchmates and the padding), its score one sentence per call beside the
    batched one, and how many labels differ."""
    notes = []
    for label, rec in (F.as_dict(F.get(m, "eval", "batch_dependence")) or {}).items():
        rec = F.as_dict(rec)
        flips = rec.get("flips")
        differ = (f"; {count(flips)} of {count(rec.get('n'))} predicted labels differ" if flips is not None else "")
        ops = ", ".join(map(str, rec.get("ops") or []))
        padding = str(rec.get("padding") or "longest")
        notes.append(f"{F.cell_label(m, label)} quantizes activations with one scale per call ({ops}): that dynamic "
                     "range is taken over every token of every sentence in the call, padding positions included, so "
                     "its labels depend on what else is in the batch and how far the batch is padded. Score "
                     f"{pct(F.num(rec.get('score_batched')))} at batch {plain(rec.get('batch_size'))} "
                     f"({_PADDING.get(padding, f'padding: {padding}')}), {pct(F.num(rec.get('score_b1')))} one "
                     f"sentence per call (no padding){differ}. A server that batches otherwise, or pads to a fixed "
                     "length, gets other labels again.")
    return notes


def _ir_source_named(note: str, m: Mapping[str, Any]) -> str:
    """A bench note with the deployed IR's true source: versions before it was named wrote that the deploy stage made
    the int8 IR "of" the pipeline's ONNX file even when it made it from the final model's fp32 export."""
    origin, src = ir_origin(m), F.run_relative(F.get(m, "export", "deployed", "source"), m)
    old = "the int8 IR the deploy stage made of it ("
    if origin is None or not origin[1] or not src or old not in note:
        return note
    return note.replace(old, f"the int8 IR the deploy stage made from {src}, not from it (")


def notes_section(m: Mapping[str, Any]) -> list[Block]:
    """Notes: the bench's own (a busy machine's said once, in the banner), binary and batch-dependence notes, and the
    dense-kernels note for sparse ORT files; nothing when there are none."""
    busy = bool(F.run_load(m).get("busy"))  # said once, in the banner at the top
    notes = [_ir_source_named(str(n), m) for n in (F.get(m, "bench", "notes") or [])
             if n and not (busy and str(n).startswith("MACHINE BUSY"))]
    notes += _binary_notes(m)
    notes += _batch_dependence_notes(m)
    deployed = str(F.get(m, "export", "deployed", "label") or "")
    if F.sparsity_steps(m) and (not deployed or deployed.startswith("ort")) and not any("dense kernels" in n
                                                                                        for n in notes):
        notes.append("ORT runs sparse weights with dense kernels: zeros shrink the compressed "
                      "file, not the latency; speedups come from int8 and removed structure.")
    return [Heading("Notes"), Bullets(notes)] if notes else []
