"""``QDQLinear``: an ``nn.Linear`` with a fake-quantized uint8 input and int8 weight (``ops/qdq.py``),
exported as ``QuantizeLinear -> DequantizeLinear`` on both MatMul inputs: int8 QAT for sparse engines.

Two states:

* **QAT**: the weight scale ``Δ = max|w|/127`` is recomputed from the current weight at every forward
  (straight-through gradient), and the input's ``[min, max]`` is tracked by a moving-average observer
  (``torch.ao.quantization.FakeQuantize`` with ``MovingAverageMinMaxObserver``) until
  :func:`observe` turns it off;
* **frozen** (:meth:`QDQLinear.freeze`): the weight *is* ``ŵ = q·Δ`` and ``weight_scale`` is fixed;
  the observer is off, so the forward is a fixed function: what the ONNX export computes.

The buffers (``weight_scale``; the input quantizer's ``scale``, ``zero_point``, observer range and
on/off flags) live in the state dict, so a training checkpoint resumes the observer where it was and a
saved model reloads exactly: ``config.compresslab_qdq`` (:data:`QDQ_KEY`) names each module and
whether its weight is per-channel, and :func:`apply_qdq` rebuilds them before the state dict loads.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver

from compresslab.models.quantized import copy_linear_params, set_module, set_stamp
from compresslab.ops.qdq import UINT8_MAX, UINT8_MIN, fake_quant_weight, symmetric_scale, weight_codes

QDQ_KEY = "compresslab_qdq"
DEFAULT_AVERAGING = 0.01  # observer momentum: torch's (and SparseML's) MovingAverageMinMaxObserver default


def input_quantizer(averaging_constant: float = DEFAULT_AVERAGING) -> FakeQuantize:
    """Per-tensor asymmetric uint8 fake quantization of an activation with a moving-average min/max
    observer: ``torch.ao.quantization.FakeQuantize`` (exports as QuantizeLinear/DequantizeLinear)."""
    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=UINT8_MIN, quant_max=UINT8_MAX,
                        dtype=torch.quint8, qscheme=torch.per_tensor_affine, averaging_constant=averaging_constant)


class QDQLinear(nn.Linear):
    """``y = Q(x) · Q(W)ᵀ + b``: uint8 per-tensor input, int8 symmetric weight (zero point 0, per-tensor
    or per output row), float32 bias. ``input_quant`` is the activation quantizer (observer inside)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, per_channel: bool = False,
                 averaging_constant: float = DEFAULT_AVERAGING, device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.per_channel = bool(per_channel)
        self.input_quant = input_quantizer(averaging_constant)
        shape = (out_features,) if self.per_channel else ()
        self.register_buffer("weight_scale", torch.ones(shape, device=device))
        self.frozen = False

    @classmethod
    def from_linear(cls, lin: nn.Linear, per_channel: bool = False,
                    averaging_constant: float = DEFAULT_AVERAGING) -> "QDQLinear":
        """A QAT ``QDQLinear`` with ``lin``'s weight and bias (copied) on ``lin``'s device."""
        new = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, per_channel=per_channel,
                  averaging_constant=averaging_constant, device=lin.weight.device, dtype=lin.weight.dtype)
        return copy_linear_params(lin, new)

    def _weight(self) -> Tensor:
        if not self.frozen:  # QAT: the range follows the weight (a buffer, so checkpoints carry it)
            self.weight_scale.copy_(symmetric_scale(self.weight, self.per_channel))
        return fake_quant_weight(self.weight, self.weight_scale)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.input_quant(x), self._weight(), self.bias)

    def freeze(self) -> None:
        """Fix ``weight_scale`` from the current weight, set the weight to ``ŵ`` and stop the observer
        (idempotent). ``ŵ`` re-quantizes to the same codes, so export and reload are exact."""
        if self.frozen:
            return
        with torch.no_grad():
            self.weight_scale.copy_(symmetric_scale(self.weight, self.per_channel))
            self.weight.copy_(fake_quant_weight(self.weight, self.weight_scale))
        self.input_quant.disable_observer()
        self.frozen = True

    def codes(self) -> Tensor:
        """int8 codes of the weight (its shape) under ``weight_scale``; once frozen, ``weight == codes·Δ`` exactly."""
        return weight_codes(self.weight, self.weight_scale)

    def dequantized(self) -> Tensor:
        """``codes·Δ`` (float32, the weight's shape): equal to the weight once frozen."""
        s = self.weight_scale if self.weight_scale.dim() == 0 else self.weight_scale[:, None]
        return self.codes().float() * s

    def spec(self) -> dict[str, Any]:
        """The config stamp entry."""
        return {"per_channel": self.per_channel}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, per_channel={self.per_channel}, frozen={self.frozen}"


