"""Whose system a pipeline cell is (issue 14): ``method: "compresslab"`` or ``"peer"``.

The issue's rule: "a system that runs a peer's tool on our model is ``peer`` unless our pass changed the
model first". Every cell starts from the same cached teacher (the ``finetune`` step makes it, for the peers
too), and our ONNX-stage passes are other tools run on a graph (ONNX Runtime's quantizers). So a pipeline
is ours only when one of its steps is ours:

* a torch-stage pass that does not make the teacher (pruning, ZipLM, HAWQ's n-bit weights, QAT, ...):
  it changed the model before any tool saw it;
* an ONNX-stage pass run with a choice of ours (``fp32_fallback: guided``: which MatMuls stay fp32 is
  chosen by our sensitivity search on validation).

``+pipeline=int8`` (the teacher through ORT's ``quantize_dynamic``) is therefore a peer. Its OpenVINO cell
is ours when our int8 recipe made it (``suite_openvino.method_of``: SmoothQuant, our pass, changed the
weights first, or our search chose its strength on validation); ORT's static quantizer alone would be a peer's.
"""

from __future__ import annotations

from typing import Any, Sequence

OURS, PEER = "compresslab", "peer"


def method_of_config(pipeline_cfg: Any) -> str:
    """``compresslab`` or ``peer`` for a composed ``pipeline`` config node (``steps`` and ``passes.<step>``
    with their ``_target_``). Raises ImportError when a step's pass class cannot be imported."""
    from hydra.utils import get_class

    from compresslab.types import Stage

    for step in pipeline_cfg.steps:
        node = pipeline_cfg.passes[step]
        cls = get_class(str(node["_target_"]))
        if getattr(cls, "makes_teacher", False):
            continue  # the teacher every cell shares, peers included
        if getattr(cls, "stage", None) is Stage.TORCH:
            return OURS
        if str(node.get("fp32_fallback", "none")) == "guided":
            return OURS
    return PEER


def pipeline_method(args: Sequence[str]) -> str:
    """:func:`method_of_config` of the run ``python -m compresslab <args>`` would make (its overrides count:
    ``pipeline.passes.int8.fp32_fallback=guided`` makes ``+pipeline=int8`` ours)."""
    from compresslab.config import compose

    return method_of_config(compose(list(args)).pipeline)
