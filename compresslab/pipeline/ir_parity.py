"""Parity of the deploy stage's OpenVINO IR against the torch model: one verdict per compiled precision.

``parity``: the IR compiled f32 (``INFERENCE_PRECISION_HINT=f32``), the graph's own fidelity, judged as the
ONNX export is (``export.parity``): the plain rule at ``export.atol`` for an fp32 graph, the few-examples rule
for a binary model, and for an int8 QAT model's own QDQ graph at ``max(export.atol, QDQ_ATOL)``. A failure is
the record's ``error``: ORT stays the deploy target.

``parity_deployed``: the IR as ``deploy.precision`` compiles it, when that is not f32. OpenVINO compiles an
"fp32" model in bf16 by default on CPUs with AVX512_BF16 or AMX, and bf16 keeps 8 significant bits, so a
1e-4 logit tolerance says nothing about it: the tolerance widens to :data:`REDUCED_RTOL` of the largest
|output|. A failure is recorded (``passed: false``), warned about and put in the deploy notes, not made an
error: the precision is the user's choice (``deploy.precision``), its accuracy is scored by the eval stage,
and ``deploy.runtime=auto`` only deploys it within ``deploy.tolerance`` of ORT's validation agreement.

An int8 IR made by post-training quantization (our calibration, NNCF) of a model torch runs in float has no
parity tolerance: its difference from torch is quantization error, which the int8 choice and ``auto`` judge
by validation agreement. Its record says so (``passed: null``, ``rule``) instead of a verdict.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from compresslab.export.parity import QDQ_ATOL, compare_outputs, judge_parity, parity_kind
from compresslab.export.precision import is_int8
from compresslab.pipeline.state import RunState

log = logging.getLogger(__name__)

# Tolerance of an IR compiled below f32, as a fraction of the largest |output| torch gives on the parity
# batches. bf16 rounds each MatMul input to 8 significant bits; over a model's layers the outputs move by
# about 1% of their scale (measured with OpenVINO 2026.4 on AVX512_BF16: all-MiniLM-L6-v2 fine-tuned on SST-2,
# max |Δlogit| 0.025 at max |logit| 3.0; its encoder's last_hidden_state 0.028 at 6.2; argmax agreement 100%).
# 5% leaves room for deeper models; a wrong op moves the outputs by their own scale. bf16 is the coarsest
# precision OpenVINO's CPU plugin compiles to (f16 keeps 11 bits), so the same fraction serves f16.
REDUCED_RTOL = 0.05
PTQ_RULE = ("int8 IR quantized after training (post-training quantization of a model torch runs in float): its "
            "difference from torch is quantization error, not an export fault, so no parity tolerance applies; "
            "validation agreement with the teacher judges it (export.openvino.int8_choice, deploy.auto)")


def _parity_batches(state: RunState) -> list[dict]:
    from compresslab.pipeline.export import _parity_batches

    return _parity_batches(state, state.settings.export.parity_examples)


def ir_parity(runner: Any, state: RunState, xml: Path, batches: list[dict]) -> dict[str, Any]:
    """The parity record of the IR ``xml`` compiled by ``runner`` (an ``OpenVinoRunner``) against
    ``state.model`` on ``batches``, with a verdict (``passed``) by the rule that fits the model and the
    compiled precision, or ``passed: None`` for a post-training int8 IR (:data:`PTQ_RULE`)."""
    kind = parity_kind(state.model)
    base = state.settings.export.atol
    ptq = is_int8(xml) and kind != "qdq"  # an int8 IR of a float torch model: quantized after training
    if kind == "qdq":
        base = max(base, QDQ_ATOL)
    c = compare_outputs(state.model, batches, lambda b: runner.feed({k: v.numpy() for k, v in b.items()}),
                        runner.run, graph="openvino_ir")
    precision = str(runner.compiled_precision)
    reduced = precision != "f32"
    atol = max(base, REDUCED_RTOL * c.max_abs_ref) if reduced else base
    rec = judge_parity(c, atol, "plain" if ptq else kind, graph="openvino_ir")
    rec.pop("exporter", None)
    rec.update(precision=precision, max_abs_ref=c.max_abs_ref)
    if ptq:
        rec.update(passed=None, rule=PTQ_RULE)
    elif reduced:  # beside the model's rule (``rule``), why atol is wider here
        rec["tolerance_rule"] = (f"compiled {precision}: atol = max({base:.3g}, {REDUCED_RTOL:g} x the largest "
                                 f"|output|), the rounding of {precision}'s significant bits through the layers")
    return rec


def _why(rec: dict[str, Any]) -> str:
    """A failed record's numbers and rule, for the error and the notes."""
    rule = "".join(f"; {k}: {rec[k]}" for k in ("rule", "tolerance_rule") if rec.get(k))
    return (f"max |diff| {rec['max_abs_diff']:.3g} against atol {rec['atol']:.3g}, {rec['examples_over_atol']} of "
            f"{rec['n_examples']} examples past it{rule}")


def check_ir(state: RunState, xml: Path, threads: int) -> dict[str, Any]:
    """The IR's parity records (``parity`` at f32, ``parity_deployed`` at ``deploy.precision`` when it
    compiles to another precision), the compiled precision per setting, and ``error`` when the f32 check
    fails; a failed ``parity_deployed`` adds a note instead (this module's docstring says why)."""
    from compresslab.bench.openvino_runner import OpenVinoRunner

    batches = _parity_batches(state)
    runner = OpenVinoRunner(xml, threads, "f32")
    rec: dict[str, Any] = {"parity": ir_parity(runner, state, xml, batches),
                           "compiled_precision": {"f32": runner.compiled_precision}}
    d = state.settings.deploy
    if d.precision != "f32":
        # a binary IR compiles 'default' as f32 and refuses bf16 (openvino_runner.resolve_precision)
        asked = OpenVinoRunner(xml, threads, d.precision)
        rec["compiled_precision"][d.precision] = asked.compiled_precision
        if asked.precision_note:
            rec["precision_note"] = asked.precision_note
        if asked.compiled_precision != "f32":
            rec["parity_deployed"] = ir_parity(asked, state, xml, batches)
    if rec["parity"]["passed"] is False:
        rec["error"] = f"IR parity vs torch (compiled f32): {_why(rec['parity'])}"
    elif (dep := rec.get("parity_deployed")) and dep["passed"] is False:
        note = (f"IR parity FAILED at deploy.precision={d.precision} (compiled {dep['precision']}): {_why(dep)}; the "
                "IR passes compiled f32, so the difference is the reduced precision's: set deploy.precision=f32 "
                "to deploy it at f32")
        rec["notes"] = [note]
        log.warning("deploy: %s", note)
    return rec
