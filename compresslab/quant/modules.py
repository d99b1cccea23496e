"""``FakeQuantLinear``: an ``nn.Linear`` whose weight is group-wise n-bit (``ops/quant.py``), and the
swap, freeze and config stamp that let a quantized model be trained, saved, reloaded and exported.

Two states:

* **dynamic** (QAT): every forward quantizes the current float weight with ranges recomputed from
  it (Q-BERT's dynamic ranges) and a straight-through gradient;
* **frozen** (after :meth:`FakeQuantLinear.freeze`): the weight *is* ``ŵ = (q − z)·Δ`` and the
  buffers ``weight_scale`` (float32) / ``weight_zero_point`` (uint8), shape ``(N/gr, K/bs)``, hold
  the group parameters. The forward is a plain ``F.linear``, so the ONNX export is a plain MatMul
  whose initializer reproduces the codes exactly: ``q = round(ŵ/Δ) + z``.

The model's ``config.compresslab_quant`` stamp (:data:`QUANT_KEY`) maps each quantized module's
qualified name to ``{"bits", "block_size", "group_rows"}``; :func:`apply_quant` rebuilds the frozen
modules on load before the state dict (with the buffers) goes in.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compresslab.ops.quant import QuantParams, check_bits, check_group, dequantize, fake_quant, quant_params, quantize

QUANT_KEY = "compresslab_quant"


class FakeQuantLinear(nn.Linear):
    """``nn.Linear`` with a ``bits``-bit weight in groups of ``group_rows`` rows × ``block_size``
    input columns (asymmetric, integer zero point; bias stays float32)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, bits: int, block_size: int,
                 group_rows: int = 1, device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.bits = check_bits(bits)
        check_group((out_features, in_features), block_size, group_rows)
        self.block_size, self.group_rows = int(block_size), int(group_rows)
        self.frozen = False

    @classmethod
    def from_linear(cls, lin: nn.Linear, bits: int, block_size: int, group_rows: int = 1,
                    name: str = "weight") -> "FakeQuantLinear":
        """A dynamic ``FakeQuantLinear`` sharing nothing with ``lin`` but its values."""
        check_group(lin.weight.shape, block_size, group_rows, name)
        new = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, bits=bits, block_size=block_size,
                  group_rows=group_rows, device=lin.weight.device, dtype=lin.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(lin.weight)
            if lin.bias is not None:
                new.bias.copy_(lin.bias)
        return new

    def forward(self, x: Tensor) -> Tensor:
        if self.frozen:
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, fake_quant(self.weight, self.bits, self.block_size, self.group_rows), self.bias)

    def _frozen_buffers(self, params: QuantParams) -> None:
        self.register_buffer("weight_scale", params.scale.to(self.weight.device))
        self.register_buffer("weight_zero_point", params.zero_point.to(self.weight.device))
        self.frozen = True

    def freeze(self) -> None:
        """Fix the group parameters from the current weight and set the weight to ``ŵ`` (idempotent)."""
        if self.frozen:
            return
        p = quant_params(self.weight, self.bits, self.block_size, self.group_rows)
        with torch.no_grad():
            self.weight.copy_(dequantize(quantize(self.weight, p), p).to(self.weight.dtype))
        self._frozen_buffers(p)

    def params(self) -> QuantParams:
        """The frozen group parameters; RuntimeError before :meth:`freeze`."""
        if not self.frozen:
            raise RuntimeError("FakeQuantLinear.params() needs a frozen module (call freeze() after QAT)")
        return QuantParams(self.weight_scale, self.weight_zero_point, self.bits, self.block_size, self.group_rows)

    def codes(self) -> Tensor:
        """uint8 codes ``(N, K)`` of the frozen weight (exact: the weight is on the grid)."""
        return quantize(self.weight, self.params())

    def spec(self) -> dict[str, int]:
        return {"bits": self.bits, "block_size": self.block_size, "group_rows": self.group_rows}

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, bits={self.bits}, block_size={self.block_size}, "
                f"group_rows={self.group_rows}, frozen={self.frozen}")


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


def quantize_modules(model: nn.Module, specs: Mapping[str, Mapping[str, int]]) -> dict[str, FakeQuantLinear]:
    """Replace each named ``nn.Linear`` with a dynamic ``FakeQuantLinear`` of its spec, in place.

    ``specs``: qualified name -> ``{"bits", "block_size", "group_rows"(optional)}``. ValueError for
    a name that is not an ``nn.Linear`` or a group that does not divide its shape, before anything
    is swapped.
    """
    mods = dict(model.named_modules())
    for name, s in specs.items():
        m = mods.get(name)
        if not isinstance(m, nn.Linear):
            raise ValueError(f"{name!r} is not an nn.Linear of {type(model).__name__}")
        check_bits(s["bits"], f"{name}.bits")
        check_group(m.weight.shape, int(s["block_size"]), int(s.get("group_rows", 1)), name)
    out = {}
    for name, s in specs.items():
        m = mods[name]
        if isinstance(m, FakeQuantLinear):
            raise ValueError(f"{name!r} is already quantized ({m.bits} bits)")
        new = FakeQuantLinear.from_linear(m, int(s["bits"]), int(s["block_size"]), int(s.get("group_rows", 1)), name)
        _set_module(model, name, new)
        out[name] = new
    return out


def quantized_modules(model: nn.Module) -> dict[str, FakeQuantLinear]:
    """Qualified name -> every ``FakeQuantLinear`` in ``model``, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, FakeQuantLinear)}


def freeze_all(model: nn.Module) -> None:
    """Freeze every ``FakeQuantLinear`` (weights become ``ŵ``; group parameters become buffers)."""
    for m in quantized_modules(model).values():
        m.freeze()


def stamp_quant(model: nn.Module) -> None:
    """Write (or clear) ``config.compresslab_quant`` from the model's frozen quantized modules."""
    mods = quantized_modules(model)
    if any(not m.frozen for m in mods.values()):
        raise ValueError("a model with dynamic (QAT) FakeQuantLinear modules cannot be saved: freeze_all() first")
    cfg = getattr(model, "config", None)
    if cfg is None:
        return
    if mods:
        cfg.__dict__[QUANT_KEY] = {n: m.spec() for n, m in mods.items()}
    else:
        cfg.__dict__.pop(QUANT_KEY, None)


def apply_quant(model: nn.Module, stamp: Mapping[str, Mapping[str, int]]) -> None:
    """Rebuild the frozen quantized modules a saved config names (the state dict is loaded after)."""
    for name, m in quantize_modules(model, stamp).items():
        shape = (m.out_features // m.group_rows, m.in_features // m.block_size)
        m._frozen_buffers(QuantParams(torch.ones(shape), torch.zeros(shape, dtype=torch.uint8), m.bits,
                                      m.block_size, m.group_rows))


def average_bits(model: nn.Module, names: list[str]) -> float:
    """Σ nᵢbᵢ / Σ nᵢ over the weights of ``names`` (a module not quantized counts as 32 bits)."""
    mods = dict(model.named_modules())
    total = bits = 0
    for n in names:
        m = mods[n]
        numel = m.weight.numel()
        total += numel
        bits += numel * (m.bits if isinstance(m, FakeQuantLinear) else 32)
    return bits / max(1, total)


__all__ = ["FakeQuantLinear", "QUANT_KEY", "apply_quant", "average_bits", "freeze_all", "quantize_modules",
           "quantized_modules", "stamp_quant"]
