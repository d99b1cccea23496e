"""The pass contract: what every compression method implements and what it may use.

A pass is a small typed dataclass (validated in ``__post_init__``) with a ``name``, a ``stage``
and one method ``apply(model, ctx) -> PassResult``. TORCH passes receive and mutate an
``nn.Module``; ONNX passes receive an :class:`OnnxModel` (a path to an exported directory)
and return the path of the graph they wrote in ``PassResult.onnx_path``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Protocol, runtime_checkable

if TYPE_CHECKING:  # keep `import compresslab` light
    import torch
    from torch import nn

    from compresslab.data.tasks import TaskData


class Stage(str, Enum):
    """Where a pass operates: on the PyTorch module or on the exported ONNX graph."""

    TORCH = "torch"
    ONNX = "onnx"


@dataclass
class OnnxModel:
    """An exported model directory (model.onnx + config.json + tokenizer), as ONNX passes see it."""

    dir: Path
    onnx_path: Path

    def __post_init__(self) -> None:
        self.dir = Path(self.dir)
        self.onnx_path = Path(self.onnx_path)


@dataclass
class PassResult:
    """What a pass did, in plain JSON-able values.

    ``structure`` holds the facts needed to rebuild the model (kept heads / FFN sizes per layer,
    bit widths); masks are implied by zeros in the weights.
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    structure: dict[str, Any] = field(default_factory=dict)
    onnx_path: str | None = None
    # Checkpoint formats to write beside the dense safetensors (TORCH passes), by name from
    # ``compresslab.checkpoint.FORMATS`` (e.g. "sparse_int8"): declared, never inferred from metrics.
    formats: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Progress(Protocol):
    """A progress reporter; the pipeline passes a tqdm-backed one."""

    def __call__(self, iterable: Any = None, *, total: int | None = None, desc: str = "") -> Any: ...


@dataclass
class PassContext:
    """Everything a pass may use, and nothing else (no globals).

    Data comes through methods so a pass that needs no data never pays for tokenization.
    """

    tokenizer: Any
    task: "TaskData"
    run_dir: Path
    step_dir: Path
    device: "torch.device"
    seed: int
    teacher: "nn.Module | None" = None
    max_length: int = 128
    batch_size: int = 32
    progress: Callable[..., Any] | None = None
    cache_dir: Path | None = None
    model_source: str = ""

    def generator(self) -> "torch.Generator":
        """A fresh generator seeded from the run seed, so each use is reproducible."""
        import torch

        return torch.Generator().manual_seed(self.seed)

    def train_loader(self, batch_size: int | None = None, shuffle: bool = True, max_examples: int | None = None):
        """Tokenized, dynamically padded loader over the train split (minus validation)."""
        from compresslab.data.loaders import make_loader

        examples = self.task.train if max_examples is None else self.task.train[:max_examples]
        return make_loader(examples, self.tokenizer, batch_size or self.batch_size, self.max_length,
                           shuffle=shuffle, seed=self.seed, kind=self.task.spec.kind, group_by_length=shuffle)

    def validation_loader(self, batch_size: int | None = None):
        """Loader over the validation split carved from train: the only split a pass may select on."""
        from compresslab.data.loaders import make_loader

        return make_loader(self.task.validation, self.tokenizer, batch_size or self.batch_size,
                           self.max_length, shuffle=False, seed=self.seed, kind=self.task.spec.kind)

    def validation_score(self, model: "nn.Module") -> float:
        """``model``'s score (the task's metric, higher is better) on the validation split: what a pass
        selects on (``Recovery.select_every``). The model runs where its parameters are (a training
        wrapper may have placed it off ``self.device``); eval mode is the caller's
        (:class:`~compresslab.training.select.BestOnValidation` sets it). ValueError on an empty split."""
        from compresslab.eval.evaluate import predict, torch_forward

        if not len(self.task.validation):
            raise ValueError("validation_score: the validation split is empty (task.val_size=0)")
        device = next(model.parameters()).device
        return float(predict(torch_forward(model, device), self.task.spec, self.task.validation,
                             self.tokenizer, max_length=self.max_length).metrics["score"])

    def calibration_batches(self, n: int, batch_size: int | None = None) -> Iterator[dict]:
        """``n`` examples sampled (seeded) from train, tokenized and batched.

        A train split smaller than ``n`` gives all of it, with a warning (calibration statistics
        are still well defined; the pass records how many it used).
        """
        import logging

        from compresslab.data.loaders import calibration_examples, make_loader

        available = len(self.task.train)
        if 0 < available < n:
            logging.getLogger(__name__).warning("asked for %d calibration examples, the train split has %d: using all",
                                                n, available)
            n = available
        examples = calibration_examples(self.task.train, n, self.seed)
        return iter(make_loader(examples, self.tokenizer, batch_size or self.batch_size, self.max_length,
                                shuffle=False, seed=self.seed, kind=self.task.spec.kind))

    def kd_teacher(self, model: "nn.Module") -> "nn.Module":
        """The teacher a distilling pass learns from: the run's teacher, else ``model`` as it is now.

        Call it before the pass changes ``model``: without a run teacher (no pass produced one and
        the caller gave none) the frozen copy of the incoming model is the teacher, which is right
        for a model that is already fine-tuned on the task. The result is in eval mode, no grads.
        """
        if self.teacher is not None:
            return self.teacher
        import copy

        t = copy.deepcopy(model).eval()
        for p in t.parameters():
            p.requires_grad_(False)
        return t

    def track(self, iterable: Any = None, *, total: int | None = None, desc: str = "") -> Any:
        """Wrap long work in the run's progress reporter (a no-op wrapper when there is none)."""
        if self.progress is None:
            return iterable
        return self.progress(iterable, total=total, desc=desc)


@runtime_checkable
class Pass(Protocol):
    """A compression method. Implementations are dataclasses registered with ``@register_pass``."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    # True for a pass whose output is the run's teacher (``finetune``): the model after it is frozen
    # and used for KD and as the reference for agreement, on a fresh run and on resume alike.
    makes_teacher: ClassVar[bool]
    # Optional (default False): True for a torch pass that keeps every module's name and shape (pruning by
    # masks), so the pipeline also checks the steps after it against the loaded model before any work.
    # keeps_structure: ClassVar[bool]

    def check(self, task: "TaskData") -> None:
        """Cheap checks against the task's data before any model is loaded; raises ValueError."""
        ...

    def apply(self, model: Any, ctx: PassContext) -> PassResult: ...
