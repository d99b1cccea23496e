"""Int8 QDQ fake quantization: symmetric int8 weights and asymmetric uint8 activations.

The format of the oBERT paper's sparse-int8 models (SparseML's QAT exports, what DeepSparse's int8
kernels pattern-match), written with torch's own fake-quant ops so that the ONNX exporter emits the
standard ``QuantizeLinear`` / ``DequantizeLinear`` pair for each of them:

* **weights**: int8, zero point 0, ``Δ = max|w| / 127`` over the whole tensor (per-tensor, the
  default) or over each output row (per-channel), ``q = clamp(round(w/Δ), -128, 127)``,
  ``ŵ = q·Δ``. Codes fall in [-127, 127]; the range is declared [-128, 127] because that is the
  only signed range ONNX's ``QuantizeLinear`` has (torch's exporter refuses [-127, 127]). A zero
  weight quantizes to exactly 0, so pruned weights stay pruned.
* **activations**: uint8, ``x̂ = (clamp(round(x/s) + z, 0, 255) − z)·s`` with ``(s, z)`` from an
  observed ``[min, max]`` (``torch.ao.quantization.FakeQuantize``, see ``models/qdq.py``).

``round`` is round-half-to-even in torch and in ONNX alike. The gradient is the straight-through
estimator of ``torch.fake_quantize_per_*_affine``: identity inside the representable range, zero
outside (clipped); with ``Δ = max|w|/127`` no weight is outside, so the weight STE is the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor

INT8_MIN, INT8_MAX = -128, 127  # ONNX int8 QuantizeLinear range; symmetric codes use [-127, 127]
SYMMETRIC_LEVELS = 127  # Δ = max|w| / 127: ±max|w| map to ±127 exactly
UINT8_MIN, UINT8_MAX = 0, 255
_TINY = 2.0 ** -24  # the smallest scale: an all-zero tensor gets Δ = 2^-24 and every code 0


def symmetric_scale(w: Tensor, per_channel: bool = False) -> Tensor:
    """``Δ = max|w| / 127`` (float32, no grad): a 0-d tensor, or ``(N,)`` per output row of ``w`` ``(N, K)``.

    An all-zero tensor (or row) gets the tiny positive scale 2^-24: every code is then 0, exactly."""
    with torch.no_grad():
        a = w.detach().float().abs()
        m = a.amax(dim=tuple(range(1, w.dim()))) if per_channel else a.amax()
        return (m / SYMMETRIC_LEVELS).clamp(min=_TINY)


def fake_quant_weight(w: Tensor, scale: Tensor) -> Tensor:
    """``ŵ = clamp(round(w/Δ), -128, 127)·Δ`` with zero point 0 and the straight-through gradient.

    ``scale`` 0-d: per-tensor; ``(N,)``: per output row (axis 0). Exports as QuantizeLinear ->
    DequantizeLinear on the weight (int8, zero point 0)."""
    scale = scale.to(device=w.device, dtype=torch.float32)
    if scale.dim() == 0:
        return torch.fake_quantize_per_tensor_affine(w, scale, torch.zeros((), dtype=torch.int32, device=w.device),
                                                     INT8_MIN, INT8_MAX)
    zero = torch.zeros(scale.shape, dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, INT8_MIN, INT8_MAX)


def weight_codes(w: Tensor, scale: Tensor) -> Tensor:
    """int8 codes ``q = clamp(round(w/Δ), -128, 127)`` of ``w`` ``(N, K)`` under a 0-d or ``(N,)`` scale."""
    s = scale.to(w.device).float()
    s = s if s.dim() == 0 else s.reshape(-1, *([1] * (w.dim() - 1)))
    return torch.clamp(torch.round(w.detach().float() / s), INT8_MIN, INT8_MAX).to(torch.int8)


__all__ = ["INT8_MAX", "INT8_MIN", "SYMMETRIC_LEVELS", "UINT8_MAX", "UINT8_MIN", "fake_quant_weight",
           "symmetric_scale", "weight_codes"]
