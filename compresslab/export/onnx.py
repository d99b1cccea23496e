"""Export a HF encoder to ONNX, fuse it, and prove the graph computes what PyTorch computes.

Layout of the export directory (what optimum's ``ORTModelForSequenceClassification`` loads)::

    model.onnx           the DEPLOYED fp32 graph: fused by ORT's transformer optimizer when
                         optimize=True (the speed denominator ``ort_fp32``), else the raw export
    model_unfused.onnx   the raw export, kept for debugging and re-fusing (optimize=True only)
    config.json, tokenizer files, parity.json

We export with eager attention and the legacy TorchScript exporter (``dynamo=False``): ORT's
transformer optimizer fuses attention only for that graph shape. If that exporter fails (it is
deprecated in torch >= 2.9), the dynamo exporter is tried and the result says so, since its graph
usually does not fuse. Parity runs on the caller's real, padded batches; past ``atol`` it raises
:class:`ParityError` carrying the numbers.

Only transformers' fused attention kernels (sdpa, flash, ...) are switched to eager for export:
plain-torch implementations such as BiBERT's Bi-Attention are exported as they run. Binary models
(``models.binary``) are exported with their sign ties (``Where(x >= 0, 1, -1)``: 0 -> +1, unlike
ONNX ``Sign``), checked by a parity rule that allows sign-flip cascades on a few examples (see
:func:`check_parity`), and carry :data:`BINARY_ORT_NOTE`: ORT has no 1-bit kernels.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from compresslab.eval.onnx_runner import OnnxRunner
from compresslab.export.graph_inputs import restore_inputs
from compresslab.export.optimize import heads_and_hidden, optimize_graph
from compresslab.manifest import atomic_write_json, cpu_flags
from compresslab.models.attention import eager_attention
from compresslab.models.loading import save_tokenizer

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """Neither ONNX exporter could trace the model; the message carries both causes."""


class ParityError(ValueError):
    """ONNX Runtime disagrees with PyTorch past the tolerance (or in shape, or with NaNs)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report
        self.max_abs_diff = report.get("max_abs_diff")
        self.atol = report.get("atol")


@dataclass
class ExportResult:
    """Where the export went and what was checked. ``onnx_path`` is the deployed graph."""

    dir: Path
    onnx_path: Path
    unfused_path: Path | None
    exporter: str  # "torchscript" or "dynamo"
    opset: int
    input_names: list[str]
    output_name: str  # "logits" or "last_hidden_state"
    fused_attention_nodes: int
    attention_heads: list[int] = field(default_factory=list)
    parity: dict[str, Any] = field(default_factory=dict)  # of the deployed graph (parity.json)
    binary: bool = False  # a frozen binarized (BiBERT) model: sign-flip parity rule, no 1-bit kernels in ORT
    qdq: dict[str, Any] | None = None  # an int8 QAT model: its plain QDQ graph (export.qdq.qdq_summary + fold)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


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


def input_names_for(model: nn.Module, tokenizer: Any = None) -> list[str]:
    """Graph inputs: ids and mask, plus ``token_type_ids`` when both model and tokenizer use them.

    RoBERTa's forward accepts token types but its tokenizer never makes them; leaving them out
    matches what optimum exports and what the tokenizer feeds at serving time.
    """
    names = ["input_ids", "attention_mask"]
    accepts = "token_type_ids" in inspect.signature(model.forward).parameters
    makes = tokenizer is None or "token_type_ids" in getattr(tokenizer, "model_input_names", ["token_type_ids"])
    return names + ["token_type_ids"] if accepts and makes else names


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to_torch(feeds: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in feeds.items()}


def _keep_inputs(path: Path, input_names: Sequence[str], level: int = logging.INFO) -> None:
    """Declare again the inputs the exporter dropped because no node reads them (every layer's
    attention emptied leaves ``attention_mask`` unread), so every export takes the same feeds."""
    added = restore_inputs(path, input_names)
    if added:
        log.log(level, "graph reads none of %s (e.g. every layer's attention was pruned away): kept as unused inputs "
                "so it takes the same feeds as the dense export", added)


