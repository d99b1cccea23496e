"""The plan of a run, made before any expensive work: its steps (every pass built and validated,
stage order checked), its identity and its directory.

A run's identity is its resolved config (minus run-control keys): the run dir is
``outputs/<pipeline>/<config-hash>/``, so rerunning the same command resumes it; and its inputs by
content (:mod:`compresslab.pipeline.identity`): a dir whose model or data files changed is refused.
Taking the dir (resume, start, refuse) is :mod:`compresslab.pipeline.rundir`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

from compresslab.manifest import stable_hash
from compresslab.config import pipelines_hint, run_pipeline_name, setting_message, sources_named
from compresslab.types import Pass, Stage, capability, hook
from compresslab.validate import FieldTypeError, check_field_types, did_you_mean, field_default, nested_settings

if TYPE_CHECKING:
    from compresslab.pipeline.settings import RunSettings

log = logging.getLogger(__name__)

# Keys that control *how* a run is executed, not *what* it computes: excluded from its identity.
_CONTROL_KEYS = ("run", "paths", "hydra")


class PipelineError(ValueError):
    """A pipeline that cannot run as configured (caught before any expensive work)."""


class RunDirConflictError(PipelineError):
    """The run directory belongs to a different config."""


@dataclass
class Step:
    index: int
    name: str
    pass_: Pass

    @property
    def dir_name(self) -> str:
        return f"{self.index:02d}_{self.name}"


# Keys added after runs were made, with the value those runs had: left out of the identity at that value,
# so a run made before the key existed is found again (resumed, reused) rather than made anew.
# (eval.batch_dependence adds a batch-1 score of dynamic-int8 files beside the batched one, the same model and
# the same batched score: a run made before it is still that run)
# (budget.fisher_block, smoke's only, reaches identity through the obert node's block_size, which it sets: a smoke
# run of a pipeline without obert is the run it was before the key existed)
_ADDED_DEFAULTS: dict[tuple[str, str], Any] = {("task", "val_carve"): "random", ("eval", "batch_dependence"): True,
                                               ("budget", "fisher_block"): 8}

# Settings that say WHERE an input was found, not what it holds: their value is left out of the identity (kept as
# null, the value runs made without it have, so those keep their hashes). The data's content is the run's identity
# by hash (``pipeline.identity``: every file's sha256, the examples as parsed), checked on every resume; the same
# data found at another path (``$COMPRESSLAB_DATA`` in another shell, a moved copy) is the same run, and other
# data at the same path is refused there, naming each changed file.
_LOCATION_KEYS: tuple[tuple[str, str], ...] = (("data", "root"),)


def _without_default(node: Any, key: str, value: Any) -> Any:
    """``node`` without ``key`` when it holds the value runs had before the key existed (None: the default too)."""
    if isinstance(node, dict) and key in node and node[key] in (value, None):
        return {k: v for k, v in node.items() if k != key}
    return node


def _smooth_identity(deploy: Any) -> Any:
    """``deploy.smooth_alpha`` (added 2026-12-04) as a list (``0.8`` and ``[0.8]`` are one setting), and left
    out at its default grid so earlier runs keep their hashes; ``null`` (no smoothing) is a value of its own."""
    from compresslab.pipeline.settings import DEFAULT_SMOOTH_GRID

    if not isinstance(deploy, dict) or "smooth_alpha" not in deploy:
        return deploy
    v = deploy["smooth_alpha"]
    grid = [float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x
            for x in (list(v) if isinstance(v, (list, tuple)) else [v])]  # 1 and 1.0: one setting
    rest = {k: x for k, x in deploy.items() if k != "smooth_alpha"}
    return rest if grid == list(DEFAULT_SMOOTH_GRID) else {**rest, "smooth_alpha": grid}


def pass_registry_name(target: str, step: str) -> str:
    """The registry name of the pass a ``_target_`` builds: its module's name (``compresslab.passes.ziplm.ZipLM`` ->
    ``ziplm``), or the step's name where the target has no module path."""
    return target.rsplit(".", 2)[-2] if target.count(".") >= 2 else step


def block_identity(cls: type, node: Any) -> Any:
    """A pass's settings ``node`` (a dict: its config node, or ``pass_to_dict``'s for ``compress()``) without the keys
    of its nested settings blocks (``recovery``) that their class declares added later (``added_defaults``, e.g.
    ``Recovery.select_examples``) while they hold the value earlier runs had."""
    if not isinstance(node, dict):
        return node
    for block in nested_settings(cls):
        if not isinstance(node.get(block), dict):
            continue
        for key, value in getattr(type(field_default(cls, block)), "added_defaults", {}).items():
            node = {**node, block: _without_default(node[block], key, value)}
    return node


