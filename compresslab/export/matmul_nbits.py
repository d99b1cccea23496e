"""Deploy a frozen fake-quant model's n-bit weights with ONNX Runtime's weight-only contrib ops.

The torch side (``models/quantized.py``) freezes every quantized Linear / Embedding to ``ŵ = (q − z)·Δ``
on the group grid of ``ops/quant.py``; the exporter writes ``ŵᵀ`` as a plain fp32 MatMul initializer
(``ŵ`` for a Gemm with ``transB=1`` and for a Gather table), ``config.json`` carries the
``compresslab_quant`` stamp and :data:`SIDECAR` the per-module scale / zero point. Here the graph is
walked: each stamped module's node is found, its codes are recovered exactly, ``q = round(ŵ/Δ) + z``
(checked to reproduce ``ŵ``), and the node is replaced by ``com.microsoft.MatMulNBits`` (Linears; the
exporter's bias Add stays as it is, a Gemm's C becomes an Add) or ``com.microsoft.GatherBlockQuantized``
(word embeddings). The codes, the packing and the nodes in ORT's layout are
:mod:`compresslab.export.nbits_pack`'s.

Deployment rules: bits 2, 4, 8 map directly; other widths use the next supported width with the
same codes (3 bits -> 4-bit codes, 8 levels used; nominal and deployed bits are both reported).
Blocks must be a power of two >= 16: a group of ``block_size`` columns deploys with the largest such
block dividing it (per-row / layer / head groups with ``block_size = K`` included), its scale and
zero repeated; Q-BERT's row buckets (``group_rows > 1``) repeat a group's scale / zero on its rows.
Exact, with no size gain for the repeats. A Linear whose block has no deployable divisor stays fp32
(exact) and is reported as skipped.

Only the unfused export has one MatMul per Linear (ORT's fuser merges Q/K/V into ``Attention`` and
the embeddings into ``EmbedLayerNormalization``), so the source graph is ``model_unfused.onnx``.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from compresslab.export.nbits_pack import (ACCURACY_LEVELS, MS_DOMAIN, check_guard_opset, deployable_block,
                                           deployed_bits, gather_quantized_nodes, grid_codes, matmul_nbits_node)

if TYPE_CHECKING:
    import onnx
    from torch import nn

    from compresslab.export.onnx import ExportResult

log = logging.getLogger(__name__)

SIDECAR = "quantization.safetensors"  # per module: "<name>.scale" float32, "<name>.zero_point" uint8

# ORT's own statement, logged (INFO) by the CPU kernel whenever MLAS has no quantized kernel for a
# (bits, block_size, compute type): onnxruntime/contrib_ops/cpu/quantization/matmul_nbits.cc,
# MatMulNBits<T1>::Compute (the text is in the onnxruntime 1.32 binary). Its MLAS table
# (core/mlas/lib/qnbitgemm.cpp, GetQNBitGemmVariant) has no 2-bit fp32-compute variant, so at
# accuracy_level 0 a 2-bit MatMulNBits is dequantized to fp32 (MlasDequantizeBlockwise<float, 2>) and
# run as an SGEMM; at level 4 recent builds have a 2-bit int8-activation kernel for some blocks.
# probe_kernel_path() asks the installed ORT on this CPU.
ORT_FALLBACK_LOG = ("Falling back to using unpacked compute mode for the Matmul operation (i.e.) the weights "
                    "will be de-quantized to fp32 before invoking the fp32 Matmul kernel.")
KERNEL_2BIT = {
    "statement": ORT_FALLBACK_LOG + " This is because MLAS doesn't have an optimized quantized kernel for the "
                                    "requested compute configuration.",
    "source": "onnxruntime/contrib_ops/cpu/quantization/matmul_nbits.cc (MatMulNBits<T1>::Compute, "
              "ComputeBUnpacked); core/mlas/lib/qnbitgemm.cpp (GetQNBitGemmVariant: no 2-bit CompFp32)",
    "summary": "2-bit at accuracy_level 0: ORT's CPU kernel dequantizes B to fp32, then runs an fp32 GEMM "
               "(a size win, not a compute win); at level 4 it computes with int8 activations where MLAS has "
               "a 2-bit CompInt8 kernel for the block size (see kernel_paths)",
}


# ---------------------------------------------------------------- sidecar (torch side of the export)

def write_quant_sidecar(model: "nn.Module", out_dir: str | Path) -> Path | None:
    """Write ``out_dir/quantization.safetensors`` (``<name>.scale`` float32 / ``<name>.zero_point`` uint8,
    ``(rows/group_rows, cols/block_size)`` each) for every frozen fake-quant module of ``model``;
    remove a stale one and return None when it has none. ValueError for a dynamic (unfrozen) module."""
    from compresslab.export.ort_quant import atomic_output
    from compresslab.manifest import safetensors_bytes
    from compresslab.models.quantized import quantized_modules

    path = Path(out_dir) / SIDECAR
    mods = quantized_modules(model)
    if not mods:
        path.unlink(missing_ok=True)
        return None
    tensors = {}
    for name, m in mods.items():
        if not m.frozen:
            raise ValueError(f"{name!r} is a dynamic fake-quant module: freeze_all() before export")
        p = m.params()
        tensors[f"{name}.scale"] = p.scale.detach().float().cpu().contiguous()
        tensors[f"{name}.zero_point"] = p.zero_point.detach().to("cpu").contiguous()
    with atomic_output(path) as tmp:
        # metadata keys sorted: the same model gives the same bytes
        Path(tmp).write_bytes(safetensors_bytes(tensors, {"format": "compresslab.quant_params", "version": "1"}))
    return path


def read_quant_sidecar(model_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Module name -> ``(scale float32, zero_point uint8)`` from ``model_dir``'s sidecar.

    FileNotFoundError when the export has none (it was not written by :func:`export_quantized` or the
    pipeline's export stage)."""
    from safetensors.numpy import load_file

    path = Path(model_dir) / SIDECAR
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the export of a quantized model writes it beside config.json "
                                f"(pipeline export stage or export.matmul_nbits.export_quantized); re-export")
    raw = load_file(str(path))
    names = sorted({k.rsplit(".", 1)[0] for k in raw})
    return {n: (raw[f"{n}.scale"].astype(np.float32), raw[f"{n}.zero_point"].astype(np.uint8)) for n in names}


