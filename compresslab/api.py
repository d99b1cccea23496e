"""The in-process API: compress a model you already hold; no Hydra, no run directory unless asked.

    result = compresslab.compress(model, tokenizer, ["obert", OBert(sparsity=0.8)], data=train, eval_data=dev)
    result.model; result.metrics; result.export("out/")

The same passes, checks and step loop as the CLI (:mod:`compresslab.pipeline`): every pass is built
and validated, the data read and labelled, the head and the tokenizer checked, and the teacher
settled before any training. Steps run in a temporary working directory that is removed with the
result, unless ``output_dir`` asks for a run directory (the CLI's layout, resumable).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

from compresslab.failure import sigterm_interrupts
from compresslab.rng import callers_rng_kept

if TYPE_CHECKING:
    from torch import nn

    from compresslab.data.tasks import TaskData
    from compresslab.pipeline.plan import Step
    from compresslab.pipeline.state import RunState
    from compresslab.types import Pass

log = logging.getLogger(__name__)

PassSpec = Any  # a registered name, a pass instance, or {"name": ..., **settings}


def build_steps(passes: Sequence[PassSpec]) -> list["Step"]:
    """Build and validate every pass, name each step, then the step-list checks the CLI's config makes too
    (:func:`~compresslab.pipeline.plan.checked_steps`: field types, not empty, stage and teacher order).

    A pass given by name gets its dataclass defaults (``conf/pass/<name>.yaml`` holds the CLI's,
    which may read a budget). Raises PipelineError / ValueError / UnknownPassError.
    """
    from compresslab.pipeline.plan import PipelineError, checked_steps

    if isinstance(passes, (str, bytes)) or not isinstance(passes, Iterable):
        raise PipelineError(f"passes must be a list of pass names or pass objects, got {passes!r}")

    def built() -> Iterator[tuple[str, "Pass"]]:  # each pass built as checked_steps pulls it: errors in order
        seen: dict[str, int] = {}
        for i, spec in enumerate(passes):
            p = _built_pass(i, spec)
            seen[p.name] = seen.get(p.name, 0) + 1
            yield (p.name if seen[p.name] == 1 else f"{p.name}_{seen[p.name]}"), p

    return checked_steps(built(), where=lambda s: f"passes[{s.index}] ({s.pass_.name}): ",
                         empty="passes is empty: name at least one pass, e.g. ['ort_int8_dynamic']")


def _built_pass(i: int, spec: PassSpec) -> "Pass":
    """``passes[i]`` as a pass: built from a registered name or a ``{"name": ..., **settings}`` dict, or as given.
    PipelineError for anything else; ValueError / UnknownPassError from the registry."""
    from compresslab.pipeline.plan import PipelineError
    from compresslab.registry import build_pass
    from compresslab.types import Pass

    if isinstance(spec, str):
        return build_pass(spec)
    if isinstance(spec, Mapping):
        d = dict(spec)
        if "name" not in d:
            raise PipelineError(f"passes[{i}]: a dict needs a 'name' key, got keys {sorted(d)}")
        return build_pass(d.pop("name"), **d)
    if isinstance(spec, Pass):
        return spec
    raise PipelineError(f"passes[{i}]: expected a pass name, a dict or a pass object, got {spec!r}")


@dataclass
class CompressResult:
    """What :func:`compress` returns: the compressed torch model, metrics, and exports on demand.

    ``metrics`` is a plain dict: ``steps`` (per step: pass settings, the pass's metrics, eval-split
    score and agreement after it, params, wall seconds), ``eval`` (the final torch model vs the
    teacher on ``eval_data``, when given) and ``data`` (split sizes, label mapping). ``warnings``: what the
    report's Summary would flag about that eval (report/verdicts.run_flags: a teacher no better than chance, a
    model that predicts one class, a low agreement with the teacher), [] without ``eval_data`` or with none; the
    repr shows them.
    """

    model: "nn.Module"
    tokenizer: Any
    metrics: dict[str, Any]
    run_dir: Path
    onnx_path: Path | None = None  # the graph the last ONNX pass wrote, if any
    warnings: list[str] = field(default_factory=list)  # the Summary's flags on the eval (result_flags)
    _state: "RunState | None" = field(default=None, repr=False)
    _cleanup: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        # the model's own repr is pages long; what a notebook shows is where the run is, its score and its flags
        ev = self.metrics.get("eval") or {}
        score = (f", {ev.get('primary_metric', 'score')}={ev['score']:.4f} (teacher "
                 f"{ev['models']['teacher']['score']:.4f})" if "score" in ev and "models" in ev else "")
        # the run dir is a temporary folder removed by close() or at exit: a path copied from the repr would be gone
        kept = ("" if self._cleanup is None else
                " (temporary: removed by close() or when the result is collected; result.export(DIR) keeps it)")
        return (f"CompressResult(run_dir={str(self.run_dir)!r}{kept}, onnx_path="
                f"{str(self.onnx_path) if self.onnx_path else None!r}{score}, warnings={self.warnings!r})")

    def export(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write an ONNX directory (``model.onnx`` + config + tokenizer, optimum's ORTModel layout).

        With ONNX passes (e.g. int8) it is the graph they wrote; otherwise the torch model exported
        now, fused, with parity checked against PyTorch on real padded inputs (ParityError past the
        tolerance). The directory is written beside ``out_dir`` and moved into place when complete.
        Returns ``out_dir``. FileExistsError for a non-empty ``out_dir`` unless ``overwrite`` (then
        it is replaced whole: no file of an earlier export stays); SettingsError naming ``out_dir``
        when its parent cannot be written; RuntimeError after :meth:`close` when the ONNX pass's
        graph is gone.
        """
        from compresslab.manifest import publish_mode
        from compresslab.pipeline.export import export_dir
        from compresslab.validate import check_writable

        out = Path(out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; choose an empty directory or overwrite=True")
        if self.onnx_path is not None and not self.onnx_path.is_file():
            raise RuntimeError(f"this result was closed: its ONNX graph ({self.onnx_path.name}) was in the removed "
                               "working directory; export before close(), or pass output_dir= to compress")
        check_writable(out.parent, "out_dir", out)  # the export is written beside out_dir, then moved in
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            if self.onnx_path is None:
                export_dir(self.model, self._state, tmp)
            else:
                for f in self.onnx_path.parent.iterdir():  # the ONNX step dir: graph, config, tokenizer
                    if f.is_file() and f.name != "pass.json":
                        shutil.copy2(f, tmp / ("model.onnx" if f == self.onnx_path else f.name))
            publish_mode(tmp)  # mkdtemp made it 0700
            if out.exists():
                shutil.rmtree(out) if out.is_dir() else out.unlink()
            tmp.replace(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    def save(self, out_dir: str | Path) -> Path:
        """Save the torch model (+ tokenizer) as a compresslab checkpoint, reloadable by ``compresslab.load``.
        SettingsError naming ``out_dir`` when it cannot be written (read-only, a file in the path)."""
        from compresslab.checkpoint import save

        return save(self.model, out_dir, self.tokenizer)  # checks out_dir first, as compresslab.save does

    def close(self) -> None:
        """Remove the temporary working directory now (it is also removed when the result is collected)."""
        if self._cleanup is not None:
            self._cleanup()


@callers_rng_kept
@sigterm_interrupts()  # a kill is recorded as an interrupt, then handed to the caller's handler
def compress(model: "nn.Module", tokenizer: Any, passes: Sequence[PassSpec], *, data: Any,
             eval_data: Any = None, teacher: "nn.Module | None" = None, label2id: Mapping[str, int] | None = None,
             kind: str | None = None, output_dir: str | Path | None = None, max_length: int = 128,
             batch_size: int = 32, seed: int = 42, val_size: int | None = None, val_carve: str = "random",
             device: str = "auto",
             inplace: bool = False, export: Mapping[str, Any] | None = None, progress: bool = True,
             **columns: str) -> CompressResult:
    """Compress ``model`` with ``passes`` on ``data``; returns a :class:`CompressResult`.

    Args:
        model: a Hugging Face BERT / RoBERTa / DistilBERT model (a sequence classifier for labelled
            tasks, a bare encoder for ``kind="embedding"``). Copied unless ``inplace`` (an attribute that
            cannot be copied, such as a lock, is shared with the copy, with a warning). Parameters with
            ``requires_grad=False`` stay frozen; a model with every one of them frozen is trained whole
            when a torch step trains it, with a warning. With ``"finetune"`` first, a head of another size or
            kind than the data needs is replaced by a fresh seeded one, with a log line (the CLI's rule); otherwise
            its head is used as trained and must fit (a head without class names: data class i is head id i,
            with a warning).
        tokenizer: its tokenizer.
        passes: pass names (``"obert"``), pass objects (``compresslab.passes.OBert(sparsity=0.8)``) or
            dicts ``{"name": "obert", "sparsity": 0.8}``, in order; TORCH passes before ONNX ones.
        data: training data: a list of ``(text, label)`` / ``(text_a, text_b, label)``, a
            ``datasets.Dataset``, a pandas ``DataFrame``, or a CSV/TSV/JSONL path; labels may be
            strings. The validation split (what passes may select on) is carved from it, seeded.
        val_carve: ``"random"`` (examples) or ``"grouped"`` (whole texts; their duplicates and, for
            single texts, their phrases are kept out of train: for phrase-augmented data like SST-2;
            pairs group by exact duplicates only). A bad name is a ValueError before any training.
        eval_data: the same kinds; scored after every step and reported, never selected on.
        teacher: the model to distil from and score against; default: the output of a ``finetune``
            pass, else a frozen copy of ``model`` as given (right for a model already fine-tuned on
            the task: the CLI's ``model.finetuned=true``). Its classification head must be trained
            (given, or the model as given when a pass distils or ``eval_data`` is scored).
        label2id: label names -> head ids; default: the model's ``config.label2id`` when it names
            its labels (a label matches a name as written, else ignoring case), else the data's
            sorted class names or its integer ids. Labels follow the rules of the CLI's files
            (:mod:`compresslab.data.labels`): ``1``, ``"1"`` and ``1.0`` are one class, and ids mixed
            with names, a label only in ``eval_data`` or ids that leave a class empty are errors.
        inplace: compress ``model`` itself rather than a copy (its weights, dtype and structure change).
        output_dir: write a run directory (checkpoints, ``pass.json`` and ``manifest.json`` per step;
            rerunning resumes after the last finished step); default: a temporary directory.
        export: export settings (``opset``, ``optimize``, ``atol``, ``parity_examples``) over
            ``conf/export/default.yaml``.
        columns: ``text_column``, ``text_pair_column``, ``label_column`` for datasets and files.

    Raises (all before any training, nothing written): SettingsError (a ValueError) for an
    ``output_dir`` that cannot be written (read-only, a file in its path); ValueError for a model or
    teacher without weights (on the meta device) or with a tokenizer larger than its embedding table, empty or
    unlabelled data, untokenizable text, labels that do not match the model's head, a teacher with
    an untrained head (``teacher=``, or the model as given when it is the teacher), a distilling
    pass without a teacher, bad pass settings; PipelineError for a bad pass order;
    UnknownPassError for a name.

    Ctrl-C, and SIGTERM called from the main thread, stop it as interrupted: an ``output_dir`` run records
    that at its step or stage, and resumes. SIGTERM's handler is ours only while compress() runs: yours (or
    the default, which ends the process) is put back, then given the signal (failure.sigterm_interrupts).
    From another thread none can be set: the process's handler acts (the default ends it; the run reads crashed).
    """
    import torch

    from compresslab.api_heads import check_teacher, fit_fresh_head, head_fix, replaces_head, task_read_for_head
    from compresslab.data.checks import check_labels_match_head, check_tokenizable
    from compresslab.data.user import check_column_keywords, task_from_user_data
    from compresslab.models.adapters import get_adapter
    from compresslab.models.heads import config_label2id, task_kind_of
    from compresslab.models.loading import to_float32
    from compresslab.validate import check_writable
    from compresslab.pipeline.preflight import check_steps_settings, check_with_model
    from compresslab.pipeline.settings import RunSettings, default_settings
    from compresslab.pipeline.state import RunState, check_steps, frozen, resolve_device, tqdm_progress
    from compresslab.validate import check_positive_int

    check_column_keywords(columns, compress)  # a CLI key (text_a=) or a typo, named before any work
    model = _as_model(model, "model")
    if model is None or not hasattr(model, "config"):
        raise TypeError("model must be a Hugging Face sequence-classification model (BERT, RoBERTa or DistilBERT: "
                        "e.g. AutoModelForSequenceClassification.from_pretrained(...)) or its checkpoint directory, "
                        f"got {type(model).__name__}")
    check_positive_int(batch_size, "batch_size")
    _check_max_length(max_length, model.config)
    resolve_device(device)  # an unknown or absent device fails here, not inside a pass
    if output_dir is not None:  # the CLI's preflight rule: a read-only dir or a file in the path, before any work
        check_writable(Path(output_dir), "output_dir")
    steps = build_steps(passes)
    get_adapter(model)  # UnsupportedArchitectureError names the supported ones
    head_names = config_label2id(model.config) if label2id is None else None  # the model's own class names

    def read(names: Mapping[str, int] | None) -> "TaskData":
        return task_from_user_data(data, eval_data, label2id=label2id if label2id is not None else names,
                                   label2id_from="the model's config.label2id" if names else None,
                                   kind=kind if kind is not None else task_kind_of(model), val_size=val_size,
                                   val_carve=val_carve, seed=seed, **columns)

    task = task_read_for_head(read, head_names, steps, model)
    fresh_head = replaces_head(steps, model, task)
    if not fresh_head:  # the model's own head is kept: it must be the task's
        check_labels_match_head(task, model.config, compare_names=label2id is None, head_fix=head_fix(task))
    check_tokenizable(task, tokenizer, max_length)
    check_steps(steps, task)
    export_s, eval_s, bench_s = default_settings(export=export, eval={"enabled": len(task.dev) > 0},
                                                 bench={"enabled": False})
    settings = RunSettings(seed=seed, max_length=max_length, batch_size=batch_size, cache_dir=None,  # type: ignore[arg-type]
                           threads=None, device=device, report=False, export=export_s, eval=eval_s, bench=bench_s)
    # the CLI's lists, whole and in its order: its preflight's per-step checks (what a step rules out of the export
    # settings, a pass's own sequence lengths such as ZipLM's seq against this model's position table), then the
    # model checks its driver makes before the first step (the model's weights and tokenizer, deploy settings, each
    # pass's check_model): before the teacher checks, which read the model's head
    check_steps_settings(settings, steps, model.config, " (the model given to compress())")
    check_with_model(settings, steps, model, tokenizer, progress=tqdm_progress if progress else None)
    teacher = _as_model(teacher, "teacher")
    check_teacher(steps, model, teacher, task, tokenizer)

    run_dir, cleanup = _work_dir(output_dir)
    try:
        # float16/bfloat16 models train to NaN on CPU: compresslab works in float32 (the copy, or in place)
        from compresslab.models.inmemory import working_copy

        work = to_float32(model if inplace else working_copy(model), "model")
        _trainable(work, steps, inplace)  # before a fresh head: a model frozen whole is made trainable whole
        if fresh_head:
            fit_fresh_head(work, task, seed)
        _name_labels(work, task)  # every checkpoint and export carries the label names used
        state = RunState(settings=settings, task=task, device=resolve_device(device), tokenizer=tokenizer,
                         model=work.eval(),
                         teacher=to_float32(frozen(teacher), "teacher") if teacher is not None else None,
                         progress=tqdm_progress if progress else None, api=True,
                         teacher_as_given=not any(s.pass_.makes_teacher for s in steps))
        state.initial_dense = frozen(work) if teacher is None else state.teacher
        torch.manual_seed(seed)  # on a fork of the caller's RNG (callers_rng_kept)
        manifest = _run(state, steps, run_dir, task)
        metrics = _metrics(manifest, state)
    except BaseException:
        if cleanup is not None:
            cleanup()
        raise
    result = CompressResult(model=state.model, tokenizer=tokenizer, metrics=metrics,
                            run_dir=run_dir, onnx_path=state.onnx.onnx_path if state.onnx else None,
                            warnings=result_flags(metrics), _state=state, _cleanup=cleanup)
    if cleanup is not None:
        weakref.finalize(result, cleanup)
    return result


def result_flags(metrics: Mapping[str, Any]) -> list[str]:
    """report/verdicts.run_flags on compress()'s ``metrics["eval"]`` (pipeline/evaluate.final_eval), read as a run
    manifest's eval: its ``teacher`` as ``teacher_torch``, what it deploys (``score``'s model: the ONNX graph, else
    the torch model) as ``deployed``. [] without an eval."""
    from compresslab.report.verdicts import run_flags

    ev = metrics.get("eval")
    if not ev:
        return []
    models = ev["models"]
    deployed = models.get("deployed", models["torch_final"])
    view = {**ev, "models": {"teacher_torch": models["teacher"], "deployed": deployed}}
    if "deployed" not in models:
        view.pop("batch_dependence", None)  # an ONNX graph's, not the torch model's
    return run_flags({"pipeline": "compress", "eval": view})


def _as_model(m: Any, what: str) -> Any:
    """A torch module as given, or one loaded from a checkpoint / Hugging Face directory path."""
    from torch import nn

    if m is None or isinstance(m, nn.Module):
        return m
    if isinstance(m, (str, Path)):
        from compresslab.checkpoint import load

        return load(m)
    raise TypeError(f"{what} must be a torch model or a checkpoint directory, got {type(m).__name__}")


def _trainable(work: "nn.Module", steps: list["Step"], inplace: bool) -> None:
    """A model with every parameter frozen (``requires_grad=False``) cannot be trained at all: autograd fails on the
    first backward of any training step. Its parameters are made trainable, with a warning, when a torch step may
    train it (the working copy; the given model itself with ``inplace``); a partly frozen model keeps its frozen
    parts."""
    from compresslab.models.inmemory import unfreeze_if_all_frozen
    from compresslab.types import Stage

    torch_steps = [s.name for s in steps if s.pass_.stage is Stage.TORCH]
    if torch_steps and unfreeze_if_all_frozen(work):
        log.warning("compress(): every parameter of the model has requires_grad=False, and step(s) %s may train it: "
                    "compresslab trains %s with all of them trainable (to keep some fixed, freeze only those)",
                    ", ".join(torch_steps), "the model itself (inplace=True)" if inplace else "its copy (your model "
                    "is unchanged)")


def _check_max_length(max_length: Any, config: Any) -> None:
    """max_length in [1, the model's position table]: longer inputs cannot run through it."""
    from compresslab.validate import check_positive_int

    check_positive_int(max_length, "max_length")
    from compresslab.models.loading import check_max_length

    check_max_length(max_length, config, "max_length")


def _name_labels(model: "nn.Module", task: "TaskData") -> None:
    """Write the task's class names into ``config.id2label/label2id`` (classification only)."""
    from compresslab.data.schema import TaskKind
    from compresslab.data.user import NAMED_SOURCES

    names = list(task.spec.label_names or ())
    named = task.info.get("label_source") in NAMED_SOURCES  # integer ids carry no names to write
    if named and task.spec.kind is TaskKind.CLASSIFICATION and len(names) == int(model.config.num_labels):
        model.config.id2label = {i: str(n) for i, n in enumerate(names)}
        model.config.label2id = {str(n): i for i, n in enumerate(names)}


def _work_dir(output_dir: str | Path | None) -> tuple[Path, Any]:
    if output_dir is not None:
        return Path(output_dir), None
    tmp = Path(tempfile.mkdtemp(prefix="compresslab-"))
    return tmp, (lambda: shutil.rmtree(tmp, ignore_errors=True))


def _run(state: "RunState", steps: list["Step"], run_dir: Path, task: "TaskData") -> Any:
    """The CLI's step loop over an in-memory model; resumes a run dir made by the same call. Raises
    DirectoryBusyError at once while another live process runs in ``run_dir`` (its lock, as the CLI's)."""
    from compresslab.pipeline.lock import locked_run_dir

    with locked_run_dir(run_dir, another="another output_dir keeps both"):
        return _run_locked(state, steps, run_dir, task)


def _run_locked(state: "RunState", steps: list["Step"], run_dir: Path, task: "TaskData") -> Any:
    """:func:`_run` once it holds ``run_dir``'s lock."""
    from compresslab.dirlock import LOCK_NAME
    from compresslab.manifest import RunManifest, stable_hash
    from compresslab.pipeline.driver import recording_failure
    from compresslab.pipeline.identity import check_inputs, input_identity
    from compresslab.models.inmemory import frozen_parameters
    from compresslab.pipeline.plan import block_identity
    from compresslab.pipeline.rundir import another_run_refusal, changed_settings, no_manifest_refusal
    from compresslab.pipeline.steps import run_steps
    from compresslab.registry import pass_to_dict
    from compresslab.types import Stage

    # block_identity: a key added to a nested block since (recovery.select_examples) keeps earlier output dirs' hashes
    config = {"passes": [block_identity(type(s.pass_), pass_to_dict(s.pass_)) for s in steps],
              "step_names": [s.name for s in steps],
              "data": {k: task.info.get(k) for k in ("sizes", "val_size", "val_seed", "label2id")},
              "settings": {"seed": state.settings.seed, "max_length": state.settings.max_length,
                           "batch_size": state.settings.batch_size}}
    if task.info.get("val_carve", "random") != "random":  # the random carve keeps earlier runs' hashes
        config["data"]["val_carve"] = task.info["val_carve"]
    # which parameters a torch step trains (as _trainable left them): recorded only when some are frozen, so a model
    # with none keeps earlier output dirs' hashes
    if any(s.pass_.stage is Stage.TORCH for s in steps) and (frozen := frozen_parameters(state.model)):
        config["requires_grad"] = frozen
    h = stable_hash(config)
    inputs = input_identity(state)  # the model, tokenizer, teacher and data by content, not by size
    manifest = None
    start_over = f"use another output_dir, or delete {run_dir}"
    if (run_dir / "manifest.json").is_file():
        manifest = RunManifest.load(run_dir)
        if manifest.data.get("config_hash") != h:
            raise another_run_refusal(f"{run_dir} holds a run of other passes or data",
                                      changed_settings(manifest.data.get("config"), config, lists=True), start_over,
                                      name=_argument_of)
        check_inputs(manifest.data, inputs, run_dir, start_over)
    elif run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise no_manifest_refusal(run_dir, f"delete {run_dir}", "another output_dir")
    if manifest is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest = state.new_manifest(run_dir, pipeline="compress", config_hash=h,
                                      model_id=str(getattr(state.model.config, "_name_or_path", "") or "in-memory"),
                                      config=config)
    manifest.data["inputs"] = inputs
    manifest.mark_running()
    with recording_failure(manifest):
        run_steps(state, steps, run_dir, manifest)
    manifest.mark_ended("finished")
    return manifest


# The compress() argument behind each entry of an output_dir's recorded config (the keys _run_locked hashes)
_ARGUMENT_OF = {"passes": "passes", "step_names": "passes", "data.sizes.dev": "eval_data",
                "data.sizes": "data (or val_size)", "data.val_size": "val_size (or data)", "data.val_seed": "seed",
                "data.label2id": "label2id (or the labels in data)", "data.val_carve": "val_carve",
                "requires_grad": "model: its frozen parameters",
                "settings": ""}


def _argument_of(key: str) -> str:
    """``key`` of the recorded config with the compress() argument that sets it: ``data.sizes.dev (eval_data)``."""
    for prefix, arg in _ARGUMENT_OF.items():
        if key == prefix or key.startswith((f"{prefix}.", f"{prefix}[")):
            return f"{key} ({arg or key.split('.')[-1]})"
    return key


def _metrics(manifest: Any, state: "RunState") -> dict[str, Any]:
    from compresslab.pipeline.evaluate import final_eval

    steps = [{"name": s.name, "pass": s.pass_config, "metrics": s.result.get("metrics", {}),
              "after": s.metrics_after, "wall_s": s.wall_s} for s in manifest.steps]
    out: dict[str, Any] = {"steps": steps, "data": dict(state.task.info)}
    if state.settings.eval.enabled:
        out["eval"] = final_eval(state)
    return out
