"""Packed checkpoints: compressed weights at their nominal bits, so the file is the real size.

A packed format (:class:`PackedFormat`) writes one safetensors file holding, for every frozen
module of its kind ``M``, the weight ``K = "M.weight"`` as a few ``K@part`` tensors, and every other
tensor of the dense state dict as it is there (fp32 biases, LayerNorms, unpacked weights, ...).
The metadata records the format name and version, per module an encoding entry (``bits``, shape,
dtype and what the kind needs), and a SHA-256 of the tensor bytes, so :meth:`PackedFormat.read_state`
rebuilds the dense state dict from the file alone, bit for bit; ``compresslab.load`` then rebuilds
the frozen modules from the config's stamp and loads that state. :meth:`PackedFormat.sizes` gives
the bytes the encoding takes next to fp32 dense, from the same tensors the writer saves
(MEASURE.md: encoder and whole model, and which one a ratio uses).

Two formats share this machinery: ``packed_nbits`` (here) and ``packed_binary``
(``checkpoint/packed_binary.py``: 1-bit signs + a float16 scale per row).

``packed_nbits``: ``model.packed.safetensors`` holds, for every frozen quantized module ``M`` (any
module with ``codes()``, ``params()`` and ``frozen``: today ``FakeQuantLinear`` /
``FakeQuantEmbedding``), under ``K = "M.weight"``:

* ``K@codes``: uint8, the ``(N, K)`` codes as a dense little-endian ``bits``-bit stream
  (``ops.bitpack.pack_nbits``: a 3-bit module costs 3 bits per weight, ``ceil(N*K*3/8)`` bytes);
* ``K@scale``: float16 ``(N/group_rows, K/block_size)``, exact: ``ops.quant`` rounds every scale
  up to a float16 value, and the writer refuses a scale that is not;
* ``K@zero``: the integer zero points, one ``bits``-bit field per group, packed the same way;

with per module the bits, block size, group rows, shape and dtype in the metadata. Decoding gives
``M.weight = ŵ = (q − z)·Δ`` bit for bit and the buffers ``M.weight_scale`` (float32) /
``M.weight_zero_point`` (uint8); the config stamp is ``compresslab_quant``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from compresslab.models.loading import CheckpointError, save_tokenizer
from compresslab.models.quantized import QUANT_KEY, stamp_quant
from compresslab.ops.bitpack import pack_nbits, unpack_nbits
from compresslab.ops.quant import QuantParams, check_bits, dequantize

VERSION = "1"

log = logging.getLogger(__name__)

EncodeModule = Callable[[str, nn.Module, Mapping[str, Tensor]], tuple[dict[str, Tensor], dict[str, Any]]]
DecodeModule = Callable[[str, Mapping[str, Any], Mapping[str, Tensor]], dict[str, Tensor]]


# ---------------------------------------------------------------------------------- shared helpers
def frozen_only(mods: dict[str, nn.Module], hint: str) -> dict[str, nn.Module]:
    """``mods`` when every one is ``frozen``; ValueError naming the first that is not (its codes are not fixed)."""
    for name, m in mods.items():
        if not getattr(m, "frozen", False):
            raise ValueError(f"{name!r} ({type(m).__name__}) is not frozen: {hint} first (a dynamic, training "
                             f"module's codes are not fixed, so it cannot be saved or packed)")
    return mods


def check_fp16_exact(name: str, scale: Tensor, why: str) -> None:
    """ValueError when a float scale is not exactly a float16 value (the packed files store 16 bits)."""
    if not torch.equal(scale.half().float(), scale):
        bad = int((scale.half().float() != scale).sum())
        raise ValueError(f"{name!r}: {bad} scale(s) are not float16-exact; the packed format stores scales in "
                         f"16 bits ({why})")


def weight_shape(info: Mapping[str, Any]) -> tuple[int, int, torch.dtype]:
    """``(rows, cols, dtype)`` of an encoding entry; ValueError / KeyError / AttributeError when unreadable."""
    rows, cols = (int(d) for d in info["shape"])
    if rows < 0 or cols < 0:
        raise ValueError(f"negative shape {(rows, cols)}")
    dtype = getattr(torch, info["dtype"])
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype {info['dtype']!r} is not a torch dtype")
    return rows, cols, dtype


def dtype_name(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _read(path: str | os.PathLike, *, tensors: bool = True) -> tuple[dict[str, str], dict[str, Tensor]]:
    """(metadata, tensors) of a safetensors file; the tensors are not read (``{}``) unless ``tensors``.
    CheckpointError for a truncated or corrupt file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}), ({k: f.get_tensor(k) for k in f.keys()} if tensors else {})
    except Exception as e:  # safetensors raises its own error types for bad headers and short files
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): {e}") from e


