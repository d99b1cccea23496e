"""The ``hawq`` pass's settings and the budget checks that run before its Hessian.

:class:`HawqSettings` holds every field of :class:`compresslab.passes.hawq.Hawq` (the pass subclasses
it, as the structured passes subclass ``pruning.speedup.SpeedupSettings``), validates them on
construction, and refuses budgets no bit map can meet before any Hessian work: the latency table
of ``latency_limit`` (``bench/nbits_latency.py``) and the zero-objective integer program of every
budget (average bits, ``size_bytes``, ``latency_limit``). Apart from the pass's sensitivity,
allocation and QAT (``passes/hawq.py``) so that neither module carries both jobs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from compresslab.bench.nbits_latency import NBitsTableSettings
from compresslab.ops.quant import MAX_BITS, MIN_BITS, check_bits
from compresslab.targets import assign, check_patterns, check_rules
from compresslab.training.recovery import Recovery
from compresslab.validate import (check_bools, check_positive, check_positive_int, coerce_block, coerce_enum,
                                  is_int, is_number, typed_settings)

FP32 = 32  # the "keep fp32" choice
RANDOM_TOL = 0.05  # allocate=random: average bits in [avg_bits - RANDOM_TOL, avg_bits] (random_allocation's tol)


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


@typed_settings("hessian")
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

    # 128 x 4 = 512 shared probes: at 64 (16 batches) the bit map moved with the seed (benchmarks/results/
    # hessian_probes_grouped500.json: 36 % of Linears kept their width between seeds, random maps 31 %; PTQ MP-3
    # 0.879 +- 0.010); at 512, 65 % and 0.889 +- 0.003, in ~270 s on 2 cores (issue 10's bar: 300 s)
    batches: int = 128
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


@dataclass
class HawqSettings:
    """The ``hawq`` pass's settings: mixed-precision (or uniform) n-bit weights for the targeted
    Linears, then QAT with KD.

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

    ``rules``: ``{pattern: width}`` (patterns as ``targets``: names, suffixes, globs, roles, ``re:``;
    :func:`compresslab.targets.assign`) pins those targeted Linears' widths; 32 keeps them fp32. With
    an allocation the width must be one of ``choices`` and the allocator picks the other widths under
    the budgets, which count the pinned Linears at their widths (averages, bytes and latency are over
    all targets). With ``bits`` the pinned Linears keep their width and the rest get ``bits`` (any
    width 1–8 or 32 then). With ``couple_qkv`` a pinned Q, K or V pins its layer's three; two of them
    pinned to different widths is an error. Under ``sensitivity=eigen`` (one width per layer) pinned
    Linears leave their layer's group and the rest of the layer still shares one width. ValueError at
    construction for a malformed mapping or a width not allowed (naming the rule); before any step, a
    pattern matching no target, or two patterns giving one Linear different widths.
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
    rules: dict[str, int] | None = None

    def __post_init__(self) -> None:
        self.sensitivity = coerce_enum(Sensitivity, self.sensitivity, "sensitivity")
        self.allocate = coerce_enum(Allocate, self.allocate, "allocate")
        self.group = coerce_enum(Group, self.group, "group")
        self.hessian = coerce_block(self, "hessian", HessianSettings)
        self.latency = coerce_block(self, "latency", NBitsTableSettings)
        if self.sensitivity is Sensitivity.EIGEN and self.hessian.estimator is HessianEstimator.EXACT:
            raise ValueError("hessian.estimator=exact estimates traces; sensitivity=eigen runs power iteration on HVPs "
                             "(set sensitivity=trace, or hessian.estimator=hutchinson)")
        self.recovery = coerce_block(self, "recovery", Recovery)
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
        self.rules = self._check_rules()
        if self.bits is not None:
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

    def _check_rules(self) -> dict[str, int] | None:
        """``rules`` as a plain dict of widths; ValueError naming the rule whose width is not an integer in
        ``choices`` (with an allocation) or in [1, 8] / 32 (with ``bits``)."""
        rules = check_rules(self.rules, "rules")
        for pattern, width in (rules or {}).items():
            ok = is_int(width) and (
                width in self.choices if self.bits is None else (MIN_BITS <= width <= MAX_BITS or width == FP32))
            if not ok:
                allowed = (f"one of choices={self.choices} (add it to choices, or change the rule)"
                           if self.bits is None else f"an integer in [{MIN_BITS}, {MAX_BITS}], or {FP32} to keep fp32")
                raise ValueError(f"rules[{pattern!r}] = {width!r}: the pinned width must be {allowed}")
        return {p: int(w) for p, w in rules.items()} if rules else None

    def rule_widths(self, model: nn.Module, modules: Mapping[str, nn.Linear]) -> dict[str, int]:
        """Targeted Linear -> the width ``rules`` pins it to ({} without rules), in model order. ValueError
        (prefixed ``hawq:``) for a pattern matching no Linear or only Linears outside ``modules`` (the
        targets), and for two patterns giving one Linear different widths (:func:`~compresslab.targets.assign`)."""
        if self.rules is None:
            return {}
        try:
            return assign(model, self.rules, among=modules, field_name="rules")
        except ValueError as e:
            raise ValueError(f"hawq: {e}") from None

    def check_deployable(self) -> None:
        """The layout MatMulNBits can hold (called by ``ort_matmul_nbits`` before any work): blocks of
        ``block_size`` deploy with the largest power of two in [16, 256] dividing it; without one every
        Linear would stay fp32 in the deployed graph. ValueError naming ``block_size``."""
        from compresslab.export.nbits_pack import ORT_BLOCKS, deployable_block

        if self.group is Group.BLOCK and deployable_block(self.block_size) is None:
            raise ValueError(f"hawq block_size={self.block_size} cannot be deployed by MatMulNBits, whose blocks are "
                             f"{sorted(ORT_BLOCKS)} (a block must be a multiple of one of them); choose one of "
                             f"those, or group=row")

    def check_accuracy_level(self, accuracy_level: int) -> None:
        """The deploy step's MatMulNBits ``accuracy_level`` against the one ``latency_limit`` was priced at
        (called by ``ort_matmul_nbits`` before any work): a budget priced at another level would be met on paper
        only. Without ``latency_limit`` no budget depends on it. ValueError naming ``latency.accuracy_level``."""
        if self.latency_limit is not None and self.latency.accuracy_level != accuracy_level:
            raise ValueError(f"hawq latency.accuracy_level={self.latency.accuracy_level} prices its latency_limit on "
                             f"MatMulNBits at another accuracy_level than the deploy step's (accuracy_level="
                             f"{accuracy_level}); set both to the same value")

    def recovery_settings(self) -> Recovery:
        """The QAT, a KD recovery of the fake-quant model (the ``recovery_settings`` hook): the pipeline asks it
        whether a teacher must be made before this step (pipeline/plan.py needs_teacher)."""
        return self.recovery

    def sequence_lengths(self) -> dict[str, int]:
        """Setting (under this step) -> tokens per row: the latency table's shape, used only under a
        ``latency_limit`` (a budget priced at a length the model cannot run holds on paper only)."""
        return {"latency.seq": self.latency.seq} if self.latency_limit is not None else {}

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

    # ------------------------------------------------------------------ budgets (before the Hessian)
    def latency_table(self, modules: Mapping[str, nn.Linear], shapes: Mapping[str, tuple[int, int]],
                      cache_dir: str | Path | None) -> tuple[dict[str, dict[int, float]], dict[str, Any]]:
        """The table (seconds per target and width in ``choices``) and its record: where it came from
        (``source`` measured / cached, the hardware ``fingerprint``), the fp32 total, the budget in
        seconds. Measured with fp32 too, whatever ``choices``: the limit is relative to it. A table measured
        once is kept on the pass for the same shapes and settings: the step reads the one its preflight measured
        (``check_planned``) even where it could not be cached (a busy machine; ``compress()``: no cache dir)."""
        from compresslab.bench.nbits_latency import build_nbits_table
        from compresslab.bench.table_cache import stable_hash

        # (in_features, out_features, quantization block along the input) per target
        lin = {n: (int(m.weight.shape[1]), int(m.weight.shape[0]), int(shapes[n][0])) for n, m in modules.items()}
        widths = sorted({*self.choices, FP32})
        settings = self.latency
        if settings.threads is None:  # the run's threads: cli.setup_process pinned torch to run.threads
            settings = dataclasses.replace(settings, threads=torch.get_num_threads())
        key = stable_hash([lin, widths, dataclasses.asdict(settings)])
        kept = self.__dict__.setdefault("_measured_tables", {})  # not a field: no setting, not in the identity
        if key not in kept:
            kept[key] = build_nbits_table(lin, widths, settings, cache_dir=cache_dir)
        table, info = kept[key]
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

    def check_feasible(self, numel: Mapping[str, int], couple: list[list[str]],
                       latency: Mapping[str, Mapping[int, float]] | None, limit_s: float | None,
                       pinned: Mapping[str, int] | None = None) -> None:
        """Refuse, before the Hessian, budgets that no map meets: the same integer program with a zero
        objective (couplings and the ``pinned`` widths included). InfeasibleBudgetError naming each
        budget's smallest achievable value, the latency one as a fraction of the fp32 time (the unit
        ``latency_limit`` is given in), and the pins."""
        from compresslab.ops.knapsack import InfeasibleBudgetError
        from compresslab.quant.allocate import allocate_bits

        zero = {n: 0.0 for n in numel}
        try:
            allocate_bits(zero, {n: {b: 0.0 for b in self.choices} for n in numel}, numel, choices=self.choices,
                          avg_bits=self.avg_bits, size_bytes=self.size_bytes, latency=latency,
                          latency_limit=limit_s, couple=couple, method="ilp", pinned=pinned)
        except InfeasibleBudgetError as e:
            raise InfeasibleBudgetError(_infeasible(e, self.latency_limit, limit_s, self.choices, pinned or {}),
                                        e.smallest, e.limits) from None


