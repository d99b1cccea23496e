"""The one place the pruning machinery lives: masks, global ranking, schedules, KD recovery.

``magnitude`` and ``obert`` differ only in their :class:`Scorer` (how a weight group is scored,
and whether the surviving weights are updated when others are pruned). Everything else is here:

* one pruning step: score -> rank (globally across every targeted tensor, or per tensor) ->
  scorer's weight update -> hard zero -> new masks in the :class:`MaskKeeper`;
* one-shot: ``num_recomputations`` linear sub-steps to the target, then fixed-mask KD recovery;
* gradual: the oBERT downstream recipe (ALGORITHMS.md §2.3) compressed into ``steps`` optimizer
  steps: a dense KD phase, ``num_events`` pruning events on the cubic curve from
  ``init_sparsity`` to ``sparsity``, one pruning event at the start of every LR cycle, and a
  last fixed-mask cycle. The 30-epoch recipe (dense 0-2, events 2, 6, ..., 26, fixed 26-30) is
  exactly ``plan_events(30, 7, ...)``.

Recovery always runs through :func:`compresslab.training.recover` (KD from the teacher).
"""

from __future__ import annotations

import logging
import os
import shutil
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import Tensor, nn

from compresslab.ops.obs import expand_group_mask, global_prune_masks
from compresslab.ops.schedule import PruningEvent, gradual_pruning_events, recomputation_targets
from compresslab.pruning.masks import MaskKeeper, sparsity_stats
from compresslab.targets import layer_keys, select_modules
from compresslab.training.recovery import Recovery, recover
from compresslab.training.resume import has_state
from compresslab.types import PassContext
from compresslab.validate import check_fraction, check_int, check_positive_int

log = logging.getLogger(__name__)

# Recovery LR decays from lr to lr * LR_FLOOR in each cycle (recipe: 5e-5 -> 5e-6 on GLUE).
LR_FLOOR = 0.1
TRAIN_CHECKPOINT = "train_checkpoint"  # the recovery's step checkpoints, inside the pass's step dir


class Mode(str, Enum):
    """One-shot or gradual pruning, for every pruning pass. Unstructured (magnitude, oBERT): prune, then recover
    with a fixed mask, or prune while recovering. ZipLM: one database for every target, or prune-recover-repeat
    along the targets."""

    ONESHOT = "oneshot"
    GRADUAL = "gradual"


class Scope(str, Enum):
    """Rank weights across every targeted tensor at once, or give each tensor the same sparsity."""

    GLOBAL = "global"
    PER_LAYER = "per_layer"


