"""Preflight: everything about a run that can be checked before a model's weights or any data are
read, checked at once before any work, each failure naming the setting to change.

* the whole composed config: missing values, unknown keys and values, types and ranges
  (:meth:`RunSettings.from_config`), opsets and GPU backends of this install;
* every pass's settings and the step order (:func:`build_steps`), and export / deploy settings a step rules out,
  as the pass declares (its ``check_deploy_settings`` hook: int8's outlier split unfused or on
  ``deploy.runtime=openvino``; its ``writes_nbits`` flag: n-bit weights on OpenVINO), and every ``deploy.*`` setting
  the run would never read (:mod:`compresslab.pipeline.deploy_reads`, the rule a search passes them on by);
* every sequence length the run will feed the model (``task.max_length``, the bench shapes, a
  pass's own ``seq``/``max_length`` and its ``sequence_lengths()``: guided int8's ``latency_seq``,
  hawq's ``latency.seq`` under a latency budget) against the model's position table, read from its
  ``config.json`` alone, by the one check ``models.loading.check_max_length``;
* the directories the run writes (``paths.output_dir`` or ``run.dir``, ``paths.cache_dir``):
  created and written to, then left as they were; the run dir, when it exists, holds this config's run
  (``rundir.check_run_dir``: not another config's, not files of something else).

The checks that need the data follow in ``RunState.prepare``; those that need the loaded model are
:func:`check_with_model`. Each entry runs these lists whole, never a pick of their checks: the driver (a CLI run),
the multirun check before Hydra starts a job (:mod:`compresslab.pipeline.multirun`) and ``compress()``, which calls
:func:`check_steps_settings` (the per-step half of :func:`preflight`) and :func:`check_with_model` on the model it
was given.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection

from compresslab.pipeline.plan import Step, build_steps, resolve_run_dir
from compresslab.pipeline.rundir import check_run_dir
from compresslab.pipeline.settings import RunSettings, SettingsError
from compresslab.types import capability, hook
from compresslab.validate import check_writable

if TYPE_CHECKING:
    from torch import nn


def preflight(cfg: Any) -> list[Step]:
    """Check a composed config before any work (see the module docstring); returns its steps.

    Raises SettingsError (a setting, a limit of this install or machine), PipelineError (a pass or
    the step order), FileNotFoundError (no model at ``model.source``), each naming what to change.
    """
    settings = RunSettings.from_config(cfg)
    steps = build_steps(cfg)
    check_steps_settings(settings, steps)  # the sequence lengths against model.source's config.json
    check_output_dirs(settings)
    check_run_dir(resolve_run_dir(cfg, settings), cfg, settings)  # another config's run, or a dir that is no run at all
    return steps


def check_steps_settings(settings: RunSettings, steps: list[Step], model_config: Any = None, where: str = "") -> None:
    """Every check of a run's steps against its settings and its model's config, in this order: the export and
    deploy settings a step rules out (:func:`check_deploy_settings`), n-bit weights deployed on OpenVINO
    (:func:`check_nbits_deploy`), deploy settings the run would never read (:func:`check_unread_deploy_settings`),
    every sequence length against the model's position table
    (:func:`check_lengths_fit`). The one list :func:`preflight` and ``compress()`` both run.

    ``model_config``: the model's config (``compress()``: the given model's), ``where`` ending a length message; None
    (:func:`preflight`): read from ``settings.model.source``'s config.json alone (the weights are not loaded), named
    `` (model.source=...)``. Raises SettingsError naming the setting to change; FileNotFoundError when
    ``model.source`` holds no config.json, CheckpointError when it cannot be read.
    """
    check_deploy_settings(settings, steps)
    check_nbits_deploy(settings, steps)
    check_unread_deploy_settings(settings, steps)
    if model_config is None:
        from compresslab.checkpoint.io import FORMAT_FILES
        from compresslab.models.loading import read_config, resolve_source

        assert settings.model is not None, "a composed config's settings have a model block"
        source = settings.model.source
        model_config, where = (read_config(resolve_source(source, FORMAT_FILES, "model.source")),
                               f" (model.source={source})")
    check_lengths_fit(model_config, settings, steps, where)


def check_with_model(settings: RunSettings, steps: list[Step], model: "nn.Module", tokenizer: Any,
                     done: Collection[int] = (), progress: Any = None) -> None:
    """Every check that needs the loaded model, before any step runs (and, in the driver, before a fresh run dir is
    written): the model itself (:func:`check_model`: its weights, its tokenizer), the deploy settings against it
    (:func:`~compresslab.pipeline.deploy.check_deploy`: ``keep_fp32`` patterns, no bf16 OpenVINO precision for a
    binary model), then each pass's own (:func:`~compresslab.pipeline.state.check_steps_model`: architectures, module
    patterns, shapes such as hawq's block size), and last the checks against the model each step will be given
    (:func:`check_planned`: ZipLM's reachable speedup, which may time a latency table). The one list the driver, the
    multirun check (each swept job) and ``compress()`` run. ``done``: indices of the steps a resumed run has
    finished (not planned again); ``progress``: the run's progress bars, for a table timed here.

    Raises ValueError naming the setting or the step.
    """
    from compresslab.pipeline.deploy import check_deploy
    from compresslab.pipeline.state import check_steps_model

    check_model(model, tokenizer, "model")
    check_deploy(settings, steps, model)
    check_steps_model(steps, model)
    check_planned(settings, steps, model, done, progress)


def check_planned(settings: RunSettings, steps: list[Step], model: "nn.Module", done: Collection[int] = (),
                  progress: Any = None) -> None:
    """Each step's checks against the model it will be given, planned from the loaded ``model``: its class, and its
    config (with its per-layer structure) as the steps before leave it, where each says how (``planned_config``:
    layer_drop's fewer layers). Its ``check_planned`` hook (e.g. a ZipLM target the runtime cannot reach), and, after
    a planned change of the structure, its ``check_model`` on a model of that planned architecture (random weights):
    :func:`~compresslab.pipeline.state.check_steps_model` asked the loaded model only up to the first change.
    Finetune, the passes that make the teacher and those that ``keeps_structure`` leave the architecture as it is; a
    torch step that changes it otherwise (ziplm, QAT's wrapped Linears) ends the plan: a later step checks itself when
    it starts. A step in ``done`` (resumed past) is not checked. ValueError naming the step, before finetune."""
    import copy

    from compresslab.models.structure import STRUCTURE_KEY, is_shrunk, layer_structure, planned_model
    from compresslab.types import Stage

    config = copy.deepcopy(model.config)
    if is_shrunk(model):  # the loaded model's own shapes, whatever its config says
        config.__dict__[STRUCTURE_KEY] = layer_structure(model)
    changed: list["nn.Module"] | None = None  # after a planned change: [the planned model], built when first asked
    for s in steps:
        check, plan, own = (hook(s.pass_, "check_planned"), hook(s.pass_, "planned_config"),
                            hook(s.pass_, "check_model"))
        try:
            if s.index not in done:
                if changed is not None and own is not None:
                    if not changed:
                        changed.append(planned_model(type(model), config))
                    own(changed[0])
                if check is not None:
                    check(type(model), config, settings.cache_dir, progress)
            if plan is not None:  # e.g. a second layer_drop: its depth against the first one's planned model
                config, changed = plan(config), []
        except ValueError as e:
            raise ValueError(f"step {s.name!r}: {e}") from None
        if plan is None and s.pass_.stage is Stage.TORCH and not (s.pass_.makes_teacher
                                                                  or capability(s.pass_, "keeps_structure")):
            return


def check_model(model: "nn.Module", tokenizer: Any, what: str) -> None:
    """A model (called ``what``) and the tokenizer that feeds it, whatever the entry: its weights are there (not on
    the meta device: :func:`~compresslab.models.inmemory.check_has_weights`) and the tokenizer's ids fit its
    embedding table (:func:`~compresslab.models.loading.check_tokenizer_fits`). A model read from a directory
    passes both by construction (``load_pretrained`` checks the tokenizer as it reads it); a model given to
    ``compress()`` is checked here, and its ``teacher=`` too. Raises ValueError naming what to give instead."""
    from compresslab.models.inmemory import check_has_weights
    from compresslab.models.loading import check_tokenizer_fits

    check_has_weights(model, what)
    check_tokenizer_fits(tokenizer, model.config, what, fix="use the tokenizer the model was trained with")


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean "the input is wrong" (each names what to change), not a crash: what the CLI prints as
    one line with exit status 2, and what the multirun check names a job's swept values on."""
    from compresslab.config import ConfigError
    from compresslab.dirlock import DirectoryBusyError
    from compresslab.pipeline.plan import PipelineError
    from compresslab.runlock import MachineBusyError

    # SettingsError, PipelineError, ConfigError and CheckpointError are ValueErrors; MachineBusyError
    # is a timing refused while training runs (its message names the variables that wait longer);
    # DirectoryBusyError: the same search or run dir is in use by another process (its message names it)
    return (ConfigError, PipelineError, SettingsError, FileNotFoundError, ValueError, MachineBusyError,
            DirectoryBusyError)


def check_deploy_settings(settings: RunSettings, steps: list[Step]) -> None:
    """SettingsError where the run's ``export.optimize`` / ``deploy.runtime`` would make a step fail or drop what it
    wrote, as each pass's ``check_deploy_settings`` hook says (int8's ``outliers: split``: an unfused graph, or an
    OpenVINO IR made from the plain fp32 export). The pass names its own setting; this names the step."""
    for step in steps:
        check = hook(step.pass_, "check_deploy_settings")
        if check is None:
            continue
        try:
            check(export_optimize=settings.export.optimize, deploy_runtime=settings.deploy.runtime)
        except ValueError as e:
            raise SettingsError(f"pipeline.passes.{step.name}.{e}") from None


def nbits_step_on_openvino(settings: RunSettings, steps: list[Step]) -> str | None:
    """The step that writes n-bit weights (a pass with ``writes_nbits``: MatMulNBits) when the run deploys on
    OpenVINO (``deploy.runtime=openvino``), which cannot read them; else None."""
    if settings.deploy.runtime != "openvino":
        return None
    return next((s.name for s in steps if capability(s.pass_, "writes_nbits")), None)


def check_nbits_deploy(settings: RunSettings, steps: list[Step]) -> None:
    """SettingsError for :func:`nbits_step_on_openvino`: the IR would be the fp32 model, its size win lost.
    ``auto`` is allowed: the deploy stage keeps ORT for an n-bit file and says why."""
    step = nbits_step_on_openvino(settings, steps)
    if step is not None:
        raise SettingsError(f"deploy.runtime=openvino: step {step} writes n-bit weights (MatMulNBits), which "
                            "OpenVINO cannot read; the IR would be the fp32 model, its size win lost. Deploy on ORT "
                            "(deploy.runtime=ort), or use deploy.runtime=auto (it keeps ORT for an n-bit file); "
                            "bench.backends=[ort,openvino] still times the fp32 model on OpenVINO, labelled as such")


def quantizing_step(steps: list[Step]) -> Step | None:
    """The first step whose pass leaves the torch model itself quantized, or None: int8 QDQ Linears (``int8_qat``),
    frozen n-bit weights (``quantizes_weights``: hawq) or binary ones (``binarizes``: bibert). No fp32 model is
    left for NNCF's PTQ (pipeline/deploy.py skips it under ``deploy.int8=auto``, saying why)."""
    from compresslab.pipeline.deploy_reads import quantizes_torch_model

    return next((s for s in steps if quantizes_torch_model(s.pass_)), None)


def check_unread_deploy_settings(settings: RunSettings, steps: list[Step]) -> None:
    """SettingsError for the first ``deploy.*`` setting changed from its default (``conf/deploy/ort.yaml``) that
    this run would never read, as :func:`~compresslab.pipeline.deploy_reads.unread_deploy_settings` says from what
    the steps leave (an fp32, n-bit, dynamic or QDQ int8 file; a torch model quantized by a pass) and the deploy
    settings themselves: e.g. our recipe's ``keep_fp32`` for a QDQ graph OpenVINO converts as it is, NNCF's
    ``accuracy_control`` after int8 QAT, ``calibration_examples`` where neither calibrates. The search passes a
    deploy setting to its candidates by the same rule."""
    from compresslab.pipeline.deploy_reads import DeployedFile, unread_deploy_settings
    from compresslab.pipeline.settings import default_deploy

    d, defaults = settings.deploy, default_deploy()
    unread = unread_deploy_settings(DeployedFile.of((s.name, s.pass_) for s in steps), d)
    for key, why in unread.items():
        value = getattr(d, key)
        if value != getattr(defaults, key):
            shown = list(value) if isinstance(value, tuple) else value  # as the setting is written, not a tuple
            raise SettingsError(f"deploy.{key}={shown!r} would be ignored: {why}; leave it out")


def sequence_lengths(settings: RunSettings, steps: list[Step]) -> dict[str, int]:
    """Setting -> the sequence length (tokens) the run will feed the model under it."""
    lengths = {"task.max_length": settings.max_length}
    b = settings.bench
    if b.enabled:
        lengths["bench.shapes seq"] = max(seq for _, seq in b.shapes)
        if b.deepsparse.enabled is not False:
            lengths["bench.deepsparse.seq"] = b.deepsparse.seq
    for step in steps:
        lengths.update({f"pipeline.passes.{step.name}.{key}": n for key, n in pass_lengths(step.pass_).items()})
    return lengths


def pass_lengths(pass_: Any) -> dict[str, int]:
    """A pass's own sequence lengths, setting (under its step) -> tokens, as its ``sequence_lengths()`` hook
    declares them (ziplm's and structured_l1's latency shape, bibert's training length, guided int8's
    ``latency_seq`` and hawq's ``latency.seq`` in the modes that use them); none without the hook. A pass's
    fields are not read by name: tests/passes/test_capabilities.py requires the hook of every pass with a
    length-like field."""
    own = hook(pass_, "sequence_lengths")
    return dict(own()) if own is not None else {}


def check_lengths_fit(config: Any, settings: RunSettings, steps: list[Step], where: str = "") -> None:
    """SettingsError naming the first setting of :func:`sequence_lengths` longer than ``config``'s position
    table (a transformers config; ``where`` ends the message). Run by :func:`check_steps_settings`."""
    from compresslab.models.loading import check_max_length

    for setting, length in sequence_lengths(settings, steps).items():
        try:
            check_max_length(length, config, setting)
        except ValueError as e:
            raise SettingsError(f"{e}{where}") from None


def output_dirs(settings: RunSettings) -> dict[str, Path]:
    """Setting -> a directory the run writes into."""
    run_dir = settings.run.dir if settings.run is not None else None
    dirs: dict[str, Path] = ({"run.dir": Path(run_dir)} if run_dir else
                             {"paths.output_dir": settings.output_dir} if settings.output_dir is not None else {})
    dirs["paths.cache_dir"] = settings.cache_dir
    return dirs


def check_output_dirs(settings: RunSettings) -> None:
    """:func:`check_writable` for every directory of :func:`output_dirs`."""
    for setting, path in output_dirs(settings).items():
        check_writable(path, setting)