def export_onnx(model: nn.Module, path: str | Path, sample: Mapping[str, Any], input_names: Sequence[str],
                *, opset: int = 17, probe: bool = False) -> tuple[str, str]:
    """Export ``model`` to ``path`` with dynamic batch and sequence axes.

    Returns ``(exporter, output_name)``. ``sample`` (one real batch) is only traced, so its
    shape does not constrain the graph. ``probe``: a latency-table probe (layers without attention by
    design): inputs it leaves unread are logged at debug level, not as news about the user's model.
    """
    unread_level = logging.DEBUG if probe else logging.INFO
    from compresslab.eval.onnx_runner import make_feeds

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # written whole, then renamed
    args = tuple(_to_torch(make_feeds(sample, {n: np.dtype(np.int64) for n in input_names}),
                           _device(model)).values())
    with eager_attention(model), torch.no_grad():
        wrapper = _ExportWrapper(model)
        wrapper.training = False  # the exporter restores this flag recursively: keep it eval
        out_name = "logits" if hasattr(model(**dict(zip(input_names, args))), "logits") else "last_hidden_state"
        axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
        axes[out_name] = {0: "batch"} if out_name == "logits" else {0: "batch", 1: "sequence"}
        try:
            with warnings.catch_warnings():
                # expected and harmless: the legacy path's deprecation, a shape-only branch in
                # transformers' mask builder, and the opset note about advanced indexing
                warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
                warnings.filterwarnings("ignore", message="The feature will be removed.*")
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,  # FakeQuantize's on/off flags too
                                        module=r"(transformers\.|torch\.nn\.functional|torch\.ao\.quantization)")
                warnings.filterwarnings("ignore", message="Exporting aten::index operator.*")
                torch.onnx.export(wrapper, args, str(tmp), input_names=list(input_names),
                                  output_names=[out_name], dynamic_axes=axes, opset_version=opset,
                                  do_constant_folding=True, dynamo=False, external_data=False)
            _keep_inputs(tmp, input_names, unread_level)
            os.replace(tmp, path)
            return "torchscript", out_name
        except Exception as ts_err:  # noqa: BLE001 - any failure means: try the other exporter
            log.warning("TorchScript ONNX export failed (%s); trying the dynamo exporter, whose graph "
                        "ORT usually cannot fuse", ts_err)
            try:
                dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
                torch.onnx.export(wrapper, args, str(tmp), input_names=list(input_names),
                                  output_names=[out_name], dynamic_shapes=tuple(dims for _ in args),
                                  opset_version=max(opset, 18), dynamo=True, external_data=False)
                _keep_inputs(tmp, input_names, unread_level)
                os.replace(tmp, path)
                return "dynamo", out_name
            except Exception as dy_err:  # noqa: BLE001
                raise ExportError(f"ONNX export failed with both exporters: torchscript: {ts_err}; "
                                  f"dynamo: {dy_err}") from dy_err
            finally:
                tmp.unlink(missing_ok=True)


BINARY_ORT_NOTE = ("ONNX Runtime has no 1-bit kernels: the binary model runs as fp32 MatMuls on ±1 values "
                   "(signs as Where/GreaterOrEqual, Bi-Attention as MatMul + Greater), so its ORT speed is fp32 "
                   "speed; 1 bit per weight is the packed checkpoint's storage, and FLOPs savings are theoretical")

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


