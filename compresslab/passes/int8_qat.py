"""``int8_qat``: int8 quantization-aware training with KD, exported as a plain QDQ graph.

The oBERT paper's fast CPU models were int8 QAT exports (SparseML's QAT recipe): QuantizeLinear /
DequantizeLinear on both inputs of every encoder MatMul, int8 weights per-tensor symmetric (zero point
0, ``Δ = max|w|/127``), uint8 per-tensor activations with ranges observed during QAT. SparseML then
rewrote those QDQ MatMuls into ``MatMulInteger`` on uint8 weight codes, the form DeepSparse 1.8 runs with
int8 kernels: it runs a QDQ graph's ``DequantizeLinear -> MatMul`` in float (``benchmarks/deepsparse_kernels.py``).
``bench.deepsparse.int8_formats=[matmulinteger]`` times this export in that form
(:mod:`compresslab.export.matmul_integer`), beside the QDQ file as exported.

swap every targeted ``nn.Linear`` for a :class:`~compresslab.models.qdq.QDQLinear` (torch's own
fake-quant ops, ``ops/qdq.py``) -> observe the input ranges on ``num_calibration`` train examples
(moving-average min/max) -> QAT with KD from the teacher through the one loop (``training.recover``;
straight-through estimator; the observers keep following the data until ``freeze_observer_step``,
then the ranges are fixed) -> frozen (weights on the int8 grid, scales fixed). The export stage writes
the QDQ graph unfused (``export/qdq.py`` folds the weights into int8 initializers).

Zeros survive: the masks of an earlier pruning pass are kept by ``MaskKeeper`` through every
optimizer step, and a zero weight quantizes to exactly 0 (symmetric, zero point 0). A surviving weight
below ``Δ/2`` rounds to 0 as well; the metrics count those (``rounded_to_zero``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from compresslab.data.loaders import side_inputs
from compresslab.models.qdq import DEFAULT_AVERAGING, freeze_qdq, observe, qdq_modules, quantize_qdq
from compresslab.pruning.masks import MaskKeeper, sparsity_stats
from compresslab.registry import register_pass
from compresslab.targets import check_patterns, layer_keys, select_modules
from compresslab.training.recovery import Recovery, recover
from compresslab.types import PassContext, PassResult, Stage
from compresslab.validate import check_bools, check_int, coerce_block, is_number

QAT_CHECKPOINT_EVERY = 200  # optimizer steps between QAT checkpoints (resume after a stop)


class FreezeObservers:
    """Loop callback: the activation observers follow the data until ``step``, then their ranges are
    fixed (QAT then trains the weights against the ranges it will be deployed with). Stateless: on
    resume the step decides, and the observer flags themselves are buffers in the checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, step: int, model: nn.Module) -> None:
        if step >= self.step:  # idempotent: a resumed run past the step turns them off again
            observe(model, False)


