"""``python -m compresslab +pipeline=NAME [overrides]``: the only @hydra.main.

This is the one place that touches process state: environment, threads, seeds, logging.

A bad command line is answered with one line on stderr (``compresslab: error: ...``, naming the
setting to change) and exit status 2, never a traceback: the overrides are composed and checked
(:func:`check_command_line`) before Hydra sets anything up, so a typo such as ``debug=smok``, an
unwritable ``paths.output_dir`` or ``seed=abc`` stops here; a multirun (``-m seed=1,2``) has each
of its jobs checked so (:func:`check_multirun`, planned in :mod:`compresslab.pipeline.multirun`) before the first
starts. What needs the model or the data stops at the start of :func:`compresslab.pipeline.run`, before any
training; for a multirun that sweeps something, it is checked for each job before the first starts too, by the
driver's own list (a search's candidates are checked by the search's own plan).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, NoReturn

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


def _check_job(overrides: list[str]) -> tuple[Any, list[Any]] | None:
    """:func:`check_command_line`'s checks of one job: a search's plan (``+search=NAME``: it checks its own settings
    and every candidate), else the pipeline's preflight. Raises the bad-input error (the missing pipeline prints its
    own message and exits 2); returns the composed config and its steps for the multirun's model checks (None for a
    search)."""
    from compresslab.config import compose
    from compresslab.pipeline.preflight import preflight
    from compresslab.search.plan import base_overrides, requests_search

    if requests_search(overrides):  # before composing: a search's own refusals name the setting to change
        base_overrides(overrides)
    cfg = compose(overrides)
    if cfg.get("search") is not None:  # +search=NAME: the search checks its own settings and every candidate
        from compresslab.search.plan import plan_search

        plan_search(cfg, overrides)
        return None
    if cfg.get("pipeline") is None:
        print(_missing_pipeline_message(), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    return cfg, preflight(cfg)


def check_multirun(overrides: list[str]) -> None:
    """:func:`check_command_line` for each job of a multirun (``-m``), then, when something is swept, the data and
    model checks a run makes before its first step, all before Hydra starts the first job
    (:func:`compresslab.pipeline.multirun.check_multirun`). Prints one line naming the job's swept values and raises
    SystemExit(2) when any is wrong; returns None otherwise."""
    from compresslab.pipeline.multirun import check_multirun as check_jobs

    try:
        check_jobs(overrides, _check_job)
    except bad_input_errors() as e:
        fail(e)


def _main(cfg) -> None:
    from compresslab.pipeline import run
    from compresslab.pipeline.settings import RunSettings

    searching = cfg.get("search") is not None  # +search=NAME: an accuracy-aware search picks the pipelines
    if cfg.get("pipeline") is None and not searching:
        print(_missing_pipeline_message(), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    terminate_as_interrupt()
    try:
        if searching:
            from compresslab.search.driver import main as search_main

            search_main(cfg, _task_overrides(), setup_process)
            return
        settings = RunSettings.from_config(cfg)  # seed and threads are typed before they touch torch
        setup_process(settings.threads, settings.seed)
        logging.getLogger("compresslab").setLevel(logging.INFO)
        run_dir = run(cfg, overrides=_task_overrides())
    except bad_input_errors() as e:
        fail(e)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the manifest already says interrupted, at which step
        why = str(e) or "interrupted (Ctrl-C)"
        print(f"compresslab: {why}; the finished steps are kept: rerun the same command to resume",
              file=sys.stderr)
        raise SystemExit(EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED) from None
    print(f"run dir: {run_dir}\nreport: {run_dir / 'report.html'} ({run_dir / 'report.md'})")


def _task_overrides() -> list[str] | None:
    """The command-line overrides of this job as Hydra parsed them (a multirun job's own values, no
    ``hydra.*``), recorded in the manifest for its rerun command; None outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit) seen as an interrupt, so the manifest records the
    run as ``interrupted`` at its step instead of leaving it ``running`` until the pid check."""


def terminate_as_interrupt() -> None:
    """Make SIGTERM raise :class:`Terminated` (a KeyboardInterrupt) in the main thread: whatever a long run
    does on Ctrl-C (record ``interrupted``, keep what finished) it then does on ``kill`` too."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise Terminated(f"stopped by signal {signum} (SIGTERM)")

    if threading_is_main():
        signal.signal(signal.SIGTERM, handler)


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
            (check_multirun if parsed.multirun else check_command_line)(parsed.overrides)
        elif getattr(parsed, "cfg", None) and not parsed.multirun:
            check_composes(parsed.overrides)
    hydra.main(config_path=config_dir(), config_name="compress", version_base="1.3")(_main)()


if __name__ == "__main__":
    main()