def _pass_class(node: Any) -> type | None:
    """The registered pass class a ``pipeline.passes`` node builds (as :func:`build_steps` finds it), or None where
    it names none (build_steps then refuses the config)."""
    from compresslab.registry import UnknownPassError, get_pass

    target = str(node.get("_target_", "")) if isinstance(node, dict) else ""
    if target.count(".") < 2:
        return None
    try:
        return get_pass(pass_registry_name(target, ""))
    except UnknownPassError:
        return None


def config_identity(cfg: DictConfig) -> dict[str, Any]:
    """A run's identity: its resolved config without the run-control keys (``run``, ``paths``, ``hydra``),
    the form :func:`config_hash` hashes (the run dir is ``outputs/<pipeline>/<hash>``, so an equal identity
    resumes or reuses the run and any other makes a new one). Settings added after runs were made are left
    out at the value those runs had: ``_ADDED_DEFAULTS`` for the config groups, each pass's declared
    ``identity_defaults`` (after its ``identity_settings`` hook) for its node and its nested blocks
    (:func:`block_identity`); ``deploy.smooth_alpha`` is
    normalised (:func:`_smooth_identity`). Where the data was found (``data.root``, from the config or
    ``$COMPRESSLAB_DATA``) is not part of it (:data:`_LOCATION_KEYS`): the data's content is, by hash."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    out = {k: v for k, v in data.items() if k not in _CONTROL_KEYS}
    for group, key in _LOCATION_KEYS:
        if isinstance(out.get(group), dict) and key in out[group]:
            out[group] = {**out[group], key: None}
    if "deploy" in out:
        out["deploy"] = _smooth_identity(out["deploy"])
    for (group, key), value in _ADDED_DEFAULTS.items():
        if group in out:
            out[group] = _without_default(out[group], key, value)
    pipe = out.get("pipeline")
    passes = pipe.get("passes") if isinstance(pipe, dict) else None
    for step, node in (passes.items() if isinstance(passes, dict) else ()):
        if (cls := _pass_class(node)) is None:
            continue
        if (normalise := hook(cls, "identity_settings")) is not None:
            node = normalise(node)
        for key, value in capability(cls, "identity_defaults").items():
            node = _without_default(node, key, value)
        passes[step] = block_identity(cls, node)
    return out


def config_hash(cfg: DictConfig) -> str:
    """The hash of :func:`config_identity`: a run's directory name under ``outputs/<pipeline>/``."""
    return stable_hash(config_identity(cfg))


def build_steps(cfg: DictConfig) -> list[Step]:
    """Instantiate every pass (validating its settings), check the step list (:func:`checked_steps`) and that a
    distilling step has a teacher made before it (:func:`check_teacher_made`). Raises PipelineError naming the step
    and setting; UnknownPassError for a pass name."""
    from hydra.utils import instantiate

    from compresslab.registry import get_pass

    pipe = cfg.get("pipeline")
    if pipe is None:
        raise PipelineError("no pipeline selected; " + pipelines_hint())
    passes = pipe.get("passes") or {}

    def built() -> Iterator[tuple[str, Pass]]:  # each pass built as checked_steps pulls it: errors come in step order
        for name in pipe.get("steps") or []:
            if name not in passes:
                raise PipelineError(
                    f"step {name!r} has no entry under pipeline.passes; defined: {sorted(passes)}. Add one with "
                    f"+pass@pipeline.passes.{name}=PASS (PASS: a file of conf/pass, e.g. {name} where one is named "
                    "so), or choose a pipeline that has that step")
            node = passes[name]
            target = str(node.get("_target_", ""))
            cls = get_pass(pass_registry_name(target, name))  # unknown pass -> clear error
            check_pass_keys(cls, node, name)
            try:
                p = instantiate(node, _convert_="all")
            except Exception as e:  # hydra wraps the dataclass's error; surface it
                cause = e.__cause__ or e
                # a value read through an interpolation is named where it is written (the key the user set):
                # another step's setting (hawq's latency.accuracy_level reads nbits') or a budget's
                if isinstance(cause, FieldTypeError):  # a value of the wrong type: named by its full key
                    key = f"pipeline.passes.{name}.{cause.path}"
                    raise PipelineError(f"step {name!r}: {setting_message(cfg, key, cause.reason, cause.note)}") from None
                if not isinstance(cause, ValueError):  # a fault in the pass's code (NameError, ...) is a crash,
                    raise cause  # not a setting to change: a traceback, never exit 2 blaming a swept job's value
                notes = sources_named(cfg, f"pipeline.passes.{name}", str(cause))  # the pass's own message
                raise PipelineError(f"step {name!r}: {cause}{notes}") from cause
            yield name, p

    steps = checked_steps(built(), where=lambda s: f"step {s.name!r}: pipeline.passes.{s.name}.",
                          empty="pipeline.steps is empty")
    model = cfg.get("model")
    check_teacher_made(steps, input_is_teacher=model is not None and model.get("finetuned") is True)
    return steps


