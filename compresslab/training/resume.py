"""Step checkpoints of the training loop: RNG states, the data position, the checkpoint folder, signals.

:func:`compresslab.training.train` uses these when ``TrainConfig.checkpoint_dir`` is set; a run
stopped at any step and resumed from its newest checkpoint reaches the same weights, bit for bit,
as one that ran through (same machine kind, same loader construction).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from compresslab.failure import error_text, held_over, register_deferral, unregister_deferral
from compresslab.manifest import publish_mode

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class ResumeError(ValueError):
    """``checkpoint_dir`` holds a checkpoint this run cannot resume: another recipe, or unreadable."""


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch generators that order ``loader``'s batches (a shared one counted once), in a fixed order."""
    found: list[torch.Generator] = []

    def visit(obj: Any, depth: int) -> None:
        for name in ("generator", "synchronized_generator"):
            g = getattr(obj, name, None)
            if isinstance(g, torch.Generator) and all(g is not f for f in found):
                found.append(g)
        if depth < 3:
            for name in ("sampler", "batch_sampler", "base_dataloader"):
                child = getattr(obj, name, None)
                if child is not None and child is not obj:
                    visit(child, depth + 1)

    visit(loader, 0)
    return found


def rng_state(generators: Sequence[torch.Generator]) -> dict[str, Any]:
    """Every RNG a step can draw from: torch (CPU, CUDA), Python, NumPy, and the loader's generators."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(), "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "generators": [g.get_state() for g in generators]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: Sequence[torch.Generator]) -> None:
    """Put back what :func:`rng_state` recorded (CUDA only where the device count matches)."""
    import numpy as np

    if len(state["generators"]) != len(generators):
        raise ResumeError(f"the checkpoint holds {len(state['generators'])} data-order generator state(s), the "
                          f"training loader has {len(generators)}: it is not built the same way")
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            log.warning("the checkpoint saw %d CUDA devices, this process sees %d: CUDA RNG not restored "
                        "(GPU-side random draws will differ from the interrupted run)",
                        len(state["cuda"]), torch.cuda.device_count())


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader, its sampler and its batch sampler which epoch comes (seeded samplers reshuffle by it)."""
    for obj in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None), loader):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


class DataCursor:
    """``loader`` repeated forever, with a position that a checkpoint records and a resume replays.

    An epoch's order is drawn when its iterator starts (the sampler's generator, the DataLoader's
    base seed, ``set_epoch`` seeds), so the position is (epoch, batches taken in it) plus every
    RNG state at that epoch's start: restoring those states, restarting the epoch and skipping the
    batches already taken yields exactly the batches an uninterrupted run would see next. (A
    dataset that draws random numbers lazily, per item, interleaved with training, would break
    this; none here does.)
    """

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self.generators = loader_generators(loader)
        self.epoch, self.taken = 0, 0
        self.epoch_rng: dict[str, Any] | None = None
        self._it: Any = None

    def _start_epoch(self) -> None:
        self.epoch_rng = rng_state(self.generators)
        set_epoch(self.loader, self.epoch)
        self._it = iter(self.loader)
        self.taken = 0

    def __next__(self) -> Any:
        while True:
            if self._it is None:
                self._start_epoch()
            try:
                batch = next(self._it)
            except StopIteration:
                if self.taken == 0:
                    raise ValueError("the training loader is empty") from None
                self._it, self.epoch = None, self.epoch + 1
                continue
            self.taken += 1
            return batch

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "taken": self.taken}

    def restore(self, position: dict[str, int], epoch_rng: dict[str, Any]) -> None:
        """Replay the epoch under way at the checkpoint and skip the batches it had already given."""
        self.epoch = int(position["epoch"])
        set_rng_state(epoch_rng, self.generators)
        self._start_epoch()
        for i in range(int(position["taken"])):
            try:
                next(self._it)
            except StopIteration:
                raise ResumeError(f"the checkpoint is at batch {position['taken']} of epoch {self.epoch}, but the "
                                  f"training loader gives only {i} batches") from None
        self.taken = int(position["taken"])


