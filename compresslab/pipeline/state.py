"""What one run holds while it executes: settings, data, tokenizer, model, teacher, the ONNX file.

The CLI builds it from a composed config (:meth:`RunState.prepare`); the in-process API builds it
from a model the user already holds. Steps and stages read only this, never the raw config.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

try:  # tqdm.auto's notebook bar needs ipywidgets; without it, it warns (TqdmWarning: IProgress not found) and falls
    import ipywidgets  # noqa: F401  back to the text bar, so take the text bar directly and skip the warning
    from tqdm.auto import tqdm
except ImportError:
    from tqdm import tqdm

from compresslab.manifest import RunManifest
from compresslab.models.inmemory import frozen
from compresslab.pipeline.settings import RunSettings
from compresslab.types import OnnxModel, PassContext

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from compresslab.data.tasks import TaskData
    from compresslab.pipeline.plan import Step

log = logging.getLogger(__name__)


def tqdm_progress(iterable: Any = None, *, total: int | None = None, desc: str = "") -> Any:
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, mininterval=2.0)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``, ``cuda`` or ``cuda:N`` as given.

    Raises ValueError for any other name, and for cuda on a machine without a CUDA device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or not (name == "cpu" or name == "cuda" or
                                         (name.startswith("cuda:") and name[5:].isdigit())):
        raise ValueError(f"device={name!r} is not valid; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but torch sees no CUDA device here; use device=cpu or auto")
    return torch.device(name)


def check_teacher_head(model: nn.Module, what: str, fix: str) -> None:
    """The one rule for a model about to be the teacher (``model.finetuned=true`` in the CLI; the
    API's ``teacher=``, or its model with no ``finetune`` pass): its classification head must have
    been trained. ValueError saying ``what`` it is and the ``fix``, when the head is freshly
    initialised: a copy of it would teach noise, and every score would be compared with chance."""
    from compresslab.models.heads import head_is_untrained

    if head_is_untrained(model):
        raise ValueError(f"{what} has no trained classification head (the head was freshly initialised: its bias is "
                         f"all zero), so it cannot be the teacher. {fix}")


def check_steps(steps: list["Step"], task: "TaskData") -> None:
    """Every pass's cheap data checks (``Pass.check``) before any model is loaded."""
    for s in steps:
        s.pass_.check(task)


# (pass, architecture it refuses) -> the pipeline that does the same job on that architecture. A DistilBERT user who
# asked for ZipLM is told the ZipLM compound's twin without ZipLM (conf/pipeline/layer_drop_obert_int8.yaml), rather
# than only "use a bert or roberta model", which means another model, not another command.
ARCH_ALTERNATIVES: dict[tuple[str, str], str] = {
    ("ziplm", "distilbert"): "+pipeline=layer_drop_obert_int8 (layer drop to 4 layers, oBERT 80%, int8: the "
                             "depth-then-sparsity compound without ZipLM, which supports DistilBERT)",
}


def check_steps_model(steps: list["Step"], model: nn.Module) -> None:
    """Every pass's checks against the loaded model (``check_model``, where a pass has one: module
    patterns, shapes) before any step runs. Only the steps whose input is this model up to training
    are checked: those up to the first torch step that may change the structure (finetune and the
    passes that declare ``keeps_structure``, pruning by masks, keep every module name and shape);
    a step after that one is checked by its own ``apply``. ValueError naming the step.

    The architecture is the one thing no pass changes, so every step's ``model_types`` (the
    architectures a pass supports, where it declares them) is checked here, wherever it runs."""
    from compresslab.models.adapters import model_type_of
    from compresslab.types import Stage, capability, hook

    model_type = model_type_of(model)
    for s in steps:
        allowed = capability(s.pass_, "model_types")
        if allowed and model_type not in allowed:
            alt = ARCH_ALTERNATIVES.get((s.pass_.name, model_type))
            raise ValueError(f"step {s.name!r}: {s.pass_.name} supports {', '.join(allowed)} models only, and this "
                             f"one is {model_type}; use a {' or '.join(allowed)} model, or remove the step"
                             + (f"; for a {model_type} model: {alt}" if alt else ""))
    for s in steps:
        check = hook(s.pass_, "check_model")
        if check is not None:
            try:
                check(model)
            except ValueError as e:
                raise ValueError(f"step {s.name!r}: {e}") from None
        # a torch step that may change module names or shapes (ZipLM, layer drop, QAT's wrapped Linears) ends
        # what the loaded model can answer for; finetune and the masking passes (``keeps_structure``) do not
        if s.pass_.stage is Stage.TORCH and not (s.pass_.makes_teacher or capability(s.pass_, "keeps_structure")):
            return


@dataclass
class RunState:
    settings: RunSettings
    task: "TaskData"
    device: torch.device
    model_source: Path | None = None  # the source the initial model is loaded from (None: given in memory)
    tokenizer: Any = None
    model: nn.Module | None = None
    teacher: nn.Module | None = None
    onnx: OnnxModel | None = None
    progress: Any = tqdm_progress
    scores: dict[str, Any] = field(default_factory=dict)  # label -> Scored on the eval split, for agreement
    initial_dense: nn.Module | None = None  # the reference when no pass made a teacher (set lazily)
    # model.finetuned=true: the source model, head included, is the task's teacher; the pass that would
    # make the teacher (finetune) is not run
    input_is_teacher: bool = False
    # compresslab.compress(): advice is given in its terms (keywords, passes), not the CLI's overrides
    api: bool = False
    # compress() only: the teacher is a model used as it is (teacher=, or the model when no pass makes a teacher)
    teacher_as_given: bool = False

    @classmethod
    def prepare(cls, cfg: "DictConfig", steps: list["Step"]) -> "RunState":
        """Cheap checks before anything expensive: settings, model source, architecture, data, budgets.
        The typed settings are all it reads of ``cfg`` (:meth:`RunSettings.from_config`)."""
        from compresslab.checkpoint import check_source
        from compresslab.data.tasks import MissingSplit, SplitUnavailableError, load_task, resolve_data_root
        from compresslab.models.loading import check_max_length, read_config

        settings = RunSettings.from_config(cfg)
        m, t, data = settings.model, settings.task, settings.data
        assert m is not None and t is not None and data is not None, "a composed config's settings have all three"
        device = resolve_device(settings.device)
        src = check_source(m.source)  # config, architecture, weights intact, tokenizer files
        check_max_length(settings.max_length, read_config(src), "task.max_length")
        # generic files: relative paths are tried against the working directory, then data.root (conf/task/generic.yaml).
        # A data.root that is set must exist (refused as for GLUE tasks); unset, load_task looks for the default
        # root only if a file needs it
        root = (resolve_data_root(data.root) if data.root else None) if t.generic else resolve_data_root(data.root)
        task = load_task(t.name, root, val_size=t.val_size, val_carve=t.val_carve, seed=settings.seed,
                         max_train=t.max_train, max_dev=t.max_dev, generic=dict(t.generic) if t.generic else None)
        if settings.eval.split == "dev" and isinstance(task.dev, MissingSplit):  # else found after training
            raise SplitUnavailableError(f"eval.split=dev, but {task.dev.reason}; or set eval.split=validation")
        if settings.eval.enabled and settings.eval.split == "validation" and not len(task.validation):
            raise SplitUnavailableError("eval.split=validation, but the task has no validation split (task.val_size=0, "
                                        "or a train split too small to carve one): set task.val_size, or "
                                        "eval.split=dev")
        check_steps(steps, task)
        if settings.bench.enabled:
            from compresslab.bench.deepsparse_backend import check_requested

            check_requested(settings.bench.deepsparse.enabled, settings.bench.deepsparse.python)
        return cls(settings=settings, task=task, model_source=src, device=device, input_is_teacher=m.finetuned)

    # ---------------------------------------------------------------- derived
    @property
    def eval_examples(self) -> list:
        """The split the eval stage scores: dev (reported) or validation (what a search selects on)."""
        return list(self.task.dev if self.settings.eval.split == "dev" else self.task.validation)

    def new_manifest(self, run_dir: Path, *, pipeline: str, config_hash: str, model_id: str,
                     config: dict[str, Any]) -> RunManifest:
        from compresslab.bench.env import hardware_fingerprint

        return RunManifest.create(
            run_dir, pipeline=pipeline, config_hash=config_hash, model_id=model_id,
            model_source=str(self.model_source or "in-memory"), task=self.task.spec.name, seed=self.settings.seed,
            config=config, hardware=hardware_fingerprint(), data=self.task.info)

    def context(self, run_dir: Path, step_dir: Path) -> PassContext:
        s = self.settings
        return PassContext(tokenizer=self.tokenizer, task=self.task, run_dir=run_dir, step_dir=step_dir,
                           device=self.device, seed=s.seed, teacher=self.teacher, max_length=s.max_length,
                           batch_size=s.batch_size, progress=self.progress, cache_dir=s.cache_dir,
                           model_source=str(self.model_source or ""))

    def load_initial(self) -> None:
        """Load the source model and tokenizer: with a fresh head, seeded (the run is reproducible), or,
        with ``input_is_teacher`` (model.finetuned=true), with its own head, checked against the task's
        labels. ValueError when a fine-tuned model's head does not fit the task."""
        from compresslab.checkpoint import load_pretrained
        from compresslab.models.heads import set_class_names

        assert self.model_source is not None, "load_initial needs a model source"
        spec = self.task.spec
        self.model, self.tokenizer = load_pretrained(self.model_source, kind=spec.kind.value, num_labels=spec.num_labels,
                                                     finetuned=self.input_is_teacher, seed=self.settings.seed)
        if self.input_is_teacher:
            self._check_given_head()
        set_class_names(self.model.config, spec.label_names)  # every saved config.json names the classes

    def _check_given_head(self) -> None:
        """model.finetuned=true: the head's size, kind and class names must be the task's (a head trained
        with another label order would score every example wrongly, silently). ValueError otherwise."""
        from compresslab.data.checks import check_labels_match_head, note_unnamed_head

        assert self.model is not None
        check_teacher_head(self.model, f"model.finetuned=true, but {self.model_source}",
                           "Set model.finetuned=false to fine-tune it on the task first")
        names = [str(n) for _, n in sorted((getattr(self.model.config, "id2label", None) or {}).items())]
        try:  # the CLI's fix for a class-order mismatch is the task's label order, not the API's label2id=
            check_labels_match_head(self.task, self.model.config,
                                    names_fix=f"set task.generic.labels=[{','.join(names)}] (the model's classes in "
                                    "id order) so the data uses the model's ids")
        except ValueError as e:
            raise ValueError(f"model.finetuned=true, but the head of {self.model_source} does not fit the task: {e}. "
                             "Set model.finetuned=false to fine-tune a fresh head instead") from None
        note_unnamed_head(self.task, self.model.config, f"model.finetuned=true: {self.model_source}",
                          "set task.generic.labels=[...] to the classes in the order the head was trained with")
        log.info("model.finetuned=true: %s (its own head) is the teacher; the finetune step trains nothing",
                 self.model_source)

    def teacher_or_initial(self) -> nn.Module:
        """The teacher; for pipelines that produce none (embeddings, int8 only), the dense input model.

        This is the reference for agreement and the speed denominator, not a KD fallback (passes use
        ``PassContext.kd_teacher``).
        """
        if self.teacher is not None:
            return self.teacher
        if self.initial_dense is None:
            from compresslab.checkpoint import load_pretrained
            from compresslab.models.heads import set_class_names

            assert self.model_source is not None, "no teacher and no model source to rebuild the input model"
            spec = self.task.spec
            m, _ = load_pretrained(self.model_source, kind=spec.kind.value, num_labels=spec.num_labels,
                                   finetuned=self.input_is_teacher, seed=self.settings.seed)  # load_initial's head
            set_class_names(m.config, spec.label_names)
            self.initial_dense = frozen(m)
        return self.initial_dense
