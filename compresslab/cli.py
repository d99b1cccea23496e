"""``python -m compresslab +pipeline=NAME [overrides]``: the only @hydra.main.

This is the one place that touches process state: environment, threads, seeds, logging.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("compresslab")


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


def _main(cfg) -> None:
    from compresslab.pipeline import PipelineError, run
    from compresslab.runlock import MachineBusyError

    if cfg.get("pipeline") is None:
        print(_missing_pipeline_message(), file=sys.stderr)
        raise SystemExit(2)
    setup_process(cfg.run.get("threads"), int(cfg.seed))
    logging.getLogger("compresslab").setLevel(logging.INFO)
    try:
        run_dir = run(cfg)
    except (PipelineError, FileNotFoundError, ValueError, MachineBusyError) as e:  # SettingsError is a ValueError
        log.error("%s", e)
        raise SystemExit(2) from None
    print(f"run dir: {run_dir}\nreport: {run_dir / 'report.md'}")


def main() -> None:
    import hydra

    from compresslab.config import config_dir

    if len(sys.argv) == 1:  # fail fast, before Hydra sets up anything
        print(_missing_pipeline_message(), file=sys.stderr)
        raise SystemExit(2)
    hydra.main(config_path=config_dir(), config_name="compress", version_base="1.3")(_main)()


if __name__ == "__main__":
    main()
