"""The n-bit codes of one frozen weight and the ONNX Runtime contrib nodes that hold them, in ORT's layout.

What :mod:`compresslab.export.matmul_nbits` writes for each stamped module, apart from the graph walk
that finds and replaces its node (kept apart so the layout can be read, tested and timed alone:
``bench/nbits_latency.py`` builds its one-node graphs with :func:`matmul_nbits_node`).

* ``com.microsoft.MatMulNBits`` for Linears (ORT ContribOperators spec, ``MatMulNBits``; layout as
  written by ORT's own ``onnxruntime/quantization/matmul_nbits_quantizer.py``):
  ``B`` uint8 ``[N, n_blocks, block_size·bits/8]``, codes along K packed low bits first within each
  byte; ``scales`` float32 ``[N·n_blocks]``; ``zero_points`` uint8 ``[N·ceil(n_blocks·bits/8)]``, each
  row's zero points packed the same way; attributes K, N, bits, block_size, accuracy_level.
  ``Y = A · dequant(B)ᵀ``.
* ``com.microsoft.GatherBlockQuantized`` for word embeddings (uint8 data, bits 2/4/8 in ORT 1.32,
  ``quantize_axis=1``, codes packed along the last axis low bits first, zero points packed alike);
  a table whose block has no deployable power of two falls back to a Gather of uint8 codes plus
  gathered per-block scale / zero point in standard ops (8 bits a weight).

Widths and blocks: bits 2, 4, 8 map directly, other widths use the next supported width with the same
codes (:func:`deployed_bits`); a block is a power of two >= 16 (:func:`deployable_block`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

ORT_BITS = (2, 4, 8)  # MatMulNBits / GatherBlockQuantized (uint8 data) bit widths in ORT 1.32
ORT_BLOCKS = (256, 128, 64, 32, 16)  # deployable blocks, largest first (power of two >= 16)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits' accuracy_level: 0 = fp32 activations ... 4 = int8 activations
MS_DOMAIN = "com.microsoft"  # the contrib ops' domain (the graph needs an opset import for it)


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
    node = helper.make_node("MatMulNBits", [a, b.name, s.name, z.name], [y], name=f"{name}_Q{bits}", domain=MS_DOMAIN,
                            K=k, N=n_rows, bits=bits, block_size=block_size, accuracy_level=accuracy_level)
    return node, [b, s, z]


def gather_quantized_nodes(node: "onnx.NodeProto", q: np.ndarray, s_dep: np.ndarray, z_dep: np.ndarray,
                           dbits: int | None, dbs: int | None) -> tuple[list, list, str]:
    """The nodes and initializers replacing the embedding ``Gather`` ``node``: GatherBlockQuantized when the
    block is deployable, else Gather of uint8 codes + dequant in standard ops. An id outside ``[0, V)`` is refused
    (:func:`_ids_checked`); the graph needs opset >= :data:`GUARD_OPSET`.

    ``q``: uint8 codes ``(V, D)``; ``s_dep`` float32 / ``z_dep`` uint8 ``(V, D / block)``, one per deployed
    block; ``dbits`` / ``dbs`` the deployed width and block (both None for the fallback). Returns
    ``(nodes, initializers, op)`` with ``op`` ``"GatherBlockQuantized"`` or ``"Gather+dequantize"``."""
    from onnx import TensorProto, helper, numpy_helper

    v, d = q.shape
    base = node.name or node.output[0]
    guard, ids, guard_inits = _ids_checked(node.input[1], v, base)
    if dbs is not None and dbits is not None:
        data = numpy_helper.from_array(pack_codes(q, dbits), f"{base}_Q{dbits}")
        s = numpy_helper.from_array(s_dep.astype(np.float32), f"{base}_scales")
        z = numpy_helper.from_array(pack_codes(z_dep, dbits), f"{base}_zero_points")
        gbq = helper.make_node("GatherBlockQuantized", [data.name, ids, s.name, z.name], [node.output[0]],
                               name=f"{base}_Q{dbits}", domain=MS_DOMAIN, bits=dbits, block_size=dbs, gather_axis=0,
                               quantize_axis=1)
        return [*guard, gbq], [data, s, z, *guard_inits], "GatherBlockQuantized"
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
    return [*guard, *nodes], [*t.values(), *guard_inits], "Gather+dequantize"


GUARD_OPSET = 15  # CastLike, which the lookup's id check casts its bound with


def default_opset(model: "onnx.ModelProto") -> int:
    """The graph's default-domain (ai.onnx) opset version (1 when none is imported, as ONNX reads it)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def check_guard_opset(model: "onnx.ModelProto", name: str, error: type[ValueError] = ValueError) -> None:
    """Raise ``error`` when graph ``name`` is below :data:`GUARD_OPSET`, before any lookup is rewritten."""
    if (v := default_opset(model)) < GUARD_OPSET:
        raise error(f"{name} is opset {v}; a quantized word lookup needs >= {GUARD_OPSET} (CastLike, for its "
                    f"token-id check): re-export with export.opset >= {GUARD_OPSET}")


