"""BiBERT's binarized modules (ALGORITHMS.md §3.2): ``BinaryLinear``, ``BinaryEmbedding`` and
Bi-Attention, swapped into BERT, RoBERTa and DistilBERT through the architecture adapter.

* ``BinaryLinear``: ``y = sign(x)·(α ⊙ sign(W − μ))ᵀ + b`` (activations and weights 1 bit, bias fp32);
* ``BinaryEmbedding``: the word-embedding table, ``α_r · sign(E_r − μ_r)`` per row (position and
  token-type tables stay full precision);
* Bi-Attention: the model's attention function becomes :func:`compresslab.ops.binary.bi_attention`
  (sign of Q, K, V; ``bool`` of the masked scores instead of softmax), registered with transformers'
  ``AttentionInterface`` under :data:`BI_ATTENTION` so the Hugging Face layer code stays untouched;
  each self-attention module carries ``binary_attention`` (``"bool"`` or ``"softmax"``).

Two states, as for the fake-quant modules: **dynamic** (training: weights binarized every forward
with the straight-through estimators; ``torch.sign`` ties, 0 stays 0) and **frozen**
(:meth:`BinaryLinear.freeze`: the weight *is* ``α ⊙ s`` with ``s ∈ {±1}`` (ties 0 → +1), ``α`` rounded
to float16 so the 1-bit packed file stores it exactly, a ``weight_alpha`` buffer; activations use
ties 0 → +1, which is what a bit-packed kernel computes; the FFN activation before a binary
``ffn_out`` becomes :class:`SignInput`, since sign(GELU(h)) = sign(h) without GELU's float underflow
at h < −5.54). The config stamp :data:`BINARY_KEY` records which modules are binary and the
attention mode; :func:`apply_binary` rebuilds them on load.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compresslab.models.adapters import get_adapter
from compresslab.models.quantized import set_module
from compresslab.ops.binary import bi_attention, binarize_weight, check_ties, hard_sign, sign_ste

BINARY_KEY = "compresslab_binary"
BI_ATTENTION = "compresslab_bi_attention"  # the attention-function name registered with transformers
ATTENTION_MODES = ("bool", "softmax")


class _BinaryWeight:
    """State shared by the binary modules: a 2-D ``weight`` ``(rows, cols)`` binarized per row."""

    weight: nn.Parameter
    frozen: bool
    ties: str

    def _binary_weight(self) -> Tensor:
        if self.frozen:
            return self.weight
        return binarize_weight(self.weight, self.ties)

    def freeze(self) -> None:
        """Fix ``α`` (float16-exact) and the signs (ties → +1); the weight becomes ``α ⊙ s`` (idempotent)."""
        if self.frozen:
            return
        with torch.no_grad():
            w = self.weight
            alpha = w.abs().mean(dim=-1).half().float()  # exactly representable in the packed file
            signs = hard_sign(w - w.mean(dim=-1, keepdim=True), "plus")
            self.weight.copy_((alpha[:, None] * signs).to(w.dtype))
        self.register_buffer("weight_alpha", alpha.to(self.weight.device))  # type: ignore[attr-defined]
        self.frozen, self.ties = True, "plus"

    def signs(self) -> Tensor:
        """Bool ``(rows, cols)``: True where the frozen weight is ``+α`` (the 1-bit codes); RuntimeError if dynamic."""
        if not self.frozen:
            raise RuntimeError(f"{type(self).__name__}.signs() needs a frozen module (call freeze() after training)")
        return self.weight > 0

    def alpha(self) -> Tensor:
        """Float32 ``(rows,)`` row scales of the frozen weight (float16-exact); RuntimeError if dynamic."""
        if not self.frozen:
            raise RuntimeError(f"{type(self).__name__}.alpha() needs a frozen module (call freeze() after training)")
        return self.weight_alpha  # type: ignore[attr-defined]


class BinaryLinear(_BinaryWeight, nn.Linear):
    """``nn.Linear`` with 1-bit weights (rows centred, ``α`` = row mean |w|) and 1-bit inputs (§3.2)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device: Any = None,
                 dtype: Any = None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.frozen, self.ties = False, "zero"

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> "BinaryLinear":
        new = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, device=lin.weight.device,
                  dtype=lin.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(lin.weight)
            if lin.bias is not None:
                new.bias.copy_(lin.bias)
        return new

    def forward(self, x: Tensor) -> Tensor:
        xb = hard_sign(x, self.ties) if self.frozen else sign_ste(x, self.ties)
        return F.linear(xb, self._binary_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Linear.extra_repr(self)}, frozen={self.frozen}, ties={self.ties}"