class Scorer(Protocol):
    """What a pruning method plugs into the driver."""

    group_size: int  # 1 = unstructured, 4 = 1x4 blocks along a row
    metrics: dict[str, Any]  # method-specific facts for PassResult (fisher time, memory, ...)

    def scores(self, model: nn.Module, modules: Mapping[str, nn.Linear],
               pruned: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-group saliency (numel // group_size,) per module; ``pruned`` is per weight, flat."""
        ...

    def update(self, modules: Mapping[str, nn.Linear], new: Mapping[str, Tensor],
               pruned: Mapping[str, Tensor]) -> None:
        """Change surviving weights to compensate for pruning ``new`` (flat per-weight masks)."""
        ...


def default_init_sparsity(sparsity: float) -> float:
    """The recipe's first jump, 0.7 (for every final sparsity 0.8-0.97), or 7/8 of a lower target."""
    return round(min(0.7, 0.875 * sparsity), 6)


def check_schedule(mode: Mode, sparsity: Any, init_sparsity: Any, num_events: Any,
                   steps: int, select_every: int = 0) -> tuple[float, float | None]:
    """Validated ``(sparsity, init_sparsity)`` of a pruning pass; nothing is changed in place.

    ``init_sparsity=None`` under ``mode=gradual`` becomes :func:`default_init_sparsity`, so the
    pass (which stores the result in its own ``__post_init__``) shows the jump it will take.
    ``steps`` is the recovery budget the gradual schedule places its events in; ``select_every``
    (``Recovery.select_every``) is refused under ``mode=gradual``: an early check scores a less sparse
    model, and restoring it would miss the target sparsity.
    """
    sparsity = check_fraction(sparsity, "sparsity")
    if init_sparsity is None and mode is Mode.GRADUAL:
        init_sparsity = default_init_sparsity(sparsity)
    if init_sparsity is not None:
        init_sparsity = check_fraction(init_sparsity, "init_sparsity")
    if mode is Mode.GRADUAL:
        if steps < 2:
            raise ValueError(f"mode=gradual needs recovery.steps >= 2 to place pruning events, got {steps}; "
                             "use mode=oneshot for pruning without recovery")
        if init_sparsity > sparsity:
            raise ValueError(f"init_sparsity={init_sparsity} must be <= sparsity={sparsity}")
        if select_every:
            raise ValueError(f"recovery.select_every={select_every} is for a fixed structure; gradual pruning "
                             "changes the sparsity during recovery (use mode=oneshot, or select_every=0)")
    check_positive_int(num_events, "num_events")
    return sparsity, init_sparsity


def plan_events(steps: int, num_events: int, init: float, final: float) -> tuple[int, int, list[PruningEvent]]:
    """(dense_steps w, cycle c, events) with ``w + E*c == steps``, events at ``w, w+c, ...``.

    ``c = floor(steps / (E + 0.5))`` so the dense phase is about half a cycle, as in the recipe;
    ``E`` is reduced when there are too few steps for ``num_events`` cycles. The LR ramps up over
    the dense phase (the loop's warm-up; the recipe decays there instead, but the loop has no
    decay-then-restart shape and a ramp is harmless on a fine-tuned model), then decays from
    ``lr`` to ``lr * LR_FLOOR`` in every cycle, restarting at each event.
    """
    if steps < 2:
        raise ValueError(f"gradual pruning needs steps >= 2, got {steps}")
    e = min(num_events, steps - 1)
    c = int(steps // (e + 0.5))
    w = steps - e * c
    return w, c, gradual_pruning_events(steps, e, init, final, start_step=w, end_step=w + (e - 1) * c)


def _flat_masks(keeper: MaskKeeper, modules: Mapping[str, nn.Linear]) -> dict[str, Tensor]:
    return {n: keeper.masks[f"{n}.weight"].reshape(-1) for n in modules}


def prune_step(scorer: Scorer, model: nn.Module, modules: Mapping[str, nn.Linear], keeper: MaskKeeper,
               target: float, scope: Scope) -> None:
    """Prune to ``target`` sparsity (of all targeted groups, or of each tensor); pruned stay pruned."""
    g = scorer.group_size
    old = _flat_masks(keeper, modules)
    scores = scorer.scores(model, modules, old)
    names = list(modules)
    old_g = [old[n].view(-1, g).any(dim=1) for n in names]  # a partly zero group counts as pruned
    if scope is Scope.GLOBAL:
        new_g = global_prune_masks([scores[n] for n in names], old_g, target)
    else:
        new_g = [global_prune_masks([scores[n]], [o], target)[0] for n, o in zip(names, old_g)]
    new = {n: expand_group_mask(m, g).to(old[n].device) for n, m in zip(names, new_g)}
    old = {n: expand_group_mask(o, g).to(old[n].device) for n, o in zip(names, old_g)}
    scorer.update(modules, {n: new[n] & ~old[n] for n in names}, old)
    keeper.update({f"{n}.weight": new[n].view_as(modules[n].weight) for n in names})
    keeper.apply(model)


def prune_to(scorer: Scorer, model: nn.Module, modules: Mapping[str, nn.Linear], keeper: MaskKeeper,
             target: float, scope: Scope, num_recomputations: int = 1) -> list[float]:
    """``num_recomputations`` linear sub-steps from today's sparsity to ``target``; returns them."""
    total = sum(m.weight.numel() for m in modules.values())
    current = min(keeper.num_pruned() / total, target)
    subs = recomputation_targets(current, target, num_recomputations)
    for s in subs:
        prune_step(scorer, model, modules, keeper, s, scope)
    return subs


class _PruneAtEvents:
    """Loop callback: run a pruning event before the optimizer step it is scheduled at."""

    def __init__(self, events: list[PruningEvent], prune: Callable[[float, int], None]) -> None:
        self.events = {e.step: e.sparsity for e in events}
        self.prune = prune

    def on_step_begin(self, step: int, model: nn.Module) -> None:
        if step in self.events:
            self.prune(self.events[step], step)


class _PruneRecord:
    """Loop callback with state, added only when the recovery checkpoints: the masks and the pruning steps
    done so far, and the scorer's own state where it has one (oBERT's: the Fisher batch stream's position).
    A resumed gradual run needs them because the keeper is rebuilt from the dense input model (it would know
    none of the earlier events' zeros and let them grow back), ``prune_steps`` would miss the events before
    the stop, and the next events' Fisher would see other batches than the stopped run's would have. Runs
    without checkpoints never see it, so their loop record is unchanged."""

    def __init__(self, keeper: MaskKeeper, done: list[list[float]], scorer: Scorer | None = None) -> None:
        self.keeper, self.done = keeper, done
        self.scorer = scorer if has_state(scorer) else None

    def state_dict(self) -> dict[str, Any]:
        state = {"masks": {n: m.detach().cpu() for n, m in self.keeper.masks.items()},
                 "done": [list(d) for d in self.done]}
        if self.scorer is not None:
            state["scorer"] = self.scorer.state_dict()  # type: ignore[attr-defined]
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.keeper.update(dict(state["masks"]))
        self.done[:] = [list(d) for d in state["done"]]
        if self.scorer is not None and "scorer" in state:  # a checkpoint from before 2026-12-07 has none
            self.scorer.load_state_dict(state["scorer"])  # type: ignore[attr-defined]


def recovery_checkpoints(ctx: PassContext, every: int) -> Path | None:
    """Where a pruning pass's recovery keeps step checkpoints: ``<step dir>/train_checkpoint`` when
    ``every`` > 0 (the pipeline reruns an unfinished step in the same dir, so the loop resumes there), else None."""
    check_int(every, "checkpoint_every", minimum=0)
    return ctx.step_dir / TRAIN_CHECKPOINT if every else None


def teacher_modules(ctx: PassContext, targets: list[str] | None,
                    ignore: list[str] | None) -> dict[str, nn.Linear] | None:
    """The run teacher's Linears under the same ``targets`` / ``ignore``: the dense reference a
    sparsity is also reported against when earlier steps shrank the model (ZipLM, layer_drop).

    None when the run has no teacher, or a pattern selects nothing in it (explicit layer indices
    after layer_drop renumbered the layers: no counterpart to compare with).
    """
    if ctx.teacher is None:
        return None
    try:
        return select_modules(ctx.teacher, targets, ignore)
    except ValueError:
        return None


def run_pruning(model: nn.Module, ctx: PassContext, modules: Mapping[str, nn.Linear], scorer: Scorer, *,
                mode: Mode, sparsity: float, recovery: Recovery, init_sparsity: float | None = None,
                num_events: int = 7, num_recomputations: int = 1, scope: Scope = Scope.GLOBAL,
                name: str = "pruning", reference: Mapping[str, nn.Module] | None = None,
                checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 0
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Prune ``modules`` of ``model`` in place to ``sparsity``; returns (metrics, structure).

    One-shot: ``num_recomputations`` sub-steps to ``sparsity``, then ``recovery`` with fixed
    masks. Gradual: ``num_events`` events from ``init_sparsity`` to ``sparsity`` placed in the
    ``recovery.steps`` budget (:func:`plan_events`). ``name`` labels progress and log lines.

    ``sparsity`` (the target and the metric) is the fraction of zeros among ``modules``' weights
    as they are: after ZipLM or layer_drop, of the shrunk model's remaining weights. Every exact
    zero already there (an earlier pass's) counts as pruned and stays zero. With ``reference``
    (the dense teacher's counterparts, :func:`teacher_modules`) the metrics also say
    ``sparsity_vs_teacher = 1 - nonzero / teacher weights``: what is gone, removed or zeroed.

    ``checkpoint_dir`` / ``checkpoint_every``: the recovery writes step checkpoints there (with the masks
    and events done, and the scorer's state) and a later call resumes inside it, reaching the weights of a
    run never stopped (oBERT's next Fisher rebuilds continue the stopped run's batch stream). The scorer's
    timings in the metrics are of the resumed session only.
    """
    steps = recovery.steps
    keeper = MaskKeeper.from_zeros(model, [f"{n}.weight" for n in modules])
    # before any pruning: without ctx.teacher the dense input model is the teacher
    teacher = ctx.kd_teacher(model) if steps else None
    done: list[list[float]] = []  # [step, sparsity] of every (sub-)step, for the manifest

    def prune(target: float, step: int = 0) -> None:
        for s in prune_to(scorer, model, modules, keeper, target, scope, num_recomputations):
            done.append([step, round(s, 6)])

    metrics: dict[str, Any] = {"target_sparsity": sparsity, "mode": mode.value, "scope": scope.value,
                               "recovery_steps": steps, "batch_size": ctx.batch_size}
    schedule: dict[str, Any] = {"schedule": "linear", "final_lr_ratio": LR_FLOOR}
    if mode is Mode.ONESHOT:
        prune(sparsity)
        callbacks: list[Any] = [keeper]
    else:
        if init_sparsity is None:
            raise ValueError("mode=gradual needs init_sparsity (check_schedule fills the recipe's default)")
        w, c, events = plan_events(steps, num_events, init_sparsity, sparsity)
        if len(events) < num_events:
            log.warning("%s: only %d steps, so %d pruning events instead of %d", name, steps, len(events), num_events)
        metrics.update(dense_steps=w, cycle_steps=c, num_events=len(events))
        schedule = {"schedule": "cyclic_linear", "cycle_steps": c, "warmup_ratio": (w + 0.5) / steps,
                    "final_lr_ratio": LR_FLOOR}
        callbacks = [_PruneAtEvents(events, prune), keeper]
    if checkpoint_dir is not None:
        callbacks.append(_PruneRecord(keeper, done, scorer))
    if steps:
        from compresslab.data.schema import TaskKind

        res = recover(model, ctx.train_loader(batch_size=ctx.batch_size), recovery, teacher,
                      embedding=ctx.task.spec.kind is TaskKind.EMBEDDING, callbacks=callbacks,
                      batch_size=ctx.batch_size, seed=ctx.seed, progress=ctx.progress, desc=name, device=ctx.device,
                      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                      validate=ctx.validation_score, **schedule)
        metrics.update(train_s=round(res.wall_s, 2), final_loss=res.losses[-1] if res.losses else None)
        if res.selection is not None:
            metrics["selection"] = res.selection
        if checkpoint_dir is not None:
            metrics["checkpoint_every"] = checkpoint_every
            if res.resumed_at is not None:
                metrics["resumed_at"] = res.resumed_at
            # the model is whole in memory and the step saves it next (a stop before that retrains the pass)
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    keeper.apply(model)
    stats = sparsity_stats(modules, layer_keys(model, modules))
    metrics.update(sparsity=stats["sparsity"], num_zero=stats["num_zero"], num_targeted=stats["num_targeted"],
                   prune_steps=done, **scorer.metrics)
    if reference is not None:
        metrics.update(relative_sparsity(stats["num_targeted"] - stats["num_zero"], reference))
    structure = {"layer_sparsity": stats["layer_sparsity"], "tensor_sparsity": stats["tensor_sparsity"],
                 "targets": list(modules), "group_size": scorer.group_size}
    return metrics, structure


def relative_sparsity(nonzero: int, reference: Mapping[str, nn.Module]) -> dict[str, Any]:
    """``sparsity_vs_teacher``: the fraction of the reference's targeted weights that are not left
    as non-zeros (``nonzero`` of them remain), with the count it is relative to."""
    total = sum(m.weight.numel() for m in reference.values())
    return {"teacher_targeted": total, "sparsity_vs_teacher": round(1 - nonzero / max(1, total), 6)}


def moved(model: nn.Module, device: torch.device) -> torch.device:
    """Move ``model`` to ``device``; returns where it was, so the pass can put it back."""
    before = next(model.parameters()).device
    model.to(device)
    return before


__all__ = ["LR_FLOOR", "TRAIN_CHECKPOINT", "Mode", "Scope", "Scorer", "check_schedule",
           "default_init_sparsity", "moved", "plan_events", "prune_step", "prune_to",
           "recovery_checkpoints", "relative_sparsity", "run_pruning", "teacher_modules"]
