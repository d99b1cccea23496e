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
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Protocol, runtime_checkable

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

    def validation_score(self, model: "nn.Module", max_examples: int | None = None) -> float:
        """``model``'s score (the task's metric, higher is better) on the validation split, or on its first
        ``max_examples`` (``Recovery.select_examples``): what a pass selects on (``Recovery.select_every``).
        The model runs where its parameters are (a training wrapper may have placed it off ``self.device``);
        eval mode is the caller's (:class:`~compresslab.training.select.BestOnValidation` sets it).
        ValueError on an empty split."""
        from compresslab.eval.evaluate import predict, torch_forward

        if not len(self.task.validation):
            raise ValueError("validation_score: the validation split is empty (task.val_size=0)")
        examples = self.task.validation if max_examples is None else self.task.validation[:max_examples]
        device = next(model.parameters()).device
        return float(predict(torch_forward(model, device), self.task.spec, examples,
                             self.tokenizer, max_length=self.max_length).metrics["score"])

    def calibration_batches(self, n: int, batch_size: int | None = None, setting: str | None = None) -> Iterator[dict]:
        """``n`` examples sampled (seeded) from train, tokenized and batched.

        A train split smaller than ``n`` gives all of it, with a warning naming ``setting`` (the key that asked
        for ``n``, e.g. ``int8_qat.num_calibration``): calibration statistics are still well defined; the pass
        records how many it used.
        """
        import logging

        from compresslab.data.loaders import calibration_examples, count_and_say, make_loader

        available = len(self.task.train)
        if 0 < available < n:
            asked = f"{setting}={n}" if setting else f"{n} calibration examples"
            logging.getLogger(__name__).warning("%s asks for more examples than the train split has (%d): using all",
                                                asked, available)
            n = available
        examples = calibration_examples(self.task.train, n, self.seed)
        count_and_say(examples, self.tokenizer, self.max_length, f"calibration ({setting or 'calibration'})",
                      kind=self.task.spec.kind)  # statistics of cut rows: said, as every tokenization's count is
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
        from compresslab.models.inmemory import frozen

        return frozen(model)

    def track(self, iterable: Any = None, *, total: int | None = None, desc: str = "") -> Any:
        """Wrap long work in the run's progress reporter (a no-op wrapper when there is none)."""
        if self.progress is None:
            return iterable
        return self.progress(iterable, total=total, desc=desc)


@runtime_checkable
class Pass(Protocol):
    """A compression method. Implementations are dataclasses registered with ``@register_pass``.

    Beyond these required members a pass may declare the optional capabilities listed in
    :data:`PASS_FLAGS` (class attributes, read with :func:`capability`) and :data:`PASS_HOOKS`
    (methods, read with :func:`hook`). Code outside a pass never reads that pass's settings by field name: what
    another step needs to know is one of those capabilities, so a new pass whose field shares a name with another
    pass's setting (``outliers``, ``recovery``, ``ffn_grid``, ``latency``) is not checked under that pass's rules
    (tests/passes/test_capabilities.py reads the code for such reads)."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    # True for a pass whose output is the run's teacher (``finetune``): the model after it is frozen
    # and used for KD and as the reference for agreement, on a fresh run and on resume alike.
    makes_teacher: ClassVar[bool]

    def check(self, task: "TaskData") -> None:
        """Cheap checks against the task's data before any model is loaded; raises ValueError."""
        ...

    def apply(self, model: Any, ctx: PassContext) -> PassResult: ...


# The optional flags a pass may declare, name -> the value of a pass that does not declare it. A flag is a
# ClassVar, or a property where it depends on the pass's settings (layer_drop's ``keeps_zeros``).
PASS_FLAGS: Mapping[str, Any] = MappingProxyType({
    # a torch pass that keeps every module's name and shape (pruning by masks): the steps after it are also checked
    # against the loaded model before any work (pipeline/state.py check_steps_model)
    "keeps_structure": False,
    # prunes weights to exactly zero: every later pass must keep them (pipeline/plan.py check_zeros_kept)
    "makes_sparse": False,
    # keeps the exact zeros of an earlier ``makes_sparse`` pass; undeclared: assumed not to (plan.py check_zeros_kept)
    "keeps_zeros": False,
    # distils from a teacher whatever its recovery says (BiBERT): one must be made before it (plan.py needs_teacher)
    "needs_teacher": False,
    # makes the model binary: OpenVINO precisions a binary model refuses are refused before any step
    # (pipeline/deploy.py check_deploy)
    "binarizes": False,
    # its file has ORT-only n-bit ops (MatMulNBits), which OpenVINO cannot read (pipeline/preflight.py
    # nbits_step_on_openvino)
    "writes_nbits": False,
    # a torch pass that quantizes and freezes n-bit weights (hawq): what ort_matmul_nbits needs before it
    # (passes/ort_matmul_nbits.py check_after)
    "quantizes_weights": False,
    # the architectures (``config.model_type``) the pass supports; None: any (pipeline/state.py check_steps_model)
    "model_types": None,
    # settings added after runs were made, name -> the value those runs had (a ClassVar mapping): the run identity
    # leaves a setting out at that value (or at None), so a run made before it existed is found again, resumed and
    # reused, rather than made anew (pipeline/plan.py config_identity; every key must be a field of the pass)
    "identity_defaults": MappingProxyType({}),
})