def stamp_diff(written: Any, have: Any) -> list[str]:
    """Entry by entry, how config.json's stamp (``have``) differs from the one a file was written with."""
    def short(v: Any) -> str:
        r = repr(v)
        return r if len(r) <= 120 else r[:117] + "..."

    if not isinstance(written, dict) or not isinstance(have, dict):
        return [f"{short(have)} in config.json, {short(written)} in the file"]
    absent = "<absent>"
    return [f"{k}: {short(have.get(k, absent))} in config.json, {short(written.get(k, absent))} in the file"
            for k in sorted(set(written) | set(have), key=str) if have.get(k, absent) != written.get(k, absent)]


# ---------------------------------------------------------------------------------- the machinery
@dataclass(frozen=True)
class PackedFormat:
    """One packed encoding: which frozen modules it packs, and how one module's weight is encoded.

    ``modules(model)``: name -> frozen module to pack, in model order (ValueError for a dynamic one);
    ``encode_module(name, module, state)``: ``({"K@part": tensor}, info)`` with ``info["bits"]`` the
    nominal bits per weight, ValueError when it cannot be stored exactly; ``decode_module(K, info,
    tensors)``: the dense state entries of ``K`` (the weight and its ``buffers``); ``stamp(model)``:
    writes the config stamp ``stamp_key`` load rebuilds the modules from, returns the names it holds.
    """

    name: str  # the checkpoint format name (checkpoint.FORMATS) and the key of its sizes
    file: str
    buffers: tuple[str, ...]  # buffer suffixes on the weight key that the encoding stores instead
    modules: Callable[[nn.Module], dict[str, nn.Module]]
    encode_module: EncodeModule
    decode_module: DecodeModule
    stamp: Callable[[nn.Module], Iterable[str]]
    stamp_key: str
    needs: str  # what a model needs to have: "<modules> (<how to get them>)"
    version: str = VERSION

    @property
    def tag(self) -> str:
        """The metadata's ``format`` value."""
        return f"compresslab.{self.name}"

    def encode(self, model: nn.Module) -> tuple[dict[str, Tensor], dict[str, str]]:
        """(tensors, metadata) of the packed encoding of ``model``.

        ValueError when ``model`` has no module to pack, or one that cannot be packed exactly."""
        mods = self.modules(model)
        if not mods:
            raise ValueError(f"{type(model).__name__} has no {self.needs}")
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        tensors: dict[str, Tensor] = {}
        encodings: dict[str, Any] = {}
        for name, m in mods.items():
            key = f"{name}.weight"
            owned = [key] + [key + s for s in self.buffers]
            absent = [k for k in owned if k not in state]
            if absent:
                raise ValueError(f"{name!r}: expected {absent} in the state dict (the weight and its buffers "
                                 f"{list(self.buffers)})")
            t, encodings[key] = self.encode_module(name, m, state)
            tensors.update(t)
            for k in owned:
                del state[k]
        for k, v in state.items():
            if "@" in k:
                raise ValueError(f"state dict key {k!r} contains '@', which this format reserves")
            tensors[k] = v.clone().contiguous()
        meta = {"format": self.tag, "version": self.version, "encodings": json.dumps(encodings),
                "sha256": _digest(tensors)}
        # the config stamp the modules are rebuilt from, recorded in the file: load compares it with
        # config.json (check_config), since some entries (binary attention mode) leave no trace in the weights
        self.stamp(model)
        stamp = getattr(getattr(model, "config", None), self.stamp_key, None)
        if stamp:
            meta["stamp"] = json.dumps(stamp, sort_keys=True)
        return tensors, meta

    def decode(self, tensors: dict[str, Tensor], meta: dict[str, str]) -> dict[str, Tensor]:
        """The dense state dict of a packed encoding; CheckpointError when anything does not fit."""
        if meta.get("format") != self.tag or meta.get("version") != self.version:
            raise CheckpointError(f"not a {self.tag} v{self.version} file (metadata: format={meta.get('format')!r}, "
                                  f"version={meta.get('version')!r})")
        if meta.get("sha256") != _digest(tensors):
            raise CheckpointError(f"{self.tag}: the tensor bytes do not match the file's checksum (corrupt file)")
        try:
            encodings = json.loads(meta["encodings"])
            if not isinstance(encodings, dict):
                raise ValueError(f"a JSON {type(encodings).__name__}, not an object")
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{self.tag}: unreadable 'encodings' metadata: {e}") from e
        state = {k: v for k, v in tensors.items() if "@" not in k}
        for key, info in encodings.items():
            try:
                state.update(self.decode_module(key, info, tensors))
            except (KeyError, ValueError, TypeError, AttributeError) as e:
                raise CheckpointError(f"{self.tag}: cannot decode {key}: {e!r}") from e
        return state

    def read_state(self, path: str | os.PathLike) -> dict[str, Tensor]:
        """Dense state dict (weights + their buffers) from a packed file alone; CheckpointError for a
        truncated, corrupt or foreign file."""
        meta, tensors = _read(path)
        return self.decode(tensors, meta)

    def check_config(self, path: str | os.PathLike, raw: Mapping[str, Any]) -> None:
        """CheckpointError naming the entries where config.json's ``stamp_key`` (``raw``) differs from the
        stamp ``path`` was written with: an edited config.json can rebuild modules that load the same
        weights and compute something else (BiBERT's ``attention``: bool vs softmax). A file written
        before the stamp was recorded is not checked (a log line says so)."""
        path = Path(path)
        meta, _ = _read(path, tensors=False)
        if "stamp" not in meta:
            log.info("%s was written before packed files recorded their config stamp: config.json's %s is not "
                     "checked against it", path, self.stamp_key)
            return
        try:
            written = json.loads(meta["stamp"])
        except ValueError as e:
            raise CheckpointError(f"{path}: unreadable 'stamp' metadata: {e}") from e
        have = json.loads(json.dumps(raw.get(self.stamp_key)))  # tuples as lists, as the file has them
        if have != written:
            raise CheckpointError(
                f"{path.parent / 'config.json'}: config.{self.stamp_key} does not match the stamp {path.name} was "
                f"written with ({'; '.join(stamp_diff(written, have))}): config.json was edited or belongs to "
                f"another model; restore the config.json saved with the weights")

    def save(self, model: nn.Module, out_dir: str | os.PathLike, tokenizer: Any = None) -> Path:
        """Write ``out_dir/<file>`` atomically (+ config.json when absent, tokenizer); returns the file.
        The config's stamp must name every packed module. The same model gives the same bytes
        (metadata keys sorted: ``manifest.safetensors_bytes``)."""
        from compresslab.manifest import atomic_write_safetensors
        from compresslab.models.structure import stamp_structure

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors, meta = self.encode(model)
        stamp_structure(model)
        stamped = set(self.stamp(model))
        unstamped = sorted(k.removesuffix(".weight") for k in json.loads(meta["encodings"])
                           if k.removesuffix(".weight") not in stamped)
        if unstamped:
            raise ValueError(f"{unstamped[:5]} are not in config.{self.stamp_key}, so load could not rebuild them")
        atomic_write_safetensors(out / self.file, tensors, meta)
        if not (out / "config.json").is_file():  # a standalone packed checkpoint must be loadable on its own
            model.config.save_pretrained(out)
        if tokenizer is not None:
            save_tokenizer(tokenizer, out)
        return out / self.file

    def dense_fp32(self, model: nn.Module) -> dict[str, Tensor]:
        """The unpacked model's dense state: packed weights as fp32 values, without their buffers."""
        drop = {f"{n}.weight{s}" for n in self.modules(model) for s in self.buffers}
        return {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
                for k, v in model.state_dict().items() if k not in drop}

    def sizes(self, model: nn.Module) -> dict[str, Any]:
        """Real bytes of fp32 dense and of this encoding, and their ratios (fp32 / packed).

        For each of ``"fp32"`` and ``self.name``:

        * ``encoder_linears``: tensor bytes of the adapter's encoder Linears (weights and biases;
          packed: the weight's packed parts + fp32 bias);
        * ``encoder``: tensor bytes under the encoder layers (the Linears + LayerNorms), as
          ``sparse_size_bytes`` counts it: no embeddings, pooler or classifier;
        * ``total``: tensor bytes of the whole model (embeddings, pooler, classifier included);
        * ``file``: the length of the safetensors file that encoding writes (``total`` + its header).

        ``ratio`` holds fp32 / packed for each; ``avg_bits`` the nominal Σnᵢbᵢ/Σnᵢ over the encoder
        Linears' weights (an unpacked one counts 32) and ``bits_per_weight`` their packed weight bits
        (all the weight's parts, scales included) per weight.
        """
        from compresslab.manifest import safetensors_bytes
        from compresslab.models.adapters import get_adapter

        ad = get_adapter(model)
        layers = ad.layers_prefix + "."
        linears = set(ad.encoder_linear_names())
        packed, meta = self.encode(model)
        dense = self.dense_fp32(model)

        def part(tensors: dict[str, Tensor], file_len: int) -> dict[str, int]:
            def module(k: str) -> str:
                return k.split("@")[0].rpartition(".")[0]

            return {"encoder_linears": sum(_nbytes(t) for k, t in tensors.items() if module(k) in linears),
                    "encoder": sum(_nbytes(t) for k, t in tensors.items() if k.startswith(layers)),
                    "total": sum(_nbytes(t) for t in tensors.values()), "file": file_len}

        out: dict[str, Any] = {"fp32": part(dense, len(safetensors_bytes(dense))),
                               self.name: part(packed, len(safetensors_bytes(packed, meta)))}
        out["ratio"] = {k: out["fp32"][k] / max(1, out[self.name][k]) for k in out["fp32"]}
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
                packed_weight_bytes += sum(_nbytes(t) for k, t in packed.items() if k.startswith(f"{key}@"))
            else:
                bits += w.numel() * 32
                packed_weight_bytes += _nbytes(packed[key])
        out["avg_bits"] = bits / max(1, numel)
        out["bits_per_weight"] = 8 * packed_weight_bytes / max(1, numel)
        return out


