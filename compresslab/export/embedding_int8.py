"""Block-wise int8 word embeddings for dynamic-int8 files.

ONNX Runtime's dynamic quantizer turns the fused ``EmbedLayerNormalization`` into ``QEmbedLayerNormalization``
(and an unfused embedding ``Gather`` into a quantized ``Gather``) with ONE uint8 scale per table. A word-embedding
table's range is set by a few rows: on MiniLM (all-MiniLM-L6-v2) the largest |value| is 1.05 against a median row
maximum of 0.18, so a typical row gets ~40 of the 256 levels (relative error 3.2 %). On the bench SST-2 teacher
that table error alone flips 2 of 1,000 validation predictions against fp32, about as many as all int8 MatMuls
together once their outliers are split off (benchmarks/RESULTS.md, "Outlier split").

:func:`blockwise_word_embeddings` stores the word-embedding table as uint8 codes with one scale and integer zero
point per block of :data:`BLOCK_SIZE` values along the hidden dimension (per row when that does not divide it):
the asymmetric grid of ``ops.quant`` (``ŵ = (q − z)·Δ``; bitsandbytes' "block-wise quantization", Dettmers et al.,
2022, 8-bit optimizers §2). The lookup dequantizes only the rows it gathers, in standard ONNX ops (Gather, Cast,
Sub, Mul, Reshape; ``export/nbits_pack.gather_quantized_nodes``), which every ONNX Runtime version runs (the fused
graph's ``EmbedLayerNormalization`` is a com.microsoft op either way). The relative table error on MiniLM is 0.6 %
(against 3.2 % with one scale); the file is ~1 MB larger (the scales and zero points), and the speed is the same.
(The OpenVINO int8 IR stores its tables per row, symmetric: ``export/qdq.int8_embedding_tables``.)

* **Unfused graph**: the ``Gather(table, input_ids)`` is replaced by the dequantizing lookup.
* **Fused graph**: ``EmbedLayerNormalization`` takes a whole table. Its word input is given the dequantized rows of
  this call (``[batch x seq, hidden]``) and, as ids, ``0 .. batch x seq − 1`` in the input's shape; the op, its
  LayerNorm and its mask output are unchanged.

The position and token-type tables stay fp32 (0.8 MB on MiniLM). Every node reading an embedding table is
returned in ``exclude``: pass it to the quantizer's ``nodes_to_exclude`` so that ORT does not quantize them again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compresslab.export.ort_quant import atomic_output

log = logging.getLogger(__name__)

__all__ = ["BLOCK_SIZE", "EMBEDDINGS", "EmbeddingError", "blockwise_word_embeddings", "embedding_readers",
           "table_storage"]

# the int8 pass's choices: ORT's one scale per table, block-wise codes (this module), or the tables kept fp32
EMBEDDINGS = ("per_tensor", "blockwise", "fp32")
BLOCK_SIZE = 128  # values per scale along the hidden dimension (384 = 3 blocks on MiniLM)
PREFIX = "/embedding_int8/"
_ELN = ("EmbedLayerNormalization",)


class EmbeddingError(ValueError):
    """A graph without a word-embedding lookup the rewrite recognises, or one already rewritten."""


def _ids_source(model: onnx.ModelProto, name: str) -> str:
    """The graph input ``name`` comes from, through Cast nodes; ``name`` itself if it is not a Cast output."""
    producers = {o: n for n in model.graph.node for o in n.output}
    while name in producers and producers[name].op_type == "Cast":
        name = producers[name].input[0]
    return name


def embedding_readers(model: onnx.ModelProto) -> tuple[list[tuple[onnx.NodeProto, str]], list[str]]:
    """``(word lookups, readers)``: the word-embedding lookups as ``(node, table initializer)`` and the names of
    every node that reads an embedding table (``EmbedLayerNormalization``, ``Gather`` of a 2-D float initializer).

    A word lookup is an ``EmbedLayerNormalization`` (its ``word_embedding`` input, if an initializer) or a
    ``Gather`` of a 2-D float initializer whose indices come from the graph input ``input_ids`` (through Casts).
    """
    inits = {t.name: t for t in model.graph.initializer}

    def table(name: str) -> bool:
        t = inits.get(name)
        return t is not None and len(t.dims) == 2 and t.data_type == TensorProto.FLOAT

    words: list[tuple[onnx.NodeProto, str]] = []
    readers: list[str] = []
    for n in model.graph.node:
        if n.op_type in _ELN:
            readers.append(n.name)
            if len(n.input) > 2 and table(n.input[2]):
                words.append((n, n.input[2]))
        elif n.op_type == "Gather" and table(n.input[0]):
            readers.append(n.name)
            if _axis(n) == 0 and _ids_source(model, n.input[1]) == "input_ids":  # rows looked up by token id
                words.append((n, n.input[0]))
    return words, readers


MIN_BLOCK = 16  # below this a scale and zero point per block cost more than they save: one block per row instead


def _block(d: int, block_size: int) -> int:
    """The largest divisor of the width ``d`` that is at most ``block_size`` and at least :data:`MIN_BLOCK`
    (any divisor when ``block_size`` is below it); the whole row when there is none (a prime width)."""
    lo = MIN_BLOCK if block_size >= MIN_BLOCK else 1  # a small block asked for: its divisors below it too
    return next((b for b in range(min(block_size, d), lo - 1, -1) if d % b == 0), d)


def _codes(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """uint8 codes ``(V, D)``, scales float32 and zero points uint8 ``(V, D / block)``, and the block used."""
    import torch

    from compresslab.ops.quant import quant_params, quantize

    block = _block(w.shape[1], block_size)
    t = torch.from_numpy(np.array(w, dtype=np.float32))  # a writable copy
    p = quant_params(t, 8, block)
    return quantize(t, p).numpy(), p.scale.numpy().astype(np.float32), p.zero_point.numpy(), block


def table_storage(path: str | Path) -> str:
    """How the ONNX file ``path`` stores its word-embedding table: ``blockwise`` (this module's codes),
    ``per_tensor`` (ORT's ``QEmbedLayerNormalization``, or an axis-0 ``Gather`` of ``input_ids`` from a 2-D int8 /
    uint8 table), ``fp32`` (``EmbedLayerNormalization`` or that Gather on a float table), or ``none`` (no word lookup
    this recognises)."""
    model = onnx.load(str(path), load_external_data=False)
    if any(n.name.startswith(PREFIX) for n in model.graph.node):
        return "blockwise"
    types = {t.name: (len(t.dims), t.data_type) for t in model.graph.initializer}
    found = "none"
    for n in model.graph.node:
        if n.op_type == "QEmbedLayerNormalization":
            return "per_tensor"
        if n.op_type in _ELN and len(n.input) > 2 and types.get(n.input[2], (0, 0))[1] == TensorProto.FLOAT:
            found = "fp32"
        elif n.op_type == "Gather" and _axis(n) == 0 and _ids_source(model, n.input[1]) == "input_ids":
            rank, dtype = types.get(n.input[0], (0, 0))
            if rank == 2 and dtype in (TensorProto.UINT8, TensorProto.INT8):
                return "per_tensor"
            if rank == 2 and dtype == TensorProto.FLOAT:
                found = "fp32"
    return found


def _axis(node: onnx.NodeProto) -> int:
    """A Gather's axis over a 2-D table, normalised (-2 is 0)."""
    return next((a.i for a in node.attribute if a.name == "axis"), 0) % 2


def _name_unnamed(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name: the rewrite places nodes, and the quantizer excludes them, by name."""
    taken = {n.name for n in model.graph.node}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = next(c for c in (f"/embedding_int8_named/{n.op_type}_{i}_{k}" for k in range(len(taken) + 1))
                          if c not in taken)
            taken.add(n.name)


def blockwise_word_embeddings(src: str | Path, dst: str | Path, *, block_size: int = BLOCK_SIZE) -> dict[str, Any]:
    """Rewrite the fp32 ONNX file ``src`` into ``dst`` (atomically) with its word-embedding table(s) as block-wise
    uint8 codes (module docstring); other tables and all other nodes unchanged. ``block_size``: values per scale
    along the hidden dimension; the largest divisor of the width up to it (and >= 16) is used, else the whole row.

    Returns ``{"tables": {name: {"shape", "block_size" (used), "rel_error", "lookups", "fp32_copy_kept"}},
    "exclude": [node names the quantizer must leave alone], "block_size_requested"}``. A table read by several
    lookups is stored once; one also read by another node (a tied head) keeps its fp32 copy for that node (the file
    then grows: ``fp32_copy_kept``). Raises :class:`EmbeddingError` when ``src`` has no
    word lookup (no ``EmbedLayerNormalization`` with an initializer table, no ``Gather`` of ``input_ids``) or was
    already rewritten, a table with non-finite values, or new tensor names the graph already has; ``ValueError``
    for a ``block_size`` that is not a positive integer.
    """
    from compresslab.export.nbits_pack import check_guard_opset, gather_quantized_nodes

    if isinstance(block_size, bool) or not (isinstance(block_size, int) and block_size >= 1):
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    g = model.graph
    if any(n.name.startswith(PREFIX) for n in g.node):
        raise EmbeddingError(f"{src.name} already has block-wise int8 embeddings ({PREFIX} nodes)")
    _name_unnamed(model)
    if len({n.name for n in g.node}) != len(g.node):
        raise EmbeddingError(f"{src.name} has duplicate node names; the rewrite places its nodes by name")
    check_guard_opset(model, src.name, EmbeddingError)
    words, readers = embedding_readers(model)
    if not words:
        raise EmbeddingError(f"{src.name} has no word-embedding lookup (an EmbedLayerNormalization with an "
                             "initializer table, or a Gather of input_ids): use embeddings: per_tensor or fp32")
    inits = {t.name: t for t in g.initializer}
    before: dict[str, list[onnx.NodeProto]] = {}
    replaced: dict[str, list[onnx.NodeProto]] = {}
    new_inits: list[onnx.TensorProto] = []
    tables: dict[str, dict[str, Any]] = {}
    stored: dict[str, tuple[str, tuple]] = {}  # table -> (the base its codes are stored under, its codes)
    for i, (node, name) in enumerate(words):
        base = f"{PREFIX}{i}"
        if name not in stored:
            w = numpy_helper.to_array(inits[name])
            if not np.isfinite(w).all():
                raise EmbeddingError(f"{name} has non-finite values: no int8 grid holds them")
            q, s, z, block = _codes(w, block_size)
            w_hat = (q.astype(np.float32).reshape(len(w), -1, block) - z[..., None]) * s[..., None]
            tables[name] = {"shape": list(w.shape), "block_size": block, "lookups": [],
                            "rel_error": float(np.linalg.norm(w_hat.reshape(w.shape) - w)
                                               / max(np.linalg.norm(w), 1e-30))}
            stored[name] = (base, (q, s, z))
        tables[name]["lookups"].append(node.name)
        first, (q, s, z) = stored[name]
        width = tables[name]["shape"][1]
        if node.op_type == "Gather":
            lookup = helper.make_node("Gather", [name, node.input[1]], [node.output[0]], name=base)
        else:  # EmbedLayerNormalization: this call's rows as the table, positions in it as the ids
            lookup = helper.make_node("Gather", [name, node.input[0]], [f"{base}/rows"], name=base)
        nodes, tensors, _ = gather_quantized_nodes(lookup, q, s, z, None, None)
        if first != base:  # a table already stored: read its codes, scales and zero points
            for n in nodes:
                n.input[:] = [x.replace(f"{base}_", f"{first}_", 1) if x.startswith(f"{base}_") else x
                              for x in n.input]
            tensors = []
        if node.op_type == "Gather":
            replaced[node.name] = nodes
        else:
            nodes, more = _eln_table(node, base, width, nodes)
            tensors += more
            before[node.name] = nodes
        new_inits += tensors
    clash = {t.name for t in new_inits} & (set(inits) | {o for n in g.node for o in n.output})
    if clash:
        raise EmbeddingError(f"{src.name} already has tensors named {sorted(clash)[:3]}: the rewrite's names clash")
    kept: list[onnx.NodeProto] = []
    for n in g.node:
        kept += before.get(n.name, []) + replaced.get(n.name, [n])
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for name in tables:
        tables[name]["fp32_copy_kept"] = name in used  # a table also read elsewhere (a tied head) keeps it
        if name not in used:
            g.initializer.remove(inits[name])
            for v in [v for v in g.input if v.name == name]:  # exported with initializers as inputs
                g.input.remove(v)
    with atomic_output(dst) as tmp:
        onnx.save(model, str(tmp))
    # the other tables' readers, and the new lookups: ORT's quantizer would quantize a Gather of a float table
    # (the scales) again
    exclude = [n for n in readers if n not in replaced] + [n.name for n in kept if n.name.startswith(PREFIX)]
    log.info("embeddings: %s as block-wise int8 (%s)", ", ".join(tables),
             ", ".join(f"block {t['block_size']}, rel. error {t['rel_error']:.2%}" for t in tables.values()))
    return {"tables": tables, "exclude": exclude, "block_size_requested": block_size}


def _eln_table(node: onnx.NodeProto, base: str, width: int,
               lookup: list[onnx.NodeProto]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes that feed the fused ``node`` this call's dequantized rows (``lookup``'s output ``{base}/rows``)
    as its word table, ``[ids.size, width]``, and ``0 .. ids.size - 1`` in the ids' shape as its ids; ``node``'s
    inputs are pointed at them. ELN takes int32 ids (its schema), so the range is int32."""
    ids, e = node.input[0], f"{base}/eln"  # names apart from the lookup's own
    c = {k: numpy_helper.from_array(v, f"{e}/{k}") for k, v in (
        ("table_shape", np.array([-1, width], np.int64)),
        ("start", np.array(0, np.int32)), ("step", np.array(1, np.int32)))}
    nodes = lookup + [
        helper.make_node("Reshape", [f"{base}/rows", c["table_shape"].name], [f"{e}/table"], name=f"{e}/table"),
        helper.make_node("Size", [ids], [f"{e}/n64"], name=f"{e}/n64"),
        helper.make_node("Cast", [f"{e}/n64"], [f"{e}/n"], name=f"{e}/n", to=TensorProto.INT32),
        helper.make_node("Range", [c["start"].name, f"{e}/n", c["step"].name], [f"{e}/range"], name=f"{e}/range"),
        helper.make_node("Shape", [ids], [f"{e}/ids_shape"], name=f"{e}/ids_shape"),
        helper.make_node("Reshape", [f"{e}/range", f"{e}/ids_shape"], [f"{e}/ids"], name=f"{e}/ids"),
    ]
    node.input[0], node.input[2] = f"{e}/ids", f"{e}/table"
    return nodes, list(c.values())
