"""``bibert``: a fully binarized encoder, W1E1A1 (BiBERT, Qin et al., ICLR 2022; ALGORITHMS.md §3).

student = a copy of the fine-tuned teacher -> every encoder Linear, the pooler and the word
embeddings become binary (``models/binary.py``: rows centred, sign, α = row mean |w|; activations
sign; the STEs of §3.2), attention becomes Bi-Attention (``bool`` of the masked binarized scores, no
softmax) -> distillation through the one training loop with BiBERT's losses (§3.3): prediction
(soft cross-entropy + 0.5·CE), hidden states (normalized, every layer) and direction-matching KD on
the pre-sign Q, K, V similarity patterns, through the shared KD recovery (``training.recover`` with
these losses; its ``recovery`` block as every distilling pass has) -> the weights that score best on
the **validation** split (never dev; the binarized weights before the first step are a candidate too)
-> frozen (α in float16, sign ties 0 → +1) and written 1-bit packed.

The ablations and the naive baseline are settings, not code: ``attention=softmax`` (binarized
Q/K/V, softmax kept in full precision), ``dmd_weight=0``, and ``prediction=logit_kd`` with
``recovery.hidden_weight=0, dmd_weight=0`` (logit KD only).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from compresslab.ops.binary import TIES
from compresslab.models.binary import binarize_model, binary_modules, default_targets, freeze_binary
from compresslab.registry import register_pass
from compresslab.training.recovery import Recovery
from compresslab.types import PassContext, PassResult, Stage
from compresslab.validate import (
    check_bools, check_finite_nonnegative, check_fraction, check_loss_weight, check_positive_int, coerce_block, coerce_enum)

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 200  # optimizer steps between step checkpoints (model, optimizer, scheduler, RNG, data)

# BiBERT's flat settings before its ``recovery`` block (design review 7), old key -> the ``recovery`` field now.
# The run identity still sees them flat (``identity_settings``), so runs made before keep their hashes.
MOVED_TO_RECOVERY: Mapping[str, str] = MappingProxyType({
    "steps": "steps", "lr": "lr", "hidden_weight": "hidden_weight", "temperature": "temperature",
    "eval_every": "select_every", "eval_examples": "select_examples"})
# the LR grid winner on MiniLM (benchmarks/RESULTS.md); BiBERT-base used 1e-4 for 10 epochs. hidden_weight: the
# normalized hidden-state KD; temperature: prediction=logit_kd only (BiBERT's own prediction loss uses T = 1)
RECOVERY = Recovery(steps=1000, lr=1e-3, hidden_weight=1.0, temperature=2.0, select_every=500)


class Attention(str, Enum):
    """Bi-Attention (``bool`` of the masked binarized scores) or softmax kept (the ablation)."""

    BOOL = "bool"
    SOFTMAX = "softmax"


class Prediction(str, Enum):
    """BiBERT's prediction loss (soft CE at T = 1 + ``label_weight``·CE) or sparseml-style logit KD."""

    BIBERT = "bibert"
    LOGIT_KD = "logit_kd"


