"""A deployable sparse checkpoint: bitmask + int8 non-zeros for pruned linears, and its size.

``model.sparse.safetensors`` holds, for every targeted linear weight ``K`` (default: the encoder
linears), ``K@bitmask`` (uint8, one bit per weight, ``ops.bitpack``), ``K@values`` (int8
non-zeros in row-major order) and ``K@scale`` (fp32 per-row symmetric scale); for every
``nn.Embedding`` table ``K@q`` (int8) + ``K@scale``; everything else (biases, LayerNorms,
pooler, classifier) stays fp32 under its own key. The file's metadata says how each key was
encoded, so :func:`read_sparse_state` needs no model to decode it.

Why per-row int8: it is what ORT's per-channel dynamic int8 deploys, so the sizes compare like
with like; and per-row scales keep a pruned row's few survivors at full int8 resolution.
``sparse_size_bytes`` reports the bytes these encodings actually take (safetensors output
length for ``total``; tensor bytes under the encoder layers for ``encoder``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from compresslab.models.loading import save_tokenizer
from compresslab.ops.bitpack import nonzero_rows, pack_bits, unpack_bits

SPARSE_FILE = "model.sparse.safetensors"
FORMAT = "compresslab.sparse_int8"
VERSION = "1"
MODES = ("fp32", "int8", "sparse_int8")


def quantize_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-row int8: (q (rows, cols) int8, scale (rows,) fp32), ``w ≈ q * scale[:, None]``."""
    w = w.detach().float()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))  # all-zero rows: any scale works
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def _targets(model: nn.Module, modules: Iterable[str] | None) -> set[str]:
    if modules is not None:
        return set(modules)
    from compresslab.models.adapters import get_adapter  # the encoder linears, as passes target them

    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    return {n for n in get_adapter(model).encoder_linear_names() if n in linears}


def encode(model: nn.Module, mode: str = "sparse_int8",
           modules: Iterable[str] | None = None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of ``model`` in ``mode`` (fp32 | int8 | sparse_int8)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; allowed: {', '.join(MODES)}")
    linear_w = {f"{n}.weight" for n in _targets(model, modules)}
    emb_w = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    tensors: dict[str, Tensor] = {}
    kinds: dict[str, Any] = {}
    for key, t in model.state_dict().items():
        t = t.detach().cpu()
        quant = mode != "fp32" and t.dim() == 2 and t.numel() > 0 and t.is_floating_point()
        if quant and key in linear_w and mode == "sparse_int8":
            q, scale = quantize_rows(t)
            nz = t != 0
            tensors.update({f"{key}@bitmask": pack_bits(nz), f"{key}@values": q[nz].contiguous(),
                            f"{key}@scale": scale})
            kinds[key] = {"kind": "sparse_int8", "shape": list(t.shape), "dtype": str(t.dtype)}
        elif quant and (key in linear_w or key in emb_w):
            q, scale = quantize_rows(t)
            tensors.update({f"{key}@q": q, f"{key}@scale": scale})
            kinds[key] = {"kind": "int8", "shape": list(t.shape), "dtype": str(t.dtype)}
        else:
            tensors[key] = t.clone().contiguous()
    return tensors, {"format": FORMAT, "version": VERSION, "mode": mode, "encodings": json.dumps(kinds)}


def _decode(tensors: dict[str, Tensor], meta: dict[str, str]) -> dict[str, Tensor]:
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"not a {FORMAT} v{VERSION} file (metadata: format={meta.get('format')!r}, "
                         f"version={meta.get('version')!r})")
    kinds = json.loads(meta["encodings"])
    state = {k: v for k, v in tensors.items() if "@" not in k}
    for key, info in kinds.items():
        shape = tuple(info["shape"])
        dtype = getattr(torch, info["dtype"].removeprefix("torch."))
        scale = tensors[f"{key}@scale"]
        if info["kind"] == "sparse_int8":
            bits = tensors[f"{key}@bitmask"]
            values = tensors[f"{key}@values"].float() * scale[nonzero_rows(bits, shape)]  # (nnz,)
            w = torch.zeros(shape[0] * shape[1], dtype=torch.float32)
            w[unpack_bits(bits, shape[0] * shape[1])] = values
            state[key] = w.view(shape).to(dtype)
        elif info["kind"] == "int8":
            state[key] = (tensors[f"{key}@q"].float() * scale[:, None]).to(dtype)
        else:
            raise ValueError(f"{key}: unknown encoding {info['kind']!r}; allowed: sparse_int8, int8")
    return state


def read_sparse_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """Dequantized, dense state dict from a ``model.sparse.safetensors`` file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return _decode(tensors, meta)


def load_sparse_into(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a sparse file's (dequantized) weights into ``model`` in place; shapes must match."""
    missing, unexpected = model.load_state_dict(read_sparse_state(path), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{path} does not match the model: missing={missing[:5]} unexpected={unexpected[:5]}")
    return model


def save_sparse(model: nn.Module, out_dir: str | os.PathLike, modules: Iterable[str] | None = None,
                tokenizer: Any = None) -> Path:
    """Write ``out_dir/model.sparse.safetensors`` (+ config.json, tokenizer) atomically; returns the file.
    The same model gives the same bytes (metadata keys sorted: ``manifest.safetensors_bytes``)."""
    from compresslab.manifest import atomic_write_safetensors
    from compresslab.models.structure import stamp_structure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, meta = encode(model, "sparse_int8", modules)
    atomic_write_safetensors(out / SPARSE_FILE, tensors, meta)
    if not (out / "config.json").is_file():  # a standalone sparse checkpoint must be loadable on its own
        stamp_structure(model)
        model.config.save_pretrained(out)
    if tokenizer is not None:
        save_tokenizer(tokenizer, out)
    return out / SPARSE_FILE


def sparse_size_bytes(model: nn.Module, modules: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """Bytes per encoding: ``{"fp32"|"int8"|"sparse_int8": {"encoder", "total"}}``.

    ``total`` is the length of the safetensors file that encoding writes; ``encoder`` the tensor
    bytes under the adapter's encoder layers (MEASURE.md: report both, say which a ratio uses).
    """
    from compresslab.manifest import safetensors_bytes
    from compresslab.models.adapters import get_adapter

    prefix = get_adapter(model).layers_prefix + "."
    mods = sorted(_targets(model, modules))
    out: dict[str, dict[str, int]] = {}
    for mode in MODES:
        tensors, meta = encode(model, mode, mods)
        enc = sum(t.numel() * t.element_size() for k, t in tensors.items() if k.startswith(prefix))
        out[mode] = {"encoder": int(enc), "total": len(safetensors_bytes(tensors, meta))}
    return out


__all__ = ["MODES", "SPARSE_FILE", "encode", "load_sparse_into", "quantize_rows", "read_sparse_state",
           "save_sparse", "sparse_size_bytes"]
