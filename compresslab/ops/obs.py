"""Optimal Brain Surgeon saliency and weight update (oBERT, ALGORITHMS.md §2.2).

Conventions shared by every function here:

* ``w_flat`` is one weight tensor flattened row-major, shape (numel,).
* ``finv`` is its block-diagonal Fisher inverse, shape (num_blocks, B, B), with
  ``num_blocks = ceil(numel / B)``; the tail block is zero-padded and padding
  coordinates never appear in any score or mask returned here.
* A pruning *set* Q is one weight (``group_size=1``, unstructured) or four
  consecutive weights of a flattened row (``group_size=4``, block4). Groups
  never straddle Fisher blocks, which is why block4 needs ``B % 4 == 0``; the
  caller must make sure rows have a length divisible by 4.
* Scores are per group, shape (numel // group_size,); masks are bool and
  ``True`` means pruned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

_ALLOWED_GROUP_SIZES = (1, 4)


def _check(w_flat: Tensor, finv: Tensor, group_size: int) -> None:
    """Validate shapes and group layout; ValueErrors name the allowed values."""
    if group_size not in _ALLOWED_GROUP_SIZES:
        raise ValueError(f"group_size must be one of {_ALLOWED_GROUP_SIZES}, got {group_size}")
    if w_flat.dim() != 1:
        raise ValueError(f"w_flat must be 1-D, got shape {tuple(w_flat.shape)}")
    if finv.dim() != 3 or finv.shape[1] != finv.shape[2]:
        raise ValueError(f"finv must have shape (num_blocks, B, B), got {tuple(finv.shape)}")
    bsz = finv.shape[1]
    if finv.shape[0] != math.ceil(w_flat.numel() / bsz):
        raise ValueError(
            f"finv has {finv.shape[0]} blocks of {bsz}, but {w_flat.numel()} weights need "
            f"{math.ceil(w_flat.numel() / bsz)}"
        )
    if bsz % group_size:
        raise ValueError(
            f"fisher block size {bsz} must be a multiple of group_size={group_size} "
            "(block4 needs B % 4 == 0, e.g. 32)"
        )
    if w_flat.numel() % group_size:
        raise ValueError(f"numel={w_flat.numel()} is not a multiple of group_size={group_size}")


def _blocks(flat: Tensor, bsz: int) -> Tensor:
    """Zero-pad (numel,) to a multiple of ``bsz`` and view as (num_blocks, B)."""
    pad = (-flat.numel()) % bsz
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, bsz)


def _coefficients(w_flat: Tensor, finv: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """Return padded weights w and c with c_Q = ([Finv]_QQ)^-1 w_Q, both (nb, B)."""
    nb, bsz = finv.shape[0], finv.shape[1]
    w = _blocks(w_flat.to(finv.dtype), bsz)  # (nb, B)
    if group_size == 1:
        return w, w / finv.diagonal(dim1=1, dim2=2)
    q, ng = group_size, bsz // group_size
    # Diagonal q x q sub-blocks of every Fisher block: (nb, ng, q, q).
    sub = torch.diagonal(finv.view(nb, ng, q, ng, q), dim1=1, dim2=3).permute(0, 3, 1, 2)
    # Solve in float64: tiny damps make these sub-blocks badly conditioned in fp32.
    c = torch.linalg.solve(sub.double(), w.view(nb, ng, q, 1).double())  # (nb, ng, q, 1)
    return w, c.view(nb, bsz).to(w.dtype)


def obs_scores(w_flat: Tensor, finv: Tensor, group_size: int) -> Tensor:
    """Saliency rho_Q = 0.5 * w_Q^T ([Finv]_QQ)^-1 w_Q per group, (numel // group_size,)."""
    _check(w_flat, finv, group_size)
    w, c = _coefficients(w_flat, finv, group_size)
    rho = 0.5 * (w * c).view(-1, group_size).sum(dim=1)  # (nb * B // q,)
    return rho[: w_flat.numel() // group_size]


def unstructured_scores(w_flat: Tensor, finv: Tensor) -> Tensor:
    """rho_i = w_i^2 / (2 [Finv]_ii), shape (numel,)."""
    return obs_scores(w_flat, finv, 1)


def block4_scores(w_flat: Tensor, finv: Tensor) -> Tensor:
    """rho_Q for 1x4 blocks of consecutive weights, shape (numel // 4,)."""
    return obs_scores(w_flat, finv, 4)


def magnitude_scores(w_flat: Tensor, group_size: int = 1) -> Tensor:
    """Baseline 0.5 * ||w_Q||^2: OBS saliency with Finv = I, ranks like |w| for size 1."""
    if group_size not in _ALLOWED_GROUP_SIZES:
        raise ValueError(f"group_size must be one of {_ALLOWED_GROUP_SIZES}, got {group_size}")
    if w_flat.dim() != 1 or w_flat.numel() % group_size:
        raise ValueError(f"w_flat must be 1-D with numel divisible by {group_size}")
    return 0.5 * w_flat.square().view(-1, group_size).sum(dim=1)


def expand_group_mask(group_mask: Tensor, group_size: int) -> Tensor:
    """Per-group mask (n,) -> per-weight mask (n * group_size,)."""
    return group_mask.repeat_interleave(group_size)


def _group_mask(mask: Tensor, group_size: int, numel: int, name: str) -> Tensor:
    """Per-weight mask (numel,) -> per-group mask, refusing partial groups."""
    if mask.dtype != torch.bool or mask.shape != (numel,):
        raise ValueError(f"{name} must be a bool tensor of shape ({numel},)")
    g = mask.view(-1, group_size)
    if not torch.equal(g.all(dim=1), g.any(dim=1)):
        raise ValueError(f"{name} prunes part of a {group_size}-group; whole groups only")
    return g[:, 0]


def obs_update(
    w_flat: Tensor,
    finv: Tensor,
    new_mask: Tensor,
    group_size: int = 1,
    pruned_mask: Tensor | None = None,
) -> Tensor:
    """Weight change for pruning every set in ``new_mask`` at once, shape (numel,).

    Reference semantics: the SUM of the single-set updates
    ``-Finv E_Q^T ([Finv]_QQ)^-1 w_Q`` over all newly pruned sets, all with the
    same ``Finv`` (interactions inside a block are ignored). Afterwards every
    entry of ``new_mask | pruned_mask`` is hard-zeroed, i.e. the returned delta
    there is exactly ``-w``. Masks are per weight, shape (numel,).
    """
    _check(w_flat, finv, group_size)
    numel = w_flat.numel()
    _group_mask(new_mask, group_size, numel, "new_mask")
    zero = new_mask
    if pruned_mask is not None:
        _group_mask(pruned_mask, group_size, numel, "pruned_mask")
        zero = new_mask | pruned_mask
    _, c = _coefficients(w_flat, finv, group_size)
    v = c * _blocks(new_mask.to(c.dtype), finv.shape[1])  # (nb, B); zero outside new sets
    delta = -torch.bmm(finv, v.unsqueeze(2)).view(-1)[:numel]  # (numel,)
    delta = torch.where(zero, -w_flat.to(delta.dtype), delta)
    return delta


def obs_prune_set(w_block: Tensor, finv_block: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Exact OBS for one arbitrary set Q inside one block: returns (rho_Q, delta (B,)).

    The general formula behind the batched helpers; also the building block for
    a joint (interaction-aware) per-block solve.
    """
    if w_block.dim() != 1 or finv_block.shape != (w_block.numel(), w_block.numel()):
        raise ValueError("expected w_block (B,) and finv_block (B, B)")
    wq = w_block[idx]  # (|Q|,)
    c = torch.linalg.solve(finv_block[idx][:, idx], wq)  # ([Finv]_QQ)^-1 w_Q
    rho = 0.5 * wq.dot(c)
    delta = -finv_block[:, idx] @ c  # (B,)
    return rho, delta


def global_prune_masks(
    scores: Sequence[Tensor], pruned: Sequence[Tensor] | None, sparsity: float
) -> list[Tensor]:
    """Rank groups globally and return new per-group masks (old | newly pruned).

    Already-pruned groups score -inf, so they stay pruned and count toward the
    target ``k = round(sparsity * total_groups)``; exactly ``k`` groups end up
    pruned unless more than ``k`` were already pruned, in which case nothing is
    revived and nothing new is pruned. Ties break by position (first tensor,
    lowest index first), so the result is deterministic.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    if len(scores) == 0:
        raise ValueError("scores must hold at least one tensor")
    if pruned is None:
        pruned = [torch.zeros_like(s, dtype=torch.bool) for s in scores]
    if len(pruned) != len(scores):
        raise ValueError(f"got {len(scores)} score tensors but {len(pruned)} masks")
    for i, (s, p) in enumerate(zip(scores, pruned)):
        if p.shape != s.shape or p.dtype != torch.bool:
            raise ValueError(f"pruned[{i}] must be a bool tensor of shape {tuple(s.shape)}")
        if torch.isnan(s).any():
            raise ValueError(f"scores[{i}] contains NaN")
    device, dtype = scores[0].device, torch.get_default_dtype()
    for x in scores:  # common float dtype, so the cast below loses nothing
        dtype = torch.promote_types(dtype, x.dtype) if x.is_floating_point() else dtype
    flat = torch.cat(
        [s.reshape(-1).to(device, dtype).masked_fill(p.reshape(-1).to(device), -math.inf)
         for s, p in zip(scores, pruned)]
    )  # (total_groups,)
    k = round(sparsity * flat.numel())
    new = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        thr = torch.kthvalue(flat, k).values  # k-th smallest
        new = flat < thr
        ties = torch.nonzero(flat == thr).view(-1)  # in index order
        new[ties[: k - int(new.sum())]] = True
    out, start = [], 0
    for s, p in zip(scores, pruned):
        n = s.numel()
        out.append(new[start : start + n].view(s.shape) | p.to(device))
        start += n
    return out
