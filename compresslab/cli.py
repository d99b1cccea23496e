"""``python -m compresslab +pipeline=NAME [overrides]``: the only @hydra.main.

This is the one place that touches process state: environment, threads, seeds, logging.

A bad command line is answered with one line on stderr (``compresslab: error: ...``, naming the
setting to change) and exit status 2, never a traceback: the overrides are composed and checked
(:func:`check_command_line`) before Hydra sets anything up, so a typo such as ``debug=smok``, an
unwritable ``paths.output_dir`` or ``seed=abc`` stops here; a multirun (``-m seed=1,2``) has each
of its jobs checked so (:func:`check_multirun`, planned in :mod:`compresslab.pipeline.multirun`) before the first
starts. What needs the model or the data stops at the start of :func:`compresslab.pipeline.run`, before any
training; for a multirun that sweeps something, it is checked for each job before the first starts too, by the
driver's own list (a search's candidates are checked by the search's own plan), as is that no two jobs write one dir.
A multirun's jobs then run one after the other in this process: a job that fails is named and the next one starts,
and a summary of every job ends the sweep, with the exit status of the first that failed (:mod:`compresslab.sweep`).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

# stdlib only; Terminated is also cli's name for it (callers and tests import it from here)
from compresslab.failure import Terminated, error_text, raise_terminated, recorded_summary, stop_summary

if TYPE_CHECKING:
    from pathlib import Path

    from compresslab.pipeline.multirun import JobPlan, SweepJob
    from compresslab.sweep import Sweep

log = logging.getLogger("compresslab")

# Exit status for a bad command line or config (argparse's convention); 1 stays a crash.
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT
EXIT_TERMINATED = 143  # ... and by SIGTERM (128 + 15): schedulers and scripts tell a kill from a Ctrl-C by it


def setup_process(threads: int | None, seed: int) -> int:
    """Pin threads and seeds for the whole process; returns the thread count used."""
    import torch

    from compresslab.bench.env import resolve_threads

    n = resolve_threads(threads)
    torch.set_num_threads(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.manual_seed(seed)
    return n


def _missing_pipeline_message() -> str:
    from compresslab.config import pipelines_hint

    return "compresslab: no pipeline selected; " + pipelines_hint() + \
        "\n  e.g. python -m compresslab +pipeline=int8   (see --help for overrides)"


def fail(error: BaseException | str) -> NoReturn:
    """Print ``compresslab: error: <message>`` on one line to stderr and exit with status 2."""
    msg = " ".join(str(error).split()) or type(error).__name__
    print(f"compresslab: error: {msg}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean "the input is wrong" (each names what to change), not a crash
    (:func:`compresslab.pipeline.preflight.bad_input_errors`)."""
    from compresslab.pipeline.preflight import bad_input_errors as errors

    return errors()


def check_command_line(overrides: list[str]) -> None:
    """Compose ``overrides`` and check every setting, the sequence lengths against the model's
    config.json and the output directories, before Hydra creates its run dir or logs a line.

    Prints one line and raises SystemExit(2) when anything is wrong; returns None otherwise.
    """
    from compresslab.config import reads_hydra
    from compresslab.validate import SettingsError

    hydra_reads = [o for o in overrides if reads_hydra(o)]
    if hydra_reads:  # resolving it here raised OmegaConf's "HydraConfig was not set" with no way out
        fail(SettingsError(f"{hydra_reads[0]} reads Hydra's job config (${{hydra:...}}), which only a sweep sets, "
                           "per job: add -m to run a sweep, or give a fixed value for a single run"))
    try:
        _check_job(overrides)
    except bad_input_errors() as e:
        fail(e)


def check_composes(overrides: list[str]) -> None:
    """``--cfg job``: the overrides compose (a misspelled key gets compresslab's one line with a did-you-mean, not
    Hydra's advice to append it with ``+``); nothing else is checked, so a config can be printed before its model
    or data exist. Prints one line and raises SystemExit(2) when it does not compose."""
    from compresslab.config import ConfigError, compose

    try:
        compose(overrides)
    except ConfigError as e:
        fail(e)


