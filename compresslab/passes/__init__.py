"""Registered passes only: one module per method (file == registry name == ``conf/pass/<name>.yaml``).

The pass classes are attributes of this package (``compresslab.passes.OBert(sparsity=0.8)``),
imported on first use so that ``import compresslab`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_CLASSES = {
    "BiBert": "bibert",
    "Finetune": "finetune",
    "Hawq": "hawq",
    "Int8Qat": "int8_qat",
    "LayerDrop": "layer_drop",
    "Magnitude": "magnitude",
    "OBert": "obert",
    "OrtInt8Dynamic": "ort_int8_dynamic",
    "OrtInt8Static": "ort_int8_static",
    "OrtMatmulNBits": "ort_matmul_nbits",
    "StructuredL1": "structured_l1",
    "ZipLM": "ziplm",
}

__all__ = sorted(_CLASSES)


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return getattr(importlib.import_module(f"{__name__}.{_CLASSES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
