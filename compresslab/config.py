"""Where the configs live and how they are composed: ``conf/`` inside the package.

``conf/`` ships inside the package (``compresslab/conf``) so that an installed wheel composes the
same configs as a source checkout; nothing here touches process state (that is ``cli.py``'s job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def config_dir() -> str:
    """The directory holding ``compress.yaml`` and the config groups (``compresslab/conf``).

    Raises FileNotFoundError when the package was installed without its configs.
    """
    cand = Path(__file__).resolve().parent / "conf"
    if (cand / "compress.yaml").is_file():
        return str(cand)
    raise FileNotFoundError(f"compresslab config directory not found: {cand} has no compress.yaml "
                            "(was the package built without its package data?)")


def compose(overrides: list[str]) -> Any:
    """Compose the config like the CLI does (for the API, tests and benchmarks); returns a DictConfig."""
    from hydra import compose as h_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="compresslab"):
        return h_compose(config_name="compress", overrides=list(overrides))


def pipelines_dir() -> Path:
    """``conf/pipeline``: one YAML per shipped pipeline."""
    return Path(config_dir()) / "pipeline"


def available_pipelines() -> list[str]:
    """Names of the shipped pipelines, sorted (``+pipeline=NAME``)."""
    return sorted(p.stem for p in pipelines_dir().glob("*.yaml"))


def pipelines_hint() -> str:
    """One line telling the user how to choose a pipeline and which exist."""
    return "choose one with +pipeline=NAME; available: " + ", ".join(available_pipelines())
