"""Does an exported file's output depend on the batch a sentence is sent in?

ONNX Runtime's dynamic int8 computes ONE activation scale per tensor per call, over every token of every
sentence in the batch, padding rows included (ONNX operator spec, ``DynamicQuantizeLinear``:
``y_scale = (max(x) - min(x)) / 255`` over the whole input; ORT's fused ``DynamicQuantizeMatMul`` and dynamic
``QAttention`` do the same). A sentence's logits then move with its batchmates, so a score taken at the eval
batch size is one draw among batchings (``benchmarks/results/int8_batch_dependence_grouped500.json``: 21 of
872 SST-2 dev labels change between batch 1 and 32, 0.46 pt of accuracy). Scored one sentence per call, the
file depends on nothing but the sentence: that is what a server answering one request at a time returns.

For such files the eval stage also scores at batch 1 and records how far the two disagree
(:func:`batch_dependence`). Static (calibrated) QDQ, fp32 and weight-only n-bit files have fixed scales and
are not re-scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from compresslab.data.tasks import Example, TaskKind, TaskSpec
from compresslab.eval.evaluate import Forward, Scored, predict

# ops whose output for one sentence depends on the other sentences of the call (a per-tensor dynamic
# activation scale); com.microsoft fusions included, since a file written by ORT's optimizer carries them
BATCH_DEPENDENT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QAttention",
                                 "DynamicQuantizeLSTM"})


def batch_dependent_ops(path: str | Path) -> list[str]:
    """The batch-dependent op types (:data:`BATCH_DEPENDENT_OPS`) in the ONNX file at ``path``, sorted; ``[]``
    for a file whose outputs depend on each sentence alone. Reads the graph only (external weights are not
    loaded). Raises ``FileNotFoundError`` for a missing file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    graph = onnx.load(str(path), load_external_data=False).graph
    return sorted({n.op_type for n in graph.node} & BATCH_DEPENDENT_OPS)


def summarize(single: Scored, batched: Scored, spec: TaskSpec, batch_size: int,
              reference: Scored | None = None) -> dict[str, Any]:
    """How the per-sentence scoring (``single``, batch 1) differs from the batched one (``batched``, at
    ``batch_size``) on the same examples, in the same order.

    Classification: ``flips`` (examples whose predicted label differs) and ``agreement_b1_vs_batched``
    (1 - flips / n); with ``reference`` (the teacher), ``agreement_b1`` is the per-sentence agreement with it.
    Regression / embedding tasks: ``max_abs_diff`` of the predictions; with ``reference``,
    ``agreement_pearson_b1``: the per-sentence predictions' Pearson r with the teacher's (a regression task's
    agreement). Scores are fractions (the task's primary metric). Raises ``ValueError`` when the two (or the reference) cover different examples, or none.
    """
    if single.predictions.shape != batched.predictions.shape:
        raise ValueError("batch-1 and batched scores cover different examples: "
                         f"{single.predictions.shape} vs {batched.predictions.shape} predictions")
    if not np.array_equal(single.labels, batched.labels):
        raise ValueError("batch-1 and batched scores cover different examples: their labels differ")
    if not len(single.labels):
        raise ValueError("no examples to compare")
    if reference is not None and reference.predictions.shape != single.predictions.shape:
        raise ValueError(f"the reference covers other examples: {reference.predictions.shape} vs "
                         f"{single.predictions.shape} predictions")
    out: dict[str, Any] = {"batch_size": int(batch_size), "n": int(len(single.labels)),
                           "score_b1": float(single.metrics["score"]), "score_batched": float(batched.metrics["score"])}
    if spec.kind == TaskKind.CLASSIFICATION:
        flips = int(np.sum(single.predictions != batched.predictions))
        out["flips"] = flips
        out["agreement_b1_vs_batched"] = 1.0 - flips / len(single.predictions)
        if reference is not None:
            out["agreement_b1"] = float(np.mean(single.predictions == reference.predictions))
    else:
        out["max_abs_diff"] = float(np.max(np.abs(single.predictions - batched.predictions), initial=0.0))
        if reference is not None and single.predictions.ndim == 1 and len(single.predictions) > 1:
            out["agreement_pearson_b1"] = float(np.corrcoef(single.predictions, reference.predictions)[0, 1])
    return out


def batch_dependence(forward: Forward, spec: TaskSpec, examples: Sequence[Example], tokenizer: Any,
                     batched: Scored, *, batch_size: int, max_length: int,
                     reference: Scored | None = None) -> dict[str, Any]:
    """Score ``forward`` on ``examples`` one sentence per call and compare with ``batched`` (the same file's
    scores at ``batch_size``): :func:`summarize`'s record. Costs one forward call per example."""
    single = predict(forward, spec, examples, tokenizer, batch_size=1, max_length=max_length)
    return summarize(single, batched, spec, batch_size, reference)
