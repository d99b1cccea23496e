"""``bibert``: a fully binarized encoder, W1E1A1 (BiBERT, Qin et al., ICLR 2022; ALGORITHMS.md §3).

student = a copy of the fine-tuned teacher -> every encoder Linear, the pooler and the word
embeddings become binary (``models/binary.py``: rows centred, sign, α = row mean |w|; activations
sign; the STEs of §3.2), attention becomes Bi-Attention (``bool`` of the masked binarized scores, no
softmax) -> distillation through the one training loop with BiBERT's losses (§3.3): prediction
(soft cross-entropy + 0.5·CE), hidden states (normalized, every layer) and direction-matching KD on
the pre-sign Q, K, V similarity patterns -> the weights that score best on the **validation** split
(never dev) -> frozen (α in float16, sign ties 0 → +1) and written 1-bit packed.

The ablations and the naive baseline are settings, not code: ``attention=softmax`` (binarized
Q/K/V, softmax kept in full precision), ``dmd_weight=0``, and ``prediction=logit_kd`` with
``hidden_weight=0, dmd_weight=0`` (logit KD only).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import nn

from compresslab.ops.binary import TIES
from compresslab.models.binary import binarize_model, binary_modules, default_targets, freeze_binary
from compresslab.registry import register_pass
from compresslab.types import PassContext, PassResult, Stage
from compresslab.validate import (
    check_bools, check_finite_nonnegative, check_finite_positive, check_fraction, check_loss_weight, check_positive,
    check_positive_int, coerce_enum)

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 200  # optimizer steps between step checkpoints (model, optimizer, scheduler, RNG, data)


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

    Budget: ``steps`` optimizer steps of ``batch_size`` sequences of at most ``max_length`` tokens
    (null = the task's), peak ``lr`` with ``warmup_ratio`` linear warm-up then linear decay, AdamW
    with ``weight_decay`` (none on biases and LayerNorms). Every ``eval_every`` steps the model is
    scored on (the first ``eval_examples`` of) the validation split and the best weights are kept.
    ``ties``: sign of an exact 0 while training: ``plus`` (0 → +1, as the frozen model deploys; default)
    or ``zero`` (``torch.sign``, the reference code: the frozen model then differs where a zero
    occurs, often at the output projection, whose input ``A·sign(V)`` is an integer). Losses: ``prediction`` (+ ``label_weight``·CE for ``bibert``), ``hidden_weight`` × normalized
    hidden-state KD, ``dmd_weight`` × direction-matching KD (0 turns a term off).
    """

    attention: Attention = Attention.BOOL
    prediction: Prediction = Prediction.BIBERT
    label_weight: float = 0.5
    hidden_weight: float = 1.0
    dmd_weight: float = 1.0
    temperature: float = 2.0  # logit_kd only (BiBERT's own prediction loss uses T = 1)
    embeddings: bool = True
    pooler: bool = True
    ties: str = "plus"
    steps: int = 1000
    lr: float = 1e-3  # the LR grid winner on MiniLM (benchmarks/RESULTS.md); BiBERT-base used 1e-4 for 10 epochs
    batch_size: int = 16
    max_length: int | None = 64
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    eval_every: int = 500
    eval_examples: int | None = None

    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = False
    # every loss is KD against the full-precision model: a plan with no teacher before it is refused
    # (pipeline.plan.check_teacher_made; the API's teacher check reads it too)
    needs_teacher: ClassVar[bool] = True
    # the model it returns is binary: deploy.check_deploy refuses bf16 for it on OpenVINO before training
    binarizes: ClassVar[bool] = True
    name: ClassVar[str]

    def __post_init__(self) -> None:
        self.attention = coerce_enum(Attention, self.attention, "attention")
        self.prediction = coerce_enum(Prediction, self.prediction, "prediction")
        if self.ties not in TIES:
            raise ValueError(f"bibert.ties={self.ties!r}; allowed: 'plus' (train as deployed: 0 -> +1) or 'zero' "
                             f"(torch.sign, the reference code; the frozen model still maps 0 -> +1)")
        check_bools(self, "embeddings", "pooler")
        for f in ("label_weight", "hidden_weight", "dmd_weight"):  # the distillation losses' weights
            check_loss_weight(getattr(self, f), f"bibert.{f}")
        check_finite_nonnegative(self.weight_decay, "bibert.weight_decay")
        check_fraction(self.warmup_ratio, "bibert.warmup_ratio")  # of the steps: [0, 1)
        check_positive(self.lr, "lr")
        check_finite_positive(self.temperature, "bibert.temperature")
        for f in ("steps", "batch_size", "eval_every"):
            check_positive_int(getattr(self, f), f)
        if self.max_length is not None:
            check_positive_int(self.max_length, "max_length")
        if self.eval_examples is not None:
            check_positive_int(self.eval_examples, "eval_examples")

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
            raise ValueError(f"bibert.batch_size={self.batch_size} exceeds the train split ({n} examples)")
        if not task.validation:
            raise ValueError("bibert selects its checkpoint on the validation split, and this task has none")

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
        from compresslab.training.losses import DirectionMatchingKD, LogitKD, NormalizedHiddenKD, SoftCrossEntropyKD

        out: list[Any] = [SoftCrossEntropyKD(label_weight=self.label_weight) if self.prediction is Prediction.BIBERT
                          else LogitKD(temperature=self.temperature)]
        if self.hidden_weight:
            out.append(NormalizedHiddenKD(weight=self.hidden_weight))
        if self.dmd_weight:
            out.append(DirectionMatchingKD(weight=self.dmd_weight))
        return out

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        from compresslab.checkpoint.packed_binary import binary_sizes
        from compresslab.eval.evaluate import predict, torch_forward
        from compresslab.training import TrainConfig, train
        from compresslab.training.select import BestOnValidation

        self.check_model(model)
        self.check(ctx.task)
        teacher = ctx.kd_teacher(model)  # before the swap: the frozen fine-tuned model
        targets = default_targets(model, embeddings=self.embeddings, pooler=self.pooler)
        stamp = binarize_model(model, attention=self.attention.value, ties=self.ties, **targets)
        tctx = dataclasses.replace(ctx, max_length=self.max_length or ctx.max_length)
        loader = tctx.train_loader(batch_size=self.batch_size)
        val = ctx.task.validation if self.eval_examples is None else ctx.task.validation[:self.eval_examples]

        def score(m: nn.Module) -> float:
            return predict(torch_forward(m, ctx.device), ctx.task.spec, val, ctx.tokenizer,
                           max_length=ctx.max_length).metrics["score"]

        select = BestOnValidation(score, self.eval_every, self.steps)
        cfg = TrainConfig(lr=self.lr, steps=self.steps, batch_size=self.batch_size, weight_decay=self.weight_decay,
                          warmup_ratio=self.warmup_ratio, schedule="linear", seed=ctx.seed, device=ctx.device.type,
                          checkpoint_dir=str(ctx.step_dir / "train_checkpoint"), checkpoint_every=CHECKPOINT_EVERY)
        cpu0 = time.process_time()
        res = train(model, loader, cfg, self.losses(), teacher=teacher, callbacks=[select], progress=ctx.progress,
                    desc="bibert")
        cpu_s = time.process_time() - cpu0
        select.restore_best(model)
        model.eval()
        dynamic = select.best_score
        freeze_binary(model)
        frozen = score(model)
        shutil.rmtree(ctx.step_dir / "train_checkpoint", ignore_errors=True)
        metrics: dict[str, Any] = {
            "variant": {"attention": self.attention.value, "prediction": self.prediction.value,
                        "hidden_weight": self.hidden_weight, "dmd_weight": self.dmd_weight,
                        "label_weight": self.label_weight},
            "train": {**res.to_dict(), "batch_size": self.batch_size, "lr": self.lr, "max_length": tctx.max_length,
                      "cpu_s_this_session": round(cpu_s, 1), "threads": torch.get_num_threads()},
            "selection": {"split": "validation", "examples": len(val), "best_step": select.best_step,
                          "history": select.history},
            # the best trained model (ties as trained) and the frozen one (alpha in fp16, ties 0 -> +1)
            "validation_score": {"trained": dynamic, "frozen": frozen, "trained_ties": self.ties},
            "binarized": {"linears": len(stamp["linears"]), "embeddings": stamp["embeddings"],
                          "attention": stamp["attention"]},
        }
        ps = binary_sizes(model)  # the report's Size table: fp32 dense vs the real 1-bit packed bytes
        metrics["size"] = {k: {"encoder": ps[k]["encoder"], "total": ps[k]["file"]} for k in ("fp32", "packed_binary")}
        return PassResult(metrics=metrics, structure={"binary": dict(stamp)},
                          formats=["packed_binary"])


__all__ = ["Attention", "BiBert", "Prediction"]
