"""Whether a cell of the suite applies to its task, decided before the cell is built, and what each of our
passes uses in place of the task loss on the label-free task (issue 14: ``stsb_embedding``, the pretrained
embedder compressed without labels and scored by the Spearman of cosine(mean-pooled embeddings)).

Why up front: a pipeline whose pass refuses the task (oBERT's empirical Fisher needs labels) would only
fail inside ``python -m compresslab``. The suite asks each pass the question the run asks first
(:func:`compresslab.pipeline.state.check_steps`, the passes' own ``check``) and records the pass's answer
as the cell's reason (``status: skipped``); the pipeline's OpenVINO cell follows its pipeline. A pipeline
that is refused for another reason (a bad setting) is not skipped: it is built and fails with its error.

:data:`EMBEDDING_LOSS` is the per-pass statement the issue asks for: what replaces the task loss on an
embedding task (the embedding KD, ``compresslab.training.losses.EmbeddingKD``: 1 - cosine between the
student's and the teacher's mean-pooled last hidden states, chosen by ``build_losses(embedding=True)``
wherever a pass recovers with :func:`compresslab.training.recover`), or why the pass does not apply.
It is written into ``suite_<task>.json`` ``meta.label_free`` and the report; a unit test holds it to the
passes' code (a pass said not to apply must refuse the task, one said to apply must accept it).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

YES, NO, PARTLY = "yes", "no", "partly"

_KD = ("EmbeddingKD (compresslab/training/losses.py; build_losses(embedding=True) in training.recover): "
       "1 - cosine between the student's and the teacher's mean-pooled last hidden states")

# pass name -> {"applies": yes | no | partly, "replaces_task_loss": what the pass uses without labels}
EMBEDDING_LOSS: dict[str, dict[str, str]] = {
    "finetune": {"applies": YES, "replaces_task_loss":
                 "nothing is trained: the pretrained embedder is its own teacher (the pass skips on embedding "
                 "tasks)"},
    "ort_int8_dynamic": {"applies": YES, "replaces_task_loss":
                         "no loss: ONNX Runtime's dynamic int8 reads the weights only (activation ranges at run "
                         "time); fp32_fallback=none in the suite"},
    "ort_int8_static": {"applies": YES, "replaces_task_loss":
                        "no loss: activation ranges from calibration sentences (side a of train pairs)"},
    "ort_matmul_nbits": {"applies": YES, "replaces_task_loss":
                         "no loss: packs the n-bit weights the torch pass chose into MatMulNBits"},
    "ziplm": {"applies": YES, "replaces_task_loss":
              "the pruning needs no labels on any task: one OBS Hessian (X^T X) per W_O / W_2 from that "
              f"layer's inputs on calibration sentences; KD recovery (budget.recovery_steps) uses {_KD} "
              "(the logit-KD settings hardness/temperature are not read)"},
    "obert": {"applies": NO, "replaces_task_loss":
              "does not apply (obert.check refuses embedding tasks): its empirical Fisher is built from "
              "gradients of the labelled task loss, and the embedding KD cannot stand in for it: before "
              "pruning the student is the teacher, every KD gradient is exactly zero and the Fisher would be "
              "damp*I, magnitude pruning in disguise (training/losses.py task_loss)"},
    "hawq": {"applies": PARTLY, "replaces_task_loss":
             "uniform widths (bits=N, the suite's hawq_w4: 4-bit blocks of 64, no QAT): no loss, no Hessian; "
             "Hessian-allocated mixed precision (bits=null, allocate=ilp|rank) does not apply (hawq.check refuses "
             "embedding tasks: its Hessian is of the labelled task loss or of the KL to the model's own logits, "
             f"and an encoder has no logits); QAT recovery, where set, uses {_KD}"},
    "magnitude": {"applies": YES, "replaces_task_loss": f"|w| needs no labels; KD recovery uses {_KD}"},
    "structured_l1": {"applies": YES, "replaces_task_loss": f"L1 norms need no labels; KD recovery uses {_KD}"},
    "layer_drop": {"applies": YES, "replaces_task_loss": f"no statistics from a loss; KD recovery uses {_KD}"},
    "int8_qat": {"applies": YES, "replaces_task_loss": f"QAT recovery uses {_KD}"},
    "bibert": {"applies": NO, "replaces_task_loss":
               "does not apply (bibert.check refuses embedding tasks): every BiBERT loss term distils logits"},
}


def pipeline_passes(args: Sequence[str]) -> list[tuple[str, str]]:
    """``(step, pass name)`` of each step of the run ``python -m compresslab <args>`` would make."""
    from compresslab.config import compose
    from compresslab.pipeline import build_steps

    return [(s.name, s.pass_.name) for s in build_steps(compose(list(args)))]


def refused_by(args: Sequence[str], task: Any) -> str | None:
    """Why the run ``python -m compresslab <args>`` would refuse ``task`` before any work (its first pass
    whose ``check`` raises :class:`~compresslab.data.schema.TaskNotSupportedError`, as ``step 'obert' (obert)
    refuses it: <its message>``), or None when every pass accepts it. None too for a bad setting (a pipeline
    that cannot be built, or a ``check`` raising any other ValueError): that is a failure, not a skip; its
    cell is built and records the run's own error."""
    from compresslab.config import compose
    from compresslab.data.schema import TaskNotSupportedError
    from compresslab.pipeline import build_steps

    try:
        steps = build_steps(compose(list(args)))
    except Exception:  # noqa: BLE001 (the run raises it again, and the cell keeps it as its error)
        return None
    for s in steps:
        try:
            s.pass_.check(task)
        except TaskNotSupportedError as e:  # the task's kind; any other ValueError is a bad setting: built, fails
            return f"step {s.name!r} ({s.pass_.name}) refuses it: {e}"
        except ValueError:
            return None
    return None


