"""Whose system a pipeline cell is (issue 14): ``method: "compresslab"`` or ``"peer"``.

The issue's rule: "a system that runs a peer's tool on our model is ``peer`` unless our pass changed the
model first". Every cell starts from the same cached teacher (the ``finetune`` step makes it, for the peers
too), and our ONNX-stage passes are other tools run on a graph (ONNX Runtime's quantizers). So a pipeline
is ours only when one of its steps is ours:

* a torch-stage pass that does not make the teacher (pruning, ZipLM, HAWQ's n-bit weights, QAT, ...):
  it changed the model before any tool saw it;
* an ONNX-stage pass with a setting of ours (its ``own_settings()``, e.g. ``ort_int8_dynamic``'s guided fp32
  fallback, per-token scales, outlier split, block-wise word embeddings): our choice changed the graph the
  quantizer wrote. ORT's own options (per_channel, op_types, fp32 tables through ``nodes_to_exclude``) are not.

``+pipeline=int8`` with its defaults (block-wise embeddings since 2026-12-05) is therefore ours; with
``embeddings=per_tensor`` it is ORT's ``quantize_dynamic`` on the teacher, a peer (the ``ort_quantize_dynamic``
peer is the same tool at its own defaults). An ONNX-stage setting changes the ORT file only, not the torch model:
the ``<pipeline>_openvino`` cells are made from that model, so their planned method is :func:`model_method_of_config`
(ours only when a torch pass of ours changed the model), and ``suite_openvino.method_of`` makes one ours when our
int8 recipe changed it (SmoothQuant, its strength chosen on validation, its own graph rewrites); NNCF's int8 of an
unchanged model is the ``nncf_ptq_int8`` peer.
"""

from __future__ import annotations

from typing import Any, Sequence

OURS, PEER = "compresslab", "peer"


def _steps(pipeline_cfg: Any) -> list[tuple[str, Any, Any]]:
    """``(step, pass class, config node)`` of each step, in order. Raises ImportError when a class cannot be
    imported."""
    from hydra.utils import get_class

    return [(s, get_class(str(pipeline_cfg.passes[s]["_target_"])), pipeline_cfg.passes[s]) for s in pipeline_cfg.steps]


def model_method_of_config(pipeline_cfg: Any) -> str:
    """``compresslab`` when a torch-stage pass of ours (not the one that makes the shared teacher) changed the
    model before any tool saw it, else ``peer``."""
    from compresslab.types import Stage

    for _, cls, _ in _steps(pipeline_cfg):
        if not getattr(cls, "makes_teacher", False) and getattr(cls, "stage", None) is Stage.TORCH:
            return OURS
    return PEER


def own_settings(pipeline_cfg: Any) -> list[str]:
    """``<step>.<key>=<value>`` for every setting of ours in the pipeline's ONNX-stage passes (each pass's
    ``own_settings()``, on the pass built from its node as the run builds it: its defaults and its rules for
    what is applied count)."""
    from hydra.utils import instantiate

    from compresslab.types import Stage, hook

    out = []
    for step, cls, node in _steps(pipeline_cfg):
        if getattr(cls, "stage", None) is Stage.ONNX and hook(cls, "own_settings") is not None:
            out += [f"{step}.{kv}" for kv in hook(instantiate(node, _convert_="all"), "own_settings")()]
    return out


def method_of_config(pipeline_cfg: Any) -> str:
    """``compresslab`` or ``peer`` for a composed ``pipeline`` config node (``steps`` and ``passes.<step>``
    with their ``_target_``): ours when a torch pass of ours changed the model or an ONNX pass ran with a
    setting of ours. Raises ImportError when a step's pass class cannot be imported."""
    return OURS if model_method_of_config(pipeline_cfg) == OURS or own_settings(pipeline_cfg) else PEER


def pipeline_method(args: Sequence[str]) -> str:
    """:func:`method_of_config` of the run ``python -m compresslab <args>`` would make (its overrides count:
    ``pipeline.passes.int8.embeddings=per_tensor`` makes ``+pipeline=int8`` a peer's)."""
    from compresslab.config import compose

    return method_of_config(compose(list(args)).pipeline)


def pipeline_model_method(args: Sequence[str]) -> str:
    """:func:`model_method_of_config` of that run: whose torch model its OpenVINO cells are made from."""
    from compresslab.config import compose

    return model_method_of_config(compose(list(args)).pipeline)
