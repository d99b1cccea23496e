"""The one training loop (fine-tuning, KD recovery, distillation), on ``accelerate``.

One process or many (``torchrun``/``accelerate launch``): ``batch_size`` is the *global* batch,
split across processes (``split_batches``), so a budget means the same thing at any scale.
Passes customise training through loss plug-ins and callbacks (e.g. re-apply masks after every
optimizer step, prune at scheduled steps), never by copying this loop.

With ``TrainConfig.checkpoint_dir`` a run writes step checkpoints (model, optimizer, scheduler,
RNG, data position, losses, callback state) and a later call with the same recipe resumes from
the newest one, reaching the same weights bit for bit as a run that was never stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import nn

from compresslab.models.adapters import get_adapter
from compresslab.models.hooks import capture_outputs
from compresslab.rng import rng_kept
from compresslab.runlock import holds_training_lock
from compresslab.training.losses import MODEL_INPUTS
from compresslab.training.resume import (
    DataCursor, DeferredSignals, ResumeError, StepCheckpoints, has_state, param_list, rng_state, set_rng_state,
    weights_digest)
from compresslab.validate import check_int, check_loss_weight, choice_hint, is_number

log = logging.getLogger(__name__)

SCHEDULES = ("linear", "constant", "cyclic_linear")


@dataclass
class TrainConfig:
    """Optimizer-step budget and recipe. ``steps`` wins over ``epochs`` when both are set.

    ``checkpoint_dir`` (one directory per run) turns on step checkpoints: every
    ``checkpoint_every`` steps (0 = none on the way), at the last step, and at the end of the
    step a SIGINT/SIGTERM arrived in (one arriving in a step's long work, such as a Fisher rebuild in a
    callback, stops the run at once and the step is not written: ``failure.raise_if_interrupted``). A call
    that finds a checkpoint there resumes from it.
    """

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
    checkpoint_dir: str | None = None  # resumable run: step checkpoints live (and are looked for) here
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end and on SIGINT/SIGTERM

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; allowed: {', '.join(SCHEDULES)}"
                             f"{choice_hint(self.schedule, SCHEDULES)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.schedule == "cyclic_linear" and not self.cycle_steps:
            raise ValueError("schedule=cyclic_linear needs cycle_steps")
        check_int(self.checkpoint_every, "checkpoint_every", minimum=0)
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, (str, os.PathLike)) or not os.fspath(self.checkpoint_dir):
                raise ValueError(f"checkpoint_dir must be a directory path or None, got {self.checkpoint_dir!r}")
            self.checkpoint_dir = os.fspath(self.checkpoint_dir)
        elif self.checkpoint_every:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} needs checkpoint_dir")

    def total_steps(self, batches_per_epoch: int) -> int:
        return self.steps if self.steps is not None else max(1, math.ceil(self.epochs * batches_per_epoch))


class Callback(Protocol):
    """Hooks into the loop; every method is optional.

    A callback with state that changes during training (masks, a pruning schedule) also defines
    ``state_dict()`` (tensors and plain Python values) and ``load_state_dict(state)``, so a
    resumed run restores it; one without them restarts from how it was built.
    """

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


def _heads(x: torch.Tensor, head_size: int) -> torch.Tensor:
    """(B, T, H·d_h) -> (B, H, T, d_h), the layout attention works in."""
    b, t, _ = x.shape
    return x.view(b, t, -1, head_size).transpose(1, 2)


def _forward(model: nn.Module, batch: dict[str, torch.Tensor], hidden: bool, attentions: bool,
             qkv: nn.Module | None = None):
    """One forward; with ``qkv`` (the unwrapped model) the outputs also carry ``qkv``: per layer a
    tuple of the q, k, v projection outputs ``(B, H, T, d_h)``, captured by forward hooks (for a
    binarized model these are the pre-sign values, as direction-matching KD needs)."""
    inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
    if qkv is None:
        return model(**inputs, output_hidden_states=hidden, output_attentions=attentions, return_dict=True)
    ad = get_adapter(qkv)
    mods = {(lv.index, r): getattr(lv, r) for lv in ad.layers() for r in ("q", "k", "v")}
    if any(m is None for m in mods.values()):
        raise ValueError("a loss needs every layer's q/k/v, but a layer has no attention heads left")
    got: dict[tuple[int, str], torch.Tensor] = {}
    with capture_outputs(mods, got.__setitem__):
        out = model(**inputs, output_hidden_states=hidden, output_attentions=attentions, return_dict=True)
    out.qkv = [tuple(_heads(got[(i, r)], ad.head_size) for r in ("q", "k", "v")) for i in range(ad.num_layers)]
    return out


def _describe(obj: Any) -> str:
    """A loss plug-in's settings (a dataclass repr), or its class where repr is only an address."""
    r = repr(obj)
    return type(obj).__qualname__ if " at 0x" in r else r


