"""Model loading, saving and the architecture adapters passes use."""

from compresslab.models.adapters import (
    SUPPORTED_MODEL_TYPES, ArchAdapter, LayerView, UnsupportedArchitectureError, get_adapter)
from compresslab.models.loading import (
    EMBEDDED, CheckpointError, embedded_default_path, load, load_pretrained, load_tokenizer, save)

__all__ = ["SUPPORTED_MODEL_TYPES", "ArchAdapter", "LayerView", "UnsupportedArchitectureError", "get_adapter",
           "EMBEDDED", "CheckpointError", "embedded_default_path", "load", "load_pretrained", "load_tokenizer", "save"]
