"""BiBERT's forward binarizers and straight-through estimators (ALGORITHMS.md §3.2; Qin et al., ICLR 2022).

Every function is written in a "detach trick" form, ``value.detach() + (surrogate − surrogate.detach())``:
the bracket is exactly 0 in the forward pass, so the forward value is the binarized one bit for bit
(the reference's ``value.detach() − surrogate.detach() + surrogate`` rounds, e.g. ``(α − c) + c ≠ α``
in float32 for a weight scale α), and the gradient is exactly autograd's gradient of the surrogate:

* activations ``x̂ = sign(x)``, surrogate ``clamp(x, −1, 1)``: the gradient passes where
  ``|x| ≤ 1`` and is 0 elsewhere;
* weights (per output row ``r``) ``Ŵ_r = α_r · sign(W_r − μ_r)`` with ``α_r = mean|W_r|`` (detached,
  of the *uncentred* row) and ``μ_r = mean W_r``; surrogate ``clamp(W − μ(W), −1, 1)`` with ``μ`` not
  detached (the pass-through minus a row-mean correction);
* Bi-Attention's ``bool(s) = 1[s > 0]``, surrogate ``clamp(s, −1, 1)`` again.

Sign ties: ``torch.sign(0) = 0`` (``ties="zero"``, the reference's training behaviour, slightly
ternary) or ``0 → +1`` (``ties="plus"``, what a bit-packed deployment can store). The choice is
explicit everywhere; frozen models use ``"plus"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

TIES = ("zero", "plus")


def check_ties(ties: str) -> str:
    if ties not in TIES:
        raise ValueError(f"ties={ties!r}; allowed: 'zero' (torch.sign, training) or 'plus' (0 -> +1, deployment)")
    return ties


def hard_sign(x: Tensor, ties: str = "zero") -> Tensor:
    """``sign(x)`` without a gradient path: ``{−1, 0, +1}`` (``ties="zero"``) or ``{−1, +1}`` (``"plus"``)."""
    if check_ties(ties) == "zero":
        return torch.sign(x)
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def _straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value`` in the forward pass, exactly; the gradient of ``surrogate`` in the backward pass."""
    return value.detach() + (surrogate - surrogate.detach())


def sign_ste(x: Tensor, ties: str = "zero") -> Tensor:
    """``sign(x)`` forward; backward passes the gradient where ``|x| ≤ 1``, 0 elsewhere (§3.2)."""
    clipped = torch.clamp(x, -1.0, 1.0)
    return _straight_through(hard_sign(x, ties), clipped)


def bool_ste(s: Tensor) -> Tensor:
    """Bi-Attention's ``bool(s) = 1 if s > 0 else 0``; backward passes where ``|s| ≤ 1`` (§3.2)."""
    clipped = torch.clamp(s, -1.0, 1.0)
    return _straight_through((s > 0).to(s.dtype), clipped)


def row_scale(w: Tensor) -> Tensor:
    """``α_r = mean_j |W_rj|`` per row of a 2-D weight, shape ``(rows, 1)``, detached (§3.2)."""
    if w.ndim != 2:
        raise ValueError(f"a binarized weight must be 2-D (rows, cols), got shape {tuple(w.shape)}")
    return w.detach().abs().mean(dim=-1, keepdim=True)


def binarize_weight(w: Tensor, ties: str = "zero") -> Tensor:
    """``Ŵ = α ⊙ sign(W − μ)`` per row, with the gradient of ``clamp(W − μ(W), −1, 1)`` (μ not detached).

    ``w``: ``(rows, cols)`` (a Linear's ``(out, in)`` or an embedding table ``(vocab, dim)``).
    Each row of the result takes only the values ``{±α_r}`` (and 0 at exact ties with ``"zero"``).
    """
    alpha = row_scale(w)
    centred = w - w.mean(dim=-1, keepdim=True)
    clipped = torch.clamp(centred, -1.0, 1.0)
    return _straight_through(alpha * hard_sign(centred, ties), clipped)


def bi_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, scaling: float | None = None,
                 dropout: float = 0.0, training: bool = False, mode: str = "bool",
                 ties: str = "zero") -> tuple[Tensor, Tensor]:
    """Attention over binarized ``Q, K, V`` of shape ``(B, H, T, d_h)``; returns ``(context, A)``
    with ``context`` ``(B, T, H, d_h)`` (Hugging Face's attention-function layout) and ``A`` ``(B, H, T, T)``.

    ``S = sign(Q)·sign(K)ᵀ·scaling + M`` (``scaling`` defaults to ``1/√d_h``; ``mask`` additive
    ``(B, 1|H, T, T)`` with large negative values on padding, or boolean with True = keep). Then

    * ``mode="bool"`` (Bi-Attention, §3.2): ``A = bool(dropout(S))`` — the mask is added *before*
      ``bool``, so masked keys get 0; no softmax, no row normalization;
    * ``mode="softmax"`` (the ablation / naive baseline): ``A = dropout(softmax(S))``, kept in full
      precision (a stronger baseline than ``sign(softmax)``, which is all ones).

    ``context = A · sign(V)``.
    """
    if mode not in ("bool", "softmax"):
        raise ValueError(f"attention mode={mode!r}; allowed: 'bool' (Bi-Attention) or 'softmax'")
    if scaling is None:
        scaling = 1.0 / math.sqrt(q.shape[-1])
    qb, kb, vb = sign_ste(q, ties), sign_ste(k, ties), sign_ste(v, ties)
    s = torch.matmul(qb, kb.transpose(-1, -2)) * scaling
    if mask is not None:
        if mask.dtype == torch.bool:
            s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
        else:
            s = s + mask
    if mode == "bool":
        a = bool_ste(F.dropout(s, p=dropout, training=training))
    else:
        a = F.dropout(torch.softmax(s, dim=-1), p=dropout, training=training)
    context = torch.matmul(a, vb).transpose(1, 2).contiguous()
    return context, a


__all__ = ["TIES", "bi_attention", "binarize_weight", "bool_ste", "check_ties", "hard_sign", "row_scale", "sign_ste"]