def check_parity(model: nn.Module, onnx_path: str | Path, batches: Iterable[Mapping[str, Any]], *,
                 atol: float = 1e-4, threads: int | None = None, exporter: str = "",
                 graph: str = "", optimization: str = "all") -> dict[str, Any]:
    """Compare PyTorch (eager attention) with ORT on ``batches``; raise :class:`ParityError` past ``atol``.

    3-D outputs are compared on real tokens only: padded positions are garbage in both and
    every pooling masks them. Argmax agreement is reported for classifiers (``None`` otherwise).

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
    side of a grid midpoint (one step, ~1e-2) and cascade. Every other model keeps the plain ``atol`` rule. ``optimization`` is ORT's graph
    optimization level (``eval.onnx_runner.GRAPH_OPTIMIZATION``).
    """
    runner = OnnxRunner(onnx_path, threads=threads, optimization=optimization)
    wrapper = _ExportWrapper(model)
    device = _device(model)
    binary = _sign_sensitive(model)
    # QDQ models round activations to a uint8 grid: the same kind of discontinuity, one grid step instead of a sign
    stepwise = binary or _is_qdq(model)
    max_d, sum_d, n_el, n_ex, agree, n_cls, finite, over = 0.0, 0.0, 0, 0, 0, 0, True, 0
    with eager_attention(model), torch.no_grad():
        for batch in batches:
            feeds = runner.feeds(batch)
            ref = wrapper(**_to_torch(feeds, device)).float().cpu().numpy()
            out = runner.session.run(runner.output_names[:1], feeds)[0]
            if out.shape != ref.shape:
                raise ParityError(f"{graph or 'ONNX'} output shape {out.shape} != PyTorch {ref.shape}",
                                  {"graph": graph, "exporter": exporter, "atol": atol})
            diff = np.abs(out.astype(np.float64) - ref)
            if diff.ndim == 3:
                real = feeds["attention_mask"].astype(bool)
                per_ex = np.where(real[..., None], diff, 0.0).reshape(len(diff), -1).max(-1, initial=0.0)
                diff = diff[real]
            else:
                per_ex = diff.reshape(len(diff), -1).max(-1, initial=0.0)
            finite &= bool(np.isfinite(diff).all())
            max_d = max(max_d, float(np.nanmax(diff, initial=0.0)))
            sum_d, n_el, n_ex = sum_d + float(np.nansum(diff)), n_el + diff.size, n_ex + len(ref)
            over += int((~(per_ex <= atol)).sum())
            if ref.ndim == 2 and ref.shape[1] > 1:
                agree += int((out.argmax(-1) == ref.argmax(-1)).sum())
                n_cls += len(ref)
    if n_ex == 0:
        raise ValueError("parity needs at least one batch")
    report = {"graph": graph, "exporter": exporter, "max_abs_diff": max_d, "mean_abs_diff": sum_d / max(n_el, 1),
              "atol": atol, "n_examples": n_ex, "argmax_agreement": agree / n_cls if n_cls else None,
              "examples_over_atol": over}
    if stepwise:
        # (short and full name of the kind, its activations, what its flips are, why they happen)
        kind, name, acts, flips, cause = (
            ("binary", "binary", "sign activations", "sign flips",
             "|x| ~ 1e-7 pre-sign values rounded differently by torch and ORT") if binary else
            ("QDQ", "int8 QDQ", "uint8 activations", "rounding-boundary flips",
             "an activation torch and ORT compute a few ulps apart lands on the other side of a grid midpoint and "
             "moves by one step"))
        report["rule"] = (f"{name} model ({acts}): at least "
                          f"{MIN_EXACT_FRACTION:.0%} of examples within atol; the rest are {flips} ({cause}) "
                          f"cascading through later layers")
        passed = finite and (n_ex - over) >= MIN_EXACT_FRACTION * n_ex
        report["passed"] = passed
        if finite and over:
            log.info("%s: %d of %d examples differ from torch past atol %.3g (max |diff| %.3g, argmax agreement %s):"
                     " %s of a %s model, reported, not failed", graph or onnx_path, over, n_ex, atol,
                     max_d, report["argmax_agreement"], flips, kind)
        if not passed:
            why = "non-finite outputs" if not finite else (
                f"{over} of {n_ex} examples past atol {atol:.3g} (max |diff| {max_d:.3g}); flips touch a few "
                f"examples, this many means the graph computes something else")
            raise ParityError(f"ONNX parity failed for {kind} model {graph or onnx_path}: {why} "
                              f"(exporter {exporter})", report)
        return report
    if not finite or max_d > atol:
        why = "non-finite outputs" if not finite else f"max |diff| {max_d:.3g} > atol {atol:.3g}"
        raise ParityError(f"ONNX parity failed for {graph or onnx_path}: {why} over {n_ex} examples "
                          f"(mean |diff| {report['mean_abs_diff']:.3g}, exporter {exporter})", report)
    report["passed"] = True  # every parity report says it passed (a failure raises), whatever rule judged it
    return report


