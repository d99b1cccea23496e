"""Export a HF encoder to ONNX, fuse it, and prove the graph computes what PyTorch computes.

Layout of the export directory (what optimum's ``ORTModelForSequenceClassification`` loads)::

    model.onnx           the DEPLOYED graph (fp32, or int8 QDQ for an int8 QAT model: see
                         :func:`graph_format`): fused by ORT's transformer optimizer when optimize=True
                         (the dense teacher's: the speed denominator ``ort_fp32``), else the raw export
    model_unfused.onnx   the raw export, kept for debugging and re-fusing (optimize=True only)
    config.json, tokenizer files, parity.json

We export with eager attention and the legacy TorchScript exporter (``dynamo=False``): ORT's
transformer optimizer fuses attention only for that graph shape. If that exporter fails (it is
deprecated in torch >= 2.9), the dynamo exporter is tried and the result says so, since its graph
usually does not fuse. Parity (``export.parity``) runs on the caller's real, padded batches; past
``atol`` it raises :class:`ParityError` carrying the numbers.

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

from compresslab.export.graph_inputs import restore_inputs
from compresslab.export.optimize import heads_and_hidden, optimize_graph
from compresslab.export.parity import (MIN_EXACT_FRACTION, QDQ_ATOL, ParityError, _device, _ExportWrapper, _is_qdq,
                                       _sign_sensitive, _to_torch, check_parity, measure_parity)
from compresslab.manifest import atomic_write_json, cpu_flags
from compresslab.models.attention import eager_attention
from compresslab.models.loading import save_tokenizer

# names that lived here before export.parity (imported from this module by callers and tests)
__all__ = ["BINARY_ORT_NOTE", "ExportError", "ExportResult", "MIN_EXACT_FRACTION", "ParityError", "QDQ_ATOL",
           "QDQ_NOTE", "check_parity", "eager_attention", "export_model", "export_onnx", "input_names_for"]

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """Neither ONNX exporter could trace the model; the message carries both causes."""


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
    precision: str = "fp32"  # what the graph computes in, read from it (export.precision.precision_label)
    format: str = "fp32"  # the same in words (graph_format): "int8 QDQ (QAT)", "fp32 (binary: ±1 values)", ...

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def input_names_for(model: nn.Module, tokenizer: Any = None) -> list[str]:
    """Graph inputs: ids and mask, plus ``token_type_ids`` when both model and tokenizer use them.

    RoBERTa's forward accepts token types but its tokenizer never makes them; leaving them out
    matches what optimum exports and what the tokenizer feeds at serving time.
    """
    names = ["input_ids", "attention_mask"]
    accepts = "token_type_ids" in inspect.signature(model.forward).parameters
    makes = tokenizer is None or "token_type_ids" in getattr(tokenizer, "model_input_names", ["token_type_ids"])
    return names + ["token_type_ids"] if accepts and makes else names


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

QDQ_NOTE = ("int8 QDQ model: deployed as the plain (unfused) graph, weights as int8 initializers with zero point 0 "
            "feeding DequantizeLinear -> MatMul (SparseML's QAT layout before its MatMulInteger rewrite, which DeepSparse "
            "needs for int8 kernels: bench.deepsparse.int8_formats=[matmulinteger]; ORT "
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
    same inputs through ORT's int8 kernels (level "all") measured as ``int8_kernels``, status ``informative``
    (:func:`~compresslab.export.parity.measure_parity`: no tolerance, so no pass or fail; it raises on non-finite
    outputs only: on CPUs without VNNI its u8s8 kernels may saturate, see :func:`_has_vnni`)."""
    tol = max(atol, QDQ_ATOL)
    parity = check_parity(model, path, batches, atol=tol, threads=threads, exporter=exporter,
                          graph="QDQ (ORT basic: Q/DQ as ONNX defines them)", optimization="basic")
    kernels = measure_parity(model, path, batches, threads=threads, exporter=exporter, graph="QDQ (ORT int8 kernels)",
                             optimization="all", why="ORT's int8 kernels compute another function than the QDQ graph "
                             "ONNX defines (u8s8 products, which saturate without an int8 dot-product instruction)")
    kernels["cpu_int8_dot_product"] = _has_vnni()
    return {**parity, "int8_kernels": kernels}


def _expected_attention_layers(model: nn.Module) -> int | None:
    """Layers that still have heads (each should fuse into one Attention node); None if unknown."""
    try:
        from compresslab.models.adapters import get_adapter

        return sum(1 for layer in get_adapter(model).structure() if layer["heads"] > 0)
    except (ImportError, ValueError, AttributeError):
        return None


def graph_format(model: nn.Module, onnx_path: str | Path) -> tuple[str, str]:
    """(precision, format) of the exported graph of ``model``: the precision read from the graph itself
    (``export.precision.precision_label``: ``int8`` for a QDQ graph) and what it is, in words. A torch-stage
    quantized model is not always an fp32 graph: int8 QAT exports int8 weights and uint8 activations (QDQ);
    a binary or n-bit fake-quant model exports an fp32 graph whose values are ±1 or on an n-bit grid."""
    from compresslab.export.precision import precision_label
    from compresslab.models.quantized import quantized_modules

    precision = precision_label(onnx_path)
    if _is_qdq(model):
        return precision, "int8 QDQ (QAT)"
    if _sign_sensitive(model):
        return precision, f"{precision} (binary: ±1 weights and sign activations as {precision} values)"
    bits = sorted({int(m.bits) for m in quantized_modules(model).values()})
    if bits:
        return precision, f"{precision} ({'/'.join(map(str, bits))}-bit fake-quant weights as {precision} values)"
    return precision, precision


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
    precision, fmt = graph_format(model, deployed)
    return ExportResult(dir=out_dir, onnx_path=deployed,
                        unfused_path=raw if optimize and keep_unfused else None, exporter=exporter,
                        opset=opset, input_names=names, output_name=output_name,
                        fused_attention_nodes=fused_n, attention_heads=heads, parity=parity, binary=binary,
                        qdq=qdq_record, notes=notes, precision=precision, format=fmt)
