"""Source-model reading (weights, dtype, heads; ``compresslab.checkpoint.load_pretrained`` loads), the architecture adapters passes use, and physical shrinking.

Saving and reloading compresslab checkpoints is :mod:`compresslab.checkpoint`.
"""

from compresslab.models.adapters import (
    SUPPORTED_MODEL_TYPES, ArchAdapter, LayerView, UnsupportedArchitectureError, get_adapter)
from compresslab.models.loading import (
    EMBEDDED, CheckpointError, embedded_default_path, load_tokenizer)

__all__ = ["SUPPORTED_MODEL_TYPES", "ArchAdapter", "LayerView", "UnsupportedArchitectureError", "get_adapter",
           "EMBEDDED", "CheckpointError", "embedded_default_path", "load_tokenizer"]
