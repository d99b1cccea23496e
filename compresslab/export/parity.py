"""Parity: does an exported graph compute what the PyTorch model computes? One comparison for every
runtime (ORT here, OpenVINO in the deploy stage: :func:`compare_outputs` takes any ``run``), one verdict
per rule (:func:`judge_parity`), and the ORT check the export raises on (:func:`check_parity`).

Rules: ``plain`` (every example within atol: fp32 graphs) and, for models with step-function activations
(binary: sign; int8 QDQ: a uint8 grid), a few-examples rule: flip cascades move a few examples past atol,
an export fault moves every example.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from compresslab.eval.onnx_runner import OnnxRunner
from compresslab.failure import raise_if_interrupted
from compresslab.models.attention import eager_attention

log = logging.getLogger(__name__)


class ParityError(ValueError):
    """ONNX Runtime disagrees with PyTorch past the tolerance (or in shape, or with NaNs)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report
        self.max_abs_diff = report.get("max_abs_diff")
        self.atol = report.get("atol")


class _ExportWrapper(nn.Module):
    """Fixed positional signature returning one tensor, so both exporters see the same graph.

    Returns ``logits (B, C)`` for task heads or ``last_hidden_state (B, T, H)`` for bare encoders
    (pooling stays outside the graph so one export serves any pooling).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.model(**kwargs, return_dict=True)[0]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to_torch(feeds: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in feeds.items()}


# The parity of a model with step-function activations (binary: sign; int8 QDQ: a uint8 grid):
# examples whose outputs stay within atol of torch must be at least this fraction; the rest are
# flip cascades (see check_parity). A real export fault (a wrong attention function, a dropped op, a
# wrong weight) moves every example, not a few.
MIN_EXACT_FRACTION = 0.9


def _sign_sensitive(model: nn.Module) -> bool:
    """A frozen binarized model (BiBERT): its activations go through sign(), so an ulp between
    torch and ORT at a value ~1e-7 can flip a sign and cascade through every later layer."""
    from compresslab.models.binary import is_binary

    return is_binary(model)


def _is_qdq(model: nn.Module) -> bool:
    """An int8 QAT model (``models.qdq``): exported as a plain QDQ graph."""
    from compresslab.models.qdq import is_qdq

    return is_qdq(model)


def parity_kind(model: nn.Module) -> str:
    """Which parity rule judges ``model``'s graph: ``binary`` or ``qdq`` (step-function activations: the
    few-examples rule of :func:`judge_parity`), else ``plain`` (every example within atol)."""
    return "binary" if _sign_sensitive(model) else "qdq" if _is_qdq(model) else "plain"


@dataclass
class Compared:
    """PyTorch vs a runtime on the same batches, before any tolerance is applied."""

    max_abs_diff: float
    mean_abs_diff: float
    n_examples: int
    argmax_agreement: float | None
    max_abs_ref: float  # the largest |output| of torch: the scale a reduced-precision tolerance is relative to
    per_example: list[float]  # each example's max |diff| (real tokens only for 3-D outputs)
    finite: bool


def compare_outputs(model: nn.Module, batches: Iterable[Mapping[str, Any]],
                    feeds: Callable[[Mapping[str, Any]], Mapping[str, np.ndarray]],
                    run: Callable[[Mapping[str, np.ndarray]], np.ndarray], *, graph: str = "",
                    exporter: str = "") -> Compared:
    """``model`` (eager attention) against ``run(feeds(batch))`` on every batch (any runtime: ORT, OpenVINO).

    3-D outputs are compared on real tokens only: padded positions are garbage in both and every pooling
    masks them. Argmax agreement is counted for classifiers (``None`` otherwise). A shape mismatch raises
    :class:`ParityError`."""
    wrapper = _ExportWrapper(model)
    device = _device(model)
    diffs: list[float] = []
    max_d, max_ref, sum_d, n_el, agree, n_cls, finite = 0.0, 0.0, 0.0, 0, 0, 0, True
    with eager_attention(model), torch.no_grad():
        for batch in batches:
            raise_if_interrupted()
            f = feeds(batch)
            ref = wrapper(**_to_torch(f, device)).float().cpu().numpy()
            out = np.asarray(run(f))
            if out.shape != ref.shape:
                raise ParityError(f"{graph or 'ONNX'} output shape {out.shape} != PyTorch {ref.shape}",
                                  {"graph": graph, "exporter": exporter})
            diff, mag = np.abs(out.astype(np.float64) - ref), np.abs(ref)
            if diff.ndim == 3:
                real = np.asarray(f["attention_mask"]).astype(bool)
                per_ex = np.where(real[..., None], diff, 0.0).reshape(len(diff), -1).max(-1, initial=0.0)
                diff, mag = diff[real], mag[real]
            else:
                per_ex = diff.reshape(len(diff), -1).max(-1, initial=0.0)
            finite &= bool(np.isfinite(diff).all())
            max_d = max(max_d, float(np.nanmax(diff, initial=0.0)))
            max_ref = max(max_ref, float(np.nanmax(mag, initial=0.0)))
            sum_d, n_el = sum_d + float(np.nansum(diff)), n_el + diff.size
            diffs += [float(x) for x in per_ex]
            if ref.ndim == 2 and ref.shape[1] > 1:
                agree += int((out.argmax(-1) == ref.argmax(-1)).sum())
                n_cls += len(ref)
    if not diffs:
        raise ValueError("parity needs at least one batch")
    return Compared(max_d, sum_d / max(n_el, 1), len(diffs), agree / n_cls if n_cls else None, max_ref, diffs, finite)


# (short and full name of the kind, its activations, what its flips are, why they happen)
_STEPWISE = {"binary": ("binary", "binary", "sign activations", "sign flips",
                        "|x| ~ 1e-7 pre-sign values rounded differently by torch and ORT"),
             "qdq": ("QDQ", "int8 QDQ", "uint8 activations", "rounding-boundary flips",
                     "an activation torch and ORT compute a few ulps apart lands on the other side of a grid midpoint "
                     "and moves by one step")}


def judge_parity(c: Compared, atol: float, kind: str, *, graph: str = "", exporter: str = "") -> dict[str, Any]:
    """The parity report of ``c`` at ``atol`` by ``kind``'s rule (:func:`parity_kind`), ``passed`` its verdict.

    ``plain``: finite and max |diff| <= atol. ``binary`` / ``qdq`` (step-function activations): finite and at
    least :data:`MIN_EXACT_FRACTION` of the examples within atol, the rest being flip cascades (see
    :func:`check_parity`); a ``rule`` entry says so. Never raises: the caller decides what a failure means."""
    over = sum(1 for d in c.per_example if not d <= atol)
    report = {"graph": graph, "exporter": exporter, "max_abs_diff": c.max_abs_diff, "mean_abs_diff": c.mean_abs_diff,
              "atol": atol, "n_examples": c.n_examples, "argmax_agreement": c.argmax_agreement,
              "examples_over_atol": over}
    if kind in _STEPWISE:
        _, name, acts, flips, cause = _STEPWISE[kind]
        report["rule"] = (f"{name} model ({acts}): at least {MIN_EXACT_FRACTION:.0%} of examples within atol; the "
                          f"rest are {flips} ({cause}) cascading through later layers")
        report["passed"] = c.finite and (c.n_examples - over) >= MIN_EXACT_FRACTION * c.n_examples
    else:
        report["passed"] = c.finite and c.max_abs_diff <= atol
    return report


def check_parity(model: nn.Module, onnx_path: str | Path, batches: Iterable[Mapping[str, Any]], *,
                 atol: float = 1e-4, threads: int | None = None, exporter: str = "",
                 graph: str = "", optimization: str = "all") -> dict[str, Any]:
    """Compare PyTorch (eager attention) with ORT on ``batches``; raise :class:`ParityError` past ``atol``.

    Binary models (``models.binary.is_binary``) are held to a different rule, since sign() turns
    last-ulp differences into ±1 flips: torch and ORT compute LayerNorm and GELU's Erf to slightly
    different last bits, so a pre-sign value of ~1e-7 (or ORT's ``-0`` where torch has ``-1.7e-7``)
    maps to +1 in one and -1 in the other, and the flip cascades through the later binary layers
    (an example's logits then differ by up to ~0.5, its prediction rarely). Both outputs are right
    to within fp rounding; neither is the reference. So a binary model's parity reports the max
    logit difference, the number of examples past ``atol`` and the argmax agreement, and raises
    only on non-finite outputs, a shape mismatch, or fewer than
    :data:`MIN_EXACT_FRACTION` of the examples within ``atol`` (an export fault moves every
    example). int8 QDQ models (``models.qdq.is_qdq``) get the same rule: their activations are rounded
    to a uint8 grid, and an activation torch and ORT compute a few ulps apart can land on the other
    side of a grid midpoint (one step, ~1e-2) and cascade. Every other model keeps the plain ``atol`` rule
    (:func:`judge_parity`). ``optimization`` is ORT's graph optimization level
    (``eval.onnx_runner.GRAPH_OPTIMIZATION``).
    """
    runner = OnnxRunner(onnx_path, threads=threads, optimization=optimization)
    kind = parity_kind(model)
    c = compare_outputs(model, batches, runner.feeds, lambda f: runner.session.run(runner.output_names[:1], f)[0],
                        graph=graph, exporter=exporter)
    report = judge_parity(c, atol, kind, graph=graph, exporter=exporter)
    if "rule" not in report:  # the plain rule: its report says only that it passed (a failure raises)
        if not report["passed"]:
            why = "non-finite outputs" if not c.finite else f"max |diff| {c.max_abs_diff:.3g} > atol {atol:.3g}"
            raise ParityError(f"ONNX parity failed for {graph or onnx_path}: {why} over {c.n_examples} examples "
                              f"(mean |diff| {c.mean_abs_diff:.3g}, exporter {exporter})", report)
        return report
    short, _, _, flips, _ = _STEPWISE[kind]
    over, n_ex = report["examples_over_atol"], c.n_examples
    if c.finite and over:
        log.info("%s: %d of %d examples differ from torch past atol %.3g (max |diff| %.3g, argmax agreement %s):"
                 " %s of a %s model, reported, not failed", graph or onnx_path, over, n_ex, atol,
                 c.max_abs_diff, report["argmax_agreement"], flips, short)
    if not report["passed"]:
        why = "non-finite outputs" if not c.finite else (
            f"{over} of {n_ex} examples past atol {atol:.3g} (max |diff| {c.max_abs_diff:.3g}); flips touch a few "
            f"examples, this many means the graph computes something else")
        raise ParityError(f"ONNX parity failed for {short} model {graph or onnx_path}: {why} "
                          f"(exporter {exporter})", report)
    return report


# a measured record judged by no tolerance (measure_parity): no passed, no atol; report/export.py reads it by value
INFORMATIVE = "informative"


def measure_parity(model: nn.Module, onnx_path: str | Path, batches: Iterable[Mapping[str, Any]], *,
                   threads: int | None = None, exporter: str = "", graph: str = "", optimization: str = "all",
                   why: str = "") -> dict[str, Any]:
    """Compare PyTorch with ORT on ``batches`` and record the differences, judged by no tolerance:
    ``status: "informative"`` and ``rule: "measured, no tolerance: <why>"``, with no ``passed`` or ``atol`` (a verdict
    at an infinite tolerance reads as a pass it never was: ORT's int8 kernels, ``export.onnx``'s ``int8_kernels``,
    compute another function than the graph ONNX defines). ParityError only for what no kernel may give: non-finite
    outputs (a shape mismatch raises in :func:`compare_outputs`)."""
    runner = OnnxRunner(onnx_path, threads=threads, optimization=optimization)
    c = compare_outputs(model, batches, runner.feeds, lambda f: runner.session.run(runner.output_names[:1], f)[0],
                        graph=graph, exporter=exporter)
    report = {"graph": graph, "exporter": exporter, "status": INFORMATIVE,
              "rule": f"measured, no tolerance{f': {why}' if why else ''}", "max_abs_diff": c.max_abs_diff,
              "mean_abs_diff": c.mean_abs_diff, "n_examples": c.n_examples, "argmax_agreement": c.argmax_agreement}
    if not c.finite:
        raise ParityError(f"ONNX outputs of {graph or onnx_path} are not finite over {c.n_examples} examples "
                          f"(exporter {exporter})", report)
    return report


# Parity of an int8 QDQ model (models.qdq) is checked with ORT running the graph as ONNX defines it
# (graph optimization "basic": QuantizeLinear/DequantizeLinear in float, fp32 MatMul), which is the
# function the torch fake-quant model computes; the tolerance is wider than fp32's because an input
# that torch and ORT compute a few ulps apart (LayerNorm, GELU's Erf) can land on the other side of a
# rounding boundary of its uint8 grid: that element then moves by one step s_x (~1e-2), and the flip
# carries through the later layers. See export.onnx.export_model for the int8-kernel run, reported beside it.
QDQ_ATOL = 5e-2
