"""compresslab: make Hugging Face encoders smaller and faster without losing accuracy.

Importing this package stays light: no onnxruntime, no CUDA initialisation.
"""

from __future__ import annotations

__version__ = "0.1.0"

from compresslab.checkpoint import load, save  # noqa: E402
from compresslab.models.loading import load_pretrained  # noqa: E402
from compresslab.registry import available_passes, build_pass, get_pass, register_pass  # noqa: E402
from compresslab.types import OnnxModel, Pass, PassContext, PassResult, Stage  # noqa: E402


def run(pipeline: str, overrides: list[str] | None = None, **kwargs):
    """Run a pipeline from ``conf/`` programmatically; returns the run directory. See ``pipeline.run``."""
    from compresslab.pipeline import run_pipeline

    return run_pipeline(pipeline, overrides or [], **kwargs)


__all__ = ["__version__", "load", "load_pretrained", "save", "available_passes", "build_pass", "get_pass",
           "register_pass", "OnnxModel", "Pass", "PassContext", "PassResult", "Stage", "run"]