def _infeasible(e: Any, limit: float | None, limit_s: float | None, choices: list[int],
                pinned: Mapping[str, int]) -> str:
    """The message of an infeasible budget in the units the settings use (the latency as a fraction
    of the all-fp32 time and in ms on this machine); ``allocate_bits``' own message names the pins,
    and the latency form says how many Linears ``rules`` pinned."""
    if limit is None or limit_s is None or "latency" not in e.smallest:
        return f"hawq: {e} (choices={choices})"
    if pinned:
        shown = ", ".join(f"{n}: {b}" for n, b in list(pinned.items())[:10])
        more = f", and {len(pinned) - 10} more" if len(pinned) > 10 else ""
        note = f" ({len(pinned)} Linear(s) pinned by rules, counted at their widths: {{{shown}{more}}})"
    else:
        note = ""
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
    return "hawq: " + "; ".join(parts) + note


def _budget(value: Any, name: str, unit: str) -> float | None:
    """``value`` as a float, None when unset; ValueError naming ``name`` and its ``unit`` unless it is a
    finite number > 0 (a bool, a string, nan, inf, 0 or a negative are refused at settings time)."""
    if value is None:
        return None
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number ({unit}), got {value!r}")
    return float(value)


__all__ = ["FP32", "RANDOM_TOL", "Allocate", "Group", "HawqSettings", "HessianEstimator", "HessianLoss",
           "HessianSettings", "Sensitivity"]
