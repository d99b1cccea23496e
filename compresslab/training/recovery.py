"""KD recovery after compression: one settings block and one function for every distilling pass.

A pass that distils nests ``recovery: Recovery`` (YAML: a ``recovery:`` mapping) and calls
:func:`recover` with a teacher from ``ctx.kd_teacher(model)``. The losses are
``(1 - hardness) * task + hardness * logit KD (+ hidden_weight * hidden-state KD)``, or the
embedding KD loss for embedding tasks, or the pass's own (``losses=``: BiBERT's prediction, normalized
hidden-state and direction-matching KD); the loop is :func:`compresslab.training.train`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Sequence

from torch import nn

from compresslab.training.loop import TrainConfig, TrainResult, train
from compresslab.training.losses import build_losses
from compresslab.training.select import BestOnValidation
from compresslab.validate import (
    check_finite_positive, check_int, check_loss_weight, check_positive, is_number, typed_settings)


@typed_settings("recovery")
@dataclass(frozen=True)
class Recovery:
    """How a compressed model is recovered by distillation from the teacher.

    ``steps`` optimizer steps (0 = no recovery) at peak ``lr``; ``hardness`` weighs logit KD
    against the task loss (1 = KD only); ``temperature`` softens both logit distributions;
    ``hidden_weight`` adds token-level KD over every layer's output (0 = off). ``select_every``
    scores the model on the validation split before the first step, every that many steps and at
    the last, and keeps the best weights (0 = off: the last weights): a long recovery on a small
    task can overfit the teacher's train-set outputs, and KD on SST-2's phrase-heavy train set can
    lose what a pass's own weight update kept (ZipLM 1.2x one-shot scored 0.34 pt under the teacher
    on dev, after 2,000 KD steps 1.0 pt), so the step to stop at, step 0 included, is chosen on
    validation, never on dev (MEASURE.md). Costs one validation pass per check. ``select_examples``
    scores on the first that many validation examples only (None: all of them; a cheaper check).

    A pass that brings its own losses (:func:`recover`'s ``losses=``: BiBERT) reads ``temperature``
    and ``hidden_weight`` for them itself and refuses a ``hardness`` it does not use.
    """

    steps: int = 0
    lr: float = 5e-5
    hardness: float = 1.0
    temperature: float = 2.0
    hidden_weight: float = 0.0
    select_every: int = 0
    # added with BiBERT's recovery block (its old eval_examples)
    select_examples: int | None = None

    # keys added after runs were made, left out of a run's identity at the value those runs had (the CLI's config
    # hash and compress()'s: pipeline/plan.block_identity), so adding a key never renames earlier runs
    added_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({"select_examples": None})

    def __post_init__(self) -> None:
        check_int(self.steps, "recovery.steps", minimum=0)
        check_positive(self.lr, "recovery.lr")
        if not is_number(self.hardness) or not 0.0 <= self.hardness <= 1.0:
            raise ValueError(f"recovery.hardness={self.hardness!r} must be in [0, 1] (1 = KD only)")
        check_finite_positive(self.temperature, "recovery.temperature")
        check_loss_weight(self.hidden_weight, "recovery.hidden_weight")
        check_int(self.select_every, "recovery.select_every", minimum=0)
        if self.select_examples is not None:
            check_int(self.select_examples, "recovery.select_examples", minimum=1)
            if not self.select_every:  # it would be accepted and never read
                raise ValueError(f"recovery.select_examples={self.select_examples} sets how many validation examples "
                                 "each check scores, and recovery.select_every=0 makes no checks: set select_every "
                                 "(checks every N steps) or leave select_examples null")

    def check_task(self, task: Any) -> None:
        """Before any work (a pass's ``check``): ValueError when ``select_every`` is set and the task has no
        validation split to select on."""
        if self.select_every and not len(task.validation):
            raise ValueError(f"recovery.select_every={self.select_every} selects on the validation split and this "
                             "task has none (task.val_size=0): give it one (task.val_size) or set select_every=0")
        if self.select_every and self.select_examples and self.select_examples > len(task.validation):
            import logging

            logging.getLogger(__name__).warning(
                "recovery.select_examples=%d but the validation split holds %d examples: each check scores all %d "
                "(a small split picks a checkpoint on a few examples; task.val_size sets it)", self.select_examples,
                len(task.validation), len(task.validation))
        from compresslab.data.schema import TaskKind

        spec = getattr(task, "spec", None)
        if spec is not None and spec.kind is TaskKind.EMBEDDING:
            # an embedding task's recovery is embedding KD alone (losses.build_losses): these would do nothing
            changed = [f"recovery.{k}={getattr(self, k)}" for k, default in
                       (("hardness", 1.0), ("temperature", 2.0), ("hidden_weight", 0.0)) if getattr(self, k) != default]
            if changed:
                raise ValueError(f"{', '.join(changed)}: on the embedding task {spec.name!r} the recovery distils "
                                 "the pooled embedding toward the teacher's (EmbeddingKD) and nothing else, so it "
                                 "would be ignored; leave it at its default")

    @property
    def uses_teacher(self) -> bool:
        """Whether the classification/regression losses read the teacher (embedding KD always does)."""
        return self.hardness > 0 or self.hidden_weight > 0

    def needs_teacher(self, embedding: bool) -> bool:
        """Whether :func:`recover` needs a teacher: some steps, and a loss that reads it (on an embedding
        task every recovery is embedding KD, whatever ``hardness`` says). Passes fetch the teacher by
        this rule, before they change the model."""
        return self.steps > 0 and (embedding or self.uses_teacher)


def recover(model: nn.Module, loader: Any, recovery: Recovery, teacher: nn.Module | None, *,
            embedding: bool = False, callbacks: Sequence[Any] = (), schedule: str = "linear",
            cycle_steps: int | None = None, warmup_ratio: float = 0.0, final_lr_ratio: float = 0.0,
            batch_size: int = 32, seed: int = 0, progress: Callable[..., Any] | None = None,
            desc: str = "recovery", device: Any = None, checkpoint_dir: str | os.PathLike | None = None,
            checkpoint_every: int = 0, validate: Callable[..., float] | None = None,
            losses: Sequence[Any] | None = None, weight_decay: float = 0.01) -> TrainResult:
    """Train ``model`` in place for ``recovery.steps`` steps of KD from ``teacher``; model left in eval.

    ``embedding=True`` distils mean-pooled sentence embeddings (no logits to match). ``losses``: the
    pass's own loss plug-ins instead of the ones ``recovery`` builds (BiBERT's; ``embedding`` and
    ``recovery.hardness`` / ``temperature`` / ``hidden_weight`` are then the pass's to use). The schedule
    arguments and ``weight_decay`` (AdamW's; none on biases and LayerNorms) are :class:`TrainConfig`'s
    (gradual pruning uses a cyclic LR and prunes from ``callbacks``); ``device`` (a ``torch.device`` or
    its type name) is where training runs. ``checkpoint_dir`` /
    ``checkpoint_every`` make the run resumable (:class:`TrainConfig`; one directory per call):
    they belong to the run, not to the recovery recipe. With ``steps == 0`` nothing runs and an
    empty result comes back.

    ``validate(model) -> float`` (higher is better; :meth:`PassContext.validation_score`) is required
    when ``recovery.select_every`` is set: the weights before the first step and at every check are
    scored, the best-scoring ones are restored at the end and ``TrainResult.selection`` records every
    check (ValueError without it, before any step). With ``recovery.select_examples`` it is called as
    ``validate(model, max_examples=n)``.
    """
    if recovery.steps == 0:
        return TrainResult(steps=0, wall_s=0.0)
    select = None
    if recovery.select_every:
        if validate is None:
            raise ValueError(f"{desc}: recovery.select_every={recovery.select_every} selects weights on the "
                             "validation split, and the caller gave no validate(model) scorer")
        if recovery.select_examples is not None:
            validate = functools.partial(validate, max_examples=recovery.select_examples)
        select = BestOnValidation(validate, recovery.select_every, recovery.steps, include_start=True)
        callbacks = [*callbacks, select]
    if losses is None:
        losses = (build_losses(embedding=True) if embedding else
                  build_losses(recovery.hardness, recovery.temperature, recovery.hidden_weight))
    if not any(l.needs_teacher for l in losses):
        teacher = None  # no teacher forward per step when no loss reads it
    elif teacher is None:  # a pass that fetched no teacher: say so here, naming the rule (train() would also refuse)
        raise ValueError(f"{desc}: the recovery losses ({', '.join(type(l).__name__ for l in losses)}) read a "
                         "teacher and none was given (fetch it with Recovery.needs_teacher(embedding) before "
                         "the model changes)")
    cfg = TrainConfig(lr=recovery.lr, steps=recovery.steps, batch_size=batch_size, weight_decay=weight_decay,
                      schedule=schedule, cycle_steps=cycle_steps, warmup_ratio=warmup_ratio,
                      final_lr_ratio=final_lr_ratio, seed=seed, device=getattr(device, "type", device),
                      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every)
    res = train(model, loader, cfg, losses, teacher=teacher, callbacks=callbacks, progress=progress, desc=desc)
    if select is not None:
        select.restore_best(model)
        res.selection = {"split": "validation", "every": recovery.select_every, "steps": recovery.steps,
                         "best_step": select.best_step,
                         "best_score": select.best_score, "history": list(select.history)}
    model.eval()
    return res


__all__ = ["Recovery", "recover"]
