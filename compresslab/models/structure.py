"""Physically shrink attention heads and FFN neurons, and rebuild shrunk shapes on load.

transformers 5 removed ``prune_heads``; BERT's attention infers the head count from the
projection width (``view(..., -1, head_size)``), so slicing Q/K/V rows and O columns is enough.
A layer that loses every head (or neuron) gets an empty sub-block: the projection into it yields
a zero-width tensor and the projection out of it contributes only its bias, which is exactly
what the zeroed dense block computes.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from compresslab.models.adapters import LayerView, get_adapter

# config.json key holding per-layer {"heads", "ffn"} of a shrunk model (read back by checkpoint.load)
STRUCTURE_KEY = "compresslab_structure"


class EmptySelfAttention(nn.Module):
    """Self-attention with no heads left: a zero-width context, no attention weights."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):  # noqa: D401 - mirrors HF
        return hidden_states[..., :0], None


class EmptyProjection(nn.Module):
    """An FFN input projection with no neurons left: a zero-width activation."""

    def __init__(self, in_features: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :0]


class BiasOnly(nn.Module):
    """An output projection whose inputs are all gone: only its bias reaches the residual."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone())
        self.in_features = 0
        self.out_features = bias.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*x.shape[:-1], self.out_features)


def _slice_linear(lin: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping rows (dim=0, outputs) or columns (dim=1, inputs) ``idx``."""
    w = lin.weight.detach().index_select(dim, idx)
    out_f, in_f = w.shape
    new = nn.Linear(in_f, out_f, bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach() if dim == 1 else lin.bias.detach().index_select(0, idx))
    return new


def _set(layer: nn.Module, path: str, module: nn.Module, prefix: str) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = layer.get_submodule(parent_path[len(prefix) + 1:]) if parent_path != prefix else layer
    setattr(parent, attr, module)


def _set_role(lv: LayerView, role: str, module: nn.Module) -> None:
    _set(lv.layer, lv.names[role], module, lv.prefix)


def shrink_heads(lv: LayerView, keep: Sequence[int]) -> None:
    """Keep only heads ``keep`` of layer ``lv`` (Q/K/V rows and O columns), in place."""
    keep = sorted(int(h) for h in keep)
    if any(h < 0 or h >= lv.num_heads for h in keep):
        raise ValueError(f"head indices {keep} out of range for {lv.num_heads} heads")
    if not keep:
        if lv.self_attn is lv.attention:
            raise ValueError("removing every head is supported for BERT/RoBERTa layouts only")
        _set_role(lv, "self_attn", EmptySelfAttention())
        _set_role(lv, "o", BiasOnly(lv.o.bias))
        return
    d = lv.head_size
    idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep]).to(lv.q.weight.device)
    for role in ("q", "k", "v"):
        _set_role(lv, role, _slice_linear(getattr(lv, role), idx, 0))
    _set_role(lv, "o", _slice_linear(lv.o, idx, 1))
    # keep HF's bookkeeping attributes honest for code that reads them
    for attr, val in (("num_attention_heads", len(keep)), ("n_heads", len(keep)), ("all_head_size", len(keep) * d)):
        if hasattr(lv.self_attn, attr):
            setattr(lv.self_attn, attr, val)


def shrink_ffn(lv: LayerView, keep: Sequence[int]) -> None:
    """Keep only FFN neurons ``keep`` (rows of the input projection, columns of the output)."""
    keep = sorted(int(k) for k in keep)
    if any(k < 0 or k >= lv.ffn_size for k in keep):
        raise ValueError(f"neuron indices out of range for an FFN of width {lv.ffn_size}")
    if not keep:
        _set_role(lv, "ffn_in", EmptyProjection(lv.ffn_in.in_features))
        _set_role(lv, "ffn_out", BiasOnly(lv.ffn_out.bias))
        return
    idx = torch.tensor(keep, device=lv.ffn_in.weight.device)
    _set_role(lv, "ffn_in", _slice_linear(lv.ffn_in, idx, 0))
    _set_role(lv, "ffn_out", _slice_linear(lv.ffn_out, idx, 1))


def layer_structure(model: nn.Module) -> list[dict[str, int]]:
    """Per-layer head count and FFN width (0 for emptied sub-blocks)."""
    return get_adapter(model).structure()


def stamp_structure(model: nn.Module) -> None:
    """Write (or clear) ``config.compresslab_structure`` so a saved config rebuilds the shapes.

    Set when heads or FFN widths differ from the config's uniform shapes, removed otherwise, so a
    uniform model stays loadable by plain ``from_pretrained``.
    """
    if is_shrunk(model):
        model.config.__dict__[STRUCTURE_KEY] = layer_structure(model)
    else:
        model.config.__dict__.pop(STRUCTURE_KEY, None)


def is_shrunk(model: nn.Module) -> bool:
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", getattr(cfg, "n_heads", None))
    ffn = getattr(cfg, "intermediate_size", getattr(cfg, "hidden_dim", None))
    return any(s["heads"] != heads or s["ffn"] != ffn for s in layer_structure(model))


def apply_structure(model: nn.Module, structure: Sequence[dict[str, int]]) -> None:
    """Give a freshly built model the per-layer shapes of a saved one (weights come after)."""
    adapter = get_adapter(model)
    if len(structure) != adapter.num_layers:
        raise ValueError(f"structure has {len(structure)} layers, model has {adapter.num_layers}")
    for i, s in enumerate(structure):
        lv = adapter.layer(i)
        if s["heads"] != lv.num_heads:
            shrink_heads(lv, range(s["heads"]))
        lv = adapter.layer(i)
        if s["ffn"] != lv.ffn_size:
            shrink_ffn(lv, range(s["ffn"]))


def planned_model(model_class: type, config: Any) -> nn.Module:
    """A model of ``model_class`` with ``config``'s architecture (its :data:`STRUCTURE_KEY` shapes too, where a
    shrunk model's config has them) and random weights, in eval mode: the model a step will be given, planned before
    any step runs (pipeline/preflight.py check_planned), for checks and timings that depend on shapes only."""
    cfg = copy.deepcopy(config)
    structure = cfg.__dict__.pop(STRUCTURE_KEY, None)
    with torch.no_grad():
        model = model_class(cfg).eval()
        if structure:
            apply_structure(model, structure)
    return model
