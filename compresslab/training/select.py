"""Checkpoint selection during training: keep the weights that score best on the validation split.

MEASURE.md: selection uses the validation split carved from train, never dev (the reference BiBERT
scripts keep the best *dev* result; we do not). The callback keeps the best weights in memory and in
its ``state_dict``, so a resumed run still knows them.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


class BestOnValidation:
    """A training callback: every ``every`` optimizer steps (and at ``last_step``), score the model
    with ``score(model) -> float`` (higher is better; the model is in eval mode during the call and
    back in train mode after) and keep a CPU copy of the best weights.

    ``include_start=True`` also scores the weights before the first step (``step`` 0 in ``history``),
    so training that only loses validation score leaves the model as it came: a pass's recovery
    (ZipLM's OBS-updated shrink, oBERT's one-shot mask) is then never worse on validation than no
    recovery. It costs one more validation pass; a resumed run keeps the checks its checkpoint saved.

    ``history`` lists ``{"step", "score"}``; :meth:`restore_best` loads the best weights into a model.
    """

    def __init__(self, score: Callable[[nn.Module], float], every: int, last_step: int, *,
                 include_start: bool = False) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"eval_every must be an integer >= 1, got {every!r}")
        self.score, self.every, self.last_step = score, every, last_step
        self.include_start = include_start
        self.best_score = -math.inf
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []

    def run_settings(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint (``training.loop``'s run record)."""
        # not include_start: the step-0 check changes no training step, only the candidates, so a run stopped
        # before it existed resumes (its history then starts at the first later check)
        return {"select_every": self.every}

    def on_step_begin(self, step: int, model: nn.Module) -> None:
        if self.include_start and step == 0 and not self.history:
            self._check(0, model)

    def on_step_end(self, step: int, model: nn.Module, optimizer: Any) -> None:
        done = step + 1
        if done % self.every and done != self.last_step:
            return
        self._check(done, model)

    def _check(self, done: int, model: nn.Module) -> None:
        was_training = model.training
        model.eval()
        # Scoring must leave the run as it was: a DataLoader draws from the global RNG when iterated (dropout
        # on the next steps would change), and some modules update buffers in eval mode (int8 QAT's
        # activation observers would learn the validation ranges the choice is then made on).
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        try:
            # score the weights that are kept: observers (int8 QAT's activation ranges) must not fit the validation
            # batches during the check. Their buffers come back after it, so a check would otherwise score ranges it
            # does not keep (a step-0 check with num_calibration=0 scored validation-fitted ranges and kept the
            # uncalibrated ones). The observer flags are buffers too: restored below.
            for m in model.modules():
                if callable(getattr(m, "disable_observer", None)):
                    m.disable_observer()
            with torch.random.fork_rng(devices=[]):
                s = float(self.score(model))
        finally:
            with torch.no_grad():
                for n, b in model.named_buffers():
                    b.copy_(buffers[n])
            model.train(was_training)
        self.history.append({"step": done, "score": s})
        log.info("validation at step %d: %.4f (best %.4f)", done, s, max(s, self.best_score))
        if s > self.best_score:
            self.best_score, self.best_step = s, done
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def restore_best(self, model: nn.Module) -> None:
        """Load the best weights seen (no-op if nothing was scored)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_step": self.best_step, "history": copy.deepcopy(self.history),
                "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = float(state["best_score"])
        self.best_step = state["best_step"]
        self.history = list(state["history"])
        self.best_state = state["best_state"]


__all__ = ["BestOnValidation"]