def quantize_qdq(model: nn.Module, names: list[str], *, per_channel: bool = False,
                 averaging_constant: float = DEFAULT_AVERAGING) -> dict[str, QDQLinear]:
    """Replace each named ``nn.Linear`` with a QAT :class:`QDQLinear`, in place; ValueError (before
    any swap) for a name that is not a plain ``nn.Linear`` (already quantized, or another module)."""
    mods = dict(model.named_modules())
    bad = [n for n in names if type(mods.get(n)) is not nn.Linear]
    if bad:
        raise ValueError(f"{bad[:3]} are not plain nn.Linear modules of {type(model).__name__} (already quantized "
                         f"or binarized by an earlier step?); int8 QDQ quantizes float Linears only")
    out = {}
    for n in names:
        out[n] = QDQLinear.from_linear(mods[n], per_channel=per_channel, averaging_constant=averaging_constant)
        set_module(model, n, out[n])
    return out


def qdq_modules(model: nn.Module) -> dict[str, QDQLinear]:
    """Qualified name -> every :class:`QDQLinear` of ``model``, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QDQLinear)}


def observe(model: nn.Module, enabled: bool) -> None:
    """Turn every QDQ input observer on (ranges follow the data) or off (ranges fixed)."""
    for m in qdq_modules(model).values():
        if enabled:
            m.input_quant.enable_observer()
        else:
            m.input_quant.disable_observer()


def freeze_qdq(model: nn.Module) -> None:
    """Freeze every :class:`QDQLinear` (fixed scales, weights on the int8 grid, observers off)."""
    for m in qdq_modules(model).values():
        m.freeze()


def stamp_qdq(model: nn.Module) -> None:
    """Write (or clear) ``config.compresslab_qdq`` from the model's :class:`QDQLinear` modules; ValueError
    while one is still in QAT (its scales are not fixed): :func:`freeze_qdq` first."""
    mods = qdq_modules(model)
    dynamic = [n for n, m in mods.items() if not m.frozen]
    if dynamic:
        raise ValueError(f"a model with int8 QAT modules still training ({dynamic[:3]}) cannot be saved or exported: "
                         "freeze_qdq() first")
    set_stamp(model, QDQ_KEY, {n: m.spec() for n, m in mods.items()})


def apply_qdq(model: nn.Module, stamp: Mapping[str, Mapping[str, Any]]) -> None:
    """Rebuild the frozen :class:`QDQLinear` modules a saved config names (the state dict loads after)."""
    for name, spec in stamp.items():
        quantize_qdq(model, [name], per_channel=bool(spec.get("per_channel", False)))[name].frozen = True


def is_qdq(model: nn.Module) -> bool:
    """Whether ``model`` holds int8 QDQ modules (its export is a QDQ graph, deployed unfused)."""
    return any(isinstance(m, QDQLinear) for m in model.modules())


__all__ = ["DEFAULT_AVERAGING", "QDQLinear", "QDQ_KEY", "apply_qdq", "freeze_qdq", "input_quantizer", "is_qdq",
           "observe", "qdq_modules", "quantize_qdq", "stamp_qdq"]
