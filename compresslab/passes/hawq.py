"""``hawq``: Hessian-aware mixed-precision weight quantization (Q-BERT, HAWQ-V2/V3; ALGORITHMS.md §1).

sensitivity per targeted Linear (HAWQ-V2: average Hessian trace by Hutchinson, one shared Rademacher
probe over all Linears per HVP; or Q-BERT: top eigenvalue per encoder layer by power iteration)
-> bits per Linear from ``choices`` (HAWQ-V3's integer program over Σ Ω_i · ‖Q_b(W_i) − W_i‖² under an
average-bits, size and/or latency budget; Q-BERT's rank rule; a random map at the same budget as the
control; or one uniform width) -> dynamic ``FakeQuantLinear`` swap -> QAT with KD through ``training.recover``
(straight-through estimator, ranges recomputed every forward: Q-BERT's dynamic ranges) -> frozen
(weights become ``ŵ``; scales and integer zero points become buffers, the layout ONNX Runtime's
MatMulNBits takes: the ``ort_matmul_nbits`` pass writes it).

The math lives in ``ops/quant.py`` (quantizer), ``ops/loss_hessian.py`` + ``quant/sensitivity.py``
(Hessian statistics over train batches, eval mode, eager attention, fp32), ``quant/allocate.py``
+ ``ops/knapsack.solve_milp`` (allocation) and ``bench/nbits_latency.py`` (the latency table of the
deployed MatMulNBits per Linear and width, measured on this machine, for ``latency_limit``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from compresslab.bench.nbits_latency import NBitsTableSettings
from compresslab.ops.quant import check_bits, check_group, quant_error
from compresslab.models.quantized import average_bits, freeze_all, quantize_modules
from compresslab.registry import register_pass
from compresslab.targets import check_patterns, layer_keys, select_modules
from compresslab.training.recovery import Recovery, recover
from compresslab.types import PassContext, PassResult, Stage
from compresslab.validate import (check_bools, check_positive, check_positive_int, coerce_enum, coerce_settings,
                                  is_number)

FP32 = 32  # the "keep fp32" choice
RANDOM_TOL = 0.05  # allocate=random: average bits in [avg_bits - RANDOM_TOL, avg_bits] (random_allocation's tol)
QAT_CHECKPOINT_EVERY = 200  # optimizer steps between QAT checkpoints (~1-2 s each on MiniLM)


class Sensitivity(str, Enum):
    """HAWQ-V2 average trace per Linear, or Q-BERT's top eigenvalue per encoder layer."""

    TRACE = "trace"
    EIGEN = "eigen"


class HessianLoss(str, Enum):
    """Whose Hessian the sensitivity probes. ``task``: the mean cross-entropy on train labels
    (HAWQ-V2, Q-BERT). ``teacher_kl``: KL from the model's own output (``training.losses.
    teacher_kl_loss``), whose Hessian is the Gauss-Newton matrix: positive semi-definite and the
    second-order output change a weight perturbation causes, where the task loss's Hessian at a
    well-fit point is small and indefinite."""

    TASK = "task"
    TEACHER_KL = "teacher_kl"


class HessianEstimator(str, Enum):
    """How the per-Linear traces are estimated. ``hutchinson``: one Rademacher probe shared by all
    Linears per HVP (HAWQ-V2). ``exact``: with ``loss=teacher_kl`` only, each batch's Gauss-Newton
    block traces exactly from per-example gradients (``quant.sensitivity.fisher_traces``): C − 1
    backward passes per batch instead of HVPs, and no probe noise (on the fine-tuned MiniLM the
    shared probe's variance is > 86% leakage from the other Linears' blocks)."""

    HUTCHINSON = "hutchinson"
    EXACT = "exact"


class Allocate(str, Enum):
    """Integer program (HAWQ-V3), Q-BERT's rank rule, a random map at the same budget (control)."""

    ILP = "ilp"
    RANK = "rank"
    RANDOM = "random"


class Group(str, Enum):
    """Quantization groups: blocks of ``block_size`` along each row (MatMulNBits), whole rows, one
    group of rows per attention head (Q-BERT ``G = H``), or the whole matrix (``G = 1``)."""

    BLOCK = "block"
    ROW = "row"
    HEAD = "head"
    LAYER = "layer"