@register_pass("int8_qat")
@dataclass
class Int8Qat:
    """Int8 QAT of the targeted Linears (QDQ: uint8 activations, int8 symmetric weights), with KD.

    ``per_channel``: one weight scale per output row instead of per tensor (per-tensor is SparseML's QAT
    format, the oBERT paper's). ``averaging_constant``: the observers' moving-average
    momentum. ``num_calibration``: train examples observed before QAT (0 = ranges from the first QAT
    batches). ``freeze_observer_step``: the optimizer step from which the activation ranges are fixed
    (null = half of ``recovery.steps``). ``recovery`` is the QAT (KD from the teacher; 0 steps =
    post-training quantization with the calibrated ranges).
    """

    per_channel: bool = False
    averaging_constant: float = DEFAULT_AVERAGING
    num_calibration: int = 256
    freeze_observer_step: int | None = None
    recovery: Recovery = field(default_factory=lambda: Recovery(steps=300))
    targets: list[str] | None = None  # default: the encoder linears (q, k, v, o, ffn_in, ffn_out)
    ignore: list[str] | None = None

    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = False
    keeps_zeros: ClassVar[bool] = True  # MaskKeeper through QAT; 0 quantizes to 0 (pipeline.plan.check_zeros_kept)
    name: ClassVar[str]

    def __post_init__(self) -> None:
        check_bools(self, "per_channel")
        if not is_number(self.averaging_constant) or not 0 < self.averaging_constant <= 1:
            raise ValueError(f"int8_qat.averaging_constant={self.averaging_constant!r} must be in (0, 1] "
                             "(the observers' moving-average momentum; 0.01 is torch's default)")
        self.averaging_constant = float(self.averaging_constant)
        check_int(self.num_calibration, "int8_qat.num_calibration", minimum=0)
        self.recovery = coerce_block(self, "recovery", Recovery)
        if self.freeze_observer_step is not None:
            check_int(self.freeze_observer_step, "int8_qat.freeze_observer_step", minimum=0)
        if self.num_calibration == 0 and self.recovery.steps == 0:
            raise ValueError("int8_qat with num_calibration=0 and recovery.steps=0 never observes an activation: "
                             "set num_calibration > 0 (post-training ranges) or recovery.steps > 0 (QAT)")
        self.targets = check_patterns(self.targets, "targets")
        self.ignore = check_patterns(self.ignore, "ignore")

    @property
    def observer_freeze_step(self) -> int:
        """The step from which activation ranges are fixed (``freeze_observer_step``, default half the QAT)."""
        if self.freeze_observer_step is not None:
            return self.freeze_observer_step
        return self.recovery.steps // 2

    def recovery_settings(self) -> Recovery:
        """The QAT, a KD recovery of the fake-quant model (the ``recovery_settings`` hook): the pipeline asks it
        whether a teacher must be made before this step (pipeline/plan.py needs_teacher)."""
        return self.recovery

    def check(self, task: Any) -> None:
        """Calibration and QAT read the train split (and the validation split when QAT selects on it)."""
        self.recovery.check_task(task)
        if self.num_calibration or self.recovery.steps:
            task.require_train()

    def check_model(self, model: nn.Module) -> None:
        """Before any step runs: ``targets`` / ``ignore`` select plain float Linears (ValueError naming them)."""
        try:
            names = list(select_modules(model, self.targets, self.ignore))
        except ValueError as e:
            raise ValueError(f"int8_qat: {e}") from None
        bad = [n for n in names if type(model.get_submodule(n)) is not nn.Linear]
        if bad:
            raise ValueError(f"int8_qat: {bad[:3]} are already quantized or binarized; int8 QAT quantizes float "
                             "Linears (put it after the pruning steps, instead of another quantization pass)")

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        from compresslab.data.schema import TaskKind

        modules = select_modules(model, self.targets, self.ignore)
        weights = [f"{n}.weight" for n in modules]
        r = self.recovery
        embedding = ctx.task.spec.kind is TaskKind.EMBEDDING
        # the teacher before any module changes (without a run teacher: the model as it enters)
        teacher = ctx.kd_teacher(model) if r.needs_teacher(embedding) else None
        keeper = MaskKeeper.from_zeros(model, weights)  # an earlier pass's zeros, kept through QAT
        before = sparsity_stats(modules)
        before_device = next(model.parameters()).device
        model.to(ctx.device)
        try:
            quantize_qdq(model, list(modules), per_channel=self.per_channel,
                         averaging_constant=self.averaging_constant)
            calibrated = self._calibrate(model, ctx)
            observe(model, True)
            metrics: dict[str, Any] = {"format": "qdq", "weights": "int8 symmetric, zero point 0, " +
                                       ("per output row" if self.per_channel else "per tensor"),
                                       "activations": "uint8 per tensor, moving-average min/max",
                                       "calibration_examples": calibrated}
            if r.steps:
                ckpt = ctx.step_dir / "qat_checkpoint"
                res = recover(model, ctx.train_loader(), r, teacher, embedding=embedding,
                              callbacks=[keeper, FreezeObservers(self.observer_freeze_step)],
                              batch_size=ctx.batch_size, seed=ctx.seed, progress=ctx.progress, desc="int8 QAT",
                              device=ctx.device, checkpoint_dir=str(ckpt), checkpoint_every=QAT_CHECKPOINT_EVERY,
                              validate=ctx.validation_score)
                metrics["qat"] = {**res.to_dict(), "steps": r.steps, "lr": r.lr,
                                  "observers_frozen_at_step": min(self.observer_freeze_step, r.steps)}
            keeper.apply(model)
            freeze_qdq(model)
            model.eval()
        finally:
            model.to(before_device)
        shutil.rmtree(ctx.step_dir / "qat_checkpoint", ignore_errors=True)
        metrics.update(self._zeros(model, modules, keeper, before))
        metrics["activation_ranges"] = _ranges(model)
        stamp = {n: m.spec() for n, m in qdq_modules(model).items()}
        return PassResult(metrics=metrics, structure={"qdq": stamp, "targets": list(modules)})

    def _calibrate(self, model: nn.Module, ctx: PassContext) -> int:
        """Observe the input ranges on ``num_calibration`` train examples (eval mode, no grad); returns
        how many were seen."""
        if not self.num_calibration:
            return 0
        observe(model, True)
        was_training = model.training
        model.eval()
        seen = 0
        with torch.no_grad():
            for batch in ctx.calibration_batches(self.num_calibration, setting=f"{self.name}.num_calibration"):
                model(**{k: v.to(ctx.device) for k, v in side_inputs(batch).items()})
                seen += len(batch["input_ids"])
        model.train(was_training)
        return seen

    @staticmethod
    def _zeros(model: nn.Module, names: Any, keeper: MaskKeeper, before: dict[str, Any]) -> dict[str, Any]:
        """Sparsity before and after, whether every zero that came in is still zero, and how many
        surviving weights rounded to 0 on the int8 grid."""
        modules = {n: model.get_submodule(n) for n in names}
        after = sparsity_stats(modules, layer_keys(model, modules))
        kept = all(bool((model.get_parameter(p).detach()[m.to(model.get_parameter(p).device)] == 0).all())
                   for p, m in keeper.masks.items())
        return {"sparsity_before": before["sparsity"], "sparsity": after["sparsity"], "num_zero": after["num_zero"],
                "num_targeted": after["num_targeted"], "zeros_kept": kept,
                "rounded_to_zero": after["num_zero"] - before["num_zero"], "layer_sparsity": after["layer_sparsity"]}


def _ranges(model: nn.Module) -> dict[str, Any]:
    """The activation scales over the QDQ modules (min / median / max) and the zero-point spread."""
    scales = torch.tensor([float(m.input_quant.scale.reshape(-1)[0]) for m in qdq_modules(model).values()])
    zeros = [int(m.input_quant.zero_point.reshape(-1)[0]) for m in qdq_modules(model).values()]
    if not len(scales):
        return {}
    return {"scale_min": float(scales.min()), "scale_median": float(scales.median()), "scale_max": float(scales.max()),
            "zero_point_min": min(zeros), "zero_point_max": max(zeros)}


__all__ = ["FreezeObservers", "Int8Qat"]