def _run_record(cfg: TrainConfig, total: int, loader: Any, model: nn.Module, losses: Sequence[Any],
                teacher: nn.Module | None, callbacks: Sequence[Any], num_processes: int) -> dict[str, Any]:
    """What must match for a checkpoint to continue this run (JSON-normalised, for comparing)."""
    params = param_list(model)
    rec = {"lr": cfg.lr, "steps": total, "batch_size": cfg.batch_size, "weight_decay": cfg.weight_decay,
           "warmup_ratio": cfg.warmup_ratio, "schedule": cfg.schedule, "final_lr_ratio": cfg.final_lr_ratio,
           "cycle_steps": cfg.cycle_steps, "max_grad_norm": cfg.max_grad_norm, "seed": cfg.seed,
           "log_every": cfg.log_every, "batches_per_epoch": len(loader),
           "examples": len(loader.dataset) if hasattr(getattr(loader, "dataset", None), "__len__") else None,
           "num_processes": num_processes, "losses": [_describe(l) for l in losses], "teacher": teacher is not None,
           "callbacks_with_state": [type(cb).__name__ for cb in callbacks if has_state(cb)],
           "parameters": hashlib.blake2b("\n".join(params).encode(), digest_size=16).hexdigest()}
    settings = [cb.run_settings() for cb in callbacks if hasattr(cb, "run_settings")]
    if settings:  # only then: records of runs without such callbacks keep their old form (and resume)
        rec["callback_settings"] = settings
    return json.loads(json.dumps(rec))


class NonFiniteLossError(FloatingPointError, ValueError):
    """The loss (or the gradient norm) became NaN or infinite: training stops before that step
    updates any weight, so no checkpoint, cached teacher or saved step holds NaN weights.

    A ValueError too: its usual causes are settings to change (a learning rate too high, a model in
    float16), and the CLI reports those as a message, not a traceback."""


def _stop_if_nonfinite(acc: Any, value: float, what: str, step: int, total: int, desc: str, sched: Any,
                       model: nn.Module) -> None:
    """Raise NonFiniteLossError when ``value`` is NaN/inf on any rank (every rank stops at the same
    step: one that went on would wait in the gradient all-reduce forever)."""
    bad = not math.isfinite(value)
    if acc.num_processes > 1:
        bad = bool(acc.reduce(torch.tensor([float(bad)], device=acc.device), reduction="sum").item())
    if not bad:
        return
    params = list(model.parameters())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params})
    weights_ok = all(bool(torch.isfinite(p).all()) for p in params)
    raise NonFiniteLossError(
        f"{desc}: the {what} is {value} at step {step + 1}/{total} (lr {sched.get_last_lr()[0]:.2e}, weights "
        f"{'/'.join(dtypes)}{'' if weights_ok else ', already holding NaN/inf'}); training stopped before this step "
        "changed any weight, and nothing of it was saved. Usual causes: a learning rate too high for this model "
        "(lower the step's lr), a model in float16/bfloat16 (pass a float32 model; compresslab loads model "
        "directories in float32), or NaN/inf already in the model's weights")


@dataclass
class TrainResult:
    steps: int
    wall_s: float  # all sessions of a resumed run together
    losses: list[float] = field(default_factory=list)  # mean loss per log window
    resumed_at: int | None = None  # the checkpoint step this call started from
    selection: dict[str, Any] | None = None  # recover(): the validation checks and the step kept

    def to_dict(self) -> dict[str, Any]:
        out = {"steps": self.steps, "wall_s": round(self.wall_s, 2),
               "final_loss": self.losses[-1] if self.losses else None}
        if self.resumed_at is not None:
            out["resumed_at"] = self.resumed_at
        if self.selection is not None:
            out["selection"] = self.selection
        return out