# Parity of an int8 QDQ model (models.qdq) is checked with ORT running the graph as ONNX defines it
# (graph optimization "basic": QuantizeLinear/DequantizeLinear in float, fp32 MatMul), which is the
# function the torch fake-quant model computes; the tolerance is wider than fp32's because an input
# that torch and ORT compute a few ulps apart (LayerNorm, GELU's Erf) can land on the other side of a
# rounding boundary of its uint8 grid: that element then moves by one step s_x (~1e-2), and the flip
# carries through the later layers. See export_model for the int8-kernel run, reported beside it.
QDQ_ATOL = 5e-2
QDQ_NOTE = ("int8 QDQ model: deployed as the plain (unfused) graph, weights as int8 initializers with zero point 0 "
            "feeding DequantizeLinear -> MatMul (the form sparse int8 engines such as DeepSparse pattern-match; ORT "
            "fuses each Q/DQ + MatMul into its int8 kernel at load); parity checked with ORT running the graph as ONNX "
            "defines it (graph optimization 'basic'), the int8-kernel run reported beside it (parity.int8_kernels)")


def _has_vnni() -> bool | None:
    """Whether this CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX); None if unknown.

    Without one, ORT's x86 u8s8 kernels multiply-add pairs in int16 (vpmaddubsw) and can saturate:
    ORT's quantization docs advise reduce_range on such CPUs, so the int8-kernel parity is informative only."""
    flags = cpu_flags()
    if not flags:  # no /proc/cpuinfo (macOS, Windows), or no flags line in it
        return None
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _qdq_parity(model: nn.Module, path: Path, batches: list[Mapping[str, Any]], atol: float, threads: int | None,
                exporter: str) -> dict[str, Any]:
    """Parity of a QDQ graph at ``max(atol, QDQ_ATOL)`` with ORT's basic level (raises past it), and the
    same inputs through ORT's int8 kernels (level "all") reported as ``int8_kernels`` (never raises on
    a difference: on CPUs without VNNI its u8s8 kernels may saturate, see :func:`_has_vnni`)."""
    tol = max(atol, QDQ_ATOL)
    parity = check_parity(model, path, batches, atol=tol, threads=threads, exporter=exporter,
                          graph="QDQ (ORT basic: Q/DQ as ONNX defines them)", optimization="basic")
    kernels = check_parity(model, path, batches, atol=float("inf"), threads=threads, exporter=exporter,
                           graph="QDQ (ORT int8 kernels)", optimization="all")
    kernels.update(atol=None, cpu_int8_dot_product=_has_vnni())
    return {**parity, "int8_kernels": kernels}


def _expected_attention_layers(model: nn.Module) -> int | None:
    """Layers that still have heads (each should fuse into one Attention node); None if unknown."""
    try:
        from compresslab.models.adapters import get_adapter

        return sum(1 for layer in get_adapter(model).structure() if layer["heads"] > 0)
    except (ImportError, ValueError, AttributeError):
        return None


