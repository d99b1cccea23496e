"""``FakeQuantLinear`` / ``FakeQuantEmbedding``: an ``nn.Linear`` / ``nn.Embedding`` whose weight is
group-wise n-bit (``ops/quant.py``), and the swap, freeze and config stamp that let a quantized model
be trained, saved, reloaded and exported.

Two states:

* **dynamic** (QAT): every forward quantizes the current float weight with ranges recomputed from
  it (Q-BERT's dynamic ranges) and a straight-through gradient;
* **frozen** (after :meth:`FakeQuantLinear.freeze`): the weight *is* ``ŵ = (q − z)·Δ`` and the
  buffers ``weight_scale`` (float32) / ``weight_zero_point`` (uint8), shape ``(N/gr, K/bs)``, hold
  the group parameters. The forward is a plain ``F.linear`` / ``F.embedding``, so the ONNX export is a
  plain MatMul (Gather) whose initializer reproduces the codes exactly: ``q = round(ŵ/Δ) + z``
  (``export/matmul_nbits.py`` turns them into ``MatMulNBits`` / ``GatherBlockQuantized``).

The model's ``config.compresslab_quant`` stamp (:data:`QUANT_KEY`) maps each quantized module's
qualified name to ``{"bits", "block_size", "group_rows"}``; :func:`apply_quant` rebuilds the frozen
modules on load before the state dict (with the buffers) goes in.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compresslab.ops.quant import QuantParams, check_bits, check_group, dequantize, fake_quant, quant_params, quantize

QUANT_KEY = "compresslab_quant"


class _GroupQuantWeight:
    """The quantization state shared by the fake-quant modules: a ``bits``-bit ``weight`` of shape
    ``(rows, cols)`` (Linear: ``(N, K)``; Embedding: ``(vocab, dim)``) in groups of ``group_rows`` rows
    x ``block_size`` columns, dynamic until :meth:`freeze`."""

    weight: nn.Parameter
    bits: int
    block_size: int
    group_rows: int
    frozen: bool

    def _init_quant(self, bits: int, block_size: int, group_rows: int, shape: tuple[int, int]) -> None:
        self.bits = check_bits(bits)
        check_group(shape, block_size, group_rows)
        self.block_size, self.group_rows = int(block_size), int(group_rows)
        self.frozen = False

    def _weight(self) -> Tensor:
        """``ŵ``: the weight itself once frozen, else fake-quantized now (straight-through gradient)."""
        if self.frozen:
            return self.weight
        return fake_quant(self.weight, self.bits, self.block_size, self.group_rows)

    def _frozen_buffers(self, params: QuantParams) -> None:
        register = self.register_buffer  # type: ignore[attr-defined]  # the nn.Module this mixes into
        register("weight_scale", params.scale.to(self.weight.device))
        register("weight_zero_point", params.zero_point.to(self.weight.device))
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
        """The frozen group parameters (scale float32 / zero point uint8, ``(rows/gr, cols/bs)``);
        RuntimeError before :meth:`freeze`."""
        if not self.frozen:
            raise RuntimeError(f"{type(self).__name__}.params() needs a frozen module (call freeze() after QAT)")
        return QuantParams(self.weight_scale, self.weight_zero_point, self.bits,  # type: ignore[attr-defined]
                           self.block_size, self.group_rows)

    def codes(self) -> Tensor:
        """uint8 codes of the frozen weight, the weight's shape (exact: the weight is on the grid)."""
        return quantize(self.weight, self.params())

    def spec(self) -> dict[str, int]:
        """The config stamp entry: ``{"bits", "block_size", "group_rows"}``."""
        return {"bits": self.bits, "block_size": self.block_size, "group_rows": self.group_rows}

    def _quant_repr(self) -> str:
        return (f"bits={self.bits}, block_size={self.block_size}, group_rows={self.group_rows}, "
                f"frozen={self.frozen}")


class FakeQuantLinear(_GroupQuantWeight, nn.Linear):
    """``nn.Linear`` with a ``bits``-bit weight in groups of ``group_rows`` rows × ``block_size``
    input columns (asymmetric, integer zero point; bias stays float32)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, bits: int, block_size: int,
                 group_rows: int = 1, device: Any = None, dtype: Any = None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_quant(bits, block_size, group_rows, (out_features, in_features))

    @classmethod
    def from_linear(cls, lin: nn.Linear, bits: int, block_size: int, group_rows: int = 1,
                    name: str = "weight") -> "FakeQuantLinear":
        """A dynamic ``FakeQuantLinear`` sharing nothing with ``lin`` but its values."""
        check_group(lin.weight.shape, block_size, group_rows, name)
        new = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, bits=bits, block_size=block_size,
                  group_rows=group_rows, device=lin.weight.device, dtype=lin.weight.dtype)
        return copy_linear_params(lin, new)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self._weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Linear.extra_repr(self)}, {self._quant_repr()}"


class FakeQuantEmbedding(_GroupQuantWeight, nn.Embedding):
    """``nn.Embedding`` whose table ``(vocab, dim)`` is ``bits``-bit in groups of ``group_rows`` rows
    (tokens) × ``block_size`` columns of the embedding dimension: the layout ONNX Runtime's
    ``GatherBlockQuantized`` (quantize_axis 1) stores. ``block_size = dim`` is one range per row.

    Meant for the word embeddings; position and token-type tables stay fp32 by convention (they are
    small). ``max_norm`` is refused: renormalizing rows in the forward would move them off the grid.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *, bits: int,
                 block_size: int, group_rows: int = 1, scale_grad_by_freq: bool = False, sparse: bool = False,
                 device: Any = None, dtype: Any = None) -> None:
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, padding_idx=padding_idx,
                              scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, device=device, dtype=dtype)
        self._init_quant(bits, block_size, group_rows, (num_embeddings, embedding_dim))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, bits: int, block_size: int, group_rows: int = 1,
                       name: str = "weight") -> "FakeQuantEmbedding":
        """A dynamic ``FakeQuantEmbedding`` with ``emb``'s table and options. ValueError for ``max_norm``."""
        check_group(emb.weight.shape, block_size, group_rows, name)
        if emb.max_norm is not None:
            raise ValueError(f"{name}: an nn.Embedding with max_norm={emb.max_norm} renormalizes rows in its "
                             f"forward, which moves a quantized table off its grid; it cannot be quantized")
        new = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx, bits=bits, block_size=block_size,
                  group_rows=group_rows, scale_grad_by_freq=emb.scale_grad_by_freq, sparse=emb.sparse,
                  device=emb.weight.device, dtype=emb.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(emb.weight)
        return new

    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(x, self._weight(), self.padding_idx, None, self.norm_type, self.scale_grad_by_freq,
                           self.sparse)

    def extra_repr(self) -> str:
        return f"{nn.Embedding.extra_repr(self)}, {self._quant_repr()}"


