"""One uniform view of an encoder's parts, so passes never hard-code module names.

Passes ask an adapter for layers (attention q/k/v/o with head count and size, FFN in/out,
LayerNorms) and embeddings; BERT, RoBERTa and DistilBERT are supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch import nn

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "distilbert")


class UnsupportedArchitectureError(ValueError):
    """The model's architecture has no adapter; the message names the supported ones."""


@dataclass
class LayerView:
    """References into one encoder layer (the modules themselves, so edits are in place)."""

    index: int
    layer: nn.Module
    attention: nn.Module  # the attention sub-block (self-attention + output projection)
    self_attn: nn.Module  # the module owning q/k/v and the head-size attribute
    q: nn.Linear | None  # None once every head is removed
    k: nn.Linear | None
    v: nn.Linear | None
    o: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear
    ln_attn: nn.LayerNorm
    ln_ffn: nn.LayerNorm
    head_size: int
    prefix: str  # qualified name of the layer, e.g. "bert.encoder.layer.3"
    names: dict[str, str]  # role -> qualified module name

    @property
    def num_heads(self) -> int:
        return 0 if self.q is None else self.q.out_features // self.head_size

    @property
    def ffn_size(self) -> int:
        return self.ffn_in.out_features


class ArchAdapter:
    """Adapter for one model instance. Build with :func:`get_adapter`."""

    # role -> path of the module inside a layer, per architecture
    _ROLES: dict[str, dict[str, str]] = {
        "bert": {
            "attention": "attention", "self_attn": "attention.self",
            "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
            "o": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense",
            "ln_attn": "attention.output.LayerNorm", "ln_ffn": "output.LayerNorm",
        },
        "distilbert": {
            "attention": "attention", "self_attn": "attention",
            "q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
            "o": "attention.out_lin", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2",
            "ln_attn": "sa_layer_norm", "ln_ffn": "output_layer_norm",
        },
    }
    _ROLES["roberta"] = _ROLES["bert"]

    def __init__(self, model: nn.Module, model_type: str):
        self.model = model
        self.model_type = model_type
        self.base_prefix, self.base = self._find_base(model)
        if model_type == "distilbert":
            self.layers_prefix = f"{self.base_prefix}transformer.layer"
            self._layers = self.base.transformer.layer
        else:
            self.layers_prefix = f"{self.base_prefix}encoder.layer"
            self._layers = self.base.encoder.layer

    @staticmethod
    def _find_base(model: nn.Module) -> tuple[str, nn.Module]:
        prefix = getattr(model, "base_model_prefix", "")
        if prefix and hasattr(model, prefix):
            return f"{prefix}.", getattr(model, prefix)
        return "", model

    @property
    def head_size(self) -> int:
        cfg = self.model.config
        hidden = getattr(cfg, "hidden_size", getattr(cfg, "dim", None))
        heads = getattr(cfg, "num_attention_heads", getattr(cfg, "n_heads", None))
        return int(hidden) // int(heads)

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def layer(self, i: int) -> LayerView:
        roles = self._ROLES[self.model_type]
        layer = self._layers[i]
        mods = {role: _maybe_submodule(layer, path) for role, path in roles.items()}
        prefix = f"{self.layers_prefix}.{i}"
        head_size = self.head_size
        return LayerView(index=i, layer=layer, head_size=head_size, prefix=prefix,
                         names={r: f"{prefix}.{p}" for r, p in roles.items()}, **mods)

    def layers(self) -> Iterator[LayerView]:
        for i in range(self.num_layers):
            yield self.layer(i)

    @property
    def embeddings(self) -> nn.Module:
        return self.base.embeddings

    def encoder_linear_names(self) -> list[str]:
        """Qualified names of every encoder Linear (q, k, v, o, ffn_in, ffn_out) in layer order."""
        names: list[str] = []
        for lv in self.layers():
            names += [lv.names[r] for r in ("q", "k", "v", "o", "ffn_in", "ffn_out")]
        return names

    def structure(self) -> list[dict[str, int]]:
        """Per-layer kept heads and FFN width: the facts needed to rebuild a shrunk model."""
        return [{"heads": lv.num_heads, "ffn": lv.ffn_size} for lv in self.layers()]


def _maybe_submodule(layer: nn.Module, path: str) -> nn.Module | None:
    try:
        return layer.get_submodule(path)
    except AttributeError:  # an emptied sub-block has no q/k/v
        return None


def model_type_of(model_or_config) -> str:
    config = getattr(model_or_config, "config", model_or_config)
    return str(getattr(config, "model_type", type(model_or_config).__name__))


def check_supported(model_type: str) -> None:
    """Raise a clear error for an architecture without an adapter, before any expensive work."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")


def get_adapter(model: nn.Module) -> ArchAdapter:
    """The adapter for ``model``; :class:`UnsupportedArchitectureError` for unknown architectures."""
    mt = model_type_of(model)
    check_supported(mt)
    return ArchAdapter(model, mt)