def _resume(saved: tuple[Any, dict[str, Any], dict[str, Any]], acc: Any, pmodel: nn.Module, opt: Any, sched: Any,
            stateful: Sequence[Any], data: DataCursor, result: TrainResult) -> tuple[int, list[float], float]:
    """Load a checkpoint into the prepared run; returns (step, open loss window, earlier wall seconds)."""
    _, model_sd, state = saved
    acc.unwrap_model(pmodel).load_state_dict(model_sd)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if state.get("scaler") is not None and getattr(acc, "scaler", None) is not None:
        acc.scaler.load_state_dict(state["scaler"])
    for cb, cb_state in zip(stateful, state["callbacks"]):
        cb.load_state_dict(cb_state)
    rng = state["rng"][acc.process_index]
    data.restore(state["data"], rng["epoch_start"])
    set_rng_state(rng["now"], data.generators)  # last: replaying the epoch drew from these
    result.steps = result.resumed_at = int(state["step"])
    result.losses = list(state["losses"])
    return result.steps, list(state["window"]), float(state["wall_s"])


@holds_training_lock("train")  # timings wait while any training runs (MEASURE.md: a busy machine voids them)
def train(model: nn.Module, loader: Any, cfg: TrainConfig, losses: Sequence[Any], *,
          teacher: nn.Module | None = None, callbacks: Sequence[Any] = (), accelerator: Any = None,
          progress: Callable[..., Any] | None = None, desc: str = "train") -> TrainResult:
    """Train ``model`` in place for ``cfg.total_steps`` optimizer steps with the given loss plug-ins.

    Randomness (dropout, a resume's restored streams) comes from a fork of the process's streams seeded with
    ``cfg.seed``: the same seed gives the same weights whatever the caller drew before, and the caller's torch,
    Python and numpy streams are as they were after the call.

    With ``cfg.checkpoint_dir``: resumes from the checkpoint there if one exists (its recorded
    recipe, data and parameter names/shapes must match, else :class:`ResumeError`), and writes
    checkpoints as :class:`TrainConfig` says. The directory is left in place at the end (a
    finished run resumes as finished); delete it once the caller's own output is safe. Give every
    run its own directory. Callbacks see the true step numbers after a resume.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    if not losses:
        raise ValueError("train() needs at least one loss plug-in")
    if any(l.needs_teacher for l in losses) and teacher is None:
        raise ValueError("a KD loss was requested but no teacher was given")
    for l in losses:  # plug-ins built outside a pass's settings (the API, a script) meet the same rule
        check_loss_weight(l.weight, f"{type(l).__name__}.weight")
        for k, v in getattr(l, "__dict__", {}).items():
            if k.endswith("_weight") and is_number(v):
                check_loss_weight(v, f"{type(l).__name__}.{k}")
    cpu = cfg.device == "cpu" if cfg.device else not torch.cuda.is_available()
    acc = accelerator or Accelerator(cpu=cpu,
                                     dataloader_config=DataLoaderConfiguration(split_batches=True))
    # Seeded on a fork: dropout and a resume's restored streams stay inside; the caller's streams (a notebook's,
    # the next pass's) are as they were before the call (DESIGN: only cli.py touches process state).
    on_cuda = acc.device.type == "cuda"
    with rng_kept(cuda=on_cuda):
        # on CPU only the CPU generator: torch.manual_seed would also queue a seed for CUDA generators not yet
        # started, which the fork cannot undo
        torch.manual_seed(cfg.seed) if on_cuda else torch.default_generator.manual_seed(cfg.seed)
        return _train(model, loader, cfg, losses, teacher=teacher, callbacks=callbacks, acc=acc,
                      progress=progress, desc=desc)


def _train(model: nn.Module, loader: Any, cfg: TrainConfig, losses: Sequence[Any], *, teacher: nn.Module | None,
           callbacks: Sequence[Any], acc: Any, progress: Callable[..., Any] | None, desc: str) -> TrainResult:
    """:func:`train`'s body, on the seeded fork of the random streams."""
    from accelerate.utils import gather_object

    total = cfg.total_steps(len(loader))
    ckpt = None
    if cfg.checkpoint_dir is not None:
        ckpt = StepCheckpoints(cfg.checkpoint_dir,
                               _run_record(cfg, total, loader, model, losses, teacher, callbacks, acc.num_processes),
                               param_list(model), weights_digest(model))
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
    need_qkv = any(getattr(l, "needs_qkv", False) for l in losses)
    stateful = [cb for cb in callbacks if has_state(cb)]  # the record checks their classes match
    result = TrainResult(steps=0, wall_s=0.0)
    data = DataCursor(ploader)
    window: list[float] = []
    start, wall_before = 0, 0.0
    saved = ckpt.load() if ckpt is not None else None
    if saved is not None:
        start, window, wall_before = _resume(saved, acc, pmodel, opt, sched, stateful, data, result)
        log.info("%s: resumed at step %d/%d from %s", desc, start, total, saved[0])
        stateless = [type(cb).__name__ for cb in callbacks if not has_state(cb)]
        if stateless:
            log.info("%s: callbacks without state_dict() restart as built: %s", desc, ", ".join(stateless))
    t0 = time.perf_counter()

    def save_checkpoint(step: int) -> None:
        rng = {"now": rng_state(data.generators), "epoch_start": data.epoch_rng}
        rngs = gather_object([rng]) if acc.num_processes > 1 else [rng]
        if acc.is_main_process and ckpt is not None:
            state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "scaler": acc.scaler.state_dict() if getattr(acc, "scaler", None) is not None else None,
                     "rng": rngs, "data": data.position(), "losses": list(result.losses), "window": list(window),
                     "wall_s": wall_before + time.perf_counter() - t0,
                     "callbacks": [cb.state_dict() for cb in stateful]}
            path = ckpt.save(step, total, acc.unwrap_model(pmodel).state_dict(), state)
            log.debug("%s: checkpoint %s", desc, path)

    steps: Any = range(start, total)
    if progress is not None and acc.is_main_process:
        steps = progress(steps, total=len(steps), desc=f"{desc} (from step {start})" if start else desc)
    pmodel.train()
    # signals are held to the step's end only in one process: ranks would not agree on the step
    with DeferredSignals(ckpt is not None and acc.num_processes == 1) as signals:
        for step in steps:
            for cb in callbacks:
                if hasattr(cb, "on_step_begin"):
                    cb.on_step_begin(step, acc.unwrap_model(pmodel))
            batch = next(data)
            out_s = _forward(pmodel, batch, need_h, need_a, acc.unwrap_model(pmodel) if need_qkv else None)
            out_t = None
            if teacher is not None:
                with torch.no_grad():
                    out_t = _forward(teacher, batch, need_h, need_a, teacher if need_qkv else None)
            loss = sum(l.weight * l(out_s, out_t, batch) for l in losses)
            value = float(loss.detach())
            _stop_if_nonfinite(acc, value, "loss", step, total, desc, sched, pmodel)
            acc.backward(loss)
            if cfg.max_grad_norm:
                norm = acc.clip_grad_norm_(pmodel.parameters(), cfg.max_grad_norm)
                if norm is not None and getattr(acc, "scaler", None) is None:  # a loss scaler skips inf steps itself
                    _stop_if_nonfinite(acc, float(norm), "gradient norm", step, total, desc, sched, pmodel)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            for cb in callbacks:
                if hasattr(cb, "on_step_end"):
                    cb.on_step_end(step, acc.unwrap_model(pmodel), opt)
            window.append(value)
            if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                result.losses.append(sum(window) / len(window))
                if hasattr(steps, "set_postfix"):
                    steps.set_postfix(loss=f"{result.losses[-1]:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
                log.debug("%s step %d/%d loss %.4f", desc, step + 1, total, result.losses[-1])
                window = []
            result.steps = step + 1
            if ckpt is not None and (signals.pending is not None or step + 1 == total
                                     or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0)):
                save_checkpoint(step + 1)
                # read after the write: a signal that landed during it finds this step on disk and stops here
                # (one landing after the last step's check is re-raised as the block ends)
                if signals.pending is not None:
                    signals.deliver()
    pmodel.eval()
    result.wall_s = wall_before + time.perf_counter() - t0
    acc.wait_for_everyone()
    model_out = acc.unwrap_model(pmodel)
    if model_out is not model:  # prepare() may wrap; weights are shared with `model`
        model.load_state_dict(model_out.state_dict())
    acc.free_memory()
    return result


__all__ = ["Callback", "NonFiniteLossError", "ResumeError", "TrainConfig", "TrainResult", "lr_lambda", "train"]