FakeQuantModule = Union[FakeQuantLinear, FakeQuantEmbedding]
_QUANTIZABLE = (nn.Linear, nn.Embedding)


def copy_linear_params(src: nn.Linear, dst: nn.Linear) -> Any:
    """Copy ``src``'s weight and bias values into ``dst`` (same shapes) and return ``dst``: a swapped-in
    quantized Linear shares nothing with the module it replaces but its values."""
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        if src.bias is not None:
            dst.bias.copy_(src.bias)
    return dst


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at qualified ``name`` with ``module`` (the swaps of quantized and binary modules)."""
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


def quantize_modules(model: nn.Module, specs: Mapping[str, Mapping[str, int]]) -> dict[str, FakeQuantModule]:
    """Replace each named ``nn.Linear`` / ``nn.Embedding`` with a dynamic ``FakeQuantLinear`` /
    ``FakeQuantEmbedding`` of its spec, in place.

    ``specs``: qualified name -> ``{"bits", "block_size", "group_rows"(optional)}``. ValueError for
    a name that is neither, one already quantized, or a group that does not divide its weight's
    shape, before anything is swapped.
    """
    mods = dict(model.named_modules())
    for name, s in specs.items():
        m = mods.get(name)
        if not isinstance(m, _QUANTIZABLE):
            raise ValueError(f"{name!r} is not an nn.Linear or nn.Embedding of {type(model).__name__}")
        if isinstance(m, _GroupQuantWeight):
            raise ValueError(f"{name!r} is already quantized ({m.bits} bits)")
        check_bits(s["bits"], f"{name}.bits")
        check_group(m.weight.shape, int(s["block_size"]), int(s.get("group_rows", 1)), name)
        if isinstance(m, nn.Embedding) and m.max_norm is not None:
            raise ValueError(f"{name!r}: an nn.Embedding with max_norm cannot be quantized (its forward "
                             f"renormalizes rows off the grid)")
    out: dict[str, FakeQuantModule] = {}
    for name, s in specs.items():
        m = mods[name]
        args = (int(s["bits"]), int(s["block_size"]), int(s.get("group_rows", 1)), name)
        new = FakeQuantLinear.from_linear(m, *args) if isinstance(m, nn.Linear) else \
            FakeQuantEmbedding.from_embedding(m, *args)
        set_module(model, name, new)
        out[name] = new
    return out


def quantized_modules(model: nn.Module) -> dict[str, FakeQuantModule]:
    """Qualified name -> every ``FakeQuantLinear`` / ``FakeQuantEmbedding`` in ``model``, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (FakeQuantLinear, FakeQuantEmbedding))}


def freeze_all(model: nn.Module) -> None:
    """Freeze every fake-quant module (weights become ``ŵ``; group parameters become buffers)."""
    for m in quantized_modules(model).values():
        m.freeze()


def stamp_quant(model: nn.Module) -> None:
    """Write (or clear) ``config.compresslab_quant`` from the model's frozen quantized modules.

    ValueError while any of them is still dynamic (QAT): its codes are not fixed."""
    mods = quantized_modules(model)
    dynamic = [n for n, m in mods.items() if not m.frozen]
    if dynamic:
        raise ValueError(f"a model with dynamic (QAT) fake-quant modules ({dynamic[:3]}) cannot be saved or "
                         f"exported: freeze_all() first")
    set_stamp(model, QUANT_KEY, {n: m.spec() for n, m in mods.items()})


def set_stamp(model: nn.Module, key: str, entries: Mapping[str, Any]) -> None:
    """``model.config.<key> = entries`` (per-module specs a checkpoint needs to rebuild them), or the key
    removed when there are none; nothing for a model without a config."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return
    if entries:
        cfg.__dict__[key] = dict(entries)
    else:
        cfg.__dict__.pop(key, None)


def apply_quant(model: nn.Module, stamp: Mapping[str, Mapping[str, int]]) -> None:
    """Rebuild the frozen quantized modules a saved config names (the state dict is loaded after);
    whether a name becomes a ``FakeQuantLinear`` or a ``FakeQuantEmbedding`` follows the module there."""
    for name, m in quantize_modules(model, stamp).items():
        rows, cols = m.weight.shape
        shape = (rows // m.group_rows, cols // m.block_size)
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
        bits += numel * (m.bits if isinstance(m, _GroupQuantWeight) else 32)
    return bits / max(1, total)


__all__ = ["FakeQuantEmbedding", "FakeQuantLinear", "FakeQuantModule", "QUANT_KEY", "apply_quant", "average_bits",
           "freeze_all", "quantize_modules", "quantized_modules", "set_stamp", "stamp_quant"]