class BinaryEmbedding(_BinaryWeight, nn.Embedding):
    """``nn.Embedding`` whose table is 1 bit per entry, ``α_r · sign(E_r − μ_r)`` per token row (§3.2)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 device: Any = None, dtype: Any = None) -> None:
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, padding_idx=padding_idx, device=device,
                              dtype=dtype)
        self.frozen, self.ties = False, "zero"

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, name: str = "weight") -> "BinaryEmbedding":
        if emb.max_norm is not None or emb.scale_grad_by_freq or emb.sparse:
            raise ValueError(f"{name}: an nn.Embedding with max_norm/scale_grad_by_freq/sparse cannot be binarized")
        new = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx, device=emb.weight.device,
                  dtype=emb.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(emb.weight)
        return new

    def forward(self, x: Tensor) -> Tensor:
        if self.frozen:
            return F.embedding(x, self.weight, self.padding_idx)
        # Each binarized row depends on its own row only (α_r, μ_r), so binarizing the looked-up rows
        # equals looking up the binarized table, forward and gradient, at (tokens × dim) cost instead
        # of (vocab × dim) per step (30522 × 384 for MiniLM).
        rows = F.embedding(x, self.weight, self.padding_idx)
        flat = rows.reshape(-1, rows.shape[-1])
        return binarize_weight(flat, self.ties).reshape(rows.shape)

    def extra_repr(self) -> str:
        return f"{nn.Embedding.extra_repr(self)}, frozen={self.frozen}, ties={self.ties}"


# ---------------------------------------------------------------------------------- Bi-Attention
def _bi_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                          attention_mask: Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                          **kwargs: Any) -> tuple[Tensor, Tensor]:
    """transformers' attention-function signature (see ``eager_attention_forward``), binarized."""
    mode = getattr(module, "binary_attention", None)
    if mode is None:
        raise RuntimeError(f"{type(module).__name__} runs under attn_implementation={BI_ATTENTION!r} but was not "
                           f"binarized (no binary_attention attribute): binarize the model with binarize_model()")
    ties = getattr(module, "binary_ties", "zero")
    if mode == "bool" and ties == "plus" and not module.training:
        # frozen Bi-Attention: bool(S·c + M) = bool(S + M/c) for c > 0, so the comparison is made on the
        # integer S = sign(Q)·sign(K)ᵀ itself. S = 0 is common (d_h even) and stays exactly 0 in any
        # runtime; scaled, it does not: OpenVINO folds c into an operand of the score MatMul, the
        # ±c sums round, and S = 0 became ±1e-8 (bool 1 half the time) on every example
        c = 1.0 / math.sqrt(query.shape[-1]) if scaling is None else float(scaling)
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            attention_mask = torch.clamp(attention_mask / c, min=torch.finfo(attention_mask.dtype).min)
        scaling = 1.0
    return bi_attention(query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                        training=module.training, mode=mode, ties=ties)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(BI_ATTENTION, _bi_attention_forward)
    AttentionMaskInterface.register(BI_ATTENTION, eager_mask)  # additive float mask, as eager attention takes


_register()


# ---------------------------------------------------------------------------------- swap and stamp
def default_targets(model: nn.Module, *, embeddings: bool = True, pooler: bool = True) -> dict[str, list[str]]:
    """BiBERT's binarized modules: every encoder Linear, the pooler's Linear (BERT/RoBERTa) and the
    word embeddings. The classifier head (and DistilBERT's ``pre_classifier``) stays full precision."""
    ad = get_adapter(model)
    linears = ad.encoder_linear_names()
    if pooler and getattr(ad.base, "pooler", None) is not None:
        linears.append(f"{ad.base_prefix}pooler.dense")
    embs = [f"{ad.base_prefix}embeddings.word_embeddings"] if embeddings else []
    return {"linears": linears, "embeddings": embs}


