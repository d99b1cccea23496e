"""``packed_binary``: a BiBERT model at 1 bit per weight (``model.binary.safetensors``).

A frozen binary module ``M`` (``models.binary``: ``BinaryLinear``, ``BinaryEmbedding``) has the weight
``α_r · s_rj`` with ``s ∈ {±1}`` and ``α`` float16-exact (buffer ``M.weight_alpha``, float32). Under
``K = "M.weight"`` the file holds

* ``K@signs``: uint8, the ``(rows, cols)`` signs as one bit each (1 = ``+α``), row-major, 8 per byte,
  little-endian inside a byte (``ops.bitpack.pack_bits``; ``pack_nbits(·, 1)`` gives the same stream):
  ``ceil(rows·cols/8)`` bytes;
* ``K@alpha``: float16 ``(rows,)``; the writer refuses an ``α`` that is not float16-exact;

and every other tensor of the state dict as it is (fp32 biases, LayerNorms, position and token-type
embeddings, the classifier). Metadata as for every packed format (``checkpoint/packed.py``): format
name and version, per module ``bits`` (1), shape and dtype, and a SHA-256 of the tensor bytes.

In the design review's terms this is the 1-bit case of the n-bit codes with ``w = a + q·Δ``,
``a = −α``, ``Δ = 2α``; ``packed_nbits`` stores ``(q − z)·Δ`` with an integer ``z``, which cannot say
``±α`` in one bit, so the binary kind has its own two parts on the shared machinery.

:func:`stamp_binary` writes the ``compresslab_binary`` config stamp (which modules, the attention
mode, frozen) that ``compresslab.load`` rebuilds the model from before it loads this state.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from compresslab.checkpoint.packed import PackedFormat, check_fp16_exact, dtype_name, frozen_only, weight_shape
from compresslab.models.adapters import get_adapter
from compresslab.models.binary import (
    ATTENTION_MODES, BI_ATTENTION, BINARY_KEY, BinaryEmbedding, BinaryLinear, binary_modules)
from compresslab.ops.bitpack import pack_bits, unpack_bits

BINARY_FILE = "model.binary.safetensors"
_ALPHA = "_alpha"  # buffer suffix on the weight key: M.weight_alpha


def frozen_binary(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> every binary module, in model order; ValueError for one that is not frozen."""
    return frozen_only(binary_modules(model), "freeze_binary()")


def stamp_binary(model: nn.Module) -> list[str]:
    """Write (or clear) ``config.compresslab_binary`` from the model's binary modules; returns their names.

    ValueError when the model cannot be saved as it runs: a binary module still dynamic (training),
    or attention not switched to the frozen Bi-Attention (``freeze_binary`` does both)."""
    mods = frozen_binary(model)
    cfg = getattr(model, "config", None)
    if cfg is None:
        return list(mods)
    if not mods:
        cfg.__dict__.pop(BINARY_KEY, None)
        return []
    modes = {(getattr(lv.self_attn, "binary_attention", None), getattr(lv.self_attn, "binary_ties", None))
             for lv in get_adapter(model).layers()}
    mode, ties = next(iter(modes)) if len(modes) == 1 else (None, None)
    if mode not in ATTENTION_MODES or ties != "plus" or getattr(cfg, "_attn_implementation", None) != BI_ATTENTION:
        raise ValueError(f"the binary modules are frozen but attention is not the frozen Bi-Attention (layers: "
                         f"{sorted(map(str, modes))}, attn_implementation="
                         f"{getattr(cfg, '_attn_implementation', None)!r}): freeze_binary() the model, not its modules")
    cfg.__dict__[BINARY_KEY] = {"linears": [n for n, m in mods.items() if isinstance(m, BinaryLinear)],
                                "embeddings": [n for n, m in mods.items() if isinstance(m, BinaryEmbedding)],
                                "attention": mode, "frozen": True}
    return list(mods)


def _weight(signs: Tensor, alpha: Tensor, dtype: torch.dtype) -> Tensor:
    """``α_r · s_rj`` from bool signs (True = +α): exactly what ``freeze`` wrote."""
    a = alpha.float()[:, None]
    return torch.where(signs, a, -a).to(dtype)


def _encode_binary(name: str, m: nn.Module, state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(packed tensors, metadata entry) of one frozen binary module."""
    key = f"{name}.weight"
    w = state[key].detach().cpu()
    signs, alpha = m.signs().detach().cpu(), m.alpha().detach().cpu().float()
    rows, cols = (int(d) for d in w.shape)
    if tuple(signs.shape) != (rows, cols) or tuple(alpha.shape) != (rows,):
        raise ValueError(f"{name!r}: signs {tuple(signs.shape)} and alpha {tuple(alpha.shape)} do not fit weight "
                         f"{(rows, cols)}")
    check_fp16_exact(name, alpha, "BinaryLinear.freeze rounds α to float16")
    if not torch.equal(_weight(signs, alpha, w.dtype), w):
        raise ValueError(f"{name!r}: the weight is not α·sign of its signs and α (changed after freeze?); "
                         f"packing it would change the model")
    tensors = {f"{key}@signs": pack_bits(signs), f"{key}@alpha": alpha.half().contiguous()}
    return tensors, {"bits": 1, "shape": [rows, cols], "dtype": dtype_name(w)}


def _decode_binary(key: str, info: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if info["bits"] != 1:
        raise ValueError(f"bits={info['bits']!r}; this format stores 1 bit per weight")
    rows, cols, dtype = weight_shape(info)
    alpha = tensors[f"{key}@alpha"]
    if alpha.dtype != torch.float16 or tuple(alpha.shape) != (rows,):
        raise ValueError(f"alpha is {alpha.dtype} {tuple(alpha.shape)}, expected float16 {(rows,)}")
    signs = unpack_bits(tensors[f"{key}@signs"], rows * cols).view(rows, cols)
    return {key: _weight(signs, alpha, dtype), key + _ALPHA: alpha.float()}


BINARY = PackedFormat(
    "packed_binary", BINARY_FILE, (_ALPHA,), frozen_binary, _encode_binary, _decode_binary, stamp_binary, BINARY_KEY,
    "binary modules: the packed_binary format stores 1-bit signs (models.binary.binarize_model + freeze_binary "
    "first)")
FORMAT = BINARY.tag
binary_sizes = BINARY.sizes

__all__ = ["BINARY", "BINARY_FILE", "FORMAT", "binary_sizes", "frozen_binary", "stamp_binary"]
