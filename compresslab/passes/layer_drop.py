"""``layer_drop``: keep a subset of encoder layers (the depth baseline, e.g. for ZipLM / MiniLM).

Layers are really removed from the ``ModuleList`` and ``config.num_hidden_layers`` (``n_layers``
for DistilBERT) is updated, so the model saves, reloads (``compresslab.models.loading``; plain
``from_pretrained`` too when shapes are uniform) and exports like any smaller model. Optional KD
recovery runs through the one training loop; hidden-state KD maps student layers uniformly onto
the teacher's (TinyBERT's ``g(m)``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from compresslab.models.adapters import get_adapter
from compresslab.registry import register_pass
from compresslab.training.recovery import Recovery, recover
from compresslab.types import PassContext, PassResult, Stage
from compresslab.validate import coerce_block

log = logging.getLogger(__name__)


def evenly_spaced(total: int, keep: int) -> list[int]:
    """``keep`` of ``total`` layers, evenly spaced and always including the top one.

    Layer ``round((i + 1) * total / keep) - 1`` for ``i < keep``: 3 of 6 -> [1, 3, 5]; 1 -> [5].
    The top layer feeds the head, so it is the one to keep when depth is cut hardest.
    """
    return [round((i + 1) * total / keep) - 1 for i in range(keep)]


def drop_layers_(model: nn.Module, keep: list[int]) -> None:
    """Keep only layers ``keep`` (sorted, unique, in range) of ``model``, in place."""
    adapter = get_adapter(model)
    total = adapter.num_layers
    if not keep or sorted(set(keep)) != list(keep) or keep[0] < 0 or keep[-1] >= total:
        raise ValueError(f"keep must be non-empty, ascending, unique layer indices in [0, {total}), got {keep}")
    old = adapter._layers
    new = nn.ModuleList([old[i] for i in keep])
    for pos, layer in enumerate(new):  # HF caches key on layer_idx; keep it equal to the position
        for m in layer.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = pos
    owner = adapter.base.transformer if adapter.model_type == "distilbert" else adapter.base.encoder
    owner.layer = new
    attr = "n_layers" if adapter.model_type == "distilbert" else "num_hidden_layers"
    setattr(model.config, attr, len(keep))


def _values_that_work(total: int, setting: str) -> str:
    """What to set instead, for a model of ``total`` layers: the values that drop at least one layer."""
    if total == 1:
        return "a 1-layer model has no layer to drop: remove the layer_drop step"
    if setting == "num_layers":
        return f"set num_layers between 1 and {total - 1} (num_layers={total} keeps every layer)"
    return f"keep a proper subset of the indices 0..{total - 1}, e.g. keep={evenly_spaced(total, total // 2)}"


@register_pass("layer_drop")
@dataclass
class LayerDrop:
    """Keep ``keep`` (layer indices) or ``num_layers`` evenly spaced layers; then optional KD."""

    keep: list[int] | None = None
    num_layers: int | None = None
    recovery: Recovery = field(default_factory=Recovery)  # KD after the drop (steps=0: none)

    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if (self.keep is None) == (self.num_layers is None):
            raise ValueError("layer_drop needs exactly one of keep (layer indices) or num_layers")
        if self.keep is not None:
            self.keep = [int(i) for i in self.keep]
            if not self.keep or sorted(set(self.keep)) != self.keep or self.keep[0] < 0:
                raise ValueError(f"keep must be non-empty, ascending, unique, >= 0 layer indices; got {self.keep}")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        self.recovery = coerce_block(self, "recovery", Recovery)

    @property
    def keeps_zeros(self) -> bool:
        """Dropping layers keeps every surviving weight as it is; a dense KD recovery would not
        (pruned zeros grow back), so after a sparse pass only ``recovery.steps: 0`` composes."""
        return self.recovery.steps == 0

    def recovery_settings(self) -> Recovery:
        """The KD recovery after the drop (steps=0: none) (the ``recovery_settings`` hook): the pipeline asks it
        whether a teacher must be made before this step (pipeline/plan.py needs_teacher)."""
        return self.recovery

    def check(self, task: Any) -> None:
        """A validation split when recovery selects on it; the layer indices are checked against the model
        (``check_model``)."""
        self.recovery.check_task(task)

    def check_model(self, model: nn.Module) -> None:
        """Before any step runs: ``keep`` / ``num_layers`` fit the model's depth (ValueError naming it)."""
        self.layers_to_keep(get_adapter(model).num_layers)

    def planned_config(self, config: Any) -> Any:
        """The config this step leaves (the ``planned_config`` hook): ``config`` with the kept layers only, so a later
        step is priced on the depth it will be given (ZipLM's reachable speedup: pruning/reachable.py)."""
        import copy

        attr = "n_layers" if hasattr(config, "n_layers") else "num_hidden_layers"
        keep = self.layers_to_keep(int(getattr(config, attr)))
        out = copy.deepcopy(config)
        setattr(out, attr, len(keep))
        from compresslab.models.structure import STRUCTURE_KEY

        structure = out.__dict__.get(STRUCTURE_KEY)  # a pruned model's per-layer sizes: the kept layers' only
        if structure:
            out.__dict__[STRUCTURE_KEY] = [structure[i] for i in keep]
        return out

    def layers_to_keep(self, total: int) -> list[int]:
        """The kept indices for a model of ``total`` layers (range errors name the depth)."""
        if self.num_layers is not None:
            if self.num_layers > total:
                raise ValueError(f"num_layers={self.num_layers} but the model has only {total} layer"
                                 f"{'s' if total != 1 else ''}; {_values_that_work(total, 'num_layers')}")
            return evenly_spaced(total, self.num_layers)
        assert self.keep is not None
        if self.keep[-1] >= total:
            raise ValueError(f"keep={self.keep} names layer {self.keep[-1]} but the model has {total} layer"
                             f"{'s' if total != 1 else ''} (indices 0..{total - 1}); "
                             f"{_values_that_work(total, 'keep')}")
        return list(self.keep)

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        total = get_adapter(model).num_layers
        keep = self.layers_to_keep(total)
        before = sum(p.numel() for p in model.parameters())
        from compresslab.data.schema import TaskKind

        embedding = ctx.task.spec.kind is TaskKind.EMBEDDING
        r = self.recovery
        # the teacher is the model as it enters (or the run's), taken before any layer goes
        teacher = ctx.kd_teacher(model) if r.needs_teacher(embedding) else None
        drop_layers_(model, keep)
        metrics = {"kept_layers": keep, "num_layers": len(keep), "layers_before": total,
                   "params_before": before, "params": sum(p.numel() for p in model.parameters())}
        if r.steps:
            res = recover(model, ctx.train_loader(), r, teacher, embedding=embedding, batch_size=ctx.batch_size,
                          seed=ctx.seed, progress=ctx.progress, desc="layer_drop recovery", device=ctx.device,
                          validate=ctx.validation_score)
            metrics["recovery"] = res.to_dict()
        return PassResult(metrics=metrics, structure={"layers": keep})
