"""The checkpoint formats a pass may ask for beside the dense safetensors (``PassResult.formats``).

Each format names its file, how to write it from a model, and how to read a dense state dict
back from the file alone (its metadata says how it was encoded), so :func:`compresslab.load`
picks the decoder by the file it finds: ``sparse_int8`` (bitmask + int8, pruned models),
``packed_nbits`` (n-bit codes + fp16 scales + packed zero points, quantized models) and
``packed_binary`` (1-bit signs + fp16 row scales, BiBERT's binarized models).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor, nn

from compresslab.checkpoint.packed import NBITS
from compresslab.checkpoint.packed_binary import BINARY
from compresslab.checkpoint.sparse_int8 import SPARSE_FILE, read_sparse_state, save_sparse


@dataclass(frozen=True)
class Format:
    """One on-disk encoding: ``file`` in a checkpoint dir, its writer and its dense reader."""

    name: str
    file: str
    write: Callable[..., Path]  # (model, out_dir, tokenizer=None) -> written file
    read_state: Callable[[str | os.PathLike], dict[str, Tensor]]


PACKED = (NBITS, BINARY)  # the formats on checkpoint/packed.py's machinery (they record their config stamp)

FORMATS: dict[str, Format] = {
    "sparse_int8": Format("sparse_int8", SPARSE_FILE,
                          lambda model, out_dir, tokenizer=None: save_sparse(model, out_dir, tokenizer=tokenizer),
                          read_sparse_state),
    **{p.name: Format(p.name, p.file, p.save, p.read_state) for p in PACKED},
}


def check_stamps(path: str | os.PathLike, raw: dict[str, Any]) -> None:
    """Each packed file in checkpoint dir ``path`` against config.json (``raw``): CheckpointError naming
    the stamp entries that differ (``PackedFormat.check_config``), whichever weights file was loaded."""
    for p in PACKED:
        if (Path(path) / p.file).is_file():
            p.check_config(Path(path) / p.file, raw)


def check_formats(names: list[str], who: str) -> list[str]:
    """``names`` if every one is a known format; ValueError naming the unknown ones and the known."""
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"{who} asked for checkpoint format(s) {unknown}; known: {sorted(FORMATS)}")
    return list(names)


def write_formats(model: nn.Module, out_dir: str | os.PathLike, names: list[str], tokenizer: Any = None) -> list[Path]:
    """Write each named format of ``model`` into ``out_dir``; returns the files written."""
    return [FORMATS[n].write(model, out_dir, tokenizer=tokenizer) for n in check_formats(names, "write_formats")]
