"""How a compressed model is stored and read back: dense safetensors plus declared formats."""

from compresslab.checkpoint.formats import FORMATS, Format, check_formats, write_formats
from compresslab.checkpoint.io import check_source, load, load_pretrained, save

__all__ = ["FORMATS", "Format", "check_formats", "check_source", "load", "load_pretrained", "save", "write_formats"]