def _check_job(overrides: list[str]) -> "JobPlan":
    """:func:`check_command_line`'s checks of one job: a search's plan (``+search=NAME``: it checks its own settings
    and every candidate), else the pipeline's preflight. Raises the bad-input error (the missing pipeline prints its
    own message and exits 2); returns where the job writes and, for a pipeline, its composed config and steps for the
    multirun's model checks."""
    from compresslab.config import compose
    from compresslab.pipeline.multirun import JobPlan
    from compresslab.pipeline.plan import resolve_run_dir
    from compresslab.pipeline.preflight import preflight
    from compresslab.search.plan import base_overrides, requests_search

    if requests_search(overrides):  # before composing: a search's own refusals name the setting to change
        base_overrides(overrides)
    cfg = compose(overrides)
    if cfg.get("search") is not None:  # +search=NAME: the search checks its own settings and every candidate
        from compresslab.search.plan import plan_search

        plan = plan_search(cfg, overrides)
        return JobPlan(plan.search_dir, "search.dir", fixed=bool(plan.settings.dir))
    if cfg.get("pipeline") is None:
        print(_missing_pipeline_message(), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    steps = preflight(cfg)
    return JobPlan(resolve_run_dir(cfg), "run.dir", fixed=cfg.run.get("dir") is not None, model_check=(cfg, steps))


def check_multirun(overrides: list[str]) -> "Sweep":
    """:func:`check_command_line` for each job of a multirun (``-m``), that no two jobs write one dir, then, when
    something is swept, the data and model checks a run makes before its first step, all before Hydra starts the
    first job (:func:`compresslab.pipeline.multirun.check_multirun`). Prints one line naming the job's swept values
    and raises SystemExit(2) when any is wrong; returns the sweep, its jobs numbered, to record their outcomes."""
    from compresslab.pipeline.multirun import check_multirun as check_jobs
    from compresslab.sweep import Sweep

    try:
        return Sweep(check_jobs(overrides, _check_job))
    except bad_input_errors() as e:
        fail(e)


# The multirun this process runs (main: checked before Hydra started it), its jobs' outcomes (_run_sweep_job).
_SWEEP: "Sweep | None" = None


def _main(cfg) -> None:
    searching = cfg.get("search") is not None  # +search=NAME: an accuracy-aware search picks the pipelines
    if cfg.get("pipeline") is None and not searching:
        print(_missing_pipeline_message(), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    terminate_as_interrupt()
    job = _sweep_job()
    if job is not None:
        _run_sweep_job(cfg, job)
        return
    try:
        run_dir = _run(cfg)
    except bad_input_errors() as e:
        fail(e)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the manifest already says interrupted, at which step
        _exit_interrupted(e)
    if run_dir is not None:
        _print_run_dir(run_dir)


def _run(cfg) -> "Path | None":
    """Run ``cfg``: a pipeline (returns its run dir) or a search (prints its answer; returns None). Raises what the
    run raises: a bad input, KeyboardInterrupt, SystemExit(3) for a search that chose no model (4: none met its drop
    budget, the closest kept; 5: its teacher is no better than chance; 6: the model it chose predicts one class), a
    crash."""
    from compresslab.pipeline import run
    from compresslab.pipeline.settings import RunSettings

    if cfg.get("search") is not None:
        from compresslab.search.driver import main as search_main

        search_main(cfg, _task_overrides(cfg), setup_process)
        return None
    settings = RunSettings.from_config(cfg)  # seed and threads are typed before they touch torch
    setup_process(settings.threads, settings.seed)
    logging.getLogger("compresslab").setLevel(logging.INFO)
    return run(cfg, overrides=_task_overrides(cfg))


def _print_run_dir(run_dir: "Path") -> None:
    """Where the run and its report are, then each warning of its Summary (report/verdicts.run_flags): the last lines
    a user reads must not call a run fine that its report flags."""
    print(f"run dir: {run_dir}\nreport: {run_dir / 'report.html'} ({run_dir / 'report.md'})")
    for flag in run_dir_flags(run_dir):
        print(f"warning: {flag}")


def run_dir_flags(run_dir: "Path") -> list[str]:
    """The Summary's warnings of the run in ``run_dir`` (report/verdicts.run_flags); [] without a readable manifest
    (the run already said why)."""
    from compresslab.manifest import read_json
    from compresslab.report.verdicts import run_flags

    try:
        return run_flags(read_json(run_dir / "manifest.json"))
    except (OSError, ValueError):
        return []


def _exit_interrupted(e: KeyboardInterrupt) -> NoReturn:
    """One line on stderr, the sentence the run's manifest and report give (its step or stage, how to resume;
    the same sentence without a place where no run recorded it), and exit 130 (Ctrl-C) or 143 (SIGTERM)."""
    why = recorded_summary(e) or stop_summary({"type": type(e).__name__, "message": str(e)})
    print(f"compresslab: {why}", file=sys.stderr)
    raise SystemExit(EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED) from None


def _sweep_job() -> "SweepJob | None":
    """This job of a multirun when Hydra's basic launcher runs it here, in this process (its outcome is then
    recorded in :data:`_SWEEP` and the sweep goes on when it fails); None for a single run, or a job that another
    launcher (joblib, submitit) runs in a process of its own, which exits as a single run does."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    global _SWEEP
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or not str(hc.launcher.get("_target_", "")).endswith(".BasicLauncher"):
        return None
    if _SWEEP is None:  # a multirun Hydra parsed alone (no check before it): its jobs known as they come
        from compresslab.sweep import Sweep

        _SWEEP = Sweep([])
    return _SWEEP.job(int(hc.job.num), list(hc.overrides.task))


def _run_sweep_job(cfg, job: "SweepJob") -> None:
    """Run one job of the multirun :data:`_SWEEP` and record how it ended. A failed job (a bad input found only as
    it ran, a crash: its traceback printed) is named on stderr and the sweep goes on with the next job; Ctrl-C or
    SIGTERM prints the summary and ends the sweep (exit 130 / 143). :func:`main` prints the summary at the end."""
    import traceback

    from compresslab.pipeline.multirun import own_dir_setting
    from compresslab.sweep import Outcome

    sweep = _SWEEP
    assert sweep is not None
    out_dir = _run_dir_of(cfg) or job.out_dir
    status, code, error, ran = "finished", 0, None, None
    earlier = sweep.written_by(out_dir) if out_dir is not None else None
    try:
        if earlier is not None:  # a sweep too large for the check before Hydra to compare every pair of jobs
            own = own_dir_setting(out_dir, "run.dir", fixed=cfg.run.get("dir") is not None)  # as check_own_dirs says
            raise ValueError(f"{out_dir} is the dir of job {earlier.name} of this multirun: give each job its own, "
                             f"{own} (quoted for the shell)")
        ran = _run(cfg)
        status = _status_of(ran)
    except bad_input_errors() as e:
        status, code, error = "failed", EXIT_BAD_INPUT, " ".join(error_text(e, typed=False).split())
    except KeyboardInterrupt as e:
        sweep.record(Outcome(job, "interrupted", EXIT_INTERRUPTED, out_dir, str(e) or None))
        print(sweep.summary())
        _exit_interrupted(e)
    except SystemExit as e:  # a search that chose no model, or none within its budget (it printed why)
        if e.code not in (0, None):
            status, code = "failed", e.code if isinstance(e.code, int) else 1
    except Exception as e:  # a crash: its traceback, as a single run shows it; the next job may still run
        traceback.print_exc()
        status, code, error = "crashed", 1, " ".join(error_text(e).split())  # "RuntimeError", never "RuntimeError:"
    sweep.record(Outcome(job, status, code, out_dir, error))
    if status == "failed" or status == "crashed":
        print(f"compresslab: error: multirun job {job.name} {status}" + (f": {error}" if error else f" (exit {code})"),
              file=sys.stderr)
    elif ran is not None:
        _print_run_dir(ran)


def _run_dir_of(cfg) -> "Path | None":
    """The run dir of a pipeline ``cfg``; None for a search, or for settings that do not read (the run says why)."""
    from compresslab.pipeline.plan import resolve_run_dir

    if cfg.get("search") is not None:
        return None
    try:
        return resolve_run_dir(cfg)
    except Exception:  # the job raises it again as it runs: recorded there (a bad input: failed; else: crashed)
        return None


def _status_of(run_dir: "Path | None") -> str:
    """A finished job's status: its manifest's (``finished``, or ``stopped`` at run.stop_after)."""
    from compresslab.manifest import RunManifest

    if run_dir is None:
        return "finished"
    try:
        return str(RunManifest.load(run_dir).data.get("status") or "finished")
    except (OSError, ValueError):
        return "finished"


def _task_overrides(cfg) -> list[str] | None:
    """The command-line overrides of this job as Hydra parsed them (a multirun job's own values, no
    ``hydra.*``), recorded in the manifest for its rerun command; None outside a Hydra run. An override that reads
    Hydra's own config (``run.dir=out/${hydra:job.num}``) is recorded with the value it has in this job
    (``run.dir=out/1``): Hydra sets ``hydra.job.num`` only in a multirun, so one job's rerun command carries it."""
    from hydra._internal.grammar.utils import escape_special_characters
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from compresslab.config import override_key, reads_hydra

    if not HydraConfig.initialized():
        return None
    out = []
    for o in HydraConfig.get().overrides.task:
        if reads_hydra(o):
            resolved = OmegaConf.select(cfg, override_key(o), default=None)
            if isinstance(resolved, (str, int, float)) and not isinstance(resolved, bool):
                o = f"{o.partition('=')[0]}={escape_special_characters(str(resolved))}"
        out.append(o)
    return out


def terminate_as_interrupt() -> None:
    """Make SIGTERM raise :class:`~compresslab.failure.Terminated` (a KeyboardInterrupt) in the main thread, for
    the whole process: whatever a long run does on Ctrl-C (record ``interrupted``, keep what finished) it then
    does on ``kill`` too."""
    import signal

    if threading_is_main():
        signal.signal(signal.SIGTERM, raise_terminated)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _hydra_flags(args: list[str]) -> bool:
    """Any Hydra flag (``--help``, ``--cfg job``, ``-m``...): Hydra handles the command line itself."""
    return any(a.startswith("-") for a in args)


# Hydra flags that print or change where configs come from instead of running: left to Hydra
_NOT_A_RUN = ("help", "hydra_help", "cfg", "info", "shell_completion", "config_path", "config_name", "config_dir",
              "experimental_rerun")


def _parse_hydra_args(args: list[str]) -> Any:
    """``args`` read by Hydra's own argument parser, the overrides collected wherever they stand
    (``+pipeline=int8 -m seed=1,2``: Hydra's ``parse_args`` takes overrides only before the first
    flag); None for a malformed flag, which Hydra reports itself, or a Hydra without this parser
    (its ``_internal`` API: the command line then goes to Hydra unchecked, as before)."""
    try:
        from hydra._internal.utils import get_args_parser

        return get_args_parser().parse_intermixed_args(args)
    except (SystemExit, ImportError):
        return None


def _overrides_first(args: list[str], overrides: list[str]) -> list[str]:
    """``args`` reordered as Hydra's parser reads them: the overrides, then the flags (with their
    values) in their order. An override always has ``=`` (or a leading ``~``), a flag's value none."""
    rest, pending = [], list(overrides)
    for a in args:
        if pending and a == pending[0]:
            pending.pop(0)
        else:
            rest.append(a)
    return [*overrides, *rest]


def main() -> None:
    import hydra

    from compresslab.config import appended_pass_settings, config_dir

    global _SWEEP
    _SWEEP = None  # a multirun below sets it (main may run more than once in a process: the tests)
    # what Hydra composes is what the checks composed (config.compose reads the same form)
    args = sys.argv[1:] = appended_pass_settings(sys.argv[1:])
    if not args:  # fail fast, before Hydra sets up anything
        print(_missing_pipeline_message(), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    if not _hydra_flags(args):
        check_command_line(args)
    elif (parsed := _parse_hydra_args(args)) is not None:
        sys.argv[1:] = _overrides_first(args, parsed.overrides)
        if not any(getattr(parsed, flag, None) for flag in _NOT_A_RUN):  # flags that run jobs: -m, --run
            if parsed.multirun:
                _SWEEP = check_multirun(parsed.overrides)
            else:
                check_command_line(parsed.overrides)
        elif getattr(parsed, "cfg", None) and not parsed.multirun:
            check_composes(parsed.overrides)
    hydra.main(config_path=config_dir(), config_name="compress", version_base="1.3")(_main)()
    if _SWEEP is not None and _SWEEP.outcomes:  # a multirun ran its jobs here: how each ended
        print(_SWEEP.summary())
        if code := _SWEEP.exit_code():
            raise SystemExit(code)


if __name__ == "__main__":
    main()
