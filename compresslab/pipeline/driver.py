"""One run, as a short list of calls: plan -> state -> steps -> export -> deploy -> eval -> sizes -> bench -> report."""

from __future__ import annotations

import logging
import os
import shlex
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from compresslab.manifest import RunManifest, now
from compresslab.pipeline import rundir
from compresslab.pipeline.disk import link_duplicates
from compresslab.pipeline.identity import check_inputs, input_identity
from compresslab.pipeline.lock import locked_run_dir
from compresslab.config import run_pipeline_name
from compresslab.pipeline.plan import build_steps, config_hash, resolve_run_dir, saved_config
from compresslab.pipeline.preflight import preflight
from compresslab.pipeline.rundir import prepare_run_dir

if TYPE_CHECKING:  # the stages import torch; the driver imports them where a run needs them
    from compresslab.data.tasks import TaskData
    from compresslab.pipeline.plan import Step
    from compresslab.pipeline.state import RunState

log = logging.getLogger(__name__)


def run(cfg: DictConfig, overrides: Sequence[str] | None = None) -> Path:
    """Execute a composed config; returns the run directory.

    ``overrides`` are the command-line overrides ``cfg`` was composed from (``+pipeline=int8
    seed=3``): recorded in the manifest with the command that reproduces the run; None when not
    known (a config composed elsewhere). Everything cheap is checked before anything expensive
    (passes, settings, model source, data); raises PipelineError / SettingsError /
    FileNotFoundError / ValueError then. Raises :class:`~compresslab.dirlock.DirectoryBusyError`
    (naming its pid and command) while another live process runs the same run dir
    (:mod:`compresslab.pipeline.lock`); a dead one's lock is gone, and its dir resumes.
    """
    from compresslab.pipeline.state import RunState

    steps = preflight(cfg)  # the whole config, sequence lengths, output dirs: before any model or data is read
    state = RunState.prepare(cfg, steps)  # state.settings: the typed config, what the rest reads
    run_dir = resolve_run_dir(cfg, state.settings)
    # one process per run dir, from the first look at it to the end (DirectoryBusyError at once otherwise)
    with locked_run_dir(run_dir):
        return _run_in(cfg, overrides, state, steps, run_dir)


def _run_in(cfg: DictConfig, overrides: Sequence[str] | None, state: "RunState", steps: "list[Step]",
            run_dir: Path) -> Path:
    """:func:`run` once it holds ``run_dir``'s lock: resume or start the dir, run the steps, finish.
    ``cfg`` is recorded (and gives the run's identity); the settings are read from ``state.settings``."""
    from compresslab.pipeline.preflight import check_with_model
    from compresslab.pipeline.step_files import first_broken
    from compresslab.pipeline.steps import done_steps, redo_broken, run_steps
    from compresslab.pipeline.truncation import record_split_truncation

    existing = prepare_run_dir(run_dir, cfg, state.settings)
    inputs = input_identity(state)  # model files and data by content: a changed file is never reused
    broken = None
    if existing is not None:
        check_inputs(existing.data, inputs, run_dir, START_OVER)
        # every recorded file of the steps and of the stages after them, hashed once: a finished run too, whose
        # changed file is redone as an interrupted run's would be, never reported finished as if intact
        broken = first_broken(existing, run_dir)
    if existing is not None and existing.data.get("status") == "finished" and broken is None:
        log.info("run %s already finished, its files intact (run.overwrite=true to redo it); report: %s", run_dir,
                 run_dir / "report.md")
        return run_dir
    state.load_initial()
    # deploy settings, module patterns and shapes need the model (e.g. hawq's block_size vs the Linears' shapes):
    # checked before any step runs and before a fresh run dir is written (a refused config leaves nothing behind)
    # a resumed run plans only the steps it has not finished (a cached latency table is read, never re-timed)
    check_with_model(state.settings, steps, state.model, state.tokenizer, done=done_steps(existing),
                     progress=state.progress)
    manifest = existing or _start(state, run_dir, cfg)
    record_split_truncation(state.task, state.tokenizer, state.settings.max_length, manifest)
    record_invocation(manifest, cfg, run_dir, overrides)
    manifest.data["inputs"] = inputs
    manifest.mark_running()
    with recording_failure(manifest):
        redo_broken(manifest, run_dir, steps, broken)
        if run_steps(state, steps, run_dir, manifest, stop_after=state.settings.run.stop_after, checked=True):
            finish(state, run_dir, manifest)
    return run_dir


# How to start over when a run dir's inputs changed (InputsChangedError names the files).
START_OVER = f"{rundir.START_OVER}, or {rundir.KEEP_BOTH}"


