"""``ziplm``: structured OBS of heads and FFN neurons to a measured speedup (ALGORITHMS.md §4).

Flow: dense export + latency table on the target runtime (cached per environment) -> targets
checked against the fastest structure the search may choose (every FFN neuron and every head but
one removed: a model with no head left cannot look across tokens; the preflight made the same check on
the architecture this step is given, before any step ran: pruning/reachable.py) -> forward hooks collect the
inputs of every ``W_O`` and ``W_2`` on calibration data (padding excluded: pad tokens never reach
an encoder's loss) -> one Hessian per matrix (raw sums all-reduced across processes) -> a greedy
OBS database per matrix (heads: column blocks of ``head_size``; FFN: single columns, levels on
the latency grid) -> dynamic program for ``B = T_dense / S - t_0``, keeping at least one head ->
stitch (slice Q/K/V rows and ``W_1`` rows, copy the compensated ``W_O``/``W_2``) -> export,
measure, tighten the budget if short.

``mode=oneshot`` builds one database on the dense model and derives every target from it;
``mode=gradual`` walks the targets in order, recomputing Hessians on the current model and
KD-recovering after each (the paper's family schedule). The math lives in ``ops/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from compresslab.failure import raise_if_interrupted
from compresslab.models.hooks import capture_inputs
from compresslab.models.inmemory import clone
from compresslab.ops.knapsack import solve_dp
from compresslab.ops.layer_hessian import HessianAccumulator, zero_dead_columns_
from compresslab.ops.shrink import ShrinkDatabase, build_database
from compresslab.ops.spdy import LatencyTable
from compresslab.pruning.reachable import PlannedReachability
from compresslab.pruning.speedup import (
    Choice, SpeedupLab, SpeedupSettings, check_layout, oneshot_family, recover, result_metrics, sample_batches,
    save_member, structure_of)
from compresslab.pruning.unstructured import Mode  # also this module's name (ziplm.Mode)
from compresslab.registry import register_pass
from compresslab.training.dist import world
from compresslab.training.losses import MODEL_INPUTS
from compresslab.types import PassContext, PassResult, Stage
from compresslab.validate import coerce_enum

log = logging.getLogger(__name__)

Key = tuple[int, str]  # (layer index, "attention" | "ffn")


def get_layers(model: nn.Module) -> list[Any]:
    from compresslab.models.adapters import get_adapter

    return list(get_adapter(model).layers())


def _matrices(model: nn.Module) -> dict[Key, nn.Linear]:
    """The pruned matrices with something left to prune: ``W_O`` and ``W_2`` of each layer."""
    out: dict[Key, nn.Linear] = {}
    for lv in get_layers(model):
        if lv.num_heads:
            out[(lv.index, "attention")] = lv.o
        if lv.ffn_size:
            out[(lv.index, "ffn")] = lv.ffn_out
    return out


@torch.no_grad()
def collect_hessians(model: nn.Module, batches: Any, ctx: PassContext, total: int | None = None
                     ) -> dict[Key, HessianAccumulator]:
    """Sum ``X X^T`` of every pruned matrix's input over the calibration tokens (pads excluded).

    Under ``torch.distributed`` each rank takes every world-size-th batch and the raw sums and
    token counts are all-reduced before anything is divided or inverted.
    """
    rank, world_size = world()
    mats = _matrices(model)
    device = next(model.parameters()).device
    accs = {k: HessianAccumulator(m.in_features, device=device) for k, m in mats.items()}
    mask: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    try:
        with capture_inputs(mats, lambda key, x: accs[key].add_batch(x.detach(), mask["m"])):
            for i, batch in enumerate(ctx.track(batches, total=total, desc="ziplm: calibration")):
                if i % world_size != rank:
                    continue
                raise_if_interrupted()
                inputs = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}
                mask["m"] = inputs["attention_mask"]  # (B, T): pads are left out of every H
                model(**inputs)
    finally:
        model.train(was_training)
    if world_size > 1:
        import torch.distributed as dist

        for acc in accs.values():
            xxt, count = acc.raw()[0].clone(), acc.count_tensor()
            dist.all_reduce(xxt)
            dist.all_reduce(count)
            acc.load_raw(xxt, count)
    return accs


def solve_with_a_head(times: list[list[float]], errors: list[list[float]], sizes: list[list[int]],
                      attention: list[int], budget: float) -> list[int]:
    """The DP's least-error sizes under ``budget`` with at least one head left among the ``attention`` modules.

    The plain DP (ALGORITHMS.md §4.4) first; when it empties every attention module, the best choice that keeps
    a head keeps one in some module ``j``, so it is the least-error one among the DPs that each forbid size 0
    to one ``j`` (exact: each such DP's choice keeps a head, and the constrained optimum is feasible in one).
    """
    sol = solve_dp(times, errors, budget)
    if any(sizes[j][sol.choice[j]] for j in attention):
        return [sizes[j][s] for j, s in enumerate(sol.choice)]
    best: tuple[float, list[int]] | None = None
    for j in attention:
        keep = [i for i, s in enumerate(sizes[j]) if s > 0]
        t, e = list(times), list(errors)
        t[j], e[j] = [times[j][i] for i in keep], [errors[j][i] for i in keep]
        try:
            cand = solve_dp(t, e, budget)
        except ValueError:  # the budget has no room for a head in this module
            continue
        if best is None or cand.objective < best[0]:
            picked = [sizes[m][s] for m, s in enumerate(cand.choice)]
            picked[j] = sizes[j][keep[cand.choice[j]]]
            best = (cand.objective, picked)
    if best is None:
        head = min(times[j][i] for j in attention for i, s in enumerate(sizes[j]) if s > 0)
        raise ValueError(f"budget {budget * 1e3:.4g} ms has no room for one attention head (the fastest head "
                         f"count costs {head * 1e3:.4g} ms): a model with no head left cannot look across tokens")
    return best[1]


@register_pass("ziplm")
@dataclass
class ZipLM(PlannedReachability, SpeedupSettings):
    """ZipLM: per-layer structured OBS + a latency-table DP to a measured speedup (see module doc)."""

    mode: Mode = Mode.ONESHOT
    damp: float = 0.01  # relative dampening of each Hessian

    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = False
    # emptying a layer's attention needs the BERT/RoBERTa layout (checked before any step runs)
    model_types: ClassVar[tuple[str, ...]] = ("bert", "roberta")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.mode = coerce_enum(Mode, self.mode, "ziplm mode")
        if not self.damp >= 0:
            raise ValueError(f"damp must be >= 0, got {self.damp!r}")

    def check(self, task: Any) -> None:
        """The calibration size adapts to the train split (with a warning); a validation split to select on."""
        self.recovery.check_task(task)

    # ------------------------------------------------------------------ statistics and databases
    def calibration_used(self, ctx: PassContext) -> int:
        """The examples each Hessian is collected on: ``num_calibration``, capped at the train split (the same
        estimator on fewer tokens; recorded as the metric ``calibration_examples``)."""
        return min(self.num_calibration, len(ctx.task.require_train()))

    def databases(self, model: nn.Module, ctx: PassContext, table: LatencyTable) -> dict[Key, ShrinkDatabase]:
        """OBS databases of ``model``'s current ``W_O``/``W_2`` at every level the DP may pick."""
        n = self.calibration_used(ctx)
        total = -(-n // ctx.batch_size)
        accs = collect_hessians(model, ctx.calibration_batches(n), ctx, total)
        tokens = min((a.count for a in accs.values()), default=0)
        widest = max((a.d_in for a in accs.values()), default=0)
        if tokens < widest:
            log.warning("ziplm: only %d calibration tokens for inputs of width %d: the Hessians are rank "
                        "deficient and the dampening (damp=%g) carries the solution; use more calibration data",
                        tokens, widest, self.damp)
        mats = _matrices(model)
        head_size = get_layers(model)[0].head_size
        dbs: dict[Key, ShrinkDatabase] = {}
        for key in ctx.track(list(accs), total=len(accs), desc="ziplm: OBS databases"):
            raise_if_interrupted()
            layer, kind = key
            res = accs.pop(key).finalize(damp=self.damp, out_dtype=torch.float64)
            weight = mats[key].weight
            w = zero_dead_columns_(weight.detach().to(torch.float64).clone(), res.dead)
            if kind == "attention":
                group, levels = head_size, range(w.shape[1] // head_size + 1)
            else:
                group, levels = 1, [w.shape[1] - s for s in self._options(table, kind, w.shape[1], layer)]
            dbs[key] = build_database(w, res.hessian, group, levels, store_device="cpu", store_dtype=weight.dtype)
        return dbs

    @staticmethod
    def _options(table: LatencyTable, kind: str, current: int, layer: int) -> list[int]:
        """Sizes the DP may pick for one module: the table's sizes up to the current one."""
        sizes = table.sizes(kind)
        if current not in sizes:
            raise ValueError(f"layer {layer}: {kind} size {current} has no latency entry (sizes {sizes}); ziplm "
                             "prunes to table sizes only (use the same ffn_grid and shape for every step)")
        return [s for s in sizes if s <= current]

    # ------------------------------------------------------------------ search and stitch
    def solver(self, model: nn.Module, dbs: dict[Key, ShrinkDatabase], table: LatencyTable):
        """``budget -> choice``: the DP over every layer's attention and FFN levels, keeping at least one head.

        Times are ``table.time``: with ``latency_model=calibrated`` or ``linear`` every size above 0 includes its
        kind's fixed cost (fitted on whole models), so emptying a module saves that cost too. A choice with no
        head in any layer is never returned (``SpeedupSettings.fastest_structure`` says why).
        """
        options: list[tuple[str, list[int], list[float]]] = []  # (kind, sizes, errors) per module
        for lv in get_layers(model):
            for kind, cur in (("attention", lv.num_heads), ("ffn", lv.ffn_size)):
                if cur == 0:  # emptied earlier (gradual): nothing left to choose
                    options.append((kind, [0], [0.0]))
                    continue
                sizes = self._options(table, kind, cur, lv.index)
                db = dbs[(lv.index, kind)]
                options.append((kind, sizes, [db.level(cur - s).error for s in sizes]))
        times = [[table.time(kind, s) for s in sizes] for kind, sizes, _ in options]
        errors = [e for _, _, e in options]
        with_heads = [j for j, (kind, sizes, _) in enumerate(options) if kind == "attention" and max(sizes) > 0]
        if not with_heads:
            raise ValueError(f"the model has no attention head left (structure {structure_of(model)}): with none, "
                             "no token sees another, and ziplm only removes structure")

        def solve(budget: float) -> Choice:
            picked = solve_with_a_head(times, errors, [sizes for _, sizes, _ in options], with_heads, budget)
            return {"heads": picked[0::2], "ffn": picked[1::2]}

        return solve

    @staticmethod
    @torch.no_grad()
    def stitch(model: nn.Module, dbs: dict[Key, ShrinkDatabase], choice: Choice) -> None:
        """Shrink ``model`` in place to ``choice``, loading the compensated ``W_O``/``W_2``."""
        from compresslab.models.adapters import get_adapter
        from compresslab.models.structure import shrink_ffn, shrink_heads

        adapter = get_adapter(model)
        for i, (heads, ffn) in enumerate(zip(choice["heads"], choice["ffn"])):
            for kind, size, shrink, role in (("attention", heads, shrink_heads, "o"), ("ffn", ffn, shrink_ffn, "ffn_out")):
                lv = adapter.layer(i)
                cur = lv.num_heads if kind == "attention" else lv.ffn_size
                if size == cur:
                    continue
                level = dbs[(i, kind)].level(cur - size)
                shrink(lv, level.kept)
                if level.kept:
                    getattr(adapter.layer(i), role).weight.copy_(level.weight)

    # ------------------------------------------------------------------ the pass
    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        check_layout(model)
        if self.num_calibration > len(ctx.task.require_train()):
            log.warning("ziplm: num_calibration=%d but the train split has %d examples; using all of them",
                        self.num_calibration, len(ctx.task.train))
        teacher = ctx.kd_teacher(model)  # before the model changes
        dense = clone(model).eval()
        params_dense = sum(p.numel() for p in dense.parameters())
        with SpeedupLab(dense, ctx, self, sample_batches(ctx, self.num_calibration)) as lab:
            lab.check_targets(self.targets())
            if self.mode is Mode.ONESHOT:
                dbs = self.databases(dense, ctx, lab.table)
                records = oneshot_family(model, dense, ctx, self, lab, self.solver(dense, dbs, lab.table),
                                         lambda m, c: self.stitch(m, dbs, c), teacher, "ziplm")
            else:
                records = self._gradual(model, ctx, lab, teacher)
            metrics = result_metrics(self, records, lab, params_dense)
        metrics.update(mode=self.mode.value, calibration_examples=self.calibration_used(ctx))
        # the widths it started from, so the report's structure plot shows what was removed
        metrics["structure_before"] = structure_of(dense)
        return PassResult(metrics=metrics, structure=structure_of(model))

    def _gradual(self, model: nn.Module, ctx: PassContext, lab: SpeedupLab, teacher: nn.Module
                 ) -> dict[float, dict[str, Any]]:
        """Prune to each target from the previous one, then recover; ``model`` ends at ``speedup``."""
        records: dict[float, dict[str, Any]] = {}
        work = model
        for target in self.targets():
            dbs = self.databases(work, ctx, lab.table)

            def build(choice: Choice, base: nn.Module = work, dbs: dict = dbs) -> nn.Module:
                m = clone(base)
                self.stitch(m, dbs, choice)
                return m

            choice, cand, rec = lab.search(target, self.solver(work, dbs, lab.table), build)
            del cand
            self.stitch(work, dbs, choice)
            del dbs
            rec["recovery"] = recover(work, ctx, self.recovery, teacher, f"ziplm {target:g}x recovery")
            if target in self.family:
                rec["saved"] = save_member(work, ctx, target, rec)
            records[target] = rec
            if target == self.speedup and target != self.targets()[-1]:
                work = clone(model)  # larger targets continue on a copy; model stays here
        return records