# ---------------------------------------------------------------------------------- packed_nbits
PACKED_FILE = "model.packed.safetensors"
_SCALE, _ZERO = "_scale", "_zero_point"  # buffer suffixes on the weight key: M.weight_scale, M.weight_zero_point


def frozen_quantized(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> every frozen module exposing ``codes()`` and ``params()``, in model order.

    ValueError for such a module that is not frozen (its codes are not fixed yet)."""
    return frozen_only({name: m for name, m in model.named_modules()
                        if callable(getattr(m, "codes", None)) and callable(getattr(m, "params", None))},
                       "freeze_all()")


def _encode_nbits(name: str, m: nn.Module, state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(packed tensors, metadata entry) of one frozen quantized module."""
    key = f"{name}.weight"
    w = state[key].detach().cpu()
    p: QuantParams = m.params()
    q = m.codes().detach().cpu()
    scale, zero = p.scale.detach().cpu().float(), p.zero_point.detach().cpu()
    n, k = (int(d) for d in w.shape)
    groups = (n // p.group_rows, k // p.block_size)
    if tuple(q.shape) != (n, k) or tuple(scale.shape) != groups or tuple(zero.shape) != groups:
        raise ValueError(f"{name!r}: codes {tuple(q.shape)}, scale {tuple(scale.shape)}, zero {tuple(zero.shape)} "
                         f"do not fit weight {(n, k)} with groups of {p.group_rows}x{p.block_size}")
    check_fp16_exact(name, scale, "ops.quant.quant_params rounds them up to float16")
    pc = QuantParams(scale, zero, p.bits, p.block_size, p.group_rows)
    if not torch.equal(dequantize(q, pc).to(w.dtype), w):
        raise ValueError(f"{name!r}: the weight is not (q − z)·Δ of its codes (changed after freeze?); "
                         f"packing it would change the model")
    tensors = {f"{key}@codes": pack_nbits(q, p.bits), f"{key}@scale": scale.half().contiguous(),
               f"{key}@zero": pack_nbits(zero, p.bits)}
    info = {"bits": p.bits, "block_size": p.block_size, "group_rows": p.group_rows, "shape": [n, k],
            "dtype": dtype_name(w)}
    return tensors, info


def _decode_nbits(key: str, info: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    bits = check_bits(info["bits"], f"{key}.bits")
    bs, gr = int(info["block_size"]), int(info["group_rows"])
    n, k, dtype = weight_shape(info)
    if bs < 1 or gr < 1 or n % gr or k % bs:
        raise ValueError(f"groups of {gr}x{bs} do not divide shape {(n, k)}")
    groups = (n // gr, k // bs)
    scale = tensors[f"{key}@scale"]
    if scale.dtype != torch.float16 or tuple(scale.shape) != groups:
        raise ValueError(f"scale is {scale.dtype} {tuple(scale.shape)}, expected float16 {groups}")
    q = unpack_nbits(tensors[f"{key}@codes"], bits, n * k).view(n, k)
    zero = unpack_nbits(tensors[f"{key}@zero"], bits, groups[0] * groups[1]).view(groups)
    p = QuantParams(scale.float(), zero, bits, bs, gr)
    return {key: dequantize(q, p).to(dtype), key + _SCALE: p.scale, key + _ZERO: zero}


def _stamp_quant(model: nn.Module) -> list[str]:
    stamp_quant(model)
    return list(getattr(getattr(model, "config", None), QUANT_KEY, None) or {})


NBITS = PackedFormat(
    "packed_nbits", PACKED_FILE, (_SCALE, _ZERO), frozen_quantized, _encode_nbits, _decode_nbits, _stamp_quant,
    QUANT_KEY,
    "frozen quantized modules: the packed_nbits format stores n-bit codes (models.quantized.quantize_modules + "
    "freeze_all first)")
FORMAT = NBITS.tag
encode_packed = NBITS.encode
decode_packed = NBITS.decode
read_packed_state = NBITS.read_state
save_packed = NBITS.save
packed_sizes = NBITS.sizes

__all__ = ["FORMAT", "NBITS", "PACKED_FILE", "VERSION", "PackedFormat", "check_fp16_exact", "decode_packed",
           "dtype_name", "encode_packed", "frozen_only", "frozen_quantized", "packed_sizes", "read_packed_state",
           "save_packed", "weight_shape"]
