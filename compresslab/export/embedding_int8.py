"""Block-wise int8 word embeddings for dynamic-int8 files.

ONNX Runtime's dynamic quantizer turns the fused ``EmbedLayerNormalization`` into ``QEmbedLayerNormalization``
(and an unfused embedding ``Gather`` into a quantized ``Gather``) with ONE uint8 scale per table. A word-embedding
table's range is set by a few rows: on MiniLM (all-MiniLM-L6-v2) the largest |value| is 1.05 against a median row
maximum of 0.18, so a typical row gets ~40 of the 256 levels (relative error 3.2 %). On the bench SST-2 teacher
that table error alone flips 2-3 of 1,000 validation predictions against fp32, about as many as all int8 MatMuls
together once their outliers are split off (benchmarks/RESULTS.md, "Outlier split").

:func:`blockwise_word_embeddings` stores the word-embedding table as uint8 codes with one scale and integer zero
point per block of :data:`BLOCK_SIZE` values along the hidden dimension (per row when that does not divide it):
the asymmetric grid of ``ops.quant`` (``ŵ = (q − z)·Δ``; bitsandbytes' "block-wise quantization", Dettmers et al.,
2022, 8-bit optimizers §2). The lookup dequantizes only the rows it gathers, in standard ONNX ops (Gather, Cast,
Sub, Mul, Reshape; ``export/nbits_pack.gather_quantized_nodes``), so any ONNX Runtime version and any runtime reads
it. The relative table error on MiniLM is 0.7 %; the file is ~1 MB larger than with one scale (the scales and zero
points), and the speed is the same.

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

__all__ = ["BLOCK_SIZE", "EMBEDDINGS", "EmbeddingError", "blockwise_word_embeddings", "embedding_readers"]

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
            if _ids_source(model, n.input[1]) == "input_ids":
                words.append((n, n.input[0]))
    return words, readers


def _codes(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """uint8 codes ``(V, D)``, scales float32 and zero points uint8 ``(V, D / block)``, and the block used."""
    import torch

    from compresslab.ops.quant import quant_params, quantize

    d = w.shape[1]
    block = block_size if d % block_size == 0 else d
    t = torch.from_numpy(np.array(w, dtype=np.float32))  # a writable copy
    p = quant_params(t, 8, block)
    return quantize(t, p).numpy(), p.scale.numpy().astype(np.float32), p.zero_point.numpy(), block


def blockwise_word_embeddings(src: str | Path, dst: str | Path, *, block_size: int = BLOCK_SIZE) -> dict[str, Any]:
    """Rewrite the fp32 ONNX file ``src`` into ``dst`` (atomically) with its word-embedding table(s) as block-wise
    uint8 codes (module docstring); other tables and all other nodes unchanged.

    Returns ``{"tables": {name: {"shape", "block_size", "rel_error", "lookups"}}, "exclude": [node names the
    quantizer must leave alone], "block_size"}``. Raises :class:`EmbeddingError` when ``src`` has no word lookup
    (no ``EmbedLayerNormalization`` with an initializer table, no ``Gather`` of ``input_ids``) or was already
    rewritten; ``ValueError`` for ``block_size < 1``.
    """
    from compresslab.export.nbits_pack import gather_quantized_nodes

    if not (isinstance(block_size, int) and block_size >= 1):
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    g = model.graph
    if any(n.name.startswith(PREFIX) for n in g.node):
        raise EmbeddingError(f"{src.name} already has block-wise int8 embeddings ({PREFIX} nodes)")
    words, readers = embedding_readers(model)
    if not words:
        raise EmbeddingError(f"{src.name} has no word-embedding lookup (an EmbedLayerNormalization with an "
                             "initializer table, or a Gather of input_ids): use embeddings: per_tensor or fp32")
    inits = {t.name: t for t in g.initializer}
    before: dict[str, list[onnx.NodeProto]] = {}
    new_inits: list[onnx.TensorProto] = []
    tables: dict[str, dict[str, Any]] = {}
    replaced: dict[str, list[onnx.NodeProto]] = {}
    for i, (node, name) in enumerate(words):
        w = numpy_helper.to_array(inits[name])
        q, s, z, block = _codes(w, block_size)
        base = f"{PREFIX}{i}"
        rec = tables.setdefault(name, {"shape": list(w.shape), "block_size": block, "lookups": []})
        rec["lookups"].append(node.name)
        if "rel_error" not in rec:
            w_hat = (q.astype(np.float32).reshape(len(w), -1, block) - z[..., None]) * s[..., None]
            rec["rel_error"] = float(np.linalg.norm(w_hat.reshape(w.shape) - w) / max(np.linalg.norm(w), 1e-30))
        if node.op_type == "Gather":
            lookup = helper.make_node("Gather", [name, node.input[1]], [node.output[0]], name=base)
            nodes, tensors, _ = gather_quantized_nodes(lookup, q, s, z, None, None)
            replaced[node.name] = nodes
        else:  # EmbedLayerNormalization: this call's rows as the table, positions in it as the ids
            ids, rows = node.input[0], f"{base}/rows"
            lookup = helper.make_node("Gather", [name, ids], [rows], name=base)
            nodes, tensors, _ = gather_quantized_nodes(lookup, q, s, z, None, None)
            e = f"{base}/eln"  # names apart from the lookup's own
            c = {k: numpy_helper.from_array(v, f"{e}/{k}") for k, v in (
                ("table_shape", np.array([-1, w.shape[1]], np.int64)),
                ("start", np.array(0, np.int32)), ("step", np.array(1, np.int32)))}
            tensors += list(c.values())
            nodes += [
                helper.make_node("Reshape", [rows, c["table_shape"].name], [f"{e}/table"], name=f"{e}/table"),
                helper.make_node("Size", [ids], [f"{e}/n64"], name=f"{e}/n64"),
                helper.make_node("Cast", [f"{e}/n64"], [f"{e}/n"], name=f"{e}/n", to=TensorProto.INT32),
                helper.make_node("Range", [c["start"].name, f"{e}/n", c["step"].name], [f"{e}/range"],
                                 name=f"{e}/range"),
                helper.make_node("Shape", [ids], [f"{e}/ids_shape"], name=f"{e}/ids_shape"),
                helper.make_node("Reshape", [f"{e}/range", f"{e}/ids_shape"], [f"{e}/ids"],
                                 name=f"{e}/ids"),
            ]
            if node.input[0] and _elem_type(model, ids) not in (None, TensorProto.INT32):
                raise EmbeddingError(f"{node.name}: input_ids of type {_elem_type(model, ids)}; "
                                     "EmbedLayerNormalization takes int32 ids")
            node.input[0], node.input[2] = f"{e}/ids", f"{e}/table"
            before[node.name] = nodes
        new_inits += tensors
    kept: list[onnx.NodeProto] = []
    for n in g.node:
        kept += before.get(n.name, []) + replaced.get(n.name, [n])
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for name in tables:
        if name not in used:  # a table also read elsewhere (a tied head) keeps its fp32 copy
            g.initializer.remove(inits[name])
    with atomic_output(dst) as tmp:
        onnx.save(model, str(tmp))
    # the other tables' readers, and the new lookups: ORT's quantizer would quantize a Gather of a float table
    # (the scales) again
    exclude = [n for n in readers if n not in replaced] + [n.name for n in kept if n.name.startswith(PREFIX)]
    log.info("embeddings: %s as block-wise int8 (%s)", ", ".join(tables),
             ", ".join(f"block {t['block_size']}, rel. error {t['rel_error']:.2%}" for t in tables.values()))
    return {"tables": tables, "exclude": exclude, "block_size": block_size}


def _elem_type(model: onnx.ModelProto, name: str) -> int | None:
    """The element type of tensor ``name`` where the graph declares it (inputs, value_info, Cast outputs)."""
    for v in list(model.graph.input) + list(model.graph.value_info):
        if v.name == name:
            return v.type.tensor_type.elem_type
    for n in model.graph.node:
        if n.op_type == "Cast" and name in n.output:
            return next(a.i for a in n.attribute if a.name == "to")
    return None