@dataclass(frozen=True)
class HessianSettings:
    """How much train data the sensitivity sees, and when the estimate stops.

    ``batches`` mini-batches of ``batch_size`` from train; ``probes_per_batch`` Hutchinson HVPs per
    batch (the gradient graph is built once per batch); stops once every Linear's standard error is
    below ``rel_se_tol`` of its trace (after ``min_probes``). Eigen: ``eigen_batches`` batches,
    power iteration to ``eigen_tol`` relative change or ``eigen_iters`` steps per layer. ``loss``:
    the loss whose Hessian is probed (:class:`HessianLoss`), for both; ``estimator``
    (:class:`HessianEstimator`) for traces: ``exact`` uses every one of the ``batches`` and its
    standard error is the spread over batches.
    """

    batches: int = 16
    batch_size: int = 16
    probes_per_batch: int = 4
    min_probes: int = 16
    rel_se_tol: float = 0.1
    eigen_batches: int = 4
    eigen_iters: int = 100
    eigen_tol: float = 1e-3
    loss: HessianLoss = HessianLoss.TASK
    estimator: HessianEstimator = HessianEstimator.HUTCHINSON

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", coerce_enum(HessianLoss, self.loss, "hessian.loss"))  # frozen
        object.__setattr__(self, "estimator", coerce_enum(HessianEstimator, self.estimator, "hessian.estimator"))
        if self.estimator is HessianEstimator.EXACT and self.loss is not HessianLoss.TEACHER_KL:
            raise ValueError("hessian.estimator=exact computes the Gauss-Newton traces of hessian.loss=teacher_kl; "
                             f"hessian.loss={self.loss.value} has no such form (set hessian.loss=teacher_kl, or "
                             "hessian.estimator=hutchinson)")
        for f in ("batches", "batch_size", "probes_per_batch", "min_probes", "eigen_batches", "eigen_iters"):
            check_positive_int(getattr(self, f), f"hessian.{f}")
        check_positive(self.rel_se_tol, "hessian.rel_se_tol")
        check_positive(self.eigen_tol, "hessian.eigen_tol")

    @classmethod
    def coerce(cls, value: "HessianSettings | Mapping[str, Any]") -> "HessianSettings":
        return coerce_settings(cls, value, "hessian")