@contextmanager
def recording_failure(manifest: RunManifest) -> Iterator[None]:
    """Mark the manifest ``failed`` (with the error's type and message and the step that was
    running) when the body raises, then re-raise: a report of the dir says so, and rerunning
    resumes after the last finished step. Ctrl-C is recorded as ``interrupted``. A process killed
    outright (kill -9, out of memory) cannot record anything: ``manifest.live_status`` then reads
    the ``running`` manifest as ``crashed`` from the process it names."""
    try:
        yield
    except BaseException as e:
        manifest.mark_failed(e)
        raise


def _start(state: "RunState", run_dir: Path, cfg: DictConfig) -> RunManifest:
    """A fresh run dir and a new manifest."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return state.new_manifest(run_dir, pipeline=run_pipeline_name(cfg), config_hash=config_hash(cfg),
                              model_id=state.settings.model.name,
                              config=OmegaConf.to_container(cfg, resolve=True))


def rerun_command(overrides: Sequence[str], env: Mapping[str, str] | None = None, *,
                  module: str = "compresslab") -> str:
    """The shell command that composes the same config again: ``NAME=value`` for each variable of ``env`` the
    config read from the environment (``config.config_environment()``: ``$COMPRESSLAB_DATA`` gives ``data.root``),
    then ``python -m <module>`` and each override, all quoted for a POSIX shell (``shlex``), so paths with spaces,
    ``[1,128]`` lists and ``${...}`` reach Hydra as given."""
    assigns = [f"{k}={shlex.quote(v)}" for k, v in sorted((env or {}).items())]
    return " ".join([*assigns, shlex.join(["python", "-m", module, *overrides])])


def code_environment(config: Mapping[str, Any]) -> dict[str, str]:
    """The environment variables set now that the code (not the config) reads to choose what this run runs, with
    their values: ``$COMPRESSLAB_DEEPSPARSE_PYTHON`` (which DeepSparse interpreter, hence version) when
    ``bench.deepsparse`` is not off and names no ``python``. The rest the code reads only steer waiting and
    caching (the lock, the peers' venv cache) or are recorded with the figures they affect
    (``$COMPRESSLAB_TIME_BUSY``: ``machine_load``); a rerun command must not repeat a busy timing."""
    from compresslab.bench.deepsparse_backend import ENV_VAR

    ds = (config.get("bench") or {}).get("deepsparse") or {}
    if ds.get("enabled", False) is not False and not ds.get("python") and os.environ.get(ENV_VAR):
        return {ENV_VAR: os.environ[ENV_VAR]}
    return {}


def record_invocation(manifest: RunManifest, cfg: DictConfig, run_dir: Path, overrides: Sequence[str] | None) -> None:
    """Record the invocation that runs now: its resolved config (``config`` and
    ``.hydra/config.yaml``), its overrides, the command that reproduces it and its working directory
    (relative paths are read from there), and append it to ``invocations``. A resumed run (the same
    run identity) may differ in the settings outside it (``run.*``, ``paths.*``): the manifest and
    the report show the latest, the history stays in ``invocations``. Not saved here: the caller's
    next save writes it."""
    from compresslab.config import config_environment

    config = OmegaConf.to_container(cfg, resolve=True)
    # what the config read from the environment, and what the code reads that chooses what runs: the command
    # sets them again
    env = {**config_environment(), **code_environment(config)}
    manifest.data["config"] = config
    manifest.data["overrides"] = list(overrides) if overrides is not None else None
    manifest.data["environment"] = env
    manifest.data["command"] = rerun_command(overrides, env) if overrides is not None else None
    manifest.data["cwd"] = os.getcwd()
    manifest.data.setdefault("invocations", []).append(
        {"started": now(), "overrides": manifest.data["overrides"], "environment": env, "cwd": manifest.data["cwd"]})
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def finish(state: "RunState", run_dir: Path, manifest: RunManifest) -> Path:
    """The fixed stages after the passes: export if no ONNX pass did, deploy, eval, sizes, bench, report;
    then ``run.keep`` (``state.settings.run``): with ``minimal``, the run's artifacts and the teacher cache
    entry it used become hard links to one copy of each content, shared across runs
    (:mod:`compresslab.pipeline.disk`). A stage a resume found done, its files intact
    (:func:`~compresslab.pipeline.stage_files.stage_done`: checked at the resume's start), is kept, not run again."""
    from compresslab.bench.env import resolve_threads
    from compresslab.pipeline.bench import bench
    from compresslab.pipeline.deploy import deploy
    from compresslab.pipeline.evaluate import evaluate, sizes
    from compresslab.pipeline.export import export
    from compresslab.pipeline.stage_files import record_stage, stage_done

    s = state.settings
    # each stage is named before it starts: a Ctrl-C or an error there is recorded at it (not as "no step")
    # after ONNX steps, the export is made again only when its files changed: the steps' ONNX file stays deployed
    if state.onnx is None or not stage_done(manifest, "export"):
        manifest.at_stage("export", after_steps=True)
        exported = export(state, run_dir, manifest)
        state.onnx = state.onnx or exported
    threads = resolve_threads(s.bench.threads or s.threads)
    if not stage_done(manifest, "deploy"):
        manifest.at_stage("deploy", after_steps=True)
        deploy(state, run_dir, manifest, threads)  # export.deployed: the ONNX file (ort) or an OpenVINO IR
    if s.eval.enabled and not stage_done(manifest, "eval"):
        manifest.at_stage("eval", after_steps=True)
        evaluate(state, run_dir, manifest, threads)
    if not stage_done(manifest, "sizes"):
        manifest.at_stage("sizes", after_steps=True)
        sizes(state, run_dir, manifest)
    if s.bench.enabled and not stage_done(manifest, "bench"):
        manifest.at_stage("bench", after_steps=True)
        bench(state, run_dir, manifest, threads)
    if not stage_done(manifest, "keep"):
        manifest.at_stage("run.keep (linking duplicate files)", after_steps=True)
        store = Path(s.cache_dir) / "blobs" if s.cache_dir else None  # one copy of each artifact across runs
        manifest.data["disk"] = link_duplicates(run_dir, _caches_used(manifest), s.run.keep, store).to_dict()
    manifest.mark_ended("finished")
    if s.report and not stage_done(manifest, "report"):
        from compresslab.report import build_report

        manifest.at_stage("report", after_steps=True)
        build_report(run_dir)
        record_stage(manifest, run_dir, "report")
        manifest.save()
    manifest.at_stage(None)
    return run_dir


def _caches_used(manifest: RunManifest) -> list[Path]:
    """The cache entries the steps recorded (``metrics.cache_path``, e.g. the finetune teacher)."""
    paths = [(s.result.get("metrics") or {}).get("cache_path") for s in manifest.steps]
    return [Path(p) for p in paths if p]


def run_pipeline(pipeline: str, overrides: list[str], **kwargs: Any) -> Path:
    """Programmatic entry: compose ``+pipeline=<pipeline>`` with overrides and run it."""
    from compresslab.config import compose

    args = [f"+pipeline={pipeline}", *overrides, *(f"{k}={v}" for k, v in kwargs.items())]
    return run(compose(args), overrides=args)


def task_data(cfg: DictConfig) -> "TaskData":
    """The task data a run of ``cfg`` reads (train less the validation carve, validation, dev; the same data root,
    carve, seed, ``max_train`` / ``max_dev`` and generic files), after the checks the run makes before it loads a
    model (:meth:`~compresslab.pipeline.state.RunState.prepare`: settings, model source, data, the passes' own
    data checks). Raises what the run would raise there (SettingsError, FileNotFoundError, ValueError, ...)."""
    from compresslab.pipeline.state import RunState

    return RunState.prepare(cfg, build_steps(cfg)).task


def restore(run_dir: Path, overrides: list[str] = ()) -> "tuple[RunState, RunManifest]":
    """The state of a finished (or stopped) run, rebuilt from its checkpoints, for re-benchmarking.

    ``overrides`` are dotlist changes to the run's recorded config (e.g. ``bench.runs=40``); they
    must not change the passes. Returns (state, manifest). InputsChangedError when the model or
    data files differ from those the run recorded; CheckpointError naming a step file, or a file of the export or
    deploy stage, that is missing or changed since it was written (a rerun of the run redoes it; this reader
    cannot).
    """
    from compresslab.pipeline.state import RunState
    from compresslab.pipeline.step_files import check_steps_intact
    from compresslab.pipeline.steps import done_steps, restore_step

    manifest = RunManifest.load(run_dir)
    # saved_config: a run written before a pass's settings moved into a block (BiBERT's recovery) still restores
    cfg = OmegaConf.merge(saved_config(manifest.data["config"]), OmegaConf.from_dotlist(list(overrides)))
    steps = build_steps(cfg)
    state = RunState.prepare(cfg, steps)
    # the dense reference is rebuilt from the model source: it must still be the run's input
    check_inputs(manifest.data, input_identity(state), Path(run_dir),
                 "rerun the pipeline from the new files (run.overwrite=true) instead of restoring this run")
    check_steps_intact(manifest, Path(run_dir))
    state.load_initial()
    done = done_steps(manifest)
    for step in steps:
        if step.index in done:
            restore_step(state, step, done[step.index], run_dir)
    if state.onnx is None and "fp32" in manifest.data.get("export", {}):
        from compresslab.types import OnnxModel

        state.onnx = OnnxModel(run_dir / "export", run_dir / manifest.data["export"]["fp32"]["path"])
    return state, manifest
