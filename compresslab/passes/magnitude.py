"""``magnitude``: prune the smallest |w| (globally or per tensor), with KD recovery: the baseline.

It shares every piece of machinery with ``obert`` (``pruning/unstructured.py``: masks, ranking,
schedules; ``training.recover``: the KD recovery), so a comparison between them changes the saliency only.
Saliency is ``0.5 w^2``, i.e. OBS with an identity Fisher (``ops.obs.magnitude_scores``), and
pruning never moves the surviving weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

from torch import Tensor, nn

from compresslab.ops.obs import magnitude_scores
from compresslab.pruning.unstructured import (
    Mode, Scope, check_schedule, moved, recovery_checkpoints, run_pruning, teacher_modules)
from compresslab.registry import register_pass
from compresslab.targets import check_patterns, select_modules
from compresslab.training.recovery import Recovery
from compresslab.types import PassContext, PassResult, Stage
from compresslab.validate import check_int, coerce_block, coerce_enum


class MagnitudeScorer:
    """|w|-ranking; already-pruned weights are handled by the driver (they score -inf there)."""

    group_size = 1

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}

    def scores(self, model: nn.Module, modules: Mapping[str, nn.Linear],
               pruned: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {n: magnitude_scores(m.weight.detach().reshape(-1).float()) for n, m in modules.items()}

    def update(self, modules: Mapping[str, nn.Linear], new: Mapping[str, Tensor],
               pruned: Mapping[str, Tensor]) -> None:
        """Magnitude pruning only zeroes; the driver does that."""


@register_pass("magnitude")
@dataclass
class Magnitude:
    """Magnitude pruning to ``sparsity`` of the targeted weights, one-shot or gradual, with KD.

    ``recovery`` is the KD recovery (YAML fills ``steps``/``lr`` from ``${budget.*}``); the gradual
    schedule is the same cubic, cyclic-LR recipe as ``obert``, placed in ``recovery.steps``, so set
    ``init_sparsity`` alike (0.7 for oBERT's default) when the two are compared.
    """

    sparsity: float = 0.5
    scope: Scope = Scope.GLOBAL
    mode: Mode = Mode.ONESHOT
    init_sparsity: float | None = None  # gradual: first jump; null = 0.7 (recipe), 7/8 of a lower target
    recovery: Recovery = field(default_factory=lambda: Recovery(steps=300))  # steps: budget.recovery_steps
    num_events: int = 7  # gradual only: pruning events on the cubic curve
    targets: list[str] | None = None  # default: the encoder linears (q, k, v, o, ffn_in, ffn_out)
    ignore: list[str] | None = None
    checkpoint_every: int = 0  # > 0: recovery step checkpoints in the step dir; a stopped run resumes inside the pass

    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = False
    makes_sparse: ClassVar[bool] = True  # later passes must keep its zeros (pipeline.plan.check_zeros_kept)
    keeps_zeros: ClassVar[bool] = True  # the masks start from today's zeros (MaskKeeper.from_zeros)
    keeps_structure: ClassVar[bool] = True  # masks only: the steps after it are checked on the loaded model too
    name: ClassVar[str]
    # checkpoint_every (listed in its YAML since 2026-12-06): earlier runs had it absent, at 0
    identity_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({"checkpoint_every": 0})

    def __post_init__(self) -> None:
        self.scope = coerce_enum(Scope, self.scope, "scope")
        self.mode = coerce_enum(Mode, self.mode, "mode")
        self.recovery = coerce_block(self, "recovery", Recovery)
        self.sparsity, self.init_sparsity = check_schedule(self.mode, self.sparsity, self.init_sparsity,
                                                           self.num_events, self.recovery.steps,
                                                           self.recovery.select_every)
        check_int(self.checkpoint_every, "checkpoint_every", minimum=0)
        self.targets = check_patterns(self.targets, "targets")
        self.ignore = check_patterns(self.ignore, "ignore")

    def recovery_settings(self) -> Recovery:
        """The KD recovery of the pruned model (the ``recovery_settings`` hook): the pipeline asks it
        whether a teacher must be made before this step (pipeline/plan.py needs_teacher)."""
        return self.recovery

    def check(self, task: Any) -> None:
        """|w| needs no data and recovery works on every task kind; selecting on validation needs that split."""
        self.recovery.check_task(task)

    def check_model(self, model: nn.Module) -> None:
        """Before any step runs: ``targets`` / ``ignore`` select Linears (ValueError naming them)."""
        select_modules(model, self.targets, self.ignore)

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        from compresslab.checkpoint.sparse_int8 import sparse_size_bytes

        modules = select_modules(model, self.targets, self.ignore)  # bad targets fail before any work
        before = moved(model, ctx.device)
        try:
            metrics, structure = run_pruning(
                model, ctx, modules, MagnitudeScorer(), mode=self.mode, sparsity=self.sparsity,
                init_sparsity=self.init_sparsity, num_events=self.num_events, recovery=self.recovery,
                checkpoint_dir=recovery_checkpoints(ctx, self.checkpoint_every), checkpoint_every=self.checkpoint_every,
                scope=self.scope, name=self.name, reference=teacher_modules(ctx, self.targets, self.ignore))
        finally:
            model.to(before)
        metrics["size"] = sparse_size_bytes(model, list(modules))
        # the sparse int8 checkpoint stores the zeros as a bitmask: worth writing once any weight is pruned
        formats = ["sparse_int8"] if metrics["sparsity"] else []
        return PassResult(metrics=metrics, structure=structure, formats=formats)