def export_model(model: nn.Module, tokenizer: Any, out_dir: str | Path, sample_batches: Iterable[Mapping[str, Any]],
                 *, optimize: bool = True, atol: float = 1e-4, opset: int = 17, threads: int | None = None,
                 keep_unfused: bool = True) -> ExportResult:
    """Export, parity-check, fuse, re-check; save config, tokenizer and ``parity.json``.

    ``sample_batches`` are real padded batches (dicts of tensors; ``labels`` ignored): the first
    is traced, all are used for parity. Parity is checked on the raw export first, so a fusion
    problem is never mistaken for an export problem. Raises :class:`ParityError` / :class:`ExportError`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batches = list(sample_batches)
    if not batches:
        raise ValueError("export_model needs at least one sample batch (for tracing and parity)")
    names = input_names_for(model, tokenizer)
    qdq = _is_qdq(model)
    optimize = optimize and not qdq  # ORT's fuser would hide the Q/DQ + MatMul patterns an int8 engine matches
    raw = out_dir / ("model_unfused.onnx" if optimize else "model.onnx")
    if qdq:  # no stale fp32 graph beside it (DeepSparse reads model_unfused.onnx where there is one)
        (out_dir / "model_unfused.onnx").unlink(missing_ok=True)
    exporter, output_name = export_onnx(model, raw, batches[0], names, opset=opset)
    qdq_record = None
    if qdq:
        from compresslab.export.qdq import fold_weight_qdq, qdq_summary

        qdq_record = {**fold_weight_qdq(raw), **qdq_summary(raw)}
        parity = _qdq_parity(model, raw, batches, atol, threads, exporter)
    else:
        parity = check_parity(model, raw, batches, atol=atol, threads=threads, exporter=exporter, graph="unfused")
    deployed, fused_n, heads, parity_unfused = raw, 0, [], None
    binary = _sign_sensitive(model)
    notes = [BINARY_ORT_NOTE] if binary else [QDQ_NOTE] if qdq else []
    if optimize:
        num_heads, hidden = heads_and_hidden(model.config)
        deployed = out_dir / "model.onnx"
        report = optimize_graph(raw, deployed, num_heads=num_heads, hidden_size=hidden)
        fused_n, heads = report.fused_attention_nodes, report.attention_heads
        parity_unfused = parity
        try:
            parity = check_parity(model, deployed, batches, atol=atol, threads=threads, exporter=exporter,
                                  graph="fused")
        except ParityError as err:
            if not binary:
                raise
            # ORT's fuser knows no binary pattern; a fusion it made around the sign ops that
            # changes the function is not deployed: the raw export (parity-checked above) is
            why = f"ORT's fused graph failed parity ({err}); the unfused export is deployed instead"
            log.warning("binary model: %s", why)
            notes.append(why)
            shutil.copyfile(raw, deployed)
            parity, fused_n, heads = {**parity_unfused, "graph": "unfused (fusion skipped)"}, 0, []
        expected = _expected_attention_layers(model)
        if binary:
            log.info("binary model: ORT fused %s and no attention (it has no Bi-Attention or 1-bit kernel); "
                     "signs run as Where/GreaterOrEqual and the binary Linears as fp32 MatMuls on ±1 values",
                     ", ".join(f"{n} {k}" for k, n in sorted(report.fused_ops.items())) or "nothing")
        elif expected is not None and fused_n < expected:
            log.warning("only %d of %d attention layers fused (exporter %s): the graph is correct but "
                        "slower than it could be", fused_n, expected, exporter)
        if not keep_unfused:
            raw.unlink()
    model.config.save_pretrained(out_dir)
    if tokenizer is not None:
        save_tokenizer(tokenizer, out_dir)
    parity = {**parity, "fused_attention_nodes": fused_n, "attention_heads": heads, "unfused": parity_unfused}
    if notes:
        parity["notes"] = notes
    atomic_write_json(out_dir / "parity.json", parity)
    return ExportResult(dir=out_dir, onnx_path=deployed,
                        unfused_path=raw if optimize and keep_unfused else None, exporter=exporter,
                        opset=opset, input_names=names, output_name=output_name,
                        fused_attention_nodes=fused_n, attention_heads=heads, parity=parity, binary=binary,
                        qdq=qdq_record, notes=notes)