def binarize_model(model: nn.Module, *, attention: str = "bool", linears: list[str] | None = None,
                   embeddings: list[str] | None = None, ties: str = "zero") -> dict[str, Any]:
    """Swap the named modules for dynamic binary ones and set the attention function, in place.

    ``linears`` / ``embeddings``: qualified names (default :func:`default_targets`). ``attention``:
    ``"bool"`` (Bi-Attention) or ``"softmax"`` (binarized Q/K/V, softmax kept). ``ties``: how the
    dynamic (training) model signs an exact 0: ``"zero"`` (``torch.sign``, the reference code) or
    ``"plus"`` (0 → +1, what the frozen, deployed model computes; ``A·sign(V)`` is an integer, so exact
    zeros reach the output projection often). Returns the stamp.
    ValueError, before anything is swapped, for a name that is not an ``nn.Linear`` /
    ``nn.Embedding`` (no binarized form exists for it), one already binary, or an unknown mode;
    UnsupportedArchitectureError for an architecture without an adapter.
    """
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention={attention!r}; allowed: {', '.join(ATTENTION_MODES)}")
    targets = default_targets(model)
    linears = targets["linears"] if linears is None else list(linears)
    embeddings = targets["embeddings"] if embeddings is None else list(embeddings)
    mods = dict(model.named_modules())
    for name, kind in [(n, nn.Linear) for n in linears] + [(n, nn.Embedding) for n in embeddings]:
        m = mods.get(name)
        if m is None:
            raise ValueError(f"{name!r} is not a module of {type(model).__name__}")
        if isinstance(m, _BinaryWeight):
            raise ValueError(f"{name!r} is already binarized")
        if type(m) is not kind:
            raise ValueError(f"{name!r} is a {type(m).__name__}, which has no binarized form (only nn.Linear and "
                             f"nn.Embedding are binarized; the classifier head stays full precision)")
    check_ties(ties)
    for n in linears:
        set_module(model, n, BinaryLinear.from_linear(mods[n]))
    for n in embeddings:
        set_module(model, n, BinaryEmbedding.from_embedding(mods[n], n))
    for n in linears + embeddings:
        model.get_submodule(n).ties = ties
    _set_attention(model, attention, ties=ties)
    if ties == "plus":
        _keep_ffn_signs(model)
    stamp = {"linears": linears, "embeddings": embeddings, "attention": attention}
    model.config.__dict__[BINARY_KEY] = stamp
    return stamp


def _set_attention(model: nn.Module, mode: str, ties: str) -> None:
    check_ties(ties)
    for lv in get_adapter(model).layers():
        lv.self_attn.binary_attention = mode
        lv.self_attn.binary_ties = ties
    model.config._attn_implementation = BI_ATTENTION


def binary_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> every ``BinaryLinear`` / ``BinaryEmbedding`` in ``model``, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _BinaryWeight)}


def freeze_binary(model: nn.Module) -> None:
    """Freeze every binary module and switch attention to ties 0 → +1: the deployable model."""
    for m in binary_modules(model).values():
        m.freeze()
    stamp = getattr(model.config, BINARY_KEY, None)
    if stamp:
        _set_attention(model, stamp["attention"], ties="plus")
        model.config.__dict__[BINARY_KEY] = {**stamp, "frozen": True}
    _elide_ffn_activations(model)


# Activations f with sign(f(h)) = sign(h) for every h (f(h) < 0 iff h < 0): the GELUs, SiLU, Mish, tanh.
SIGN_PRESERVING_ACTIVATIONS = frozenset({"gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_accurate",
                                         "gelu_python", "quick_gelu", "silu", "swish", "mish", "tanh"})
_ACTIVATION_ATTRS = ("intermediate_act_fn", "activation")  # BERT/RoBERTa's BertIntermediate, DistilBERT's FFN


class SignInput(nn.Identity):
    """Stands in for the FFN activation ``f`` of a frozen binary model whose ``ffn_out`` is binary.

    ``ffn_out`` reads only ``sign(f(h))``, which equals ``sign(h)`` for a sign-preserving ``f`` (GELU:
    ``h·Φ(h) < 0`` iff ``h < 0``), so ``h`` is passed on unchanged. Computing ``f`` would let float
    underflow decide signs: GELU(h) rounds to ``-0.0`` for ``h < -5.543``, which the deployed tie rule
    (0 → +1) reads as +1, and torch's and ONNX Runtime's Erf put that threshold 5e-4 apart, so a frozen
    model's ONNX export disagreed with torch on ~1 in 6 SST-2 examples (sign flips cascading).
    """

    def __init__(self, replaced: str = "") -> None:
        super().__init__()
        self.replaced = replaced

    def extra_repr(self) -> str:
        return f"replaces {self.replaced}: the next binary Linear reads sign(h) = sign({self.replaced}(h))"


def _activation_name(config: Any) -> str | None:
    act = getattr(config, "hidden_act", None) or getattr(config, "activation", None)
    return act if isinstance(act, str) else None