def export_quantized(model: "nn.Module", tokenizer: Any, out_dir: str | Path, batches: Iterable[Mapping[str, Any]],
                     **export_kwargs: Any) -> "ExportResult":
    """``export.onnx.export_model`` for a model that may hold frozen fake-quant modules: stamps
    ``config.compresslab_quant`` first (config.json carries it) and writes :data:`SIDECAR` after."""
    from compresslab.export.onnx import export_model
    from compresslab.models.quantized import stamp_quant

    stamp_quant(model)
    res = export_model(model, tokenizer, out_dir, batches, **export_kwargs)
    write_quant_sidecar(model, out_dir)
    return res


# ---------------------------------------------------------------- graph rewrite

def onnx_module_path(name: str) -> str:
    """The exporter's scope of module ``name``: ``a.layer.0.c`` -> ``a/layer.0/c`` (ModuleList indices
    stay on their parent), so its MatMul is ``.../a/layer.0/c/MatMul``."""
    parts: list[str] = []
    for seg in name.split("."):
        if seg.isdigit() and parts:
            parts[-1] += f".{seg}"
        else:
            parts.append(seg)
    return "/".join(parts)


_WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Gather": 0}


def _find_node(nodes: list["onnx.NodeProto"], name: str, inits: Mapping[str, Any]) -> int:
    """Index in ``nodes`` of the one MatMul / Gemm / Gather with a constant weight in ``name``'s scope."""
    scope = "/" + onnx_module_path(name)
    hits = [i for i, n in enumerate(nodes) if n.op_type in _WEIGHT_INPUT
            and ("/" + n.name).rsplit("/", 1)[0].endswith(scope)
            and len(n.input) > _WEIGHT_INPUT[n.op_type] and n.input[_WEIGHT_INPUT[n.op_type]] in inits]
    if len(hits) != 1:
        what = "no" if not hits else f"{len(hits)} ({[nodes[i].name for i in hits][:3]})"
        raise ValueError(f"module {name!r} has {what} MatMul/Gemm/Gather node with a constant weight under "
                         f"'{scope}/' in the graph: convert the unfused export of compresslab's exporter "
                         f"(model_unfused.onnx; the fused graph merges Q/K/V and the embeddings)")
    return hits[0]


