"""``structured_l1``: the magnitude baseline for ``ziplm`` at the same *measured* speedup.

Heads and FFN neurons are ranked by the L1 norm of every weight that belongs to them (a head:
its Q/K/V rows and biases and its ``W_O`` columns; a neuron: its ``W_1`` row and bias and its
``W_2`` column) and the lowest are removed with no refit. Every layer keeps the same fraction
``1 - f``; ``f`` is the smallest that the latency table says meets the budget, then the model is
exported and measured and the budget tightened exactly as ZipLM does (shared code in
``pruning/speedup.py``), so the two differ only in *what* they remove and *how* they refit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from compresslab.models.adapters import LayerView, get_adapter
from compresslab.models.inmemory import clone
from compresslab.models.structure import shrink_ffn, shrink_heads
from compresslab.ops.spdy import LatencyTable
from compresslab.pruning.reachable import PlannedReachability
from compresslab.pruning.speedup import (
    Choice, SpeedupLab, SpeedupSettings, check_layout, oneshot_family, result_metrics, sample_batches,
    smallest_head_count, structure_of)
from compresslab.registry import register_pass
from compresslab.types import PassContext, PassResult, Stage

log = logging.getLogger(__name__)


@torch.no_grad()
def head_l1(lv: LayerView) -> torch.Tensor:
    """(num_heads,) L1 norm of each head's Q/K/V rows (+ biases) and ``W_O`` columns."""
    d, h = lv.head_size, lv.num_heads
    total = lv.o.weight.abs().sum(0).reshape(h, d).sum(1)  # W_O columns
    for lin in (lv.q, lv.k, lv.v):
        rows = lin.weight.abs().sum(1) + (lin.bias.abs() if lin.bias is not None else 0)
        total = total + rows.reshape(h, d).sum(1)
    return total


@torch.no_grad()
def neuron_l1(lv: LayerView) -> torch.Tensor:
    """(ffn_size,) L1 norm of each neuron's ``W_1`` row (+ bias) and ``W_2`` column."""
    rows = lv.ffn_in.weight.abs().sum(1) + (lv.ffn_in.bias.abs() if lv.ffn_in.bias is not None else 0)
    return rows + lv.ffn_out.weight.abs().sum(0)


def shrink_by_l1(model: nn.Module, choice: Choice) -> None:
    """Keep the ``choice`` largest-L1 heads and neurons of every layer, in place."""
    adapter = get_adapter(model)
    for i, (heads, ffn) in enumerate(zip(choice["heads"], choice["ffn"])):
        lv = adapter.layer(i)
        if heads < lv.num_heads:
            shrink_heads(lv, torch.topk(head_l1(lv), heads).indices.tolist())
        lv = adapter.layer(i)
        if ffn < lv.ffn_size:
            shrink_ffn(lv, torch.topk(neuron_l1(lv), ffn).indices.tolist())


def uniform_solver(lab: SpeedupLab, num_layers: int, num_heads: int, ffn_size: int, steps: int):
    """``budget -> choice``: the smallest uniform fraction ``f`` whose predicted time fits.

    Head counts and FFN widths snap to the nearest size the latency table prices; every layer keeps at
    least one head (uniform, so the model keeps one: ``StructuredL1.fastest_structure`` says why).
    Predicted time is monotone in ``f`` (the table is smoothed), so the first fit is the least
    pruning that meets the budget.
    """
    sizes = {"attention": [s for s in lab.table.sizes("attention") if s > 0], "ffn": lab.table.sizes("ffn")}

    def nearest(kind: str, x: float) -> int:  # sizes the table prices (dominated ones are absent)
        return min(sizes[kind], key=lambda s: (abs(s - x), -s))  # ties: prune less

    def at(f: float) -> Choice:
        h, n = nearest("attention", (1 - f) * num_heads), nearest("ffn", (1 - f) * ffn_size)
        return {"heads": [h] * num_layers, "ffn": [n] * num_layers}

    def solve(budget: float) -> Choice:
        for k in range(steps + 1):
            choice = at(k / steps)
            if lab.predict(choice) - lab.table.base_time <= budget:
                return choice
        return at(1.0)

    return solve


@register_pass("structured_l1")
@dataclass
class StructuredL1(PlannedReachability, SpeedupSettings):
    """Uniform per-layer L1 removal of heads and neurons to a measured speedup (ZipLM's baseline)."""

    fraction_steps: int = 200  # resolution of the uniform-fraction search

    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = False
    # emptying a layer's attention needs the BERT/RoBERTa layout (checked before any step runs)
    model_types: ClassVar[tuple[str, ...]] = ("bert", "roberta")
    fastest_rule: ClassVar[str] = ("every FFN neuron and all but one head of every layer removed, the layers "
                                   "staying uniform")
    # latency_model (listed in its YAML since 2026-12-06): earlier runs had it absent, at linear
    identity_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {**SpeedupSettings.identity_defaults, "latency_model": "linear"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fraction_steps < 1:
            raise ValueError(f"fraction_steps must be >= 1, got {self.fraction_steps}")

    def fastest_structure(self, table: LatencyTable, start: Choice) -> Choice:
        """The fastest uniform structure that keeps a head: the smallest positive head count in every layer.

        A model must keep a head (``SpeedupSettings.fastest_structure``); with the same count in every layer, that
        is one per layer."""
        h = smallest_head_count(table, min(start["heads"]))
        if h is None:
            raise ValueError(f"no head count above 0 the latency table prices fits heads per layer {start['heads']}")
        return {"heads": [h] * len(start["heads"]), "ffn": [0] * len(start["ffn"])}

    def refuse_start(self, start: Choice) -> None:
        """A uniform model only (every layer the same heads and FFN width): the search shrinks all layers alike. Asked
        in the preflight of the planned model too (e.g. after a ziplm step it cannot be planned: then in apply)."""
        if len(set(start["heads"])) > 1 or len(set(start["ffn"])) > 1:
            raise ValueError(f"structured_l1 starts from a uniform model; got per-layer structure {start}")

    def check(self, task: Any) -> None:
        """A validation split when recovery selects on it; the layout is checked in ``apply``, the start structure
        and the targets also in the preflight (``check_planned``)."""
        self.recovery.check_task(task)

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        check_layout(model)
        start = structure_of(model)
        self.refuse_start(start)
        dense = clone(model).eval()
        params_dense = sum(p.numel() for p in dense.parameters())
        teacher = ctx.kd_teacher(model)  # before the model changes
        with SpeedupLab(dense, ctx, self, sample_batches(ctx, self.num_calibration)) as lab:
            lab.check_targets(self.targets())
            solve = uniform_solver(lab, len(start["heads"]), start["heads"][0], start["ffn"][0], self.fraction_steps)
            records = oneshot_family(model, dense, ctx, self, lab, solve, shrink_by_l1,
                                     teacher, "structured_l1")
            metrics = result_metrics(self, records, lab, params_dense)
        # the widths it started from, so the report's structure plot shows what was removed
        metrics["structure_before"] = start
        return PassResult(metrics=metrics, structure=structure_of(model))