@register_pass("hawq")
@dataclass
class Hawq:
    """Mixed-precision (or uniform) n-bit weights for the targeted Linears, then QAT with KD.

    ``bits`` set: every target gets that width (no Hessian). Otherwise widths from ``choices``
    (1–8 bits, and 32 = keep fp32) are allocated by ``allocate`` from ``sensitivity`` under every
    budget that is set (at least one; ``allocate=random`` takes ``avg_bits`` alone):

    * ``avg_bits``: Σ nᵢbᵢ / Σ nᵢ over the targets' weights, in bits (fp32 counts as 32);
    * ``size_bytes``: Σ nᵢbᵢ / 8 over the targets, nominal weight bytes (no scales or zero points);
    * ``latency_limit``: a **fraction** of the all-fp32 time, i.e. Σᵢ tᵢ(bᵢ) ≤ latency_limit · Σᵢ tᵢ(32),
      where tᵢ(b) is the median time of target i's deployed MatMul (MatMulNBits at b bits, a plain
      MatMul at 32; bias excluded) on this machine at ``latency.batch`` × ``latency.seq`` rows,
      ``latency.threads`` (null: the run's, as ``cli`` pinned torch) and the deploy step's
      ``latency.accuracy_level`` (0.8 = at most 80% of the fp32 MatMuls' summed time). The table
      is measured (or read from this machine's cache, never another's) before any Hessian work
      (``bench/nbits_latency.py``). A width can be slower than fp32 (2 bits at accuracy_level 0 is
      dequantized to fp32 before an SGEMM).

    Every budget is checked for feasibility before the Hessian: :class:`~compresslab.ops.knapsack.
    InfeasibleBudgetError` (a ValueError) names the smallest achievable value. ValueError at
    construction for a budget that is not a finite number > 0, ``latency_limit`` or ``size_bytes``
    with ``bits`` or ``allocate=random``, no budget at all, or bad ``latency`` settings.

    ``couple_qkv`` gives Q, K and V of a layer one width. ``embedding_bits`` also quantizes the word
    embeddings (rows in blocks of ``block_size``, or whole rows; Q-BERT §4 keeps them at 8 bits;
    position and token-type embeddings stay fp32); they are outside the bit budget. ``recovery`` is
    the QAT (0 steps = post-training quantization).
    """

    bits: int | None = None
    avg_bits: float | None = 3.0
    size_bytes: float | None = None
    latency_limit: float | None = None
    choices: list[int] = field(default_factory=lambda: [2, 3, 4, 8, FP32])
    sensitivity: Sensitivity = Sensitivity.TRACE
    allocate: Allocate = Allocate.ILP
    group: Group = Group.BLOCK
    block_size: int = 64
    couple_qkv: bool = False
    embedding_bits: int | None = None
    hessian: HessianSettings = field(default_factory=HessianSettings)
    latency: NBitsTableSettings = field(default_factory=NBitsTableSettings)
    recovery: Recovery = field(default_factory=Recovery)
    targets: list[str] | None = None
    ignore: list[str] | None = None

    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = False
    quantizes_weights: ClassVar[bool] = True  # frozen n-bit weights: what ort_matmul_nbits deploys
    name: ClassVar[str]

    def __post_init__(self) -> None:
        self.sensitivity = coerce_enum(Sensitivity, self.sensitivity, "sensitivity")
        self.allocate = coerce_enum(Allocate, self.allocate, "allocate")
        self.group = coerce_enum(Group, self.group, "group")
        self.hessian = HessianSettings.coerce(self.hessian)
        self.latency = NBitsTableSettings.coerce(self.latency)
        if self.sensitivity is Sensitivity.EIGEN and self.hessian.estimator is HessianEstimator.EXACT:
            raise ValueError("hessian.estimator=exact estimates traces; sensitivity=eigen runs power iteration on HVPs "
                             "(set sensitivity=trace, or hessian.estimator=hutchinson)")
        self.recovery = Recovery.coerce(self.recovery)
        check_bools(self, "couple_qkv")
        check_positive_int(self.block_size, "block_size")
        self.targets = check_patterns(self.targets, "targets")
        self.ignore = check_patterns(self.ignore, "ignore")
        if isinstance(self.choices, (str, int)) or not self.choices:
            raise ValueError(f"choices must be a non-empty list of widths (1-8, or 32 = fp32), got {self.choices!r}")
        self.choices = sorted({check_bits(c, "choices") if c != FP32 else FP32 for c in self.choices})
        if self.embedding_bits is not None:
            self.embedding_bits = check_bits(self.embedding_bits, "embedding_bits")
        self.size_bytes = _budget(self.size_bytes, "size_bytes", "nominal weight bytes sum(n_i b_i) / 8")
        self.latency_limit = _budget(self.latency_limit, "latency_limit",
                                     "a fraction of the all-fp32 MatMul time on this machine, e.g. 0.8")
        if self.bits is not None:
            self.bits = check_bits(self.bits, "bits")
            extra = [k for k in ("size_bytes", "latency_limit") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"bits={self.bits} is one uniform width, so the budget(s) {extra} have nothing to "
                                 "allocate: unset bits (bits=null) to allocate widths under them")
            return
        if self.allocate is Allocate.RANK and len(self.choices) != 2:
            raise ValueError(f"allocate=rank is Q-BERT's two-width rule (e.g. choices=[2, 3] for MP 2/3); "
                             f"got choices={self.choices} (use allocate=ilp for more widths)")
        if self.allocate is Allocate.RANDOM and (self.size_bytes is not None or self.latency_limit is not None):
            raise ValueError("allocate=random is the control at an average-bits budget only; unset size_bytes and "
                             "latency_limit, or use allocate=ilp")
        if self.avg_bits is None and self.size_bytes is None and self.latency_limit is None:
            raise ValueError("no budget: set avg_bits (bits per weight), size_bytes, or latency_limit (a fraction of "
                             "the all-fp32 MatMul time), or bits= for one uniform width")
        if self.avg_bits is None:
            if self.allocate is Allocate.RANDOM:
                raise ValueError("allocate=random needs avg_bits (the control draws maps at that average)")
            return
        self.avg_bits = _budget(self.avg_bits, "avg_bits", "bits per weight; or set bits= for uniform")
        if self.avg_bits < min(self.choices):
            raise ValueError(f"avg_bits={self.avg_bits:g} is below the smallest achievable average "
                             f"{min(self.choices)} (every Linear at the lowest of choices={self.choices})")
        if self.allocate is Allocate.RANDOM and self.avg_bits - RANDOM_TOL > max(self.choices):
            raise ValueError(f"allocate=random draws maps whose average bits lie in [avg_bits - {RANDOM_TOL:g}, "
                             f"avg_bits]; avg_bits={self.avg_bits:g} is above the largest achievable average "
                             f"{max(self.choices)} (every Linear at the highest of choices={self.choices})")

    def check_deployable(self) -> None:
        """The layout MatMulNBits can hold (called by ``ort_matmul_nbits`` before any work): blocks of
        ``block_size`` deploy with the largest power of two in [16, 256] dividing it; without one every
        Linear would stay fp32 in the deployed graph. ValueError naming ``block_size``."""
        from compresslab.export.nbits_pack import ORT_BLOCKS, deployable_block

        if self.group is Group.BLOCK and deployable_block(self.block_size) is None:
            raise ValueError(f"hawq block_size={self.block_size} cannot be deployed by MatMulNBits, whose blocks are "
                             f"{sorted(ORT_BLOCKS)} (a block must be a multiple of one of them); choose one of "
                             f"those, or group=row")

    def check_model(self, model: nn.Module) -> None:
        """Checks against the model before any step runs (called with the loaded model when only
        shape-preserving steps come before this one): ``targets`` / ``ignore`` select Linears and every
        group fits its weight (``block_size`` divides the input dimension). ValueError naming them."""
        try:
            modules = select_modules(model, self.targets, self.ignore)
            for n, m in modules.items():
                check_group(m.weight.shape, *self.group_shape(model, m), name=n)
        except ValueError as e:
            raise ValueError(f"hawq: {e}") from None

    def sequence_lengths(self) -> dict[str, int]:
        """Setting (under this step) -> tokens per row: the latency table's shape, used only under a
        ``latency_limit`` (a budget priced at a length the model cannot run holds on paper only)."""
        return {"latency.seq": self.latency.seq} if self.latency_limit is not None else {}

    def check(self, task: Any) -> None:
        """The Hessian and QAT need a labelled train split."""
        from compresslab.data.schema import TaskKind

        needs_data = self.bits is None and self.allocate is not Allocate.RANDOM
        if needs_data and task.spec.kind is TaskKind.EMBEDDING:
            raise ValueError(f"hawq's Hessian needs a task loss; {task.spec.name!r} is an embedding task "
                             "(set bits= for uniform quantization)")
        if needs_data:
            n = len(task.require_train())
            if n < self.hessian.batch_size:
                raise ValueError(f"hessian.batch_size={self.hessian.batch_size} exceeds the train split ({n})")

    # ------------------------------------------------------------------ groups
    def group_shape(self, model: nn.Module, lin: nn.Linear) -> tuple[int, int]:
        """(block_size, group_rows) of one Linear under ``group``."""
        n, k = lin.weight.shape
        if self.group is Group.BLOCK:
            return self.block_size, 1
        if self.group is Group.ROW:
            return k, 1
        if self.group is Group.LAYER:
            return k, n
        heads = int(getattr(model.config, "num_attention_heads", getattr(model.config, "n_heads", 1)))
        return k, max(1, n // heads)

    # ------------------------------------------------------------------ apply
    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        modules = select_modules(model, self.targets, self.ignore)
        shapes = {n: self.group_shape(model, m) for n, m in modules.items()}
        for n, m in modules.items():  # every shape problem before the Hessian
            check_group(m.weight.shape, *shapes[n], name=n)
        embedding = self._embedding_spec(model)
        self.check(ctx.task)
        teacher = ctx.kd_teacher(model) if self.recovery.steps and self.recovery.uses_teacher else None
        metrics: dict[str, Any] = {"group": self.group.value, "block_size": self.block_size}
        if self.bits is not None:
            bits = {n: self.bits for n in modules}
            metrics["allocation"] = {"method": "uniform"}
        else:
            bits, record = self._allocate(model, ctx, modules, shapes)
            metrics.update(record)
        specs = {n: {"bits": b, "block_size": shapes[n][0], "group_rows": shapes[n][1]}
                 for n, b in bits.items() if b != FP32}
        quantize_modules(model, {**specs, **embedding})
        if self.recovery.steps:
            from compresslab.data.schema import TaskKind

            # step-level checkpoints: a stopped QAT resumes where it was (the allocation before it is
            # deterministic and the sensitivity cached); removed once the frozen model is returned
            ckpt = ctx.step_dir / "qat_checkpoint"
            res = recover(model, ctx.train_loader(), self.recovery, teacher,
                          embedding=ctx.task.spec.kind is TaskKind.EMBEDDING, batch_size=ctx.batch_size,
                          seed=ctx.seed, progress=ctx.progress, desc="hawq QAT", device=ctx.device,
                          checkpoint_dir=str(ckpt), checkpoint_every=QAT_CHECKPOINT_EVERY)
            metrics["qat"] = {**res.to_dict(), "steps": self.recovery.steps, "lr": self.recovery.lr,
                              "ranges": "dynamic (recomputed from w every forward), frozen after QAT"}
        freeze_all(model)
        model.eval()
        if self.recovery.steps:
            import shutil

            shutil.rmtree(ctx.step_dir / "qat_checkpoint", ignore_errors=True)
        metrics["avg_bits"] = round(average_bits(model, list(modules)), 4)
        metrics["bits"] = {n: bits[n] for n in modules}
        metrics["bits_per_layer"] = _per_layer(model, bits)
        if embedding:
            metrics["embedding"] = embedding
        specs.update(embedding)
        if specs:  # the report's Size table: the dense fp32 checkpoint and the packed one (real n-bit bytes)
            from compresslab.checkpoint.packed import packed_sizes

            ps = packed_sizes(model)
            metrics["size"] = {k: {"encoder": ps[k]["encoder"], "total": ps[k]["file"]}
                               for k in ("fp32", "packed_nbits")}
        # the packed checkpoint stores codes at their nominal bits: the real n-bit size on disk
        return PassResult(metrics=metrics, structure={"quant": specs}, formats=["packed_nbits"] if specs else [])

    def _embedding_spec(self, model: nn.Module) -> dict[str, dict[str, int]]:
        """{qualified name: spec} of the word embeddings under ``embedding_bits`` ({} when unset)."""
        if self.embedding_bits is None:
            return {}
        emb = model.get_input_embeddings()
        name = next(n for n, m in model.named_modules() if m is emb)
        dim = emb.weight.shape[1]
        block = self.block_size if dim % self.block_size == 0 else dim
        return {name: {"bits": self.embedding_bits, "block_size": block, "group_rows": 1}}

    def _allocate(self, model: nn.Module, ctx: PassContext, modules: Mapping[str, nn.Linear],
                  shapes: Mapping[str, tuple[int, int]]) -> tuple[dict[str, int], dict[str, Any]]:
        from compresslab.quant.allocate import allocate_bits, qkv_groups, random_allocation

        numel = {n: m.weight.numel() for n, m in modules.items()}
        couple = [[n for n in g if n in modules] for g in qkv_groups(model)] if self.couple_qkv else []
        couple = [g for g in couple if len(g) > 1]
        record: dict[str, Any] = {}
        if self.allocate is Allocate.RANDOM:
            bits = random_allocation(numel, avg_bits=self.avg_bits, choices=self.choices, seed=ctx.seed,
                                     couple=couple, tol=RANDOM_TOL)
            record["allocation"] = {"method": "random", "seed": ctx.seed, "budget_avg_bits": self.avg_bits}
            return dict(bits), record
        if self.sensitivity is Sensitivity.EIGEN:  # Q-BERT allocates per layer: couple a layer's Linears
            keys = layer_keys(model, modules)
            by_layer: dict[str, list[str]] = {}
            for n in modules:
                by_layer.setdefault(keys[n], []).append(n)
            couple = [g for g in by_layer.values() if len(g) > 1]
        # the latency table and every budget's feasibility before the Hessian (minutes on MiniLM)
        latency, limit_s = None, None
        if self.latency_limit is not None:
            latency, record["latency"] = self._latency_table(modules, shapes, ctx)
            limit_s = record["latency"]["limit_s"]
        self._check_feasible(numel, couple, latency, limit_s)
        sens, srec = self._sensitivity(model, ctx, modules)
        record["sensitivity"] = srec
        t0 = time.perf_counter()
        errors = {n: {b: (0.0 if b == FP32 else quant_error(m.weight, b, *shapes[n])) for b in self.choices}
                  for n, m in modules.items()}
        alloc = allocate_bits(sens, errors, numel, choices=self.choices, avg_bits=self.avg_bits,
                              size_bytes=self.size_bytes, latency=latency, latency_limit=limit_s, couple=couple,
                              method=self.allocate.value)
        record["allocation"] = {**alloc.to_dict(), "budget_avg_bits": self.avg_bits,
                                "budget_size_bytes": self.size_bytes, "budget_latency_limit": self.latency_limit,
                                "solve_s": round(time.perf_counter() - t0, 3), "coupled_groups": len(couple)}
        if latency is not None and alloc.latency is not None:
            fp32 = record["latency"]["fp32_total_s"]
            record["latency"].update(predicted_s=alloc.latency, predicted_relative=alloc.latency / fp32)
        return dict(alloc.bits), record

    def _latency_table(self, modules: Mapping[str, nn.Linear], shapes: Mapping[str, tuple[int, int]],
                       ctx: PassContext) -> tuple[dict[str, dict[int, float]], dict[str, Any]]:
        """The table (seconds per target and width in ``choices``) and its record: where it came from
        (``source`` measured / cached, the hardware ``fingerprint``), the fp32 total, the budget in
        seconds. Measured with fp32 too, whatever ``choices``: the limit is relative to it."""
        from compresslab.bench.nbits_latency import build_nbits_table
        from compresslab.bench.table_cache import stable_hash

        # (in_features, out_features, quantization block along the input) per target
        lin = {n: (int(m.weight.shape[1]), int(m.weight.shape[0]), int(shapes[n][0])) for n, m in modules.items()}
        widths = sorted({*self.choices, FP32})
        settings = self.latency
        if settings.threads is None:  # the run's threads: cli.setup_process pinned torch to run.threads
            settings = dataclasses.replace(settings, threads=torch.get_num_threads())
        table, info = build_nbits_table(lin, widths, settings, cache_dir=ctx.cache_dir)
        fp32 = sum(t[FP32] for t in table.values())
        if not fp32 > 0:
            raise ValueError(f"the n-bit latency table's all-fp32 total is {fp32!r} s: cannot take latency_limit="
                             f"{self.latency_limit:g} as a fraction of it (delete its cache file to re-measure)")
        env = info["fingerprint"]
        load = info.get("machine_load") or {}
        record = {
            "source": info["source"], "cache_file": info.get("cache_file"), "unit": "s",
            "fingerprint": {k: env.get(k) for k in ("cpu.model", "cpu.isa", "libraries.onnxruntime", "threads")},
            "fingerprint_hash": stable_hash(env),
            "settings": {k: env.get(k) for k in ("batch", "seq", "accuracy_level", "provider")},
            "limit": self.latency_limit, "limit_unit": "fraction of the all-fp32 summed MatMul time of the targets",
            "fp32_total_s": fp32, "limit_s": self.latency_limit * fp32,
            "entries_ms": {k: v["p50_ms"] for k, v in (info.get("entries_ms") or {}).items()},
            "machine_load": {"busy": bool(load.get("busy")), "reasons": list(load.get("reasons") or [])},
        }
        return {n: {b: t[b] for b in self.choices} for n, t in table.items()}, record

    def _check_feasible(self, numel: Mapping[str, int], couple: list[list[str]],
                        latency: Mapping[str, Mapping[int, float]] | None, limit_s: float | None) -> None:
        """Refuse, before the Hessian, budgets that no map meets: the same integer program with a zero
        objective (couplings included). InfeasibleBudgetError naming each budget's smallest achievable
        value, the latency one as a fraction of the fp32 time (the unit ``latency_limit`` is given in)."""
        from compresslab.ops.knapsack import InfeasibleBudgetError
        from compresslab.quant.allocate import allocate_bits

        zero = {n: 0.0 for n in numel}
        try:
            allocate_bits(zero, {n: {b: 0.0 for b in self.choices} for n in numel}, numel, choices=self.choices,
                          avg_bits=self.avg_bits, size_bytes=self.size_bytes, latency=latency,
                          latency_limit=limit_s, couple=couple, method="ilp")
        except InfeasibleBudgetError as e:
            raise InfeasibleBudgetError(_infeasible(e, self.latency_limit, limit_s, self.choices),
                                        e.smallest, e.limits) from None

    def _sensitivity(self, model: nn.Module, ctx: PassContext,
                     modules: Mapping[str, nn.Linear]) -> tuple[dict[str, float], dict[str, Any]]:
        """Ω per Linear (≥ 0) and the record of how it was estimated.

        Cached under ``ctx.cache_dir/hessian`` by content (every parameter of the model, the
        settings, the seed, the train data seen), so a sweep over budgets pays for the Hessian once.
        """
        path = _cache_path(ctx, model, modules, self.sensitivity.value, self.hessian)
        if path is not None and path.is_file():
            from compresslab.manifest import read_json

            cached = read_json(path)
            return cached["omega"], {**cached["record"], "cached": str(path)}
        omega, record = self._estimate(model, ctx, modules)
        if path is not None:
            from compresslab.manifest import atomic_write_json

            atomic_write_json(path, {"omega": omega, "record": record})
        return omega, record

    def _estimate(self, model: nn.Module, ctx: PassContext,
                  modules: Mapping[str, nn.Linear]) -> tuple[dict[str, float], dict[str, Any]]:
        from compresslab.quant.sensitivity import fisher_traces, layer_eigenvalues, linear_traces
        from compresslab.training.losses import task_loss, teacher_kl_loss

        h = self.hessian
        loss_fn = teacher_kl_loss if h.loss is HessianLoss.TEACHER_KL else task_loss
        before = next(model.parameters()).device
        model.to(ctx.device)
        try:
            loader = ctx.train_loader(batch_size=h.batch_size, shuffle=True)
            to_dev = lambda b: {k: v.to(ctx.device) for k, v in b.items()}  # noqa: E731
            if self.sensitivity is Sensitivity.TRACE:
                batches = [to_dev(b) for b in itertools.islice(loader, h.batches)]
            if self.sensitivity is Sensitivity.TRACE and h.estimator is HessianEstimator.EXACT:
                res = fisher_traces(model, batches, list(modules), max_batches=h.batches, rel_se_tol=h.rel_se_tol,
                                    seed=ctx.seed, progress=ctx.progress)
                raw = {n: float(v) for n, v in res.avg_traces().items()}
                record = {"method": "trace", "loss": h.loss.value, "estimator": h.estimator.value, **res.to_dict()}
            elif self.sensitivity is Sensitivity.TRACE:
                res = linear_traces(model, batches, list(modules), probes_per_batch=h.probes_per_batch,
                                    max_batches=h.batches, min_probes=h.min_probes, rel_se_tol=h.rel_se_tol,
                                    seed=ctx.seed, loss_fn=loss_fn, progress=ctx.progress)
                raw = {n: float(v) for n, v in res.avg_traces().items()}
                record = {"method": "trace", "loss": h.loss.value, **res.to_dict()}
            else:
                batches = [to_dev(b) for b in itertools.islice(loader, h.eigen_batches)]
                res = layer_eigenvalues(model, batches, max_batches=h.eigen_batches, max_iter=h.eigen_iters,
                                        tol=h.eigen_tol, seed=ctx.seed, loss_fn=loss_fn)
                layer_of = {n: layer for layer in res["layers"] for n in layer["names"]}
                missing = [n for n in modules if n not in layer_of]
                if missing:
                    raise ValueError(f"sensitivity=eigen covers the encoder layers' Linears only; {missing[:3]} "
                                     "are outside them (use sensitivity=trace, or ignore= them)")
                raw = {n: float(layer_of[n]["omega"]) for n in modules}
                record = {"method": "eigen", "loss": h.loss.value, **res}
        finally:
            model.to(before)
        negative = sorted(n for n, v in raw.items() if v < 0)
        if negative:  # a negative curvature estimate is a signal (unconverged fine-tuning), not a bug
            record["negative_clamped_to_0"] = negative
        return {n: max(0.0, v) for n, v in raw.items()}, record


def _infeasible(e: Any, limit: float | None, limit_s: float | None, choices: list[int]) -> str:
    """The message of an infeasible budget in the units the settings use (the latency as a fraction
    of the all-fp32 time and in ms on this machine)."""
    if limit is None or limit_s is None or "latency" not in e.smallest:
        return f"hawq: {e} (choices={choices})"
    fp32 = limit_s / limit
    least = e.smallest["latency"]
    parts = []
    if least > limit_s * (1 + 1e-9):
        parts.append(f"latency_limit={limit:g} ({1e3 * limit_s:.4g} ms; 1.0 = {1e3 * fp32:.4g} ms, every target "
                     f"fp32) is below the smallest achievable {least / fp32:.4g} ({1e3 * least:.4g} ms) with "
                     f"choices={choices} on this machine")
    label = {"avg_bits": "avg_bits", "size_bytes": "size_bytes"}
    parts += [f"{label[k]}={e.limits[k]:g} is below the smallest achievable {e.smallest[k]:g}"
              for k in label if k in e.limits and e.smallest[k] > e.limits[k] * (1 + 1e-9)]
    if not parts:
        achievable = {k: round(v / fp32, 4) if k == "latency" else v for k, v in e.smallest.items()}
        parts.append(f"the budgets are each achievable alone but not together (smallest achievable: {achievable}, "
                     "latency as a fraction of the all-fp32 time)")
    return "hawq: " + "; ".join(parts)


def _budget(value: Any, name: str, unit: str) -> float | None:
    """``value`` as a float, None when unset; ValueError naming ``name`` and its ``unit`` unless it is a
    finite number > 0 (a bool, a string, nan, inf, 0 or a negative are refused at settings time)."""
    if value is None:
        return None
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number ({unit}), got {value!r}")
    return float(value)


def _cache_path(ctx: PassContext, model: nn.Module, modules: Mapping[str, nn.Linear], method: str,
                settings: HessianSettings) -> "Path | None":
    """Where a sensitivity of this exact model, data and setting is cached (None: no cache dir)."""
    if ctx.cache_dir is None:
        return None
    import hashlib
    import json

    from compresslab.manifest import examples_sha256, state_dict_sha256, tokenizer_sha256

    h = hashlib.sha256(state_dict_sha256(model).encode())
    # every train example by content (the Hessian batches are drawn from all of them, not a count)
    # and the tokenizer that turns them into ids
    h.update(json.dumps({"method": method, "settings": dataclasses.asdict(settings), "seed": ctx.seed,
                         "modules": list(modules), "max_length": ctx.max_length,
                         "train": examples_sha256(ctx.task.train), "tokenizer": tokenizer_sha256(ctx.tokenizer)},
                        sort_keys=True).encode())
    return Path(ctx.cache_dir) / "hessian" / f"{h.hexdigest()[:20]}.json"


def _per_layer(model: nn.Module, bits: Mapping[str, int]) -> dict[str, list[int]]:
    keys = layer_keys(model, bits)
    out: dict[str, list[int]] = {}
    for n, b in bits.items():
        out.setdefault(keys[n], []).append(b)
    return out


__all__ = ["Allocate", "Group", "Hawq", "HessianEstimator", "HessianLoss", "HessianSettings", "Sensitivity"]