def _attr(node: "onnx.NodeProto", key: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == key:
            return helper.get_attribute_value(a)
    return default


def _weight_of(node: "onnx.NodeProto", inits: Mapping[str, Any], name: str) -> np.ndarray:
    """``ŵ`` ``(rows, cols)`` as the torch module holds it (Linear ``(N, K)``, Embedding ``(V, D)``)."""
    from onnx import numpy_helper

    w = numpy_helper.to_array(inits[node.input[_WEIGHT_INPUT[node.op_type]]])
    if w.ndim != 2:
        raise ValueError(f"{name}: weight of {node.name} has shape {w.shape}, expected 2-D")
    if node.op_type == "MatMul":
        return w.T  # the exporter stores ŵᵀ (K, N)
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or \
                (len(node.input) > 2 and _attr(node, "beta", 1.0) != 1.0):
            raise ValueError(f"{name}: Gemm {node.name} with transA/alpha/beta other than 0/1/1 is not an "
                             f"exported Linear")
        return w if _attr(node, "transB", 0) else w.T
    if _attr(node, "axis", 0) != 0:
        raise ValueError(f"{name}: Gather {node.name} is not on axis 0")
    return w


def _matmul_nbits_nodes(node: "onnx.NodeProto", q: np.ndarray, s_dep: np.ndarray, z_dep: np.ndarray, dbits: int,
                        dbs: int, accuracy_level: int) -> tuple[list, list]:
    from onnx import helper

    base = node.name or node.output[0]
    has_bias = node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]
    out = f"{base}_Q{dbits}_output" if has_bias else node.output[0]
    mm, inits = matmul_nbits_node(node.input[0], out, base, q, s_dep, z_dep, dbits, dbs, accuracy_level)
    nodes = [mm]
    if has_bias:  # a Gemm's C: the bias Add the MatMul export has anyway
        nodes.append(helper.make_node("Add", [out, node.input[2]], [node.output[0]], name=f"{base}_bias_Add"))
    return nodes, inits


