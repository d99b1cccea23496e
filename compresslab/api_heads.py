"""The model's head in ``compresslab.compress``: whether the model as given keeps its head or gets a fresh one, and
whether the head a run will use fits the data and can teach. Every check runs before any training.

The CLI's rules (:func:`~compresslab.models.loading.fit_head`, ``model.finetuned``) for a model the caller holds:
with ``"finetune"`` first, a head of another size or kind is replaced by a fresh seeded one (the CLI's
``model.finetuned=false``); otherwise the model's own head is used as trained (``model.finetuned=true``) and must be
the task's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from torch import nn

    from compresslab.data.tasks import TaskData
    from compresslab.pipeline.plan import Step


# how compress() is told the order a head without class names was trained with (data.checks.note_unnamed_head)
_ORDER_FIX = "pass label2id={name: id, ...} with the head's ids"


def check_teacher(steps: list["Step"], model: "nn.Module", teacher: "nn.Module | None", task: "TaskData",
                  tokenizer: Any) -> None:
    """The teacher a run will use must be one: the given one, a finetune step's output, or the input
    model with a trained head (the CLI's ``model.finetuned=true`` rule, :func:`check_teacher_head`).

    ``teacher=`` is always checked (its labels and its head). The model as given is the teacher when
    no pass makes one; it is checked when the teacher is used: a pass distils from it, or
    ``eval_data`` is scored against it. ``teacher=`` runs on the same batches as the model: its weights and
    its embedding table are checked as the model's are (:func:`~compresslab.pipeline.preflight.check_model`).
    Raises ValueError naming the step or setting and what to pass instead.
    """
    from compresslab.data.schema import TaskKind
    from compresslab.data.checks import check_labels_match_head, note_unnamed_head
    from compresslab.pipeline.plan import distils_before_teacher
    from compresslab.pipeline.preflight import check_model
    from compresslab.pipeline.state import check_teacher_head

    if teacher is not None:
        check_model(teacher, tokenizer, "teacher")
    if task.spec.kind is TaskKind.EMBEDDING:
        return  # an embedder is its own teacher (embedding KD); there is no head to train
    makers = [s.name for s in steps if s.pass_.makes_teacher]
    if teacher is not None:
        if makers:  # the pipeline would replace the given teacher with that step's output, silently
            raise ValueError(f"teacher= was given and step {makers[0]!r} makes the run's teacher too (its output "
                             "replaces the given one for every later distillation and for agreement): pass "
                             f"teacher=None to distil from the fine-tuned model, or remove {makers[0]!r} from passes "
                             "to distil from the given teacher")
        try:
            check_labels_match_head(task, teacher.config, head_fix="pass a teacher fine-tuned on these classes, or "
                                                                   "teacher=None with 'finetune' first in passes")
        except ValueError as e:
            raise ValueError(f"teacher: {e}") from None
        note_unnamed_head(task, teacher.config, "teacher=", _ORDER_FIX)
        check_teacher_head(teacher, "teacher=", "Pass teacher=<a model fine-tuned on this task>, or teacher=None "
                                                "with 'finetune' first in passes")
        return
    fix = "Pass teacher=<a model fine-tuned on this task> or put 'finetune' first in passes"
    untaught = distils_before_teacher(steps)  # plan.check_teacher_made's loop: here the model as given is the teacher
    if untaught is not None:
        check_teacher_head(model, f"step {untaught.name!r} distils from a teacher, but none can be built: teacher=None "
                                  "and the model", fix)
    if makers:
        return  # every later pass distils from that step's output
    # the model's own head is kept, as trained: its ids must mean the data's classes
    # label2id= names the ids of the model's own head (a teacher='s is another head: still said above)
    note_unnamed_head(task, model.config, "the model (its head is kept: no 'finetune' pass)", _ORDER_FIX,
                      order_given=task.info.get("label_source") == "label2id")
    if len(task.dev):  # eval_data is scored against the teacher (score, agreement, the drop below it)
        check_teacher_head(model, "eval_data is scored against the teacher, which is the model as given "
                                  "(teacher=None and no 'finetune' pass), but the model", fix)


def replaces_head(steps: list["Step"], model: "nn.Module", task: "TaskData") -> bool:
    """Whether the model's head is replaced by a fresh one: when the first step fine-tunes (makes the teacher) and
    the head is not of the task's kind and size. The CLI does so for any model not declared fine-tuned
    (:func:`~compresslab.models.loading.fit_head`); a head trained first needs no head of the data's size up front.
    A head that fits is kept (fine-tuned from where it is); without such a step the model's head is used as it is and
    must fit (:func:`head_fix` says how)."""
    from compresslab.data.schema import TaskKind
    from compresslab.models.loading import head_of, task_head

    if task.spec.kind is TaskKind.EMBEDDING or not steps[0].pass_.makes_teacher:
        return False
    return head_of(model) != task_head(task.spec.kind.value, task.spec.num_labels)


def task_read_for_head(read: Callable[[Mapping[str, int] | None], "TaskData"], head_names: Mapping[str, int] | None,
                       steps: list["Step"], model: "nn.Module") -> "TaskData":
    """The data as a task, its classes read as the model's head names them (``read(head_names)``). A head that
    :func:`replaces_head` replaces does not bind the data, so with ``"finetune"`` first, data its names refuse is read
    by its own labels (``read(None)``) when the head does not fit that task either (the CLI's fresh head of the
    task's size); a head that fits it keeps its names and their refusal (DataFormatError: a typo, or names to map
    with ``label2id=``)."""
    from compresslab.data.schema import DataFormatError

    try:
        return read(head_names)
    except DataFormatError as refused:
        if not head_names or not steps[0].pass_.makes_teacher:
            raise
        own = read(None)
        if not replaces_head(steps, model, own):
            raise refused from None
        return own


def head_fix(task: "TaskData") -> str:
    """The end of compress()'s message for a head of another size or kind: fine-tune first (a fresh head, as
    :func:`replaces_head`), or load the model with the task's head by a call that works."""
    from compresslab.data.checks import head_reload_fix
    from compresslab.models.loading import describe_head, task_head

    head = describe_head(*task_head(task.spec.kind.value, task.spec.num_labels))
    return (f"put 'finetune' first in passes: a fresh {head.removeprefix('a ')} is then trained in its place (as the "
            f"CLI does without model.finetuned=true); or load the model with {head}: "
            f"{head_reload_fix(task.spec.num_labels)}")


def fit_fresh_head(work: "nn.Module", task: "TaskData", seed: int) -> None:
    """Give ``work`` a fresh head of the task's kind and size, seeded, with the CLI's log line
    (:func:`~compresslab.models.loading.fit_head`). The head modules are moved into ``work`` itself, so the model
    compressed is still ``work`` (the caller's model with ``inplace=True``); its encoder is untouched."""
    from compresslab.models.loading import fit_head

    fitted = fit_head(work, kind=task.spec.kind.value, num_labels=task.spec.num_labels, finetuned=False,
                      source="given to compress()", seed=seed)
    for name, module in fitted.named_children():
        if name != fitted.base_model_prefix:
            setattr(work, name, module)
    work.num_labels = fitted.num_labels  # transformers' forward reads it (the loss: regression or classification)
    assert work.config is fitted.config  # fit_head set num_labels and problem_type on work's own config
