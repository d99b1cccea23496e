"""A packed n-bit checkpoint: quantized weights at their nominal bits, so the file is the real size.

``model.packed.safetensors`` holds, for every frozen quantized module ``M`` (any module with
``codes()``, ``params()`` and ``frozen``: today ``FakeQuantLinear``), under ``K = "M.weight"``:

* ``K@codes``: uint8, the ``(N, K)`` codes as a dense little-endian ``bits``-bit stream
  (``ops.bitpack.pack_nbits``: a 3-bit module costs 3 bits per weight, ``ceil(N*K*3/8)`` bytes);
* ``K@scale``: float16 ``(N/group_rows, K/block_size)``, exact: ``ops.quant`` rounds every scale
  up to a float16 value, and the writer refuses a scale that is not;
* ``K@zero``: the integer zero points, one ``bits``-bit field per group, packed the same way;

and every other tensor of the dense state dict as it is there (fp32 biases, LayerNorms,
unquantized weights, ...). The metadata records per module the bits, block size, group rows,
shape and dtype, the format version, and a SHA-256 of the tensor bytes, so :func:`read_packed_state`
rebuilds the dense state dict from the file alone: ``M.weight = ŵ = (q − z)·Δ`` bit for bit, and the
buffers ``M.weight_scale`` (float32) / ``M.weight_zero_point`` (uint8). ``compresslab.load`` then
rebuilds the frozen modules from the config's ``compresslab_quant`` stamp and loads that state.

:func:`packed_sizes` gives the bytes this encoding takes next to fp32 dense, from the same tensors
the writer saves (MEASURE.md: encoder and whole model, and which one a ratio uses).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from compresslab.models.loading import CheckpointError
from compresslab.ops.bitpack import pack_nbits, unpack_nbits
from compresslab.ops.quant import QuantParams, check_bits, dequantize

PACKED_FILE = "model.packed.safetensors"
FORMAT = "compresslab.packed_nbits"
VERSION = "1"
_SCALE, _ZERO = "_scale", "_zero_point"  # buffer suffixes on the weight key: M.weight_scale, M.weight_zero_point


def frozen_quantized(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> every frozen module exposing ``codes()`` and ``params()``, in model order.

    ValueError for such a module that is not frozen (its codes are not fixed yet)."""
    out = {}
    for name, m in model.named_modules():
        if callable(getattr(m, "codes", None)) and callable(getattr(m, "params", None)):
            if not getattr(m, "frozen", False):
                raise ValueError(f"{name!r} ({type(m).__name__}) is not frozen: freeze_all() before packing")
            out[name] = m
    return out


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _encode_module(name: str, m: nn.Module, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(packed tensors, metadata entry) of one frozen quantized module."""
    key = f"{name}.weight"
    for k in (key, key + _SCALE, key + _ZERO):
        if k not in state:
            raise ValueError(f"{name!r}: expected {k!r} in the state dict (weight + weight_scale / weight_zero_point)")
    w = state[key].detach().cpu()
    p: QuantParams = m.params()
    q = m.codes().detach().cpu()
    scale, zero = p.scale.detach().cpu().float(), p.zero_point.detach().cpu()
    n, k = (int(d) for d in w.shape)
    groups = (n // p.group_rows, k // p.block_size)
    if tuple(q.shape) != (n, k) or tuple(scale.shape) != groups or tuple(zero.shape) != groups:
        raise ValueError(f"{name!r}: codes {tuple(q.shape)}, scale {tuple(scale.shape)}, zero {tuple(zero.shape)} "
                         f"do not fit weight {(n, k)} with groups of {p.group_rows}x{p.block_size}")
    if not torch.equal(scale.half().float(), scale):
        bad = int((scale.half().float() != scale).sum())
        raise ValueError(f"{name!r}: {bad} scale(s) are not float16-exact; the packed format stores scales in "
                         f"16 bits (ops.quant.quant_params rounds them up to float16)")
    pc = QuantParams(scale, zero, p.bits, p.block_size, p.group_rows)
    if not torch.equal(dequantize(q, pc).to(w.dtype), w):
        raise ValueError(f"{name!r}: the weight is not (q − z)·Δ of its codes (changed after freeze?); "
                         f"packing it would change the model")
    tensors = {f"{key}@codes": pack_nbits(q, p.bits), f"{key}@scale": scale.half().contiguous(),
               f"{key}@zero": pack_nbits(zero, p.bits)}
    info = {"bits": p.bits, "block_size": p.block_size, "group_rows": p.group_rows, "shape": [n, k],
            "dtype": str(w.dtype).removeprefix("torch.")}
    return tensors, info


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def encode_packed(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of the packed encoding of ``model``.

    ValueError when ``model`` has no frozen quantized module, or one that cannot be packed exactly."""
    mods = frozen_quantized(model)
    if not mods:
        raise ValueError(f"{type(model).__name__} has no frozen quantized modules: the packed_nbits format stores "
                         f"n-bit codes (models.quantized.quantize_modules + freeze_all first)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tensors: dict[str, Tensor] = {}
    encodings: dict[str, Any] = {}
    for name, m in mods.items():
        t, info = _encode_module(name, m, state)
        tensors.update(t)
        key = f"{name}.weight"
        encodings[key] = info
        for k in (key, key + _SCALE, key + _ZERO):
            del state[k]
    for k, v in state.items():
        if "@" in k:
            raise ValueError(f"state dict key {k!r} contains '@', which this format reserves")
        tensors[k] = v.clone().contiguous()
    meta = {"format": FORMAT, "version": VERSION, "encodings": json.dumps(encodings), "sha256": _digest(tensors)}
    return tensors, meta


def decode_packed(tensors: dict[str, Tensor], meta: dict[str, str]) -> dict[str, Tensor]:
    """The dense state dict of a packed encoding; CheckpointError when anything does not fit."""
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"not a {FORMAT} v{VERSION} file (metadata: format={meta.get('format')!r}, "
                              f"version={meta.get('version')!r})")
    if meta.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{FORMAT}: the tensor bytes do not match the file's checksum (corrupt file)")
    try:
        encodings = json.loads(meta["encodings"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{FORMAT}: unreadable 'encodings' metadata: {e}") from e
    state = {k: v for k, v in tensors.items() if "@" not in k}
    for key, info in encodings.items():
        try:
            bits = check_bits(info["bits"], f"{key}.bits")
            bs, gr = int(info["block_size"]), int(info["group_rows"])
            n, k = (int(d) for d in info["shape"])
            dtype = getattr(torch, info["dtype"])
            if bs < 1 or gr < 1 or n % gr or k % bs:
                raise ValueError(f"groups of {gr}x{bs} do not divide shape {(n, k)}")
            groups = (n // gr, k // bs)
            scale = tensors[f"{key}@scale"]
            if scale.dtype != torch.float16 or tuple(scale.shape) != groups:
                raise ValueError(f"scale is {scale.dtype} {tuple(scale.shape)}, expected float16 {groups}")
            q = unpack_nbits(tensors[f"{key}@codes"], bits, n * k).view(n, k)
            zero = unpack_nbits(tensors[f"{key}@zero"], bits, groups[0] * groups[1]).view(groups)
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{FORMAT}: cannot decode {key}: {e!r}") from e
        p = QuantParams(scale.float(), zero, bits, bs, gr)
        state[key] = dequantize(q, p).to(dtype)
        state[key + _SCALE] = p.scale
        state[key + _ZERO] = zero
    return state


def read_packed_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """Dense state dict (``ŵ`` weights + their scale / zero-point buffers) from a packed file alone;
    CheckpointError for a truncated, corrupt or foreign file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers and short files
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): {e}") from e
    return decode_packed(tensors, meta)


def save_packed(model: nn.Module, out_dir: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Write ``out_dir/model.packed.safetensors`` atomically (+ config.json when absent, tokenizer);
    returns the file. The config's ``compresslab_quant`` stamp must name every packed module."""
    from safetensors.torch import save_file

    from compresslab.models.structure import stamp_structure
    from compresslab.models.quantized import QUANT_KEY, stamp_quant

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, meta = encode_packed(model)
    stamp_structure(model)
    stamp_quant(model)
    stamped = set(getattr(getattr(model, "config", None), QUANT_KEY, None) or {})
    unstamped = sorted(k.removesuffix(".weight") for k in json.loads(meta["encodings"])
                       if k.removesuffix(".weight") not in stamped)
    if unstamped:
        raise ValueError(f"{unstamped[:5]} are not in config.{QUANT_KEY}, so load could not rebuild them")
    tmp = out / f".{PACKED_FILE}.tmp"
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, out / PACKED_FILE)
    if not (out / "config.json").is_file():  # a standalone packed checkpoint must be loadable on its own
        model.config.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out / PACKED_FILE


def _dense_fp32(model: nn.Module) -> dict[str, Tensor]:
    """The unquantized model's dense state: quantized weights as fp32 values, no scale / zero buffers."""
    mods = frozen_quantized(model)
    drop = {f"{n}.weight{s}" for n in mods for s in (_SCALE, _ZERO)}
    return {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
            for k, v in model.state_dict().items() if k not in drop}


def packed_sizes(model: nn.Module) -> dict[str, Any]:
    """Real bytes of fp32 dense and of the packed encoding, and their ratios (fp32 / packed).

    For each of ``"fp32"`` and ``"packed_nbits"``:

    * ``encoder_linears``: tensor bytes of the adapter's encoder Linears (weights, biases; packed:
      codes + fp16 scales + packed zero points + fp32 bias);
    * ``encoder``: tensor bytes under the encoder layers (the Linears + LayerNorms), as
      ``sparse_size_bytes`` counts it; ``compression_packed_encoder`` is ``ratio["encoder"]``;
    * ``total``: tensor bytes of the whole model (embeddings, pooler, classifier included);
    * ``file``: the length of the safetensors file that encoding writes (``total`` + its header).

    ``ratio`` holds fp32 / packed for each; ``avg_bits`` the nominal Σnᵢbᵢ/Σnᵢ over the encoder
    Linears' weights (an unquantized one counts 32) and ``bits_per_weight`` their packed weight bits
    (codes + scales + zeros) per weight.
    """
    from safetensors.torch import save

    from compresslab.models.adapters import get_adapter

    ad = get_adapter(model)
    layers = ad.layers_prefix + "."
    linears = set(ad.encoder_linear_names())
    packed, meta = encode_packed(model)
    dense = _dense_fp32(model)

    def part(tensors: dict[str, Tensor], file_len: int) -> dict[str, int]:
        def module(k: str) -> str:
            return k.split("@")[0].rpartition(".")[0]

        return {"encoder_linears": sum(_nbytes(t) for k, t in tensors.items() if module(k) in linears),
                "encoder": sum(_nbytes(t) for k, t in tensors.items() if k.startswith(layers)),
                "total": sum(_nbytes(t) for t in tensors.values()), "file": file_len}

    out: dict[str, Any] = {"fp32": part(dense, len(save(dense))),
                           "packed_nbits": part(packed, len(save(packed, metadata=meta)))}
    out["ratio"] = {k: out["fp32"][k] / max(1, out["packed_nbits"][k]) for k in out["fp32"]}
    enc = json.loads(meta["encodings"])
    numel = bits = packed_weight_bytes = 0
    for n in linears:
        key = f"{n}.weight"
        w = dense.get(key)
        if w is None:
            continue
        numel += w.numel()
        if key in enc:
            bits += w.numel() * enc[key]["bits"]
            packed_weight_bytes += sum(_nbytes(packed[f"{key}@{s}"]) for s in ("codes", "scale", "zero"))
        else:
            bits += w.numel() * 32
            packed_weight_bytes += _nbytes(packed[key])
    out["avg_bits"] = bits / max(1, numel)
    out["bits_per_weight"] = 8 * packed_weight_bytes / max(1, numel)
    return out


__all__ = ["FORMAT", "PACKED_FILE", "VERSION", "decode_packed", "encode_packed", "frozen_quantized", "packed_sizes",
           "read_packed_state", "save_packed"]
