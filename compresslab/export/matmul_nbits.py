"""Deploy a frozen fake-quant model's n-bit weights with ONNX Runtime's weight-only contrib ops.

The torch side (``models/quantized.py``) freezes every quantized Linear / Embedding to ``ŵ = (q − z)·Δ``
on the group grid of ``ops/quant.py``; the exporter writes ``ŵᵀ`` as a plain fp32 MatMul initializer
(``ŵ`` for a Gemm with ``transB=1`` and for a Gather table), ``config.json`` carries the
``compresslab_quant`` stamp and :data:`SIDECAR` the per-module scale / zero point. Here the codes are
recovered exactly, ``q = round(ŵ/Δ) + z`` (checked to reproduce ``ŵ``), and packed into

* ``com.microsoft.MatMulNBits`` for Linears (ORT ContribOperators spec, ``MatMulNBits``; layout as
  written by ORT's own ``onnxruntime/quantization/matmul_nbits_quantizer.py``):
  ``B`` uint8 ``[N, n_blocks, block_size·bits/8]``, codes along K packed low bits first within each
  byte; ``scales`` float32 ``[N·n_blocks]``; ``zero_points`` uint8 ``[N·ceil(n_blocks·bits/8)]``, each
  row's zero points packed the same way; attributes K, N, bits, block_size, accuracy_level.
  ``Y = A · dequant(B)ᵀ``; the exporter's bias Add stays as it is (a Gemm's C becomes an Add).
* ``com.microsoft.GatherBlockQuantized`` for word embeddings (uint8 data, bits 2/4/8 in ORT 1.32,
  ``quantize_axis=1``, codes packed along the last axis low bits first, zero points packed alike);
  a table whose block has no deployable power of two falls back to a Gather of uint8 codes plus
  gathered per-block scale / zero point in standard ops (8 bits a weight).

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

if TYPE_CHECKING:
    import onnx
    from torch import nn

    from compresslab.export.onnx import ExportResult

log = logging.getLogger(__name__)

SIDECAR = "quantization.safetensors"  # per module: "<name>.scale" float32, "<name>.zero_point" uint8
ORT_BITS = (2, 4, 8)  # MatMulNBits / GatherBlockQuantized (uint8 data) bit widths in ORT 1.32
ORT_BLOCKS = (256, 128, 64, 32, 16)  # deployable blocks, largest first (power of two >= 16)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
_MS = "com.microsoft"

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


# ---------------------------------------------------------------- codes and packing

def deployed_bits(bits: int) -> int:
    """The ORT bit width that stores ``bits``-bit codes unchanged: the smallest of 2, 4, 8 >= bits."""
    for b in ORT_BITS:
        if bits <= b:
            return b
    raise ValueError(f"bits={bits}: weight bits must be in [1, 8]")


def deployable_block(block_size: int) -> int | None:
    """The largest power of two in [16, 256] dividing ``block_size`` (None when there is none)."""
    return next((b for b in ORT_BLOCKS if block_size % b == 0), None)


def pack_codes(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack uint8 codes ``(..., L)`` (each < 2^bits) along the last axis, ``8/bits`` per byte, the first
    in the low bits (ORT's packing for MatMulNBits B / zero points and GatherBlockQuantized data); a
    last partial byte is zero-padded. Returns ``(..., ceil(L·bits/8))`` uint8."""
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"bits={bits}: only 1, 2, 4 or 8 pack into whole bytes")
    q = np.asarray(q, dtype=np.uint8)
    if bits == 8:
        return q.copy()
    per = 8 // bits
    pad = (-q.shape[-1]) % per
    if pad:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (pad,), np.uint8)], axis=-1)
    q = q.reshape(q.shape[:-1] + (-1, per))
    out = np.zeros(q.shape[:-1], np.uint8)
    for i in range(per):
        out |= (q[..., i] << (bits * i)).astype(np.uint8)
    return out