def param_list(model: nn.Module) -> list[str]:
    """One line per parameter: name, shape, dtype, and whether it is frozen (what the optimizer is built from)."""
    return [f"{n} {tuple(p.shape)} {str(p.dtype).removeprefix('torch.')}{'' if p.requires_grad else ' frozen'}"
            for n, p in model.named_parameters()]


def weights_digest(model: nn.Module) -> str:
    """A hash of the starting weights' bytes (device-independent)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def has_state(cb: Any) -> bool:
    """Whether a loop callback saves and restores its own state (``state_dict``/``load_state_dict``)."""
    return callable(getattr(cb, "state_dict", None)) and callable(getattr(cb, "load_state_dict", None))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_file(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


class StepCheckpoints:
    """The newest checkpoint of one run in ``directory``, one ``step-NNNNNNNN/`` folder:

    ``model.pt`` (state dict), ``state.pt`` (optimizer, scheduler, RNG per process, data position,
    losses, callback states) and ``meta.json`` (the run record). A folder is written whole as
    ``.tmp-*`` and renamed, so a ``step-*`` folder is always complete; the older one is deleted
    only after that. Both ``.pt`` files load with ``weights_only=True``.
    """

    def __init__(self, directory: str, record: dict[str, Any], params: list[str], digest: str) -> None:
        self.dir = Path(directory)
        self.record, self.params, self.digest = record, params, digest

    def latest(self) -> Path | None:
        if not self.dir.is_dir():
            return None
        partial = sorted(p.name for p in self.dir.iterdir() if p.name.startswith(".tmp-"))
        if partial:
            log.warning("ignoring %d partial checkpoint(s) an interrupted write left in %s: %s",
                        len(partial), self.dir, ", ".join(partial))
        done = [p for p in self.dir.iterdir() if re.fullmatch(r"step-\d+", p.name) and p.is_dir()]
        return max(done, key=lambda p: int(p.name[5:])) if done else None

    def load(self) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
        """(folder, model state dict, state) of the newest checkpoint, checked against this run; None if none."""
        path = self.latest()
        if path is None:
            return None
        try:
            meta = json.loads((path / "meta.json").read_text())
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, this code reads {CHECKPOINT_FORMAT}")
        except (OSError, ValueError) as e:
            raise ResumeError(f"checkpoint {path} is unreadable ({e}); delete it to start the run over") from None
        self._check(path, meta)
        try:
            model_sd = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: say which, never start over silently
            raise ResumeError(f"checkpoint {path} is unreadable ({error_text(e)}); "
                              "delete it to start the run over") from None
        if meta.get("init_digest") != self.digest:
            log.warning("%s: the starting weights differ from those the checkpointed run started from (e.g. a "
                        "nondeterministic earlier step); continuing from the checkpoint's weights", path)
        return path, model_sd, state

    def _check(self, path: Path, meta: dict[str, Any]) -> None:
        saved = meta.get("run", {})
        diff = [k for k in sorted(set(saved) | set(self.record)) if saved.get(k) != self.record.get(k)]
        if not diff:
            return
        parts = [f"{k}: checkpoint {saved.get(k)!r}, now {self.record.get(k)!r}" for k in diff if k != "parameters"]
        if "parameters" in diff:
            old, new = meta.get("params", []), self.params
            gone = [p for p in old if p not in set(new)][:3]
            added = [p for p in new if p not in set(old)][:3]
            parts.append(f"parameters (names/shapes/dtypes): {len(old)} then, {len(new)} now; "
                         f"only then {gone}, only now {added}")
        raise ResumeError(f"checkpoint {path} belongs to a different run; differing: {'; '.join(parts)}. "
                          "Use another checkpoint_dir, or delete this one to start over")

    def save(self, step: int, total: int, model_sd: dict[str, Any], state: dict[str, Any]) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"step-{step:08d}"
        if final.exists():
            raise FileExistsError(f"{final} exists already: is another run writing to {self.dir}?")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:08d}-", dir=self.dir))
        try:
            _save_file(model_sd, tmp / "model.pt")
            _save_file(state, tmp / "state.pt")
            meta = {"format": CHECKPOINT_FORMAT, "step": step, "total": total, "run": self.record,
                    "params": self.params, "init_digest": self.digest}
            with open(tmp / "meta.json", "w") as f:
                json.dump(meta, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            publish_mode(tmp)  # mkdtemp made it 0700
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.dir)
        for p in self.dir.iterdir():  # the new one is safe on disk: older and partial ones go
            if p != final and (re.fullmatch(r"step-\d+", p.name) or p.name.startswith(".tmp-")):
                shutil.rmtree(p, ignore_errors=True)
        return final


class DeferredSignals:
    """Holds SIGINT/SIGTERM until the running step ends, so a checkpoint can be written of whole steps.

    A held signal is never dropped: :meth:`deliver` re-raises it to the handler that was there before
    (KeyboardInterrupt, exit, or the caller's own), and so does leaving the ``with`` block with one
    still held, however the block ends: after its last step, or by an exception (the signal's
    KeyboardInterrupt then carries that exception as ``__context__``; one already stopping the
    process, a KeyboardInterrupt or SystemExit, is that stop; the run's record keeps the exception too,
    :func:`compresslab.failure.held_over`). A second signal while one is held is
    re-raised at once. Nested, an inner block hands a held signal on to the outer one, which holds it
    to its own end; a second signal goes through both at once. Installed only in the main thread, over
    Python-level handlers (an ignored signal stays ignored), and removed when the block ends.

    Long work inside a step (an oBERT Fisher rebuild, a validation check) calls
    :func:`compresslab.failure.raise_if_interrupted` between its pieces: a held signal is then delivered
    there, at once, and the step is dropped (its checkpoint never started, so none is torn; a rerun resumes
    from the last one written). A checkpoint write has no such check: a signal landing in it waits for it.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.pending: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "DeferredSignals":
        self._install()
        if self.enabled:
            register_deferral(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        unregister_deferral(self)
        self._restore()
        signum, self.pending = self.pending, None  # read after the restore: a later signal goes to the old handler
        if signum is None:
            return
        if exc is not None and not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: already stopping
            log.debug("signal %d held while %s stops the process", signum, type(exc).__name__)
            return
        if exc is None:
            signal.raise_signal(signum)
            return
        # the stop asked for wins; the error stays in the traceback (its __context__), the log and the run's record
        log.warning("signal %d was held when training stopped on %s; stopping as interrupted",
                    signum, error_text(exc, limit=300))
        try:
            signal.raise_signal(signum)
        except BaseException as stop:
            if stop is not exc:
                held_over(stop, exc)
            raise

    def _install(self) -> None:
        if not self.enabled:
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(s)
            if old is not None and old is not signal.SIG_IGN:
                self._old[s] = old
                signal.signal(s, self._on_signal)

    def _restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.pending is not None:  # asked twice: stop now
            self.pending = None  # this one stands for both: nothing is left to re-raise on the way out
            outer = getattr(self._old.get(signum), "__self__", None)
            if isinstance(outer, DeferredSignals) and outer.pending is None:
                outer.pending = signum  # an enclosing deferral reads it as asked twice too: through at once
            self._restore()
            signal.raise_signal(signum)
            return
        log.warning("signal %d: stopping after this step's checkpoint (or at once, dropping the step, where the step "
                    "is in long work such as a Fisher rebuild)", signum)
        self.pending = signum

    def deliver(self) -> None:
        """Re-raise the held signal to the previous handler; if that returns, keep deferring."""
        signum = self.let_go()
        if signum is not None:
            signal.raise_signal(signum)
        self.hold_again()

    def let_go(self) -> int | None:
        """Put back the handlers this replaced; the held signal, no longer held (None if none)."""
        self._restore()
        signum, self.pending = self.pending, None
        return signum

    def hold_again(self) -> None:
        self._install()


__all__ = ["CHECKPOINT_FORMAT", "DataCursor", "DeferredSignals", "ResumeError", "StepCheckpoints", "has_state",
           "loader_generators", "param_list", "rng_state", "set_epoch", "set_rng_state", "weights_digest"]
