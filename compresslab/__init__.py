"""compresslab: make Hugging Face encoders smaller and faster without losing accuracy.

The public API: :func:`run` (a pipeline from ``conf/``), :func:`compress` (a model you hold),
:func:`evaluate`, :func:`benchmark`, :func:`load` / :func:`save` (checkpoints), :func:`build_pass`, and
``search.run`` (the accuracy-aware search over pipelines, :mod:`compresslab.search`).
Importing this package stays light: no onnxruntime, no CUDA initialisation.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import Any  # noqa: E402

from compresslab import passes  # noqa: E402,F401 - compresslab.passes.OBert(...) without another import
from compresslab import search  # noqa: E402,F401 - compresslab.search.run(...): the accuracy-aware search
from compresslab.checkpoint import load, load_pretrained, save  # noqa: E402
from compresslab.registry import available_passes, build_pass, get_pass, register_pass  # noqa: E402
from compresslab.types import OnnxModel, Pass, PassContext, PassResult, Stage  # noqa: E402


def run(pipeline: str, overrides: list[str] | None = None, **kwargs: Any):
    """Run a pipeline from ``conf/`` programmatically; returns the run directory. See ``pipeline.run``."""
    from compresslab.pipeline import run_pipeline

    return run_pipeline(pipeline, overrides or [], **kwargs)


def compress(model: Any, tokenizer: Any, passes: Any, **kwargs: Any):
    """Compress a model you hold in memory; see :func:`compresslab.api.compress`."""
    from compresslab.api import compress as _compress

    return _compress(model, tokenizer, passes, **kwargs)


def evaluate(model: Any, data: Any, tokenizer: Any = None, **kwargs: Any) -> dict:
    """Score a torch model or an ONNX export dir on data; see :func:`compresslab.measure.evaluate`."""
    from compresslab.measure import evaluate as _evaluate

    return _evaluate(model, data, tokenizer, **kwargs)


def benchmark(models: Any, **kwargs: Any) -> dict:
    """Interleaved latency of ONNX dirs and torch models; see :func:`compresslab.measure.benchmark`."""
    from compresslab.measure import benchmark as _benchmark

    return _benchmark(models, **kwargs)


__all__ = ["__version__", "load", "load_pretrained", "save", "available_passes", "build_pass", "get_pass",
           "register_pass", "OnnxModel", "Pass", "PassContext", "PassResult", "Stage", "run", "compress",
           "evaluate", "benchmark"]
