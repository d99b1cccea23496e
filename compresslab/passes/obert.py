"""``obert``: the Optimal BERT Surgeon (Kurtic et al., 2022; ALGORITHMS.md §2).

Per pruning step: ``num_grads`` masked mini-batch gradients from the train split (eval mode) ->
block-diagonal dampened empirical Fisher inverse per weight tensor -> OBS saliency
``rho_Q = 0.5 w_Q^T ([F^-1]_QQ)^-1 w_Q`` ranked globally -> summed single-set OBS updates of the
surviving weights -> hard zero. The inverse is rebuilt from fresh gradients at every (sub-)step
and freed after it. Schedules and masks are the shared driver (``pruning/unstructured.py``), KD
recovery is ``training.recover``; the math is ``ops/fisher.py`` + ``ops/obs.py``; gradient
collection and the scorer are ``pruning/fisher.py``.

``damp_grid``: damp is the most fragile setting (§2.6), so it can be chosen by one-shot pruning
copies of the model to ``sparsity`` and scoring the task loss on the validation split carved
from train (never dev; MEASURE.md). With ``num_recomputations=1`` one gradient pass serves
every damp (the outer-product sums do not depend on damp).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, ClassVar, Iterator, Mapping

import torch
from torch import Tensor, nn

from compresslab.models.inmemory import clone
from compresslab.pruning.fisher import OBSScorer, collect_outer_sums, stream_groups
from compresslab.pruning.masks import MaskKeeper
from compresslab.pruning.unstructured import (
    Mode, Scope, check_schedule, moved, prune_to, recovery_checkpoints, run_pruning, teacher_modules)
from compresslab.registry import register_pass
from compresslab.targets import check_patterns, select_modules
from compresslab.training.dist import rank_batches
from compresslab.training.recovery import Recovery
from compresslab.types import PassContext, PassResult, Stage
from compresslab.validate import check_int, coerce_block, check_positive, check_positive_int, coerce_enum, is_number

log = logging.getLogger(__name__)


class MaskType(str, Enum):
    """Unstructured weights, or 1x4 blocks along a row (what VNNI int8 sparse kernels use)."""

    UNSTRUCTURED = "unstructured"
    BLOCK4 = "block4"


_DEFAULT_BLOCK = {MaskType.UNSTRUCTURED: 50, MaskType.BLOCK4: 32}  # recipe values (§2.3)


@torch.no_grad()
def validation_loss(model: nn.Module, loader: Any) -> dict[str, float]:
    """Mean task loss (and accuracy for classification) on the validation split: ``damp_grid``'s criterion
    (lower is better). Not a selection score: that is :meth:`PassContext.validation_score` (the task's metric)."""
    from compresslab.training.losses import TaskLoss

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct, n, classes = 0.0, 0, 0, 1
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**{k: v for k, v in batch.items() if k != "labels"}, return_dict=True)
        bs, classes = batch["labels"].shape[0], out.logits.shape[-1]
        loss_sum += float(TaskLoss()(out, None, batch)) * bs
        if classes > 1:
            correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
        n += bs
    model.train(was_training)
    res = {"val_loss": round(loss_sum / max(1, n), 6)}
    if classes > 1:
        res["val_accuracy"] = round(correct / max(1, n), 6)
    return res