# The optional methods a pass may define, name -> its signature and what it means (who calls it).
PASS_HOOKS: Mapping[str, str] = MappingProxyType({
    "check_model": "check_model(model) -> None: ValueError where the loaded model does not suit the pass (module "
                   "patterns, shapes), before any step runs (pipeline/state.py check_steps_model)",
    "check_planned": "check_planned(model_class: type, config, cache_dir, progress=None) -> None: ValueError where "
                     "the model this step will be given (the loaded model's class, its config as the steps before "
                     "leave it: ``planned_config``) cannot meet the pass's settings; may time what the step would "
                     "(ZipLM's latency table, cached), before any step runs (pipeline/preflight.py check_planned)",
    "planned_config": "planned_config(config) -> config: the model config this step leaves, known before it runs "
                      "(layer_drop: fewer layers), for a later step's ``check_planned`` (pipeline/preflight.py "
                      "check_planned); a torch step that changes the structure without it ends the plan",
    "check_after": "check_after(earlier: list[Pass]) -> None: ValueError where the passes before this step do not "
                   "give it what it needs, before any work (pipeline/plan.py check_order)",
    "check_deployable": "check_deployable() -> None: ValueError where a ``quantizes_weights`` pass's layout cannot "
                        "deploy as MatMulNBits (passes/ort_matmul_nbits.py check_after)",
    "sequence_lengths": "sequence_lengths() -> dict[str, int]: setting -> tokens, for settings used only in some "
                        "modes, checked against the model's position table (pipeline/preflight.py pass_lengths)",
    "own_settings": "own_settings() -> list[str]: ``key=value`` of each setting of an ONNX pass that makes its file "
                    "ours rather than the runtime's own tool (benchmarks/suite_method.py own_settings)",
    "identity_settings": "identity_settings(node: dict) -> dict (a classmethod): the pass's resolved config node as "
                         "the run identity sees it, one setting written two ways made one (ZipLM's latency_runtime "
                         "``[ort_int8]`` is ``ort_int8``), before ``identity_defaults`` apply (pipeline/plan.py "
                         "config_identity)",
    "check_deploy_settings": "check_deploy_settings(*, export_optimize: bool, deploy_runtime: str) -> None: "
                             "ValueError, its message starting with the pass's own ``key=value``, where the run's "
                             "``export.optimize`` / ``deploy.runtime`` would make the pass fail or drop what it wrote "
                             "(ort_int8_dynamic's ``outliers: split`` needs a fused graph and an ORT deploy), before "
                             "any work (pipeline/preflight.py check_deploy_settings)",
    "recovery_settings": "recovery_settings() -> Recovery: the pass's KD recovery (training.recovery.Recovery); "
                         "one whose losses read a teacher needs a teacher made before it (pipeline/plan.py "
                         "needs_teacher)",
    "ffn_width_multiple": "ffn_width_multiple() -> int: the multiple every FFN width the pass leaves is on (a "
                          "structured pass's ``ffn_grid``), which a later pass's own grid or blocks must divide "
                          "(pruning/speedup.py off_grid, from ziplm / structured_l1 / obert check_after)",
    "check_accuracy_level": "check_accuracy_level(accuracy_level: int) -> None: ValueError where a "
                            "``quantizes_weights`` pass priced a budget on MatMulNBits at another accuracy_level than "
                            "the deploy step's (passes/ort_matmul_nbits.py check_after)",
})

# A pass's own public methods whose names look like a hook's (``check_*``, ``*_settings``) but that no pipeline
# code calls on an arbitrary pass, name -> who calls it: declared so that a misspelt hook still stands out.
PASS_OWN_METHODS: Mapping[str, str] = MappingProxyType({
    "check_feasible": "hawq's own apply (quant/hawq_settings.py): its bit budget against the priced layouts",
    "table_settings": "ziplm / structured_l1 (pruning/speedup.py) and benchmarks: the latency table's settings",
})


class UnknownCapabilityError(KeyError):
    """A flag or hook name that :data:`PASS_FLAGS` / :data:`PASS_HOOKS` does not declare (a typo in the
    reader); the message lists the declared ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


def capability(pass_: Any, name: str) -> Any:
    """Pass (instance or class) ``pass_``'s value of the optional flag ``name``, or its declared default
    (:data:`PASS_FLAGS`). UnknownCapabilityError for an undeclared name; TypeError for a flag that is a property
    (it depends on the settings) asked of the class."""
    if name not in PASS_FLAGS:
        raise UnknownCapabilityError(f"{name!r} is not a declared pass flag; declared: {', '.join(PASS_FLAGS)} "
                                     "(compresslab.types.PASS_FLAGS)")
    value = getattr(pass_, name, PASS_FLAGS[name])
    if isinstance(value, property):  # read on the class: the flag depends on the settings (layer_drop's keeps_zeros)
        raise TypeError(f"{getattr(pass_, '__name__', pass_)}.{name} depends on the pass's settings (a property): "
                        "ask an instance")
    return value


def hook(pass_: Any, name: str) -> Callable[..., Any] | None:
    """Pass ``pass_``'s optional method ``name`` (bound on an instance, the function on a class), or None where
    it has none or the attribute is not callable. UnknownCapabilityError for a name :data:`PASS_HOOKS` does
    not declare."""
    if name not in PASS_HOOKS:
        raise UnknownCapabilityError(f"{name!r} is not a declared pass hook; declared: {', '.join(PASS_HOOKS)} "
                                     "(compresslab.types.PASS_HOOKS)")
    method = getattr(pass_, name, None)
    return method if callable(method) else None