@register_pass("bibert")
@dataclass
class BiBert:
    """Binarize weights, word embeddings and activations (W1E1A1), then distil from the teacher.

    Budget (``recovery``, the shared :class:`~compresslab.training.recovery.Recovery` block):
    ``recovery.steps`` optimizer steps of ``batch_size`` sequences of at most ``max_length`` tokens
    (null = the task's), peak ``recovery.lr`` with ``warmup_ratio`` linear warm-up then linear decay,
    AdamW with ``weight_decay`` (none on biases and LayerNorms). Before the first step, every
    ``recovery.select_every`` steps and at the last, the model is scored on (the first
    ``recovery.select_examples`` of) the validation split and the best weights are kept. A ``recovery`` mapping
    fills the keys it leaves out from BiBERT's own defaults (:data:`RECOVERY`: lr 1e-3, hidden-state KD on);
    a ``Recovery`` object is taken as it is, so build one with ``dataclasses.replace(bibert.RECOVERY, ...)``
    (``Recovery(steps=...)`` alone carries the generic lr 5e-5 and no hidden-state KD).
    ``ties``: sign of an exact 0 while training: ``plus`` (0 → +1, as the frozen model deploys; default)
    or ``zero`` (``torch.sign``, the reference code: the frozen model then differs where a zero
    occurs, often at the output projection, whose input ``A·sign(V)`` is an integer). Losses:
    ``prediction`` (+ ``label_weight``·CE for ``bibert``; ``logit_kd`` at ``recovery.temperature``),
    ``recovery.hidden_weight`` × normalized hidden-state KD, ``dmd_weight`` × direction-matching KD (0 turns
    a term off); ``recovery.hardness`` is not used (the prediction loss is ``prediction``'s) and must stay 1.
    """

    attention: Attention = Attention.BOOL
    prediction: Prediction = Prediction.BIBERT
    label_weight: float = 0.5
    dmd_weight: float = 1.0
    embeddings: bool = True
    pooler: bool = True
    ties: str = "plus"
    batch_size: int = 16
    max_length: int | None = 64
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    recovery: Recovery = field(default_factory=lambda: RECOVERY)

    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = False
    # every loss is KD against the full-precision model: a plan with no teacher before it is refused
    # (pipeline.plan.check_teacher_made; the API's teacher check reads it too)
    needs_teacher: ClassVar[bool] = True
    # the model it returns is binary: deploy.check_deploy refuses bf16 for it on OpenVINO before training
    binarizes: ClassVar[bool] = True
    name: ClassVar[str]

    @classmethod
    def identity_settings(cls, node: dict[str, Any]) -> dict[str, Any]:
        """The run identity sees the ``recovery`` settings at their flat keys of before the block
        (:data:`MOVED_TO_RECOVERY`: ``recovery.select_every`` is ``eval_every``), so a run made before keeps
        its hash; a ``recovery`` key without an old one (``hardness``) stays under ``recovery``."""
        rec = node.get("recovery")
        if not isinstance(rec, dict):
            return node
        new_to_old = {new: old for old, new in MOVED_TO_RECOVERY.items()}
        out = {k: v for k, v in node.items() if k != "recovery"}
        out.update({new_to_old[k]: v for k, v in rec.items() if k in new_to_old})
        rest = {k: v for k, v in rec.items() if k not in new_to_old}
        return {**out, "recovery": rest} if rest else out

    def __post_init__(self) -> None:
        self.attention = coerce_enum(Attention, self.attention, "attention")
        self.prediction = coerce_enum(Prediction, self.prediction, "prediction")
        # {"steps": 300} keeps BiBERT's lr 1e-3 and select_every, not Recovery's 5e-5 and 0
        self.recovery = coerce_block(self, "recovery", Recovery)
        if self.ties not in TIES:
            raise ValueError(f"bibert.ties={self.ties!r}; allowed: 'plus' (train as deployed: 0 -> +1) or 'zero' "
                             f"(torch.sign, the reference code; the frozen model still maps 0 -> +1)")
        check_bools(self, "embeddings", "pooler")
        for f in ("label_weight", "dmd_weight"):  # the distillation losses' weights (hidden_weight: Recovery's)
            check_loss_weight(getattr(self, f), f"bibert.{f}")
        check_finite_nonnegative(self.weight_decay, "bibert.weight_decay")
        check_fraction(self.warmup_ratio, "bibert.warmup_ratio")  # of the steps: [0, 1)
        check_positive_int(self.batch_size, "batch_size")
        if self.max_length is not None:
            check_positive_int(self.max_length, "max_length")
        r = self.recovery
        if r.steps < 1 or r.select_every < 1:  # binarizing without training, or keeping the last weights: no BiBERT
            raise ValueError(f"bibert.recovery.steps={r.steps} and recovery.select_every={r.select_every} must be "
                             ">= 1: BiBERT always distils and keeps its best validation checkpoint")
        if r.hardness != 1.0:
            raise ValueError(f"bibert.recovery.hardness={r.hardness}: BiBERT's prediction loss is set by prediction "
                             "(bibert: soft CE + label_weight x CE; logit_kd: logit KD at recovery.temperature), "
                             "not by hardness; leave it at 1.0")

    def sequence_lengths(self) -> dict[str, int]:
        """The distillation's token length, checked against the model's position table before any work
        (pipeline/preflight.py, the ``sequence_lengths`` hook); None: the task's own max_length."""
        return {"max_length": self.max_length} if self.max_length is not None else {}

    def check(self, task: Any) -> None:
        """Distillation needs labelled train data and a validation split to select on."""
        from compresslab.data.schema import TaskKind, TaskNotSupportedError

        if task.spec.kind is TaskKind.EMBEDDING:
            raise TaskNotSupportedError(f"bibert distils logits; {task.spec.name!r} is an embedding task")
        n = len(task.require_train())
        if n < self.batch_size:
            raise ValueError(f"bibert.batch_size={self.batch_size} exceeds the train split ({n} examples); "
                             f"set bibert.batch_size<={n}")
        if not task.validation:
            raise ValueError("bibert selects its checkpoint on the validation split, and this task has none")
        self.recovery.check_task(task)

    def check_model(self, model: nn.Module) -> None:
        """Before any step runs: a supported architecture, fp32 weights (fp16/bf16 rounding creates
        spurious sign ties, §3.6), and nothing binarized already. ValueError naming the problem."""
        dtypes = {p.dtype for p in model.parameters()}
        if dtypes != {torch.float32}:
            raise ValueError(f"bibert trains in float32 (fp16/bf16 rounding creates spurious sign ties, ALGORITHMS "
                             f"§3.6); the model has parameters in {sorted(str(d) for d in dtypes)}: load it in float32")
        if binary_modules(model):
            raise ValueError("the model is already binarized")
        default_targets(model)  # UnsupportedArchitectureError for an architecture without an adapter

    def losses(self) -> list[Any]:
        """BiBERT's loss plug-ins (§3.3), which :func:`~compresslab.training.recovery.recover` trains with."""
        from compresslab.training.losses import DirectionMatchingKD, LogitKD, NormalizedHiddenKD, SoftCrossEntropyKD

        r = self.recovery
        out: list[Any] = [SoftCrossEntropyKD(label_weight=self.label_weight) if self.prediction is Prediction.BIBERT
                          else LogitKD(temperature=r.temperature)]
        if r.hidden_weight:
            out.append(NormalizedHiddenKD(weight=r.hidden_weight))
        if self.dmd_weight:
            out.append(DirectionMatchingKD(weight=self.dmd_weight))
        return out

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        from compresslab.checkpoint.packed_binary import binary_sizes
        from compresslab.training.recovery import recover

        self.check_model(model)
        self.check(ctx.task)
        teacher = ctx.kd_teacher(model)  # before the swap: the frozen fine-tuned model
        targets = default_targets(model, embeddings=self.embeddings, pooler=self.pooler)
        stamp = binarize_model(model, attention=self.attention.value, ties=self.ties, **targets)
        tctx = dataclasses.replace(ctx, max_length=self.max_length or ctx.max_length)  # training length only
        r = self.recovery
        checkpoints = ctx.step_dir / "train_checkpoint"
        cpu0 = time.process_time()
        # schedule: linear decay to 0 after warm-up; selection scores (the first select_examples of) validation at
        # the task's length with ctx's scorer, before the first step, every select_every steps and at the last
        res = recover(model, tctx.train_loader(batch_size=self.batch_size), r, teacher, losses=self.losses(),
                      schedule="linear", warmup_ratio=self.warmup_ratio, weight_decay=self.weight_decay,
                      batch_size=self.batch_size, seed=ctx.seed, progress=ctx.progress, desc="bibert",
                      device=ctx.device, checkpoint_dir=checkpoints, checkpoint_every=CHECKPOINT_EVERY,
                      validate=ctx.validation_score)
        cpu_s = time.process_time() - cpu0
        assert res.selection is not None  # select_every >= 1 (__post_init__)
        freeze_binary(model)
        # the frozen model on the same examples as the checks (select_examples: called as recover() calls it)
        frozen = ctx.validation_score(model, max_examples=r.select_examples)
        shutil.rmtree(checkpoints, ignore_errors=True)
        metrics: dict[str, Any] = {
            "variant": {"attention": self.attention.value, "prediction": self.prediction.value,
                        "hidden_weight": r.hidden_weight, "dmd_weight": self.dmd_weight,
                        "label_weight": self.label_weight},
            "train": {**{k: v for k, v in res.to_dict().items() if k != "selection"}, "batch_size": self.batch_size,
                      "lr": r.lr, "max_length": tctx.max_length, "cpu_s_this_session": round(cpu_s, 1),
                      "threads": torch.get_num_threads()},
            # recover()'s record (split, every, steps, best_step, best_score, history) and how many examples it scored
            "selection": {**res.selection, "examples": len(ctx.task.validation[:r.select_examples])},
            # the best trained model (ties as trained) and the frozen one (alpha in fp16, ties 0 -> +1)
            "validation_score": {"trained": res.selection["best_score"], "frozen": frozen,
                                 "trained_ties": self.ties},
            "binarized": {"linears": len(stamp["linears"]), "embeddings": stamp["embeddings"],
                          "attention": stamp["attention"]},
        }
        ps = binary_sizes(model)  # the report's Size table: fp32 dense vs the real 1-bit packed bytes
        metrics["size"] = {k: {"encoder": ps[k]["encoder"], "total": ps[k]["file"]} for k in ("fp32", "packed_binary")}
        return PassResult(metrics=metrics, structure={"binary": dict(stamp)},
                          formats=["packed_binary"])


__all__ = ["MOVED_TO_RECOVERY", "Attention", "BiBert", "Prediction"]