@register_pass("obert")
@dataclass
class OBert:
    """oBERT pruning to ``sparsity`` of the targeted weights (unstructured or 1x4 blocks), with KD.

    ``recovery`` is the KD recovery (YAML fills ``steps``/``lr`` from ``${budget.*}``); gradual
    pruning places its events in ``recovery.steps``. ``num_grads``
    mini-batches of ``grad_batch_size`` are drawn from train for every Fisher rebuild (each
    pruning event times ``num_recomputations``); 1024 is the paper's, 256-512 is realistic on a
    2-core CPU. A train split with fewer mini-batches caps it, with a warning (metrics ``num_grads``:
    the count used; ``num_grads_capped_from``: the setting). ``block_size`` defaults to 50 (unstructured) or 32 (block4).
    """

    sparsity: float = 0.8
    mode: Mode = Mode.GRADUAL
    init_sparsity: float | None = None  # gradual: first jump; null = 0.7 (recipe), 7/8 of a lower target
    num_recomputations: int = 1
    num_grads: int = 1024
    grad_batch_size: int = 16
    damp: float = 1e-7
    block_size: int | None = None
    mask_type: MaskType = MaskType.UNSTRUCTURED
    recovery: Recovery = field(default_factory=lambda: Recovery(steps=300))  # steps: budget.recovery_steps
    num_events: int = 7  # gradual only
    targets: list[str] | None = None  # default: the encoder linears (q, k, v, o, ffn_in, ffn_out)
    ignore: list[str] | None = None
    damp_grid: list[float] | None = None  # choose damp on the validation split (one-shot to sparsity)
    fisher_max_mb: float | None = None  # bound on the Fisher state held at once (None: whole encoder)
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
        self.mode = coerce_enum(Mode, self.mode, "mode")
        self.mask_type = coerce_enum(MaskType, self.mask_type, "mask_type")
        self.recovery = coerce_block(self, "recovery", Recovery)
        self.sparsity, self.init_sparsity = check_schedule(self.mode, self.sparsity, self.init_sparsity,
                                                           self.num_events, self.recovery.steps,
                                                           self.recovery.select_every)
        check_int(self.checkpoint_every, "checkpoint_every", minimum=0)
        for f in ("num_recomputations", "num_grads", "grad_batch_size"):
            check_positive_int(getattr(self, f), f)
        if self.block_size is None:
            self.block_size = _DEFAULT_BLOCK[self.mask_type]
        check_positive_int(self.block_size, "block_size")
        if self.mask_type is MaskType.BLOCK4 and self.block_size % 4:
            raise ValueError(f"mask_type=block4 needs block_size % 4 == 0 (e.g. 32), got {self.block_size}")
        check_positive(self.damp, "damp")
        if self.damp_grid is not None:
            grid = list(self.damp_grid) if not isinstance(self.damp_grid, (str, int, float)) else None
            if not grid or not all(is_number(d) and d > 0 for d in grid):
                raise ValueError(f"damp_grid must be a non-empty list of positive numbers or null, got "
                                 f"{self.damp_grid!r}")
            self.damp_grid = [float(d) for d in grid]
        self.targets = check_patterns(self.targets, "targets")
        self.ignore = check_patterns(self.ignore, "ignore")
        if self.fisher_max_mb is not None and not (is_number(self.fisher_max_mb) and self.fisher_max_mb > 0):
            raise ValueError(f"fisher_max_mb must be a positive number of MB or null, got {self.fisher_max_mb!r}")

    @property
    def group_size(self) -> int:
        return 4 if self.mask_type is MaskType.BLOCK4 else 1

    def recovery_settings(self) -> Recovery:
        """The KD recovery of the pruned model (the ``recovery_settings`` hook): the pipeline asks it
        whether a teacher must be made before this step (pipeline/plan.py needs_teacher)."""
        return self.recovery

    def check(self, task: Any) -> None:
        """Data checks the pipeline runs before any work (and apply repeats before the Fisher pass)."""
        self.recovery.check_task(task)
        from compresslab.data.schema import TaskKind, TaskNotSupportedError

        if task.spec.kind is TaskKind.EMBEDDING:
            raise TaskNotSupportedError("obert needs a labelled classification or regression task for its empirical "
                             f"Fisher; task {task.spec.name!r} is an embedding task (use magnitude)")
        task.require_train()  # a split too small for num_grads is capped (grads_used), not refused
        if self.damp_grid and not task.validation:
            raise ValueError("damp_grid selects on the validation split carved from train, but the task has none")

    def grads_used(self, n_train: int) -> int:
        """The gradients each Fisher rebuild averages: ``num_grads``, capped at the train split's
        ``grad_batch_size`` mini-batches. A capped count is the same empirical Fisher estimator over fewer
        gradients (noisier); more would draw the same examples twice (a second epoch)."""
        return min(self.num_grads, math.ceil(n_train / self.grad_batch_size))

    def _warn_grads(self, n_train: int, used: int) -> None:
        if used < self.num_grads:
            log.warning("obert: num_grads=%d but the train split has %d examples (%d mini-batches of "
                        "grad_batch_size=%d); using %d gradients per Fisher rebuild", self.num_grads, n_train,
                        used, self.grad_batch_size, used)

    def check_after(self, earlier: list[Any]) -> None:
        """Plan-time check against the steps before this one: 1x4 blocks need every pruned Linear's
        ``in_features % 4 == 0``, and a structured pass before it leaves FFN widths on its
        ``ffn_grid``, so that grid must be a multiple of 4 (ValueError naming the setting)."""
        if self.group_size == 1:
            return
        from compresslab.pruning.speedup import off_grid

        bad = off_grid(earlier, self.group_size)
        if bad:
            name, grid = bad[0]
            raise ValueError(f"mask_type=block4 prunes 1x4 blocks along each row, but the earlier {name} step leaves "
                             f"FFN widths on ffn_grid={grid}, not a multiple of 4; set that step's ffn_grid to a "
                             "multiple of 4 (e.g. 32), or mask_type=unstructured")

    def check_model(self, model: nn.Module) -> None:
        """Before any step runs (pipeline.state.check_steps_model): ``targets`` / ``ignore`` select Linears,
        1x4 blocks fit them, and ``damp_grid`` fits ``fisher_max_mb``; ValueError naming the setting."""
        modules = select_modules(model, self.targets, self.ignore)
        self._check_modules(modules)
        self._check_damp_grid(modules)

    def _check_damp_grid(self, modules: Mapping[str, nn.Linear]) -> None:
        if self.damp_grid and len(stream_groups(modules, self.block_size, self.fisher_max_mb)) > 1:
            raise ValueError("damp_grid keeps the whole encoder's Fisher sums in memory, which exceeds "
                             f"fisher_max_mb={self.fisher_max_mb}; raise it or drop damp_grid")

    def _check_modules(self, modules: Mapping[str, nn.Linear]) -> None:
        if self.group_size > 1:
            bad = [n for n, m in modules.items() if m.in_features % self.group_size]
            if bad:
                raise ValueError(f"mask_type=block4 needs in_features % 4 == 0; not true for {bad[:3]}; "
                                 "exclude them with ignore=")

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        from compresslab.checkpoint.sparse_int8 import sparse_size_bytes

        modules = select_modules(model, self.targets, self.ignore)  # all input checks before the Fisher pass
        self._check_modules(modules)
        self.check(ctx.task)
        self._check_damp_grid(modules)
        n_train = len(ctx.task.train)
        num_grads = self.grads_used(n_train)
        self._warn_grads(n_train, num_grads)
        before = moved(model, ctx.device)
        try:
            loader = ctx.train_loader(batch_size=self.grad_batch_size, shuffle=True)
            batches = rank_batches(loader, ctx.device)
            damp, grid, sums = self.damp, None, None
            if self.damp_grid:
                damp, grid, sums = self._choose_damp(model, ctx, batches, list(modules), num_grads)
            # one-shot prunes the very model the grid saw: its gradient sums still hold
            scorer = OBSScorer(batches, num_grads, self.block_size, damp, self.group_size, ctx.progress,
                               sums=sums if self.mode is Mode.ONESHOT else None, max_state_mb=self.fisher_max_mb)
            metrics, structure = run_pruning(
                model, ctx, modules, scorer, mode=self.mode, sparsity=self.sparsity,
                init_sparsity=self.init_sparsity, num_events=self.num_events, recovery=self.recovery,
                checkpoint_dir=recovery_checkpoints(ctx, self.checkpoint_every), checkpoint_every=self.checkpoint_every,
                num_recomputations=self.num_recomputations, scope=Scope.GLOBAL, name=self.name,
                reference=teacher_modules(ctx, self.targets, self.ignore))
        finally:
            model.to(before)
        # the gradients per rebuild actually averaged (num_grads capped at the train split's mini-batches)
        metrics.update(damp=damp, block_size=self.block_size, mask_type=self.mask_type.value, num_grads=num_grads)
        if num_grads < self.num_grads:
            metrics["num_grads_capped_from"] = self.num_grads
        if grid is not None:
            metrics["damp_grid"] = grid
        metrics["size"] = sparse_size_bytes(model, list(modules))
        # the sparse int8 checkpoint stores the zeros as a bitmask: worth writing once any weight is pruned
        formats = ["sparse_int8"] if metrics["sparsity"] else []
        return PassResult(metrics=metrics, structure=structure, formats=formats)

    def _choose_damp(self, model: nn.Module, ctx: PassContext, batches: Iterator[dict[str, Tensor]],
                     names: list[str], num_grads: int) -> tuple[float, dict[str, Any], dict[str, Tensor] | None]:
        """One-shot prune a copy per damp to ``sparsity``; lowest validation loss wins.

        Returns (damp, grid record, the damp-free gradient sums when ``num_recomputations == 1``).
        """
        val = ctx.validation_loader()
        keeper0 = MaskKeeper.from_zeros(model, [f"{n}.weight" for n in names])
        sums, t0 = None, time.perf_counter()
        if self.num_recomputations == 1:  # the sums do not depend on damp: collect once
            mods = {n: model.get_submodule(n) for n in names}
            pruned = {n: keeper0.masks[f"{n}.weight"].reshape(-1) for n in names}
            sums = collect_outer_sums(model, mods, pruned, batches, num_grads, self.block_size,
                                      progress=ctx.progress)
        dense = validation_loss(model, val)
        rows: list[dict[str, float]] = []
        for d in self.damp_grid or []:
            m = clone(model)
            mods = {n: m.get_submodule(n) for n in names}
            scorer = OBSScorer(batches, num_grads, self.block_size, d, self.group_size, ctx.progress,
                               sums=dict(sums) if sums is not None else None)
            prune_to(scorer, m, mods, MaskKeeper(dict(keeper0.masks)), self.sparsity, Scope.GLOBAL,
                     self.num_recomputations)
            rows.append({"damp": d, **validation_loss(m, val)})
            del m, scorer
        best = min(rows, key=lambda r: r["val_loss"])
        record = {"dense": dense, "oneshot_sparsity": self.sparsity, "results": rows,
                  "grid_s": round(time.perf_counter() - t0, 2)}
        return best["damp"], record, sums
