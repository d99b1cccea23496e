"""Bit packing (pure tensor math, exact round trip): bitmask + values for sparse tensors, and
dense n-bit code streams for quantized ones.

A sparse tensor is stored as (a) a bitmask with one bit per element, 8 per byte,
little-endian inside each byte (element ``i`` is bit ``i % 8`` of byte ``i // 8``), over the
row-major flattening, and (b) the non-zero values in that same row-major order. At sparsity
``s`` this costs ``numel/8 + (1-s)*numel*bytes_per_value`` bytes instead of
``numel*bytes_per_value``: for int8 values it beats dense int8 once ``s > 1/8``.

n-bit codes (:func:`pack_nbits`) use the same little-endian order: the row-major flattening's
code ``i`` occupies stream bits ``[i*bits, (i+1)*bits)``, least significant bit first, and stream
bit ``j`` is bit ``j % 8`` of byte ``j // 8``. Nothing is rounded up to a wider type: 3-bit codes
take 3 bits each, ``ceil(numel*bits/8)`` bytes in all, the last byte's unused high bits zero.
With ``bits=1`` the stream equals :func:`pack_bits` of the codes as a mask.
"""

from __future__ import annotations

import torch
from torch import Tensor

_BITS = 8


def _weights(device: torch.device) -> Tensor:
    return torch.tensor([1 << i for i in range(_BITS)], dtype=torch.int32, device=device)  # (8,)


def pack_bits(mask: Tensor) -> Tensor:
    """Bool tensor (any shape) -> uint8 (ceil(numel / 8),)."""
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % _BITS
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    groups = flat.view(-1, _BITS).to(torch.int32)  # (nbytes, 8)
    return (groups * _weights(mask.device)).sum(dim=1).to(torch.uint8)


def unpack_bits(packed: Tensor, numel: int) -> Tensor:
    """Inverse of :func:`pack_bits`: uint8 (nbytes,) -> bool (numel,)."""
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(f"packed must be a 1-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    if numel < 0 or packed.numel() != -(-numel // _BITS):
        raise ValueError(f"{packed.numel()} bytes cannot hold exactly {numel} bits")
    bits = (packed.to(torch.int32).unsqueeze(1) & _weights(packed.device)) != 0  # (nbytes, 8)
    return bits.reshape(-1)[:numel]


def _check_nbits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= _BITS:
        raise ValueError(f"bits={bits!r}: code width must be an integer in [1, {_BITS}]")
    return bits


def pack_nbits(codes: Tensor, bits: int) -> Tensor:
    """uint8 codes (any shape, each ``< 2**bits``) -> uint8 ``(ceil(numel*bits/8),)``: a dense
    little-endian bitstream of exactly ``bits`` bits per code over the row-major flattening."""
    bits = _check_nbits(bits)
    if codes.dtype != torch.uint8:
        raise ValueError(f"codes must be uint8, got {codes.dtype}")
    flat = codes.reshape(-1)
    numel = flat.numel()
    if numel and bits < _BITS and int(flat.max()) >> bits:
        raise ValueError(f"a code of {int(flat.max())} does not fit in {bits} bits (max {(1 << bits) - 1})")
    nbytes = -(-numel * bits // _BITS)
    if bits == _BITS:
        return flat.clone()
    # 8 codes of `bits` bits are exactly `bits` bytes: build each chunk as one int64 (<= 56 bits used)
    pad = (-numel) % _BITS
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    chunks = flat.view(-1, _BITS).to(torch.int64)  # (n8, 8)
    shifts = torch.arange(_BITS, dtype=torch.int64, device=codes.device) * bits  # code j at bit j*bits
    word = (chunks << shifts).sum(dim=1, keepdim=True)  # (n8, 1); disjoint bit fields, so sum == or
    byte_shifts = torch.arange(bits, dtype=torch.int64, device=codes.device) * _BITS
    out = ((word >> byte_shifts) & 0xFF).to(torch.uint8)  # (n8, bits): byte b of each chunk
    return out.reshape(-1)[:nbytes].clone()


def unpack_nbits(packed: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of :func:`pack_nbits`: uint8 ``(ceil(numel*bits/8),)`` -> uint8 codes ``(numel,)``.

    ValueError when the byte count is not exactly ``ceil(numel*bits/8)`` or the last byte's
    unused bits are not zero (a stream written with another width or length)."""
    bits = _check_nbits(bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(f"packed must be a 1-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"numel={numel!r} must be a non-negative integer")
    nbytes = -(-numel * bits // _BITS)
    if packed.numel() != nbytes:
        raise ValueError(f"{packed.numel()} bytes cannot hold exactly {numel} codes of {bits} bits "
                         f"(expected {nbytes} bytes)")
    used = numel * bits - (nbytes - 1) * _BITS  # bits used in the last byte
    if nbytes and used < _BITS and int(packed[-1]) >> used:
        raise ValueError(f"the last byte has bits set past the {numel} codes of {bits} bits "
                         f"(stream written with another width or length?)")
    if bits == _BITS:
        return packed.clone()
    n8 = -(-numel // _BITS)
    pad = n8 * bits - nbytes
    if pad:
        packed = torch.cat([packed, packed.new_zeros(pad)])
    chunks = packed.view(n8, bits).to(torch.int64)  # (n8, bits)
    byte_shifts = torch.arange(bits, dtype=torch.int64, device=packed.device) * _BITS
    word = (chunks << byte_shifts).sum(dim=1, keepdim=True)  # (n8, 1)
    shifts = torch.arange(_BITS, dtype=torch.int64, device=packed.device) * bits
    codes = ((word >> shifts) & ((1 << bits) - 1)).to(torch.uint8)  # (n8, 8)
    return codes.reshape(-1)[:numel].clone()


def pack_sparse(t: Tensor) -> tuple[Tensor, Tensor]:
    """Tensor -> (bitmask of non-zeros, non-zero values in row-major order)."""
    nz = t != 0
    return pack_bits(nz), t[nz]


def unpack_sparse(bitmask: Tensor, values: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
    """Inverse of :func:`pack_sparse`; dtype and device follow ``values``."""
    numel = 1
    for d in shape:
        numel *= int(d)
    mask = unpack_bits(bitmask, numel)
    if int(mask.sum()) != values.numel():
        raise ValueError(f"bitmask has {int(mask.sum())} set bits but {values.numel()} values were given")
    out = values.new_zeros(numel)
    out[mask.to(values.device)] = values.reshape(-1)
    return out.view(tuple(int(d) for d in shape))


def nonzero_rows(bitmask: Tensor, shape: tuple[int, int]) -> Tensor:
    """Row index of every set bit of a 2-D tensor's bitmask, in row-major order: (nnz,)."""
    rows, cols = int(shape[0]), int(shape[1])
    mask = unpack_bits(bitmask, rows * cols).view(rows, cols)
    return mask.nonzero(as_tuple=True)[0]


__all__ = ["nonzero_rows", "pack_bits", "pack_nbits", "pack_sparse", "unpack_bits", "unpack_nbits",
           "unpack_sparse"]
