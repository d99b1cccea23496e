"""The one training loop (fine-tuning, KD recovery, distillation), on ``accelerate``.

One process or many (``torchrun``/``accelerate launch``): ``batch_size`` is the *global* batch,
split across processes (``split_batches``), so a budget means the same thing at any scale.
Passes customise training through loss plug-ins and callbacks (e.g. re-apply masks after every
optimizer step, prune at scheduled steps), never by copying this loop.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

import torch
from torch import nn

from compresslab.training.losses import MODEL_INPUTS

log = logging.getLogger(__name__)

SCHEDULES = ("linear", "constant", "cyclic_linear")


@dataclass
class TrainConfig:
    """Optimizer-step budget and recipe. ``steps`` wins over ``epochs`` when both are set."""

    lr: float = 5e-5
    steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    schedule: str = "linear"
    final_lr_ratio: float = 0.0  # linear decays to lr * final_lr_ratio
    cycle_steps: int | None = None  # cyclic_linear: restart the decay every cycle_steps
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 50
    device: str | None = None  # "cpu" | "cuda": where accelerate trains; None = cuda when available

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.schedule == "cyclic_linear" and not self.cycle_steps:
            raise ValueError("schedule=cyclic_linear needs cycle_steps")

    def total_steps(self, batches_per_epoch: int) -> int:
        return self.steps if self.steps is not None else max(1, math.ceil(self.epochs * batches_per_epoch))


class Callback(Protocol):
    """Hooks into the loop; every method is optional."""

    def on_step_begin(self, step: int, model: nn.Module) -> None: ...
    def on_step_end(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...


def lr_lambda(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    """Multiplier of the base LR at step ``s``: warm-up, then linear, constant or cyclic linear."""
    warm = int(cfg.warmup_ratio * total)
    lo = cfg.final_lr_ratio

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "cyclic_linear":
            c = cfg.cycle_steps or total
            x = ((s - warm) % c) / c
        else:
            x = (s - warm) / max(1, total - warm)
        return 1.0 - (1.0 - lo) * min(1.0, x)

    return f


def _forward(model: nn.Module, batch: dict[str, torch.Tensor], hidden: bool, attentions: bool):
    inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
    return model(**inputs, output_hidden_states=hidden, output_attentions=attentions, return_dict=True)


def _infinite(loader: Iterable) -> Iterable:
    epoch = 0
    while True:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yielded = False
        for b in loader:
            yielded = True
            yield b
        if not yielded:
            raise ValueError("the training loader is empty")
        epoch += 1


@dataclass
class TrainResult:
    steps: int
    wall_s: float
    losses: list[float] = field(default_factory=list)  # mean loss per log window

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "wall_s": round(self.wall_s, 2),
                "final_loss": self.losses[-1] if self.losses else None}


def train(model: nn.Module, loader: Any, cfg: TrainConfig, losses: Sequence[Any], *,
          teacher: nn.Module | None = None, callbacks: Sequence[Any] = (), accelerator: Any = None,
          progress: Callable[..., Any] | None = None, desc: str = "train") -> TrainResult:
    """Train ``model`` in place for ``cfg.total_steps`` optimizer steps with the given loss plug-ins."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    if not losses:
        raise ValueError("train() needs at least one loss plug-in")
    if any(l.needs_teacher for l in losses) and teacher is None:
        raise ValueError("a KD loss was requested but no teacher was given")
    cpu = cfg.device == "cpu" if cfg.device else not torch.cuda.is_available()
    acc = accelerator or Accelerator(cpu=cpu,
                                     dataloader_config=DataLoaderConfiguration(split_batches=True))
    torch.manual_seed(cfg.seed)
    total = cfg.total_steps(len(loader))
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))
    pmodel, opt, ploader = acc.prepare(model, opt, loader)
    if teacher is not None:
        teacher = teacher.to(acc.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    need_h = any(l.needs_hidden for l in losses)
    need_a = any(l.needs_attentions for l in losses)
    result = TrainResult(steps=0, wall_s=0.0)
    t0 = time.perf_counter()
    it = _infinite(ploader)
    steps = range(total)
    if progress is not None and acc.is_main_process:
        steps = progress(steps, total=total, desc=desc)
    window: list[float] = []
    pmodel.train()
    for step in steps:
        for cb in callbacks:
            if hasattr(cb, "on_step_begin"):
                cb.on_step_begin(step, acc.unwrap_model(pmodel))
        batch = next(it)
        out_s = _forward(pmodel, batch, need_h, need_a)
        out_t = None
        if teacher is not None:
            with torch.no_grad():
                out_t = _forward(teacher, batch, need_h, need_a)
        loss = sum(l.weight * l(out_s, out_t, batch) for l in losses)
        acc.backward(loss)
        if cfg.max_grad_norm:
            acc.clip_grad_norm_(pmodel.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        for cb in callbacks:
            if hasattr(cb, "on_step_end"):
                cb.on_step_end(step, acc.unwrap_model(pmodel), opt)
        window.append(float(loss.detach()))
        if (step + 1) % cfg.log_every == 0 or step + 1 == total:
            result.losses.append(sum(window) / len(window))
            if hasattr(steps, "set_postfix"):
                steps.set_postfix(loss=f"{result.losses[-1]:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            log.debug("%s step %d/%d loss %.4f", desc, step + 1, total, result.losses[-1])
            window = []
        result.steps = step + 1
    pmodel.eval()
    result.wall_s = time.perf_counter() - t0
    acc.wait_for_everyone()
    model_out = acc.unwrap_model(pmodel)
    if model_out is not model:  # prepare() may wrap; weights are shared with `model`
        model.load_state_dict(model_out.state_dict())
    acc.free_memory()
    return result