def _ids_checked(ids: str, rows: int, base: str) -> tuple[list, str, list]:
    """Nodes that pass ``ids`` through unchanged when every id is in ``[0, rows)`` and make ONNX Runtime raise
    otherwise, as the fp32 lookup does: ONNX ``Gather`` wraps -1 to the last row (BERT's
    ``EmbedLayerNormalization`` and torch's embedding refuse it), and ORT's ``GatherBlockQuantized`` checks no
    bound at all (an id >= rows read past the table without an error on ORT 1.32). A negative id is mapped to
    ``rows``; then a ``Gather`` of a ``rows``-long zero vector (uint8, ``rows`` bytes), whose error names node
    ``<base>/ids_guard/token_id_out_of_range``, is added to the ids so the check cannot be pruned. int32 or int64
    ids (the bound is cast like them). Returns ``(nodes, the checked ids' name, initializers)``."""
    from onnx import helper, numpy_helper

    g = f"{base}/ids_guard"
    # initializers named ``<base>_*`` like the table's own: a second lookup of one stored table reads the first's
    bound = numpy_helper.from_array(np.array(rows, np.int64), f"{base}_ids_rows")
    zeros = numpy_helper.from_array(np.zeros(rows, np.uint8), f"{base}_ids_zeros")
    nodes = [
        helper.make_node("CastLike", [bound.name, ids], [f"{g}/rows_like"], name=f"{g}/rows_like"),
        helper.make_node("Sub", [ids, ids], [f"{g}/zero"], name=f"{g}/zero"),
        helper.make_node("Less", [ids, f"{g}/zero"], [f"{g}/negative"], name=f"{g}/negative"),
        helper.make_node("Where", [f"{g}/negative", f"{g}/rows_like", ids], [f"{g}/mapped"], name=f"{g}/mapped"),
        helper.make_node("Gather", [zeros.name, f"{g}/mapped"], [f"{g}/probe"], name=f"{g}/token_id_out_of_range",
                         axis=0),
        helper.make_node("CastLike", [f"{g}/probe", ids], [f"{g}/probe_like"], name=f"{g}/probe_like"),
        helper.make_node("Add", [f"{g}/mapped", f"{g}/probe_like"], [f"{g}/ids"], name=f"{g}/ids"),
    ]
    return nodes, f"{g}/ids", [bound, zeros]


__all__ = ["ACCURACY_LEVELS", "GUARD_OPSET", "MS_DOMAIN", "ORT_BITS", "ORT_BLOCKS", "check_guard_opset",
           "default_opset", "deployable_block", "deployed_bits", "gather_quantized_nodes", "grid_codes", "matmul_nbits_node", "pack_codes", "unpack_codes"]
