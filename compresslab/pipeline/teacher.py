"""A pipeline's teacher, for scripts that compare methods on it (``benchmarks/``) without running the pipeline.

:func:`teacher_of` makes (or finds in the cache) the teacher exactly as a run's step loop does and returns a
:class:`Teacher`: the frozen model and what a benchmark needs beside it (tokenizer, task data, the max length,
pass contexts over it, the validation split with the teacher's predictions). A run's state stays inside the run
engine: nothing here exposes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Mapping

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from torch import nn

    from compresslab.data.tasks import TaskData
    from compresslab.pipeline.validation import ValidationAgreement
    from compresslab.types import PassContext


@dataclass(frozen=True)
class Teacher:
    """The teacher of a composed config's pipeline, and what comparing methods on it needs.

    ``model``: the teacher, frozen (eval mode, no gradients); deep-copy it before changing it.
    ``tokenizer``: the model's tokenizer. ``task``: the run's task data (``train`` less the validation carve,
    ``validation``, ``dev``, ``spec``, ``info``), loaded as a run of the config loads it.
    ``max_length``: ``task.max_length``, what every loader and scorer of the run truncates at.
    ``metrics``: the teacher pass's record (``cache_key``, ``cache_path``, ``recipe``, ``validation``, ...); for a
    given teacher (``model.finetuned=true``) ``{"trained": False, "input_is_teacher": True, "cached": False}``.
    ``given``: ``model.finetuned=true``: the source model, its own head, is the teacher and nothing was trained.
    ``source``: the model source the run loads (with ``given``, the teacher's own directory).
    ``validation``: the validation split with the teacher's predictions on it (computed on first use), scored at
    ``eval.batch_size`` and compiled at ``deploy.precision`` unless asked otherwise: what deploy-time choices rank by.
    """

    model: "nn.Module"
    tokenizer: Any
    task: "TaskData"
    max_length: int
    metrics: Mapping[str, Any]
    given: bool
    source: Path
    validation: "ValidationAgreement"
    # the run's pass context with this teacher, for :meth:`context` (run_dir and step_dir replaced per call)
    _context: "PassContext" = field(repr=False, compare=False)

    @property
    def cache_key(self) -> str | None:
        """The teacher's cache key, by content (``metrics["cache_key"]``); None when the pass records none (a given
        teacher, an embedding task's pretrained encoder)."""
        return self.metrics.get("cache_key")

    def context(self, run_dir: Path, step_dir: Path) -> "PassContext":
        """The pass context a run of the config gives its passes, with this teacher (``ctx.teacher``) and the run's
        seed, device, batch size, cache dir and model source; writing under ``run_dir`` / ``step_dir``."""
        return dataclasses.replace(self._context, run_dir=run_dir, step_dir=step_dir)

    def calibration_batches(self, n: int, batch_size: int | None = None, setting: str | None = None) -> Iterator[dict]:
        """``n`` train examples sampled as a run samples them (seeded), tokenized and batched
        (:meth:`~compresslab.types.PassContext.calibration_batches`)."""
        return self._context.calibration_batches(n, batch_size, setting)


def teacher_of(cfg: "DictConfig", work_dir: Path) -> Teacher:
    """The teacher of ``cfg``'s pipeline (for benchmarks that compare methods on it).

    Runs only the pass that declares ``makes_teacher``, in ``work_dir``, as the pipeline's step loop runs it
    (:func:`~compresslab.pipeline.steps.apply_torch_pass`), after the checks a run makes first
    (:meth:`~compresslab.pipeline.state.RunState.prepare`): finetune is cached by content hash, so a trained teacher
    is found again; with ``model.finetuned=true`` the given model (its own head, checked against the task) is the
    teacher and nothing is trained. PipelineError when the pipeline has no such pass; ValueError when
    ``model.finetuned=true`` names a model without a trained head of the task's; what a run raises before its first
    step otherwise (SettingsError, FileNotFoundError, ...).
    """
    from compresslab.pipeline.plan import PipelineError, build_steps
    from compresslab.pipeline.state import RunState
    from compresslab.pipeline.steps import apply_torch_pass
    from compresslab.pipeline.validation import ValidationAgreement

    makers = [s for s in build_steps(cfg) if s.pass_.makes_teacher]
    if not makers:
        raise PipelineError(f"pipeline {cfg.pipeline.name!r} has no pass that produces a teacher")
    state = RunState.prepare(cfg, makers)
    state.load_initial()
    work_dir = Path(work_dir)
    metrics = dict(apply_torch_pass(state, makers[0], work_dir / "step", work_dir).metrics)
    assert state.teacher is not None and state.model_source is not None, "the teacher pass made the teacher"
    model, s = state.teacher, state.settings
    validation = ValidationAgreement(state.task, state.tokenizer, lambda: model, batch_size=s.eval.batch_size,
                                     max_length=s.max_length, precision=s.deploy.precision)
    return Teacher(model=model, tokenizer=state.tokenizer, task=state.task, max_length=s.max_length,
                   metrics=MappingProxyType(metrics), given=state.input_is_teacher, source=state.model_source,
                   validation=validation, _context=state.context(work_dir, work_dir / "step"))