def to_matmul_nbits(src_onnx: str | Path, dst_onnx: str | Path, stamp: Mapping[str, Mapping[str, int]],
                    params: Mapping[str, tuple[np.ndarray, np.ndarray]], *, accuracy_level: int = 0) -> dict[str, Any]:
    """Rewrite ``src_onnx`` (an unfused export of a frozen fake-quant model) into ``dst_onnx`` with every
    stamped Linear as ``MatMulNBits`` and every stamped Embedding as ``GatherBlockQuantized``.

    ``stamp``: the config's ``compresslab_quant`` (module -> ``{"bits", "block_size", "group_rows"}``);
    ``params``: module -> ``(scale float32, zero_point uint8)`` of shape ``(rows/group_rows,
    cols/block_size)`` (:func:`read_quant_sidecar`). ``accuracy_level`` (0-4) is MatMulNBits'
    attribute: 0 keeps activations fp32 (exact up to summation order), 4 quantizes them to int8.

    Returns metrics: per module nominal / deployed bits and blocks, op and node; counts of quantized
    nodes; numel-weighted average nominal and deployed bits over the stamped modules (a module kept fp32
    counts 32 deployed); file sizes; ``skipped`` (module -> reason, left fp32 and exact).
    ValueError for a stamped module without its node, parameters or grid (see :func:`grid_codes`).
    """
    import onnx
    from onnx import helper

    from compresslab.export.ort_quant import atomic_output

    if accuracy_level not in ACCURACY_LEVELS:
        raise ValueError(f"accuracy_level={accuracy_level!r}; allowed: {', '.join(map(str, ACCURACY_LEVELS))}")
    if not stamp:
        raise ValueError("the stamp names no quantized module: nothing to convert")
    src, dst = Path(src_onnx), Path(dst_onnx)
    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    old_nodes = list(graph.node)
    replace: dict[int, list] = {}
    new_inits: list = []
    modules: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name, spec in stamp.items():
        bits, bs, gr = int(spec["bits"]), int(spec["block_size"]), int(spec.get("group_rows", 1))
        if name not in params:
            raise ValueError(f"module {name!r} is stamped but has no scale / zero point in {SIDECAR}")
        scale, zero = (np.asarray(a) for a in params[name])
        idx = _find_node(old_nodes, name, inits)
        if idx in replace:
            raise ValueError(f"module {name!r} resolves to node {old_nodes[idx].name}, already converted for another")
        node = old_nodes[idx]
        w_hat = _weight_of(node, inits, name)
        q = grid_codes(w_hat, scale, zero, bits, bs, gr, name)
        dbits, dbs = deployed_bits(bits), deployable_block(bs)
        rec: dict[str, Any] = {"node": node.name, "shape": list(w_hat.shape), "numel": int(w_hat.size), "bits": bits,
                               "block_size": bs, "group_rows": gr}
        if dbs is None and node.op_type != "Gather":
            skipped[name] = (f"block_size={bs} has no power-of-two divisor >= 16 (MatMulNBits' blocks): "
                             f"kept as the exact fp32 MatMul")
            modules[name] = {**rec, "op": node.op_type, "deployed_bits": 32, "deployed_block_size": None}
            log.warning("ort_matmul_nbits: %s %s", name, skipped[name])
            continue
        rep = bs // dbs if dbs else 1
        s_dep = np.repeat(np.repeat(scale.astype(np.float32), gr, 0), rep, 1)  # (rows, cols/dbs)
        z_dep = np.repeat(np.repeat(zero, gr, 0), rep, 1)
        if node.op_type == "Gather":
            check_guard_opset(model, src.name)
            nodes, tensors, op = gather_quantized_nodes(node, q, s_dep, z_dep, dbits if dbs else None, dbs)
            if dbs is None:
                dbits = 8
        else:
            nodes, tensors = _matmul_nbits_nodes(node, q, s_dep, z_dep, dbits, dbs, accuracy_level)
            op = "MatMulNBits"
        replace[idx] = nodes
        new_inits += tensors
        modules[name] = {**rec, "op": op, "deployed_bits": dbits, "deployed_block_size": dbs or bs}
    kept = [n for i, old in enumerate(old_nodes) for n in replace.get(i, [old])]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)
    used = Counter(i for n in graph.node for i in n.input) + Counter(o.name for o in graph.output)
    unused = [t for t in graph.initializer if not used[t.name]]
    for t in unused:
        graph.initializer.remove(t)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    with atomic_output(dst) as tmp:
        onnx.save(model, str(tmp))
    return _metrics(src, dst, modules, skipped, accuracy_level)


def _metrics(src: Path, dst: Path, modules: dict[str, dict[str, Any]], skipped: dict[str, str],
             accuracy_level: int) -> dict[str, Any]:
    numel = sum(m["numel"] for m in modules.values())
    ops = Counter(m["op"] for m in modules.values())
    return {
        "modules": modules, "skipped": skipped, "accuracy_level": accuracy_level,
        "n_matmul_nbits": ops["MatMulNBits"], "n_gather_block_quantized": ops["GatherBlockQuantized"],
        "n_gather_dequantize": ops["Gather+dequantize"],
        "quantized_nodes": sum(v for k, v in ops.items() if k not in ("MatMul", "Gemm", "Gather")),
        "avg_bits_nominal": sum(m["bits"] * m["numel"] for m in modules.values()) / max(numel, 1),
        "avg_bits_deployed": sum(m["deployed_bits"] * m["numel"] for m in modules.values()) / max(numel, 1),
        "deployed_bits_histogram": {str(b): n for b, n in sorted(Counter(m["deployed_bits"]
                                                                         for m in modules.values()).items())},
        "size_bytes": dst.stat().st_size, "size_bytes_input": src.stat().st_size,
        "size_ratio": dst.stat().st_size / src.stat().st_size,
    }


# ---------------------------------------------------------------- checks against ONNX Runtime

