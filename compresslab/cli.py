"""``python -m compresslab +pipeline=NAME [overrides]``: the only @hydra.main.

This is the one place that touches process state: environment, threads, seeds, logging.

A bad command line is answered with one line on stderr (``compresslab: error: ...``, naming the
setting to change) and exit status 2, never a traceback: the overrides are composed and checked
(:func:`check_command_line`) before Hydra sets anything up, so a typo such as ``debug=smok``, an
unwritable ``paths.output_dir`` or ``seed=abc`` stops here; what needs the model or the data stops
at the start of :func:`compresslab.pipeline.run`, before any training.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

log = logging.getLogger("compresslab")

# Exit status for a bad command line or config (argparse's convention); 1 stays a crash.
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


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
    """The errors that mean "the input is wrong" (each names what to change), not a crash."""
    from compresslab.config import ConfigError
    from compresslab.pipeline import PipelineError, SettingsError
    from compresslab.runlock import MachineBusyError

    # SettingsError, PipelineError, ConfigError and CheckpointError are ValueErrors; MachineBusyError
    # is a timing refused while training runs (its message names the variables that wait longer)
    return (ConfigError, PipelineError, SettingsError, FileNotFoundError, ValueError, MachineBusyError)


def check_command_line(overrides: list[str]) -> None:
    """Compose ``overrides`` and check every setting, the sequence lengths against the model's
    config.json and the output directories, before Hydra creates its run dir or logs a line.

    Prints one line and raises SystemExit(2) when anything is wrong; returns None otherwise.
    """
    from compresslab.config import compose
    from compresslab.pipeline.preflight import preflight

    try:
        cfg = compose(overrides)
        if cfg.get("pipeline") is None:
            print(_missing_pipeline_message(), file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT)
        preflight(cfg)
    except bad_input_errors() as e:
        fail(e)


def _main(cfg) -> None:
    from compresslab.pipeline import run
    from compresslab.pipeline.settings import RunSettings

    if cfg.get("pipeline") is None:
        print(_missing_pipeline_message(), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    _terminate_as_interrupt()
    try:
        settings = RunSettings.from_config(cfg)  # seed and threads are typed before they touch torch
        setup_process(settings.threads, settings.seed)
        logging.getLogger("compresslab").setLevel(logging.INFO)
        run_dir = run(cfg)
    except bad_input_errors() as e:
        fail(e)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the manifest already says interrupted, at which step
        why = str(e) or "interrupted (Ctrl-C)"
        print(f"compresslab: {why}; the finished steps are kept: rerun the same command to resume",
              file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    print(f"run dir: {run_dir}\nreport: {run_dir / 'report.html'} ({run_dir / 'report.md'})")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit) seen as an interrupt, so the manifest records the
    run as ``interrupted`` at its step instead of leaving it ``running`` until the pid check."""


def _terminate_as_interrupt() -> None:
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


def main() -> None:
    import hydra

    from compresslab.config import config_dir

    args = sys.argv[1:]
    if not args:  # fail fast, before Hydra sets up anything
        print(_missing_pipeline_message(), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    if not _hydra_flags(args):  # a multirun's sweeps (-m a=1,2) are composed job by job by Hydra
        check_command_line(args)
    hydra.main(config_path=config_dir(), config_name="compress", version_base="1.3")(_main)()


if __name__ == "__main__":
    main()