def saved_config(config: Mapping[str, Any]) -> DictConfig:
    """A run's recorded config (``manifest["config"]``) as this version reads it: a pass's settings written by an
    earlier version at keys that have since moved into a block (BiBERT's flat ``steps``/``lr``/``eval_every``, now
    ``recovery.*``) are moved there, as :func:`~compresslab.registry.pass_from_dict` moves them in an old
    ``pass.json``. For reading finished runs (``restore``); the command line keeps refusing the old keys, naming the
    new ones. A step whose pass is not registered is left as written (:func:`build_steps` names it)."""
    from compresslab.registry import nest_flat_recovery

    cfg = OmegaConf.create(dict(config))
    passes = OmegaConf.select(cfg, "pipeline.passes")
    for name in list(passes or {}):
        node = OmegaConf.to_container(passes[name], resolve=False)
        if (cls := _pass_class(node)) is not None:
            passes[name] = OmegaConf.create(nest_flat_recovery(cls, node))
    return cfg


def checked_steps(named: Iterable[tuple[str, Pass]], *, where: Callable[[Step], str], empty: str) -> list[Step]:
    """The steps of ``named`` (step name, built pass) pairs, with the checks every entry makes of a step list (the
    config's :func:`build_steps` and ``compress()``'s ``api.build_steps``): each pass's field types
    (:func:`~compresslab.validate.check_field_types`: what the pass's own checks leave, e.g. a bool flag given as a
    string), then a list that is not empty, then the order (:func:`check_order`).

    ``named`` is pulled one pair at a time, so a generator that builds each pass as it is pulled reports the passes'
    errors in step order. ``where(step)`` starts a field-type message (the setting as that entry spells it);
    ``empty`` is the message for no steps. Raises PipelineError."""
    steps: list[Step] = []
    for i, (name, p) in enumerate(named):
        step = Step(i, name, p)
        try:  # what the pass's own checks leave: e.g. a bool flag given as a string
            check_field_types(p)
        except ValueError as e:
            raise PipelineError(f"{where(step)}{e}") from None
        steps.append(step)
    if not steps:
        raise PipelineError(empty)
    check_order(steps)
    return steps


def check_pass_keys(cls: type, node: Any, step: str) -> None:
    """PipelineError for a key of ``pipeline.passes.<step>`` that the pass has no field for, with the
    fields and a did-you-mean (instantiating would say only "unexpected keyword argument")."""
    fields = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(k for k in node if not str(k).startswith("_") and k not in fields)
    if unknown:  # a key that moved into a block (bibert's steps: recovery.steps) is named with its path
        hint = did_you_mean(unknown, fields, nested_settings(cls))
        raise PipelineError(f"pipeline.passes.{step}: unknown setting(s) {unknown}{hint}; "
                            f"the pass has: {', '.join(fields)}")


def needs_teacher(p: Pass) -> bool:
    """Whether a pass distils from a teacher: it declares so (``needs_teacher = True``, a ClassVar:
    BiBERT, whose every loss is a KD term against the full-precision model), or the recovery its
    ``recovery_settings`` hook gives trains with a KD term (logits or hidden states). A field that
    merely happens to be called ``recovery`` is not asked."""
    if capability(p, "needs_teacher"):
        return True
    settings = hook(p, "recovery_settings")
    r = settings() if settings is not None else None
    return bool(r is not None and r.steps and (r.hardness > 0 or r.hidden_weight > 0))


def distils_before_teacher(steps: list[Step]) -> Step | None:
    """The first step that distils from a teacher (:func:`needs_teacher`) before any step makes one
    (``makes_teacher``: finetune); None when no such step. The one loop behind the config's rule
    (:func:`check_teacher_made`) and ``compress()``'s (``api_heads.check_teacher``: the model as given is then the
    teacher, and its head must be trained)."""
    for s in steps:
        if s.pass_.makes_teacher:
            return None
        if needs_teacher(s.pass_):
            return s
    return None