def compare_graphs(ref_onnx: str | Path, new_onnx: str | Path, batches: Iterable[Mapping[str, Any]], *,
                   threads: int | None = None) -> dict[str, Any]:
    """ORT outputs of ``new_onnx`` vs ``ref_onnx`` on ``batches`` (our loader's dicts; labels ignored).

    3-D outputs are compared on real tokens only. Returns ``max_abs_diff``, ``mean_abs_diff``,
    ``argmax_agreement`` (classifiers; None otherwise), ``n_examples``, ``finite``. ValueError for
    no batches."""
    from compresslab.eval.onnx_runner import OnnxRunner

    ref, new = OnnxRunner(ref_onnx, threads=threads), OnnxRunner(new_onnx, threads=threads)
    max_d, sum_d, n_el, n_ex, agree, n_cls, finite = 0.0, 0.0, 0, 0, 0, 0, True
    for batch in batches:
        feeds = ref.feeds(batch)
        a = ref.session.run(ref.output_names[:1], feeds)[0].astype(np.float64)
        b = new.session.run(new.output_names[:1], new.feeds(batch))[0].astype(np.float64)
        if a.shape != b.shape:
            raise ValueError(f"{Path(new_onnx).name} output shape {b.shape} != reference {a.shape}")
        diff = np.abs(a - b)
        if diff.ndim == 3:
            diff = diff[feeds["attention_mask"].astype(bool)]
        finite &= bool(np.isfinite(diff).all())
        max_d = max(max_d, float(np.nanmax(diff, initial=0.0)))
        sum_d, n_el, n_ex = sum_d + float(np.nansum(diff)), n_el + diff.size, n_ex + len(a)
        if a.ndim == 2 and a.shape[1] > 1:
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            n_cls += len(a)
    if n_ex == 0:
        raise ValueError("comparing graphs needs at least one batch")
    return {"max_abs_diff": max_d, "mean_abs_diff": sum_d / max(n_el, 1), "n_examples": n_ex, "finite": finite,
            "argmax_agreement": agree / n_cls if n_cls else None}


_PROBE = r"""
import sys, numpy as np, onnxruntime as ort
from onnx import helper as h, TensorProto as TP, numpy_helper as nh
bits, bs, level = map(int, sys.argv[1:4]); K, N = 256, 32; nb = K // bs
inits = [nh.from_array(np.zeros((N, nb, bs * bits // 8), np.uint8), "B"),
         nh.from_array(np.ones(N * nb, np.float32), "S"),
         nh.from_array(np.zeros(N * ((nb * bits + 7) // 8), np.uint8), "Z")]
node = h.make_node("MatMulNBits", ["A", "B", "S", "Z"], ["Y"], domain="com.microsoft", K=K, N=N, bits=bits,
                   block_size=bs, accuracy_level=level)
g = h.make_graph([node], "probe", [h.make_tensor_value_info("A", TP.FLOAT, [None, K])],
                 [h.make_tensor_value_info("Y", TP.FLOAT, [None, N])], inits)
m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])
so = ort.SessionOptions(); so.log_severity_level = 1
ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
    None, {"A": np.ones((4, K), np.float32)})
"""


@functools.lru_cache(maxsize=None)
def probe_kernel_path(bits: int, block_size: int, accuracy_level: int = 0, *, timeout_s: float = 60.0) -> str:
    """What the installed ORT's CPU ``MatMulNBits`` does on this machine for ``(bits, block_size, level)``:
    ``"kernel"`` (an MLAS quantized kernel), ``"dequantize_fp32"`` (ORT logged :data:`ORT_FALLBACK_LOG`:
    B dequantized to fp32, then an fp32 GEMM) or ``"unknown"`` (the probe failed). Runs a one-node
    graph in a child process, since ORT's log goes to the process's stderr; cached per process."""
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE, str(bits), str(block_size), str(accuracy_level)],
                           capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if r.returncode != 0:
        return "unknown"
    return "dequantize_fp32" if "Falling back to using unpacked compute mode" in r.stderr else "kernel"


__all__ = ["KERNEL_2BIT", "ORT_FALLBACK_LOG", "SIDECAR", "compare_graphs", "export_quantized", "onnx_module_path",
           "probe_kernel_path", "read_quant_sidecar", "to_matmul_nbits", "write_quant_sidecar"]