class SignKeepingActivation(nn.Module):
    """Wraps the sign-preserving FFN activation ``f`` of a *training* binary model with ties "plus":
    where ``f(h)`` underflowed to 0 although ``h < 0`` (GELU: ``h < −5.54``), it returns the smallest
    negative normal float instead, so the next binary Linear reads ``sign(f(h)) = sign(h) = −1``, as the
    frozen model (:class:`SignInput`) does, rather than the tie rule's +1. The gradient there is 0
    (GELU's slope is below 1e-6 at those points)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, h: Tensor) -> Tensor:
        y = self.fn(h)
        tiny = -torch.finfo(y.dtype).tiny
        return torch.where((h < 0) & (y == 0), torch.full_like(y, tiny), y)


def _ffn_activation_slots(model: nn.Module) -> list[tuple[nn.Module, str, Any]]:
    """(owner module, attribute, layer view) of each layer's FFN activation whose ``ffn_out`` is binary,
    when the config's activation is sign-preserving; [] otherwise."""
    if _activation_name(model.config) not in SIGN_PRESERVING_ACTIVATIONS:
        return []
    out = []
    for lv in get_adapter(model).layers():
        if not isinstance(lv.ffn_out, BinaryLinear):
            continue
        owner = model.get_submodule(lv.names["ffn_in"].rpartition(".")[0])
        attr = next((a for a in _ACTIVATION_ATTRS if hasattr(owner, a)), None)
        if attr is not None:
            out.append((owner, attr, lv))
    return out


def _keep_ffn_signs(model: nn.Module) -> int:
    """Training with ties "plus": wrap each binary layer's FFN activation in :class:`SignKeepingActivation`."""
    n = 0
    for owner, attr, _ in _ffn_activation_slots(model):
        if not isinstance(getattr(owner, attr), (SignKeepingActivation, SignInput)):
            setattr(owner, attr, SignKeepingActivation(getattr(owner, attr)))
            n += 1
    return n


def _elide_ffn_activations(model: nn.Module) -> int:
    """In each layer whose ``ffn_out`` is a frozen ``BinaryLinear``, replace the FFN activation by
    :class:`SignInput` when the config's activation is sign-preserving (idempotent). Returns the count."""
    n = 0
    for owner, attr, lv in _ffn_activation_slots(model):
        if lv.ffn_out.frozen and not isinstance(getattr(owner, attr), SignInput):
            setattr(owner, attr, SignInput(_activation_name(model.config)))
            n += 1
    return n


def is_binary(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), BINARY_KEY, None))


def _check_stamp(stamp: Any) -> None:
    """The stamp's shape, before any module is touched: a hand-edited config.json otherwise fails with
    a bare KeyError ('linears') or an AttributeError that names no setting."""
    if not isinstance(stamp, Mapping):
        raise ValueError(f"config.{BINARY_KEY} must be an object {{linears, embeddings, attention, frozen}}, "
                         f"got {type(stamp).__name__} {stamp!r}")
    missing = [k for k in ("linears", "embeddings", "attention") if k not in stamp]
    if missing:
        raise ValueError(f"config.{BINARY_KEY} lacks {missing} (it has {sorted(stamp)}): restore the config.json "
                         f"saved with the weights")
    for k in ("linears", "embeddings"):
        v = stamp[k]
        if not isinstance(v, list) or not all(isinstance(n, str) for n in v):
            raise ValueError(f"config.{BINARY_KEY}.{k} must be a list of module names, got {v!r}")


def apply_binary(model: nn.Module, stamp: Mapping[str, Any]) -> None:
    """Rebuild the frozen binary modules a saved config names (the state dict, with ``weight_alpha``,
    is loaded after). ValueError for a stamp that does not match the model (a mismatched config)."""
    _check_stamp(stamp)
    if not stamp.get("frozen"):
        raise ValueError(f"config.{BINARY_KEY} describes a dynamic (training) binary model; only frozen models "
                         f"are saved (freeze_binary() first)")
    binarize_model(model, attention=stamp["attention"], linears=stamp["linears"], embeddings=stamp["embeddings"])
    for m in binary_modules(model).values():
        shape = m.weight.shape[0]
        m.register_buffer("weight_alpha", torch.ones(shape, dtype=m.weight.dtype, device=m.weight.device))
        m.frozen, m.ties = True, "plus"
    _set_attention(model, stamp["attention"], ties="plus")
    model.config.__dict__[BINARY_KEY] = dict(stamp)
    _elide_ffn_activations(model)


__all__ = ["ATTENTION_MODES", "BINARY_KEY", "BI_ATTENTION", "BinaryEmbedding", "BinaryLinear", "apply_binary",
           "SIGN_PRESERVING_ACTIVATIONS", "SignInput", "binarize_model", "binary_modules", "default_targets",
           "freeze_binary", "is_binary"]
