"""Group-wise asymmetric uniform n-bit weight quantization with an integer zero point, and its STE.

The layout is the one ONNX Runtime's ``MatMulNBits`` stores (contrib op spec, ``com.microsoft``):
for a Linear weight ``W`` of shape ``(N, K)`` (rows are outputs), every row is cut into blocks of
``block_size`` along the input dimension ``K``; each block has a scale ``Δ`` and an unsigned
integer zero point ``z``, and the weight is ``ŵ = (q − z)·Δ`` with codes ``q ∈ [0, 2^k − 1]``.

Per group with ``a = min(min w, 0)`` and ``b = max(max w, 0)`` (0 is kept inside the range so the
integer zero point never clamps):

    Δ = (b − a) / (2^k − 1)   rounded up to the next float16 value (so a packed checkpoint can
                               store it in 16 bits exactly; the range only widens)
    z = clamp(round(−a / Δ), 0, 2^k − 1)
    q = clamp(round(w / Δ) + z, 0, 2^k − 1)

This differs from ALGORITHMS.md §1.2's float offset (``ŵ = a + qΔ``): the group's min and max are
reproduced within ``Δ/2`` instead of exactly, and ``|ŵ − w| ≤ Δ/2`` holds for every weight. A group
that is all zero (a pruned block) gets ``Δ = 1, z = 0, q = 0``: exact.

Groups: ``group_rows`` contiguous output rows × ``block_size`` columns. ``group_rows=1`` is the
MatMulNBits block layout; ``group_rows > 1`` is Q-BERT's row buckets (§1.2: ``G = N / group_rows``
groups per matrix when ``block_size = K``). Row buckets deploy through the same MatMulNBits by
repeating a group's scale and zero point on each of its rows (exact, no size gain in ONNX; the
packed checkpoint stores them once).

STE (Bengio et al. 2013; §1.2): ``∂L/∂w := ∂L/∂ŵ``; the ranges are recomputed from ``w`` at every
forward (Q-BERT's dynamic ranges) and carry no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MIN_BITS, MAX_BITS = 1, 8
DEPLOYABLE_BLOCKS = (16, 32, 64, 128, 256)  # MatMulNBits: a power of two >= 16


@dataclass(frozen=True)
class QuantParams:
    """Frozen quantization of one weight: ``scale`` float32 and ``zero_point`` uint8, both
    ``(N // group_rows, K // block_size)``; ``bits`` and the group shape that produced them."""

    scale: Tensor
    zero_point: Tensor
    bits: int
    block_size: int
    group_rows: int = 1

    def expand(self, t: Tensor) -> Tensor:
        """A per-group tensor ``(N/gr, K/bs)`` repeated to the weight's shape ``(N, K)``."""
        return t.repeat_interleave(self.group_rows, 0).repeat_interleave(self.block_size, 1)


def check_bits(bits: object, what: str = "bits") -> int:
    """``bits`` as an int in [1, 8]; ValueError otherwise (naming ``what``)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what}={bits!r}: weight bits must be an integer in [{MIN_BITS}, {MAX_BITS}]")
    return bits


def check_group(shape: tuple[int, int] | torch.Size, block_size: int, group_rows: int = 1, name: str = "weight") -> None:
    """ValueError unless ``block_size`` divides ``K`` and ``group_rows`` divides ``N`` of ``shape``."""
    n, k = int(shape[0]), int(shape[1])
    if block_size < 1 or k % block_size:
        raise ValueError(f"{name}: block_size={block_size} does not divide its input dimension K={k}; "
                         f"choose a divisor of {k} (MatMulNBits takes 16, 32, 64, 128 or 256)")
    if group_rows < 1 or n % group_rows:
        raise ValueError(f"{name}: group_rows={group_rows} does not divide its output dimension N={n}")


def _fp16_ceil(x: Tensor) -> Tensor:
    """The smallest float16 value >= ``x`` (as float32); ``x`` positive and below 65504."""
    h = x.to(torch.float16)
    up = torch.nextafter(h, torch.full_like(h, float("inf")))
    return torch.where(h.float() < x, up, h).float()


def _groups(w: Tensor, block_size: int, group_rows: int) -> Tensor:
    """``(N, K)`` -> ``(N/gr, K/bs, gr*bs)``: each group's values on the last axis."""
    n, k = w.shape
    g = w.reshape(n // group_rows, group_rows, k // block_size, block_size)
    return g.permute(0, 2, 1, 3).reshape(n // group_rows, k // block_size, group_rows * block_size)


def quant_params(w: Tensor, bits: int, block_size: int, group_rows: int = 1) -> QuantParams:
    """Scales and integer zero points of ``w`` ``(N, K)`` for ``bits`` over its groups (no grad)."""
    check_bits(bits)
    check_group(w.shape, block_size, group_rows)
    levels = (1 << bits) - 1
    with torch.no_grad():
        g = _groups(w.detach().float(), block_size, group_rows)
        a = g.amin(-1).clamp(max=0.0)
        b = g.amax(-1).clamp(min=0.0)
        span = b - a
        scale = torch.where(span > 0, _fp16_ceil((span / levels).clamp(min=2.0 ** -24)), torch.ones_like(span))
        zero = torch.clamp(torch.round(-a / scale), 0, levels)
    return QuantParams(scale.contiguous(), zero.to(torch.uint8).contiguous(), bits, block_size, group_rows)


def quantize(w: Tensor, p: QuantParams) -> Tensor:
    """Integer codes ``q`` (uint8, ``w``'s shape) of ``w`` under ``p``."""
    levels = (1 << p.bits) - 1
    scale = p.expand(p.scale).to(w.device)
    zero = p.expand(p.zero_point).to(w.device).float()
    return torch.clamp(torch.round(w.detach().float() / scale) + zero, 0, levels).to(torch.uint8)


def dequantize(q: Tensor, p: QuantParams) -> Tensor:
    """``ŵ = (q − z)·Δ`` in float32, ``q``'s shape."""
    return (q.float() - p.expand(p.zero_point).to(q.device).float()) * p.expand(p.scale).to(q.device)


def fake_quant(w: Tensor, bits: int, block_size: int, group_rows: int = 1) -> Tensor:
    """``ŵ`` of ``w`` with ranges from ``w`` itself and a straight-through gradient (identity)."""
    p = quant_params(w, bits, block_size, group_rows)
    w_hat = dequantize(quantize(w, p), p).to(w.dtype)
    return w + (w_hat - w).detach()


def quant_error(w: Tensor, bits: int, block_size: int, group_rows: int = 1) -> float:
    """``‖Q_b(w) − w‖²`` (squared Frobenius norm; HAWQ-V2's perturbation term)."""
    p = quant_params(w, bits, block_size, group_rows)
    return float((dequantize(quantize(w, p), p) - w.detach().float()).pow(2).sum())


__all__ = ["DEPLOYABLE_BLOCKS", "MAX_BITS", "MIN_BITS", "QuantParams", "check_bits", "check_group", "dequantize",
           "fake_quant", "quant_error", "quant_params", "quantize"]
