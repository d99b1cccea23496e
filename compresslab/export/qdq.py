"""The exported graph of an int8 QAT model (``models/qdq.py``): int8 weight initializers and a check
that every quantized MatMul is in the form sparse int8 engines pattern-match.

torch's exporter writes each frozen ``QDQLinear`` as::

    x -> QuantizeLinear(s_x, z_x uint8) -> DequantizeLinear ------------------------------> MatMul -> Add(bias)
    W fp32 -> QuantizeLinear(Δ, 0 int8) -> DequantizeLinear -> Transpose ----------------/

:func:`fold_weight_qdq` computes the weight's QuantizeLinear offline (exact: ONNX's
``saturate(round_half_even(W/Δ) + 0)``) and folds the Transpose into it, leaving
``int8 Wᵀ -> DequantizeLinear(Δ, 0) -> MatMul``: the layout ONNX Runtime's own static QDQ quantizer
writes and SparseML's QAT exports use before their final rewrite (~4x smaller; DeepSparse 1.8 runs this
form in float: :mod:`compresslab.export.matmul_integer` writes the integer form it runs in int8). The activation side stays a QuantizeLinear/DequantizeLinear pair, which an engine fuses
into its int8 kernel. :func:`qdq_summary` describes what a graph holds (the tests and the export
record use it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _axis(node: Any, default: int = 1) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), default)


def _set_axis(node: Any, axis: int) -> None:
    from onnx import helper

    for a in [a for a in node.attribute if a.name == "axis"]:
        node.attribute.remove(a)
    node.attribute.append(helper.make_attribute("axis", axis))


def _qparams_as_initializers(graph: Any) -> None:
    """Point every Q/DQ scale and zero point at an initializer: torch writes some as ``Constant`` nodes,
    and its de-duplication of equal initializers leaves ``Identity`` nodes in front of the shared one."""
    inits = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i in (1, 2):
            if i >= len(node.input) or not node.input[i]:
                continue
            name = node.input[i]
            while name not in inits and name in producer and producer[name].op_type == "Identity":
                name = producer[name].input[0]
            src = producer.get(name)
            if name not in inits and src is not None and src.op_type == "Constant":
                t = next(a.t for a in src.attribute if a.name == "value")
                t.name = name
                graph.initializer.append(t)
                inits.add(name)
            node.input[i] = name


def drop_dead(graph: Any, op_types: tuple[str, ...] = ("Constant", "Identity")) -> None:
    """Remove nodes of ``op_types`` and initializers that nothing reads any more (repeatedly: a removed node may
    have been the last reader of another)."""
    while True:
        used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in op_types and n.output[0] not in used]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _scalar_qparams(graph: Any) -> int:
    """Make the 1-element ``[1]`` scale / zero-point initializers of Q/DQ nodes 0-d (per-tensor);
    returns how many.

    torch's ``FakeQuantize`` keeps its activation scale as a ``[1]`` tensor; from opset 13 a 1-D scale
    means per-axis (along ``axis``, default 1), which ORT happens to broadcast but stricter engines read
    as a per-channel activation. A 0-d scale is the unambiguous per-tensor form ORT's quantizer writes."""
    names = {i for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for i in n.input[1:3]}
    n = 0
    for init in graph.initializer:
        if init.name in names and list(init.dims) == [1]:
            del init.dims[:]
            n += 1
    return n


