"""Theoretical FLOPs of an encoder, split into binary and full-precision matmuls (BiBERT's accounting).

Binary-network papers (XNOR-Net, Bi-Real Net, and BiBERT after them) count a binary
multiply-accumulate (XNOR + popcount on 1-bit operands) as 1/64 of a floating-point one, since a
64-bit word holds 64 of them::

    FLOPs(binary model) = FLOPs(full-precision matmuls) + BOPs / 64

Counted here, per forward pass at ``batch_size × seq_len`` (every token real):

* every ``nn.Linear`` (``BinaryLinear`` included): ``tokens × in × out`` MACs, with the tokens it
  really sees (found by one forward pass with hooks: encoder Linears see every token, the pooler
  and the classification head only the [CLS] vector);
* attention per layer: ``Q·Kᵀ`` and ``A·V``, each ``heads × T × T × head_size`` MACs per sequence
  (heads and head size read per layer, so pruned layers count what they keep).

A ``BinaryLinear`` (1-bit weights and 1-bit inputs) is binary. Under Bi-Attention
(``binary_attention="bool"``) both attention matmuls are binary (``sign(Q)·sign(K)ᵀ``, and
``bool(S)·sign(V)`` with ``A ∈ {0, 1}``); with softmax kept (``"softmax"``) ``Q·Kᵀ`` is binary but
``A·V`` multiplies a full-precision ``A``. Everything else is full precision.

Not counted, in either model (as in the papers' tables): embedding lookups, LayerNorm, GELU,
softmax, residual adds, biases and the per-row scale ``α``. FLOPs are ``2 × MACs``; the ratio does
not depend on that factor. The figures are **theoretical**: ONNX Runtime, torch and OpenVINO have no
1-bit kernels, so a binary model runs as fp32 matmuls on ±1 values and its measured latency is
fp32 latency. BiBERT's "56.3×" for BERT-base is 22.5 G / 0.4 G with the binary FLOPs rounded to one
decimal; the same rule without that rounding gives just under 64×.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from compresslab.models.adapters import get_adapter
from compresslab.validate import check_positive_int

if TYPE_CHECKING:  # bench/ modules import no heavy library at module level
    from torch import nn

BOPS_PER_FLOP = 64  # a 64-bit word holds 64 binary multiply-accumulates
CONVENTION = ("FLOPs = 2 x MACs of full-precision matmuls + BOPs/64 (BOPs = 2 x binary MACs); matmuls only "
              "(Linear, Q.K^T, A.V), embeddings and elementwise ops not counted; theoretical (no 1-bit kernels run)")


def _linear_macs(model: nn.Module, seq_len: int, batch_size: int) -> dict[str, tuple[int, bool]]:
    """Qualified name -> (MACs, binary) of every ``nn.Linear`` a forward pass actually runs."""
    import torch
    from torch import nn

    from compresslab.models.binary import BinaryLinear
    from compresslab.models.hooks import capture_inputs

    linears = {name: mod for name, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    seen: dict[str, tuple[int, bool]] = {}

    def count(name: Any, x: Any) -> None:
        m = linears[name]
        tokens = x.numel() // m.in_features
        macs = tokens * m.in_features * m.out_features
        prev = seen.get(name, (0, False))[0]
        seen[name] = (prev + macs, isinstance(m, BinaryLinear))

    pad = getattr(model.config, "pad_token_id", None)
    token = 5 if pad != 5 else 6  # any id but padding (RoBERTa's positions skip padding ids)
    ids = torch.full((batch_size, seq_len), token, dtype=torch.long, device=next(model.parameters()).device)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), capture_inputs(linears, count):
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        model.train(was_training)
    return seen


def max_seq_len(model: nn.Module) -> int | None:
    """The longest sequence the model's position table holds (RoBERTa's positions start after its
    padding id); None when the config does not say."""
    from compresslab.models.loading import position_limit

    return position_limit(model.config)


def theoretical_flops(model: nn.Module, seq_len: int, *, batch_size: int = 1) -> dict[str, Any]:
    """FLOPs of ``model`` and of the same architecture in fp32, at ``batch_size × seq_len``.

    Returns ``{"theoretical": True, "convention", "seq_len", "batch_size", "macs": {"binary", "fp",
    "total"}, "bops", "flops_fp32", "flops", "flops_ratio", "per_module": {name: {"macs", "binary"}}}``:
    ``flops_fp32`` counts every MAC as full precision (the dense model), ``flops`` is
    ``2·fp MACs + bops/64`` and ``flops_ratio = flops_fp32 / flops``. For a model with no binary part
    the ratio is 1. ValueError for a non-positive ``seq_len`` or ``batch_size``, or a ``seq_len``
    beyond the position table.
    """
    check_positive_int(seq_len, "seq_len")
    check_positive_int(batch_size, "batch_size")
    from compresslab.models.loading import check_max_length

    check_max_length(seq_len, model.config, "seq_len")
    per: dict[str, dict[str, Any]] = {n: {"macs": macs, "binary": b}
                                      for n, (macs, b) in _linear_macs(model, seq_len, batch_size).items()}
    for lv in get_adapter(model).layers():
        heads = lv.num_heads
        if heads == 0:
            continue
        one = batch_size * heads * seq_len * seq_len * lv.head_size
        mode = getattr(lv.self_attn, "binary_attention", None)
        per[f"{lv.prefix}.attention.qk"] = {"macs": one, "binary": mode in ("bool", "softmax")}
        per[f"{lv.prefix}.attention.av"] = {"macs": one, "binary": mode == "bool"}
    binary = sum(v["macs"] for v in per.values() if v["binary"])
    total = sum(v["macs"] for v in per.values())
    fp = total - binary
    bops = 2 * binary
    flops = 2 * fp + bops / BOPS_PER_FLOP
    return {"theoretical": True, "convention": CONVENTION, "seq_len": seq_len, "batch_size": batch_size,
            "macs": {"binary": binary, "fp": fp, "total": total}, "bops": bops, "flops_fp32": 2 * total,
            "flops": flops, "flops_ratio": (2 * total) / flops if flops else None, "per_module": per}


__all__ = ["BOPS_PER_FLOP", "CONVENTION", "max_seq_len", "theoretical_flops"]