def unpack_codes(packed: np.ndarray, bits: int, length: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``(..., bytes)`` -> ``(..., length)`` uint8 codes."""
    if bits == 8:
        return np.asarray(packed, np.uint8)[..., :length].copy()
    per, mask = 8 // bits, (1 << bits) - 1
    parts = [(packed >> (bits * i)) & mask for i in range(per)]
    return np.stack(parts, axis=-1).reshape(packed.shape[:-1] + (-1,))[..., :length].astype(np.uint8)


def grid_codes(w_hat: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int, block_size: int,
               group_rows: int = 1, name: str = "weight") -> np.ndarray:
    """The codes ``q = round(ŵ/Δ) + z`` (uint8, ``ŵ``'s shape ``(rows, cols)``) of a frozen weight whose
    groups are ``group_rows × block_size`` with ``scale`` / ``zero`` ``(rows/gr, cols/bs)``.

    ValueError unless ``ŵ`` lies on that grid: every code in ``[0, 2^bits − 1]`` and ``(q − z)·Δ``
    equal to ``ŵ`` in float32 (the export is not the frozen fake-quant model otherwise)."""
    rows, cols = w_hat.shape
    if scale.shape != (rows // group_rows, cols // block_size) or rows % group_rows or cols % block_size:
        raise ValueError(f"{name}: weight {w_hat.shape} does not match its quantization parameters {scale.shape} "
                         f"(group_rows={group_rows}, block_size={block_size})")
    s = np.repeat(np.repeat(scale.astype(np.float32), group_rows, 0), block_size, 1)
    z = np.repeat(np.repeat(zero, group_rows, 0), block_size, 1).astype(np.float32)
    w = w_hat.astype(np.float32)
    q = np.rint(w / s) + z  # the torch quantizer's order: round(w/Δ) + z, half to even
    if q.min() < 0 or q.max() > (1 << bits) - 1:
        raise ValueError(f"{name}: codes outside [0, {(1 << bits) - 1}]: the exported weight is not on its "
                         f"{bits}-bit grid (was the model frozen before export?)")
    err = float(np.abs((q - z) * s - w).max(initial=0.0))
    if err > 0.0:
        raise ValueError(f"{name}: (q - z)·Δ differs from the exported weight by up to {err:.3g}: the export is not "
                         f"the frozen fake-quant model (re-export after freeze_all())")
    return q.astype(np.uint8)


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


# ---------------------------------------------------------------- graph rewrite

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


def matmul_nbits_node(a: str, y: str, name: str, q: np.ndarray, scales: np.ndarray, zero_points: np.ndarray,
                      bits: int, block_size: int, accuracy_level: int = 0) -> tuple["onnx.NodeProto", list]:
    """One ``com.microsoft.MatMulNBits`` node ``y = a · dequant(B)ᵀ`` (``a`` ``[..., K]`` float32, ``y``
    ``[..., N]``) and its three initializers, in the layout of the module doc.

    ``q``: uint8 codes ``(N, K)``, each < 2^bits; ``scales`` float32 and ``zero_points`` uint8, both
    ``(N, K / block_size)``; ``bits`` in :data:`ORT_BITS`; ``block_size`` a power of two >= 16 dividing K.
    Initializers are named ``<name>_Q<bits>``, ``<name>_scales``, ``<name>_zero_points``; the node
    ``<name>_Q<bits>``. ValueError for a block that does not divide K."""
    from onnx import helper, numpy_helper

    n_rows, k = q.shape
    if k % block_size:
        raise ValueError(f"{name}: block_size={block_size} does not divide K={k}")
    nb = k // block_size
    b = numpy_helper.from_array(pack_codes(q.reshape(n_rows, nb, block_size), bits), f"{name}_Q{bits}")
    s = numpy_helper.from_array(np.asarray(scales).reshape(-1).astype(np.float32), f"{name}_scales")
    z = numpy_helper.from_array(pack_codes(zero_points, bits).reshape(-1), f"{name}_zero_points")
    node = helper.make_node("MatMulNBits", [a, b.name, s.name, z.name], [y], name=f"{name}_Q{bits}", domain=_MS,
                            K=k, N=n_rows, bits=bits, block_size=block_size, accuracy_level=accuracy_level)
    return node, [b, s, z]


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


def _gather_nodes(node: "onnx.NodeProto", q: np.ndarray, s_dep: np.ndarray, z_dep: np.ndarray, dbits: int | None,
                  dbs: int | None) -> tuple[list, list, str]:
    """GatherBlockQuantized when the block is deployable, else Gather of uint8 codes + dequant in standard ops."""
    from onnx import TensorProto, helper, numpy_helper

    v, d = q.shape
    base, ids = node.name or node.output[0], node.input[1]
    if dbs is not None and dbits is not None:
        data = numpy_helper.from_array(pack_codes(q, dbits), f"{base}_Q{dbits}")
        s = numpy_helper.from_array(s_dep.astype(np.float32), f"{base}_scales")
        z = numpy_helper.from_array(pack_codes(z_dep, dbits), f"{base}_zero_points")
        gbq = helper.make_node("GatherBlockQuantized", [data.name, ids, s.name, z.name], [node.output[0]],
                               name=f"{base}_Q{dbits}", domain=_MS, bits=dbits, block_size=dbs, gather_axis=0,
                               quantize_axis=1)
        return [gbq], [data, s, z], "GatherBlockQuantized"
    # fallback: codes (V, nb, bs) uint8 and per-block scale / zero (V, nb, 1); out = (q − z)·Δ, reshaped back
    nb = s_dep.shape[1]
    bs = d // nb
    t = {k: numpy_helper.from_array(a, f"{base}_{k}") for k, a in (
        ("codes", q.reshape(v, nb, bs)), ("scales", s_dep.astype(np.float32).reshape(v, nb, 1)),
        ("zero_points", z_dep.reshape(v, nb, 1)), ("dim", np.array([d], np.int64)))}

    def o(k: str) -> str:
        return f"{base}/{k}_output"

    nodes = [
        helper.make_node("Gather", [t["codes"].name, ids], [o("codes")], name=f"{base}/codes", axis=0),
        helper.make_node("Cast", [o("codes")], [o("codes_f")], name=f"{base}/codes_f", to=TensorProto.FLOAT),
        helper.make_node("Gather", [t["zero_points"].name, ids], [o("zero")], name=f"{base}/zero", axis=0),
        helper.make_node("Cast", [o("zero")], [o("zero_f")], name=f"{base}/zero_f", to=TensorProto.FLOAT),
        helper.make_node("Gather", [t["scales"].name, ids], [o("scale")], name=f"{base}/scale", axis=0),
        helper.make_node("Sub", [o("codes_f"), o("zero_f")], [o("centered")], name=f"{base}/centered"),
        helper.make_node("Mul", [o("centered"), o("scale")], [o("blocks")], name=f"{base}/blocks"),
        helper.make_node("Shape", [ids], [o("ids_shape")], name=f"{base}/ids_shape"),
        helper.make_node("Concat", [o("ids_shape"), t["dim"].name], [o("shape")], name=f"{base}/shape", axis=0),
        helper.make_node("Reshape", [o("blocks"), o("shape")], [node.output[0]], name=f"{base}/Reshape"),
    ]
    return nodes, list(t.values()), "Gather+dequantize"


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
            nodes, tensors, op = _gather_nodes(node, q, s_dep, z_dep, dbits if dbs else None, dbs)
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
    if not any(o.domain == _MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS, 1))
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


__all__ = ["ACCURACY_LEVELS", "KERNEL_2BIT", "ORT_BITS", "ORT_BLOCKS", "ORT_FALLBACK_LOG", "SIDECAR", "compare_graphs",
           "deployable_block", "deployed_bits", "export_quantized", "grid_codes", "matmul_nbits_node",
           "onnx_module_path", "pack_codes", "probe_kernel_path", "read_quant_sidecar", "to_matmul_nbits",
           "unpack_codes", "write_quant_sidecar"]