def fold_weight_qdq(path: str | Path) -> dict[str, Any]:
    """Fold every ``QuantizeLinear`` of a constant fp32 initializer (a weight) into an int8 initializer,
    and a ``Transpose`` after its ``DequantizeLinear`` into the initializer too; rewrites ``path``
    atomically. Returns ``{"folded": n, "transposes_folded": n}``.

    Exact: the int8 values are what the QuantizeLinear node computes (round half to even, saturate).
    Only 2-D weights with zero point 0 and a per-tensor or axis-0 scale are folded; others are left
    as they are (and counted by :func:`qdq_summary`)."""
    import onnx
    from onnx import numpy_helper

    from compresslab.manifest import atomic_write_bytes

    model = onnx.load(str(path))
    g = model.graph
    _qparams_as_initializers(g)
    inits = {i.name: i for i in g.initializer}
    users = _consumers(g)
    drop: list[Any] = []
    folded = transposed = 0
    for q in [n for n in g.node if n.op_type == "QuantizeLinear"]:
        w_name, s_name = q.input[0], q.input[1]
        z_name = q.input[2] if len(q.input) > 2 else ""
        if w_name not in inits or s_name not in inits or (z_name and z_name not in inits):
            continue  # an activation (or a scale computed in the graph): not a weight
        w = numpy_helper.to_array(inits[w_name])
        scale = numpy_helper.to_array(inits[s_name]).astype(np.float32)
        zero = numpy_helper.to_array(inits[z_name]) if z_name else np.zeros((), np.uint8)
        dqs = users.get(q.output[0], [])
        if (w.ndim != 2 or w.dtype != np.float32 or zero.dtype != np.int8 or np.any(zero != 0)
                or not dqs or any(d.op_type != "DequantizeLinear" for d in dqs)
                or (scale.size > 1 and (_axis(q) != 0 or scale.size != w.shape[0]))):
            continue
        s = scale.reshape(-1, 1) if scale.size > 1 else scale
        codes = np.clip(np.rint(w / s), -128, 127).astype(np.int8)  # np.rint: half to even, as ONNX
        users_of_dq = [u for d in dqs for u in users.get(d.output[0], [])]
        perm_t = all(u.op_type == "Transpose" and [a.ints for a in u.attribute if a.name == "perm"][0] == [1, 0]
                     for u in users_of_dq) and len(dqs) == 1 and users_of_dq
        q_name = f"{w_name}_quantized"
        g.initializer.append(numpy_helper.from_array(codes.T.copy() if perm_t else codes, q_name))
        # scale and zero point as initializers of their own (engines look for constants there)
        g.initializer.extend([numpy_helper.from_array(scale, f"{q_name}_scale"),
                              numpy_helper.from_array(zero.astype(np.int8), f"{q_name}_zero_point")])
        for d in dqs:
            d.input[0], d.input[1] = q_name, f"{q_name}_scale"
            if len(d.input) > 2:
                d.input[2] = f"{q_name}_zero_point"
            else:
                d.input.append(f"{q_name}_zero_point")
            if scale.size > 1:  # a per-row scale follows its rows through the transpose
                _set_axis(d, 1 if perm_t else 0)
        if perm_t:
            dq = dqs[0]
            for t in users_of_dq:  # the Transpose's consumers read the DequantizeLinear directly
                for u in users.get(t.output[0], []):
                    for i, name in enumerate(u.input):
                        if name == t.output[0]:
                            u.input[i] = dq.output[0]
                for o in g.output:
                    if o.name == t.output[0]:
                        raise ValueError(f"{path}: a transposed weight is a graph output; cannot fold it")
                drop.append(t)
            transposed += 1
        drop.append(q)
        folded += 1
    for n in drop:
        g.node.remove(n)
    drop_dead(g)  # the fp32 weights, the zero-point constants and identities now unused
    scalars = _scalar_qparams(g)
    atomic_write_bytes(path, model.SerializeToString())
    return {"folded": folded, "transposes_folded": transposed, "qparams_made_scalar": scalars}


