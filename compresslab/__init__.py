"""compresslab: make Hugging Face encoders smaller and faster without losing accuracy.

The public API: :func:`run` (a pipeline from ``conf/``), :func:`compress` (a model you hold),
:func:`evaluate`, :func:`benchmark`, :func:`load` / :func:`save` (checkpoints), :func:`build_pass`, and
``search.run`` (the accuracy-aware search over pipelines, :mod:`compresslab.search`).
Importing this package stays light: no onnxruntime, no CUDA initialisation.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from compresslab import passes  # noqa: E402,F401 - compresslab.passes.OBert(...) without another import
from compresslab import search  # noqa: E402,F401 - compresslab.search.run(...): the accuracy-aware search
from compresslab.checkpoint import load, load_pretrained, save  # noqa: E402
from compresslab.registry import available_passes, build_pass, get_pass, register_pass  # noqa: E402
from compresslab.rng import callers_rng_kept  # noqa: E402
from compresslab.types import OnnxModel, Pass, PassContext, PassResult, Stage  # noqa: E402


if TYPE_CHECKING:  # the real functions for IDEs and mypy; at run time __getattr__ imports them on first use
    from compresslab.api import CompressResult, compress
    from compresslab.measure import benchmark, evaluate

# name -> module: imported on first access (PEP 562), so `import compresslab` loads neither onnx nor the API's
# stages, and compresslab.compress / evaluate / benchmark ARE the real functions (help() shows their keywords)
_LAZY = {"compress": "compresslab.api", "CompressResult": "compresslab.api", "evaluate": "compresslab.measure",
         "benchmark": "compresslab.measure"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'compresslab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


@callers_rng_kept  # as compress(): a notebook's random streams are not the run's to move
def run(pipeline: str, overrides: list[str] | None = None, **settings: Any) -> Path:
    """Run the pipeline ``conf/pipeline/<pipeline>.yaml`` as ``python -m compresslab +pipeline=<pipeline>
    <overrides>`` would; returns the run directory (``outputs/<pipeline>/<config hash>``).

    ``overrides`` are Hydra overrides (``["task=mrpc", "budget=bench"]``); ``settings`` more of them as keywords
    (``run(..., seed=3)`` is ``seed=3``). Raises what the CLI reports before any work (PipelineError,
    SettingsError: a bad key or value, named); a finished run with the same config is reused, an interrupted one
    resumed from its last finished pass. The caller's torch, Python and numpy random streams are as they were
    after the call (the run seeds its own from ``seed``)."""
    from compresslab.pipeline import run_pipeline

    return run_pipeline(pipeline, list(overrides or []), **settings)


__all__ = ["__version__", "load", "load_pretrained", "save", "available_passes", "build_pass", "get_pass",
           "register_pass", "OnnxModel", "Pass", "PassContext", "PassResult", "Stage", "run", "compress",
           "CompressResult", "evaluate", "benchmark"]
