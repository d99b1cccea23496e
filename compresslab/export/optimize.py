"""Fuse an exported BERT-family graph with ONNX Runtime's transformer optimizer.

Fusion turns each layer's ~30 attention ops into one ``Attention`` node (plus LayerNorm, GELU,
embedding fusions): that fused fp32 graph is what we deploy and the speed denominator.

Three things the stock optimizer gets wrong for our models, fixed here:

* Head counts must come from the model config, never auto-detection (which reads one layer).
* Structured pruning leaves per-layer head counts. The fuser stamps the config's dense
  ``num_heads`` on every node, so we re-derive each node's count from its packed QKV weight
  ``(hidden, 3 * heads * head_size)``. A layer sliced to zero width (a ``Linear(h, 0)``) fuses
  into an Attention node ORT refuses to load; it becomes an empty ``Slice`` (the context is a
  ``(B, T, 0)`` tensor, and the output projection after it contributes only its bias).
* The default BERT mask format (``MaskIndexEnd``) collapses the 2-D mask to per-row lengths,
  which is wrong for left padding; we keep the raw attention mask, exact for any padding.

``opt_level=0`` keeps ORT's own session optimizations out of the saved file, so it stays portable
(ORT re-applies them for the machine at load time).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compresslab.export.graph_inputs import restore_inputs

log = logging.getLogger(__name__)


@dataclass
class OptimizeReport:
    """What fusion produced: fused Attention nodes and the heads each one runs."""

    fused_attention_nodes: int
    attention_heads: list[int] = field(default_factory=list)  # per fused node, graph order
    emptied_attention_nodes: int = 0  # zero-width nodes replaced by an empty Slice
    fused_ops: dict[str, int] = field(default_factory=dict)  # the optimizer's own statistics


def heads_and_hidden(config: Any) -> tuple[int, int]:
    """``(num_heads, hidden_size)`` of the dense architecture, from a HF config.

    DistilBERT's ``n_heads``/``dim`` are reachable under the BERT names through the config's
    attribute map; both spellings are tried so a plain dict from ``config.json`` works too.
    """
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    heads = get("num_attention_heads") or get("n_heads")
    hidden = get("hidden_size") or get("dim")
    if not heads or not hidden:
        raise ValueError("the model config names no num_attention_heads/hidden_size (or n_heads/dim); "
                         "cannot fuse attention without them")
    if int(hidden) % int(heads):
        raise ValueError(f"hidden_size={hidden} is not a multiple of num_attention_heads={heads}")
    return int(heads), int(hidden)


def count_ops(model: onnx.ModelProto | str | Path) -> Counter:
    """Node counts by op type (loads the file without weights when given a path)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return Counter(n.op_type for n in model.graph.node)


def plain_graph(model_dir: Path, onnx_path: Path, needs: str) -> Path:
    """The unfused fp32 graph of an export directory (one MatMul per Linear, standard ops): ``model_unfused.onnx``
    beside a fused ``model.onnx``, else ``onnx_path`` itself when it is unfused (``export.optimize=false`` writes
    only that). FileNotFoundError, saying what ``needs`` it, when only a fused or quantized graph is there."""
    plain = model_dir / "model_unfused.onnx"
    if plain.is_file():
        return plain
    ops = count_ops(onnx_path)
    if not any(ops[op] for op in ("Attention", "EmbedLayerNormalization", "MatMulNBits", "MatMulInteger",
                                  "QuantizeLinear", "DynamicQuantizeLinear")):
        return onnx_path
    raise FileNotFoundError(f"{model_dir} has no unfused export (model_unfused.onnx) and {onnx_path.name} is fused or "
                            f"already quantized: {needs} needs one fp32 MatMul per Linear; run this step directly on "
                            "the export stage's directory")


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def fix_attention_heads(model: onnx.ModelProto, head_size: int) -> tuple[list[int], int]:
    """Set each fused Attention node's ``num_heads`` from its QKV width; empty zero-width ones.

    Returns ``(heads per remaining node, number of nodes emptied)``. Mutates ``model``.
    """
    inits = {t.name: t for t in model.graph.initializer}
    heads: list[int] = []
    emptied = 0
    nodes = list(model.graph.node)
    for pos, node in enumerate(nodes):
        if node.op_type != "Attention" or node.domain != "com.microsoft":
            continue
        weight = inits.get(node.input[1])
        if weight is None:  # weights computed at run time: leave the node as fused
            log.warning("Attention node %s has no constant QKV weight; num_heads left as is", node.name)
            continue
        qkv_sizes = _attr(node, "qkv_hidden_sizes")
        q_width = int(qkv_sizes.ints[0]) if qkv_sizes is not None else int(weight.dims[1]) // 3
        if q_width == 0:
            _replace_with_empty_slice(model, node, pos)
            emptied += 1
            continue
        if q_width % head_size:
            raise ValueError(f"Attention node {node.name}: Q width {q_width} is not a multiple of "
                             f"head size {head_size}")
        n_heads = q_width // head_size
        attr = _attr(node, "num_heads")
        if attr is None:
            node.attribute.append(helper.make_attribute("num_heads", n_heads))
        else:
            attr.i = n_heads
        heads.append(n_heads)
    return heads, emptied


def _replace_with_empty_slice(model: onnx.ModelProto, node: onnx.NodeProto, pos: int) -> None:
    """Swap a zero-width Attention node for ``Slice(x, [0], [0], axes=[-1])`` -> ``(B, T, 0)``."""
    consts = {"starts": 0, "ends": 0, "axes": -1}
    names = []
    for key, value in consts.items():
        name = f"{node.name}_empty_{key}"
        model.graph.initializer.append(numpy_helper.from_array(np.array([value], dtype=np.int64), name))
        names.append(name)
    empty = helper.make_node("Slice", [node.input[0], *names], [node.output[0]], name=f"{node.name}_empty")
    model.graph.node.remove(node)
    model.graph.node.insert(pos, empty)


def optimize_graph(src: str | Path, dst: str | Path, *, num_heads: int, hidden_size: int) -> OptimizeReport:
    """Fuse ``src`` into ``dst`` (written atomically) and fix per-layer head counts.

    ``num_heads``/``hidden_size`` are the dense config's; the per-node fix handles pruned layers.
    ``dst`` has ``src``'s graph inputs, in order, even those no node reads any more.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.use_raw_attention_mask(True)  # exact for any padding side (see module docstring)
    fused = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                           optimization_options=options, opt_level=0, use_gpu=False)
    stats = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
    heads, emptied = fix_attention_heads(fused.model, hidden_size // num_heads)
    fused.prune_graph(allow_remove_graph_inputs=False)  # drop emptied nodes' zero-width weights
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        fused.save_model_to_file(str(tmp))  # sorts nodes and declares the com.microsoft opset
        # ORT's fuser prunes graph inputs no node reads (attention_mask once every layer's attention
        # is emptied): the fused graph keeps src's inputs so it takes the same feeds
        restore_inputs(tmp, [i.name for i in onnx.load(str(src), load_external_data=False).graph.input])
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return OptimizeReport(fused_attention_nodes=len(heads), attention_heads=heads,
                          emptied_attention_nodes=emptied, fused_ops=stats)
