"""Deployed bytes of an ONNX graph, split into embeddings, encoder and head.

MEASURE.md asks for the encoder and the whole model separately (embeddings are half of MiniLM).
Initializers are classified by who consumes them: tables read by ``Gather`` (or ``GatherBlockQuantized``: n-bit word embeddings) are embeddings;
anything consumed downstream of the last LayerNorm (pooler, classifier) is the head; the rest
is the encoder. A ``DequantizeLinear`` counts where its output is used.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

_EMB_OPS = {"Gather", "GatherBlockQuantized", "EmbedLayerNormalization", "QEmbedLayerNormalization"}
_LN_OPS = {"LayerNormalization", "SkipLayerNormalization"} | _EMB_OPS - {"Gather", "GatherBlockQuantized"}


def _nbytes(t) -> int:
    from onnx import numpy_helper

    return int(numpy_helper.to_array(t).nbytes)


def artifact_bytes(path: str | Path) -> int:
    """On-disk bytes of a deployable file with what it loads: an OpenVINO IR's ``.xml`` plus its ``.bin``; an
    ONNX file plus the external-data files its initializers name (read without loading the tensors).

    Raises FileNotFoundError when the file or a part it names is missing."""
    import onnx

    path = Path(path)
    if path.suffix == ".xml":
        return path.stat().st_size + path.with_suffix(".bin").stat().st_size
    g = onnx.load(str(path), load_external_data=False).graph
    external = {e.value for t in g.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                for e in t.external_data if e.key == "location"}
    return path.stat().st_size + sum((path.parent / f).stat().st_size for f in sorted(external))


def onnx_size_breakdown(path: str | Path) -> dict[str, int]:
    """{"embeddings", "encoder", "head", "total_initializers", "file"} in bytes."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    consumers: dict[str, list] = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    # nodes downstream of the last LayerNorm output = the head
    order = list(g.node)
    last_ln = max((i for i, n in enumerate(order) if n.op_type in _LN_OPS), default=None)
    downstream: set[int] = set()
    if last_ln is not None:
        frontier = list(order[last_ln].output[:1])
        seen = set()
        while frontier:
            t = frontier.pop()
            for n in consumers.get(t, []):
                if id(n) not in seen:
                    seen.add(id(n))
                    downstream.add(id(n))
                    frontier += list(n.output)

    def users(name: str) -> list:
        out = []
        for n in consumers.get(name, []):
            out += [u for o in n.output for u in consumers.get(o, [])] if n.op_type == "DequantizeLinear" else [n]
        return out

    sizes = {"embeddings": 0, "encoder": 0, "head": 0}
    for t in g.initializer:
        us = users(t.name)
        if any(u.op_type in _EMB_OPS for u in us):
            part = "embeddings"
        elif us and all(id(u) in downstream for u in us):
            part = "head"
        else:
            part = "encoder"
        sizes[part] += _nbytes(t)
    sizes["total_initializers"] = sum(sizes.values())
    sizes["file"] = Path(path).stat().st_size
    return sizes


def torch_size_breakdown(model, bytes_per_param: int = 4) -> dict[str, int]:
    """Dense bytes of a torch model at ``bytes_per_param`` (encoder = the adapter's layers)."""
    from compresslab.models.adapters import get_adapter

    ad = get_adapter(model)
    enc_prefix = ad.layers_prefix + "."
    emb_prefix = ad.base_prefix + "embeddings."
    out = {"embeddings": 0, "encoder": 0, "head": 0}
    for name, p in model.named_parameters():
        part = "encoder" if name.startswith(enc_prefix) else "embeddings" if name.startswith(emb_prefix) else "head"
        out[part] += p.numel() * bytes_per_param
    out["total"] = sum(out.values())
    return out


__all__ = ["onnx_size_breakdown", "torch_size_breakdown"]