def skip_reason(spec: Mapping[str, Any], task: Any, built: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The reason a cell is not built on ``task`` (None: build it). A pipeline cell: a pass refuses the task
    (:func:`refused_by`); its OpenVINO cells: its pipeline was skipped (the NNCF one also: the pipeline does
    not deploy int8, or its model is quantized already, as ``int8_qat``, ``hawq`` or ``bibert`` leave it). Peers
    are always built (a tool that cannot handle the task fails with its own error)."""
    if spec["kind"] == "pipeline":
        why = refused_by(spec["args"], task)
        return None if why is None else f"task {task.spec.name!r}: {why}"
    if spec["kind"] == "pipeline_openvino":
        of = built.get(spec["of"]) or {}
        if of.get("status") == "skipped":
            return f"its pipeline {spec['of']} is not run: {of.get('skipped')}"
        precision = (of.get("artifact") or {}).get("precision")
        if spec.get("int8") == "nncf" and of.get("status") == "finished":
            from .suite_openvino import quantized_export

            if precision != "int8":
                return (f"its pipeline {spec['of']} deploys {precision}, not int8: NNCF's int8 is built only beside "
                        "an int8 pipeline")
            if of.get("run_dir") and (n := quantized_export(of)):
                return (f"its pipeline {spec['of']}'s model is already int8 ({n} Quantize/DequantizeLinear nodes "
                        "in its export: a torch pass such as int8_qat quantized it): NNCF's PTQ takes an fp32 model")
            # n-bit (hawq) or binary (bibert) weights export as a float graph: the pipeline's steps tell
            if spec.get("args") and (step := _quantizing_step(spec["args"])):
                return (f"its pipeline {spec['of']}'s model is quantized already (step {step} quantized the torch "
                        "model itself): NNCF's PTQ takes an fp32 model")
    return None


def _quantizing_step(args: Sequence[str]) -> str | None:
    """``<step> (<pass>)`` of the run's first step that leaves its torch model quantized (preflight.quantizing_step:
    int8_qat, hawq, bibert), or None."""
    from compresslab.config import compose
    from compresslab.pipeline import build_steps
    from compresslab.pipeline.preflight import quantizing_step

    step = quantizing_step(build_steps(compose(list(args))))
    return None if step is None else f"{step.name} ({step.pass_.name})"


def loss_statement(pipelines: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """``meta.label_free`` of an embedding task's results: per pass of the given pipelines (name -> the run's
    args), whether it applies, what replaces the task loss and which pipelines use it. A pass without an
    entry in :data:`EMBEDDING_LOSS` is listed as ``not stated`` (never silently dropped)."""
    from compresslab.failure import error_text

    used: dict[str, list[str]] = {}
    unbuilt: dict[str, str] = {}
    for pl, args in pipelines.items():
        try:
            steps = pipeline_passes(args)
        except Exception as e:  # noqa: BLE001 (a bad setting: its cell holds the run's error; say it here too)
            unbuilt[pl] = error_text(e)
            continue
        for _, name in steps:
            used.setdefault(name, []).append(pl)
    passes = {name: {**EMBEDDING_LOSS.get(name, {"applies": "not stated", "replaces_task_loss": "not stated"}),
                     "pipelines": pls} for name, pls in used.items()}
    return {"task_loss": "none: no labels are used; the model is scored by the Spearman of cosine(mean-pooled "
                         "embeddings) with the gold similarity",
            "embedding_kd": _KD, "passes": passes, **({"pipelines_not_built": unbuilt} if unbuilt else {})}