def check_teacher_made(steps: list[Step], *, input_is_teacher: bool) -> None:
    """A pass that distils (:func:`needs_teacher`) needs a teacher made before it: an earlier step
    that makes one (``makes_teacher``: finetune), or the input model itself (``model.finetuned=true``).
    Without either its teacher would be a copy of the input model with a fresh, untrained head (the
    pass learns from noise and nothing fails). PipelineError naming the step and both fixes."""
    if input_is_teacher:
        return
    s = distils_before_teacher(steps)
    if s is not None:
        raise PipelineError(f"step {s.name!r} distils from a teacher, but none is made before it: no earlier step "
                            "fine-tunes the model and model.finetuned=false, so the teacher would be the input "
                            "model with a fresh, untrained head. Put 'finetune' first in pipeline.steps, or set "
                            "model.finetuned=true if the model is already fine-tuned on this task")


def check_order(steps: list[Step]) -> None:
    """TORCH passes first, then ONNX passes; at most one pass produces the teacher, before the rest; the
    zeros of a sparse pass kept by every later pass (:func:`check_zeros_kept`); each pass's own
    ``check_after`` (what it needs from the steps before it)."""
    seen_onnx = None
    for s in steps:
        if s.pass_.stage == Stage.ONNX:
            seen_onnx = seen_onnx or s.name
        elif seen_onnx:
            raise PipelineError(f"step {s.name!r} is a TORCH pass after the ONNX pass {seen_onnx!r}; "
                                "TORCH passes must come before export")
    makers = [s for s in steps if s.pass_.makes_teacher]
    if len(makers) > 1 or (makers and makers[0].index != steps[0].index):
        raise PipelineError(f"the pass producing the teacher ({', '.join(s.name for s in makers)}) must be the "
                            "first step and appear once")
    check_zeros_kept(steps)
    for i, s in enumerate(steps):  # what a pass needs from the steps before it (e.g. nbits after hawq)
        check_after = hook(s.pass_, "check_after")
        if check_after is not None:
            try:
                check_after([e.pass_ for e in steps[:i]])
            except ValueError as e:
                raise PipelineError(f"step {s.name!r}: {e}") from None


def check_zeros_kept(steps: list[Step]) -> None:
    """After a pass that prunes weights to exact zeros (``makes_sparse``), every later pass must keep
    them (``keeps_zeros``), else PipelineError naming both steps and the order that composes.

    Why refuse rather than re-apply the masks afterwards: the passes that do not keep zeros rewrite
    the surviving weights densely on purpose (ZipLM's OBS compensation of ``W_O``/``W_2`` and every
    dense KD recovery fill the pruned entries back in), and zeroing them again after the fact
    undoes the very update those passes optimised. Structure first, then sparsity (ZipLM, then
    oBERT) composes: oBERT prunes the shrunk layers and keeps every zero it finds. A pass that does
    not declare ``keeps_zeros`` is assumed not to keep them.
    """
    sparse: Step | None = None
    for s in steps:
        if sparse is not None and not capability(s.pass_, "keeps_zeros"):
            raise PipelineError(
                f"step {s.name!r} ({s.pass_.name}) cannot come after step {sparse.name!r} ({sparse.pass_.name}): "
                f"{sparse.pass_.name} leaves pruned weights at exactly zero and {s.pass_.name} does not keep them "
                f"(its weight updates or dense training would grow them back). Put {s.name!r} before "
                f"{sparse.name!r} in pipeline.steps (structure first, then sparsity, then int8: e.g. "
                "[finetune, layer_drop, ziplm, obert, int8])")
        if sparse is None and capability(s.pass_, "makes_sparse"):
            sparse = s


def _typed(cfg: DictConfig, settings: "RunSettings | None") -> "RunSettings":
    """``settings``, or ``cfg`` typed and validated here for a caller that holds only the config."""
    from compresslab.pipeline.settings import RunSettings

    return settings if settings is not None else RunSettings.from_config(cfg)


def resolve_run_dir(cfg: DictConfig, settings: "RunSettings | None" = None) -> Path:
    """``run.dir``, else ``<paths.output_dir>/<pipeline>/<config hash>`` (the pipeline as :func:`run_pipeline_name`
    names it). ``settings``: ``cfg``'s (:meth:`RunSettings.from_config`), typed from ``cfg`` when not given; ``cfg``
    gives the identity."""
    s = _typed(cfg, settings)
    if s.run.dir is not None:
        return s.run.dir
    assert s.output_dir is not None, "a composed config's settings name paths.output_dir"
    return s.output_dir / run_pipeline_name(cfg) / config_hash(cfg)