def qdq_summary(path: str | Path) -> dict[str, Any]:
    """What a QDQ graph holds: MatMul/Gemm nodes and how many have both inputs from DequantizeLinear
    (``qdq_matmuls``), of which how many read an int8 zero-point-0 weight initializer
    (``int8_weights_zp0``) and how many of those are per-tensor (``per_tensor_weights``); the op counts;
    the weight sparsity over those int8 initializers (fraction of 0 codes)."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    matmuls = [n for n in g.node if n.op_type in ("MatMul", "Gemm")]
    qdq = int8 = per_tensor = zeros = total = 0
    for mm in matmuls:
        dqs = [producer.get(i) for i in mm.input[:2]]
        if not all(d is not None and d.op_type == "DequantizeLinear" for d in dqs):
            continue
        qdq += 1
        w_dq = next((d for d in dqs if d.input[0] in inits), None)
        if w_dq is None:
            continue
        w = numpy_helper.to_array(inits[w_dq.input[0]])
        zp = numpy_helper.to_array(inits[w_dq.input[2]]) if len(w_dq.input) > 2 and w_dq.input[2] else None
        if w.dtype == np.int8 and (zp is None or not np.any(zp)):
            int8 += 1
            per_tensor += int(numpy_helper.to_array(inits[w_dq.input[1]]).size == 1)
            zeros, total = zeros + int((w == 0).sum()), total + w.size
    return {"matmuls": len(matmuls), "qdq_matmuls": qdq, "int8_weights_zp0": int8, "per_tensor_weights": per_tensor,
            "int8_weight_sparsity": round(zeros / total, 6) if total else 0.0,
            "ops": dict(sorted(Counter(n.op_type for n in g.node).items()))}


def float_path_for_unquantized(path: str | Path, quantized_ops: Sequence[str] = ("MatMul",)) -> int:
    """Point every consumer of a quantized activation that is NOT itself quantized (an op type outside
    ``quantized_ops``: the residual ``Add``, ``LayerNormalization``, a ``Reshape``) back at the float
    tensor its ``QuantizeLinear`` read; rewrites ``path`` atomically and returns how many inputs moved.

    Why: ONNX Runtime's static QDQ quantizer replaces a quantized tensor for *all* its consumers, so
    the LayerNorm output that feeds Q/K/V (or the FFN's first MatMul) reaches the residual ``Add`` on
    the uint8 grid too: the residual stream is rounded to 256 levels every layer, and OpenVINO keeps a
    FakeQuantize on that float path. Only the quantized ops' inputs should see the grid; this is the
    ONNX QDQ form a QAT export of the same model has. Weights (DequantizeLinear of an initializer) and
    DequantizeLinear nodes without a QuantizeLinear in front are left as they are.
    """
    import onnx

    from compresslab.manifest import atomic_write_bytes

    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    keep = set(quantized_ops) | {"QuantizeLinear", "DequantizeLinear"}
    moved = 0
    for node in g.node:
        if node.op_type in keep:
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
                moved += 1
    if moved:
        atomic_write_bytes(path, model.SerializeToString())
    return moved


def symmetric_int8_inputs(path: str | Path, matmuls: Sequence[str]) -> int:
    """How many inputs of the named MatMul nodes come straight from a DequantizeLinear with an int8 zero point
    of 0 (symmetric int8): the check that a requested per-tensor override really took effect."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    n = 0
    for mm in (m for m in g.node if m.name in set(matmuls)):
        for name in mm.input:
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or dq.input[2] not in inits:
                continue
            zp = numpy_helper.to_array(inits[dq.input[2]])
            n += int(zp.dtype == np.int8 and not np.any(zp))
    return n


def _toposort(graph: Any) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (ONNX requires it)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    order, pending = [], list(graph.node)
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            raise ValueError(f"graph has a cycle or a dangling input at {rest[0].name!r}")
        for n in done:
            order.append(n)
            ready.update(n.output)
        pending = rest
    del graph.node[:]
    graph.node.extend(order)


def hoist_qdq_above_layout_ops(path: str | Path, matmuls: Sequence[str]) -> int:
    """For each input of the named MatMul nodes that is ``x -> QuantizeLinear -> DequantizeLinear``, move
    that pair above the chain of ``Reshape`` / ``Transpose`` nodes that made ``x`` (each output read by
    the next op only); rewrites ``path`` atomically and returns how many pairs moved.

    Exact for a per-tensor scale and zero point: quantization is elementwise, so it commutes with
    reshapes and transposes. Why: for attention's Q.K^T, ORT puts the pair after the head split
    (Reshape, Transpose); OpenVINO's CPU plugin only builds its int8 attention kernel when the
    FakeQuantize sits on the projection's output, before the head split (as NNCF writes it).
    Left where they are: per-axis pairs, pairs whose scale or zero point is not an initializer, a pair
    whose DequantizeLinear output another node also reads, and chains with a graph output on them.
    """
    import onnx
    from onnx import numpy_helper

    from compresslab.manifest import atomic_write_bytes

    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers = _consumers(g)
    outputs = {o.name for o in g.output}

    def per_tensor(node: Any) -> bool:  # scale and zero point: scalar initializers
        return all(i in inits and numpy_helper.to_array(inits[i]).size == 1 for i in node.input[1:3] if i)

    moved = 0
    for mm in [n for n in g.node if n.name in set(matmuls)]:
        for idx, name in enumerate(mm.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if (q is None or q.op_type != "QuantizeLinear" or readers.get(dq.input[0], []) != [dq]
                    or readers.get(name, []) != [mm] or not per_tensor(q) or not per_tensor(dq)
                    or {name, dq.input[0]} & outputs):
                continue
            x = top = q.input[0]
            chain = []
            while (src := producer.get(top)) is not None and src.op_type in ("Reshape", "Transpose") \
                    and len(readers.get(top, [])) == 1 and top not in outputs:
                chain.append(src)
                top = src.input[0]
            if not chain:
                continue
            q.input[0] = top  # quantize the projection's output ...
            chain[-1].input[0] = dq.output[0]  # ... and split heads on the dequantized tensor
            mm.input[idx] = x
            moved += 1
    if moved:
        _toposort(g)
        atomic_write_bytes(path, model.SerializeToString())
    return moved



def int8_embedding_tables(path: str | Path, min_rows: int = 1000) -> dict[str, Any]:
    """Store each embedding table of ``path`` (a float rank-2 initializer of at least ``min_rows`` rows
    whose only readers are ``Gather`` nodes' data input: the word-embedding table, not the small
    position/token-type ones) as int8, per-row symmetric: ``q = clip(round(E / s), -127, 127)`` with
    ``s_r = max|E_r| / 127``, and ``DequantizeLinear(q, s, 0, axis=0)`` in front of its Gathers.
    Rewrites ``path`` atomically; returns ``{"tables": [...names], "rows": n, "max_abs_error": e}``
    (``e <= max_r s_r / 2``: round-to-nearest on the grid).

    Why: ORT's static quantizer (op types MatMul) leaves the table in fp32, ~half of a MiniLM's weights;
    NNCF's IR stores it in int8. A weight-only table keeps the Gather's output float (no activation grid)
    and OpenVINO keeps the constant compressed in the IR. Per row because token rows differ in scale by
    orders of magnitude (one scale for the table would flatten the rare tokens' rows).
    Raises ValueError when the graph has such a table and its opset is below 13 (per-axis DequantizeLinear).
    """
    import onnx
    from onnx import helper, numpy_helper

    from compresslab.manifest import atomic_write_bytes

    model = onnx.load(str(path))
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    inits = {i.name: i for i in g.initializer}
    readers = _consumers(g)
    graph_outputs = {o.name for o in g.output}
    tables, rows, err = [], 0, 0.0
    for name, init in list(inits.items()):
        users = readers.get(name, [])
        is_table = init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2 and init.dims[0] >= min_rows
        gathered_only = bool(users) and all(u.op_type == "Gather" and list(u.input).count(name) == 1
                                            and u.input[0] == name for u in users)
        if not (is_table and gathered_only) or name in graph_outputs:
            continue
        if opset < 13:  # only a graph with a table to store needs it
            raise ValueError(f"{Path(path).name}: opset {opset} < 13 has no per-axis DequantizeLinear")
        e = numpy_helper.to_array(init).astype(np.float32)
        scale = np.abs(e).max(axis=1) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero row: any scale is exact
        q = np.clip(np.rint(e / scale[:, None]), -127, 127).astype(np.int8)
        err = max(err, float(np.max(np.abs(q.astype(np.float32) * scale[:, None] - e))))
        g.initializer.remove(init)
        g.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                              numpy_helper.from_array(scale, f"{name}_scale"),
                              numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{name}_zero_point")])
        g.node.insert(0, helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                                          [f"{name}_dequantized"], name=f"{name}_DequantizeLinear", axis=0))
        for u in users:
            u.input[0] = f"{name}_dequantized"
        tables.append(name)
        rows += int(init.dims[0])
    if tables:
        atomic_write_bytes(path, model.SerializeToString())
    return {"tables": tables, "rows": rows, "max_abs_error": err}


__all__ = ["float_path_for_unquantized", "fold_weight_qdq", "hoist_qdq_above_layout_ops", "int8_embedding_tables",
           "qdq_summary", "symmetric_int8_inputs"]
