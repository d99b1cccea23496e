"""Structured OBS over input-column groups (ZipLM, ALGORITHMS.md §4.2).

A *group* is a set of input columns of ``W`` (d_out, d_in) removed together: one attention head
of ``W_O`` (``head_dim`` contiguous columns) or one FFN neuron of ``W_2`` (one column). Removing a
group ``M`` with ``Hinv = H^-1`` costs

    rho_M = sum_rows W[r, M] (Hinv[M, M])^-1 W[r, M]^T      ((1/N)||WX - W'X||^2 grows by rho_M / 2)

and the remaining columns are compensated in closed form. :func:`build_database` removes groups
greedily (cheapest first) and keeps the compensated weights at the requested levels, plus the
removal order so the caller can slice the coupled Q/K/V or W_1 rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DatabaseLevel",
    "ShrinkDatabase",
    "batched_block_inverse",
    "build_database",
    "contiguous_groups",
    "group_saliency",
    "remove_group",
]


def contiguous_groups(
    d_in: int, group_size: int, device: torch.device | str | None = None
) -> Tensor:
    """Column indices of contiguous groups: row ``g`` is ``[g*group_size, (g+1)*group_size)``."""
    if group_size <= 0 or d_in % group_size != 0:
        raise ValueError(f"group_size must be a positive divisor of d_in={d_in}, got {group_size}")
    return torch.arange(d_in, device=device).reshape(d_in // group_size, group_size)  # (G, g)


def batched_block_inverse(blocks: Tensor) -> Tensor:
    """Inverse of each SPD block in ``blocks`` (..., g, g); Cholesky, with pinv where it fails.

    Cholesky is the fast and stable path for the SPD diagonal blocks of ``Hinv``; round-off after
    many downdates can break definiteness, in which case the pseudo-inverse is the safe fallback.
    """
    chol, info = torch.linalg.cholesky_ex(blocks)  # chol: (..., g, g), info: (...)
    eye = torch.eye(blocks.shape[-1], dtype=blocks.dtype, device=blocks.device).expand_as(blocks)
    inv = torch.cholesky_solve(eye, chol)  # (..., g, g)
    bad = info != 0
    if bool(bad.any()):
        inv[bad] = torch.linalg.pinv(blocks[bad], hermitian=True)
    return inv


def _check_w_hinv(w: Tensor, hinv: Tensor) -> None:
    if w.ndim != 2:
        raise ValueError(f"W must be 2-D (d_out, d_in), got shape {tuple(w.shape)}")
    d_in = w.shape[1]
    if tuple(hinv.shape) != (d_in, d_in):
        raise ValueError(
            f"Hinv must be ({d_in}, {d_in}) to match W's d_in, got {tuple(hinv.shape)}"
        )
    if w.dtype != hinv.dtype or w.device != hinv.device:
        raise ValueError(
            f"W and Hinv must share dtype and device, "
            f"got {w.dtype}/{w.device} and {hinv.dtype}/{hinv.device}"
        )


def group_saliency(w: Tensor, hinv: Tensor, groups: Tensor) -> Tensor:
    """``rho`` for every group: twice the loss increase of removing it (with compensation).

    ``groups`` is a (G, g) index tensor of columns; returns (G,).
    """
    _check_w_hinv(w, hinv)
    if groups.ndim != 2 or groups.numel() == 0:
        raise ValueError(
            f"groups must be a non-empty (G, g) index tensor, got shape {tuple(groups.shape)}"
        )
    groups = groups.to(device=w.device, dtype=torch.long)
    if int(groups.min()) < 0 or int(groups.max()) >= w.shape[1]:
        raise ValueError(f"group column indices must lie in [0, {w.shape[1]})")
    if groups.shape[1] == 1:  # single columns: rho_k = ||W[:, k]||^2 / Hinv[k, k]
        cols = groups[:, 0]
        # column norms of all of W, then select: avoids gathering a (d_out, G) copy every step
        return w.pow(2).sum(0).index_select(0, cols) / torch.diagonal(hinv).index_select(
            0, cols
        )  # (G,)
    blocks = hinv[groups[:, :, None], groups[:, None, :]]  # (G, g, g)
    binv = batched_block_inverse(blocks)  # (G, g, g)
    num_groups, g = groups.shape
    wg = (
        w.index_select(1, groups.reshape(-1)).reshape(-1, num_groups, g).permute(1, 0, 2)
    )  # (G, d_out, g)
    return ((wg @ binv) * wg).sum(dim=(1, 2))  # (G,)


def remove_group(
    w: Tensor, hinv: Tensor, cols: Tensor, inplace: bool = False
) -> tuple[Tensor, Tensor]:
    """Remove input columns ``cols`` (m,): OBS-compensate ``W`` and downdate ``Hinv``.

    After the call ``Hinv`` restricted to the kept columns equals ``inv(H[keep, keep])``; the
    removed rows/columns of ``Hinv`` are zeroed with diagonal 1 so later updates never touch them.
    """
    _check_w_hinv(w, hinv)
    cols = torch.as_tensor(cols, device=w.device, dtype=torch.long).reshape(-1)  # (m,)
    if cols.numel() == 0:
        raise ValueError("cols must name at least one column")
    if int(cols.min()) < 0 or int(cols.max()) >= w.shape[1]:
        raise ValueError(f"cols must lie in [0, {w.shape[1]}), got {cols.tolist()}")
    if cols.unique().numel() != cols.numel():
        raise ValueError(f"cols must not repeat a column, got {cols.tolist()}")
    if not inplace:
        w, hinv = w.clone(), hinv.clone()
    # index_select / index_fill_ rather than fancy indexing: much faster on large CPU matrices
    hinv_m = hinv.index_select(0, cols)  # (m, d_in), a copy
    binv = batched_block_inverse(hinv_m.index_select(1, cols))  # (m, m)
    update = binv @ hinv_m  # (m, d_in)
    w.addmm_(
        w.index_select(1, cols), update, alpha=-1
    )  # W -= W[:, M] Hinv_MM^-1 Hinv_M,:  (d_out, d_in)
    hinv.addmm_(
        hinv_m.T, update, alpha=-1
    )  # symmetric rank-m downdate                  (d_in, d_in)
    w.index_fill_(1, cols, 0)
    hinv.index_fill_(0, cols, 0).index_fill_(1, cols, 0)
    hinv[cols, cols] = 1
    return w, hinv


@dataclass(frozen=True)
class DatabaseLevel:
    """One stored level: which groups are gone and the compensated weights of the rest."""

    num_removed: int
    removed: tuple[int, ...]  # group indices in removal order (the first num_removed of the order)
    kept: tuple[int, ...]  # remaining group indices, ascending
    weight: Tensor  # (d_out, len(kept) * group_size): columns of the kept groups, in `kept` order
    error: float  # cumulative (1/N)||W X - W' X||^2 under H, i.e. sum of rho / 2

    def kept_columns(self, group_size: int) -> Tensor:
        """Input-column indices (ascending) that ``weight`` keeps."""
        k = torch.tensor(self.kept, dtype=torch.long)
        return (k[:, None] * group_size + torch.arange(group_size)).reshape(-1)


@dataclass(frozen=True)
class ShrinkDatabase:
    """Greedy OBS removal path of one matrix: order and error curve, weights at chosen levels."""

    group_size: int
    num_groups: int
    d_out: int
    order: tuple[int, ...]  # group indices in removal order, up to the deepest requested level
    errors: tuple[float, ...]  # errors[k]: cumulative error after k removals (errors[0] == 0)
    levels: tuple[DatabaseLevel, ...]  # ascending num_removed

    def __len__(self) -> int:
        return len(self.levels)

    def __iter__(self) -> Iterator[DatabaseLevel]:
        return iter(self.levels)

    def __getitem__(self, i: int) -> DatabaseLevel:
        """The ``i``-th stored level (by position); use :meth:`level` to look up by depth."""
        return self.levels[i]

    def level(self, num_removed: int) -> DatabaseLevel:
        """The stored level with exactly ``num_removed`` groups removed."""
        for lv in self.levels:
            if lv.num_removed == num_removed:
                return lv
        raise ValueError(
            f"level {num_removed} not stored; stored: {[lv.num_removed for lv in self.levels]}"
        )

    def full_weight(self, num_removed: int) -> Tensor:
        """(d_out, d_in) weight with removed columns zero, for masking rather than slicing."""
        lv = self.level(num_removed)
        out = lv.weight.new_zeros(self.d_out, self.num_groups * self.group_size)
        out[:, lv.kept_columns(self.group_size).to(out.device)] = lv.weight
        return out


def _invert_spd(h: Tensor) -> Tensor:
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info) == 0:
        return torch.cholesky_inverse(chol)
    warnings.warn(
        "H is not positive definite; using the pseudo-inverse (raise the dampening)", stacklevel=3
    )
    return torch.linalg.pinv(h, hermitian=True)


@torch.no_grad()
def build_database(
    w: Tensor,
    h: Tensor,
    group_size: int,
    levels: Sequence[int],
    store_device: torch.device | str | None = None,
    store_dtype: torch.dtype | None = None,
) -> ShrinkDatabase:
    """Greedily remove the cheapest group until the deepest level in ``levels``.

    ``levels`` are numbers of removed groups (0..G). ``h`` is the finalized, dampened Hessian
    (d_in, d_in); zero dead columns of ``w`` beforehand. Compute runs in ``h``'s dtype (use
    float64 for exactness); snapshots can be moved to ``store_device``/``store_dtype`` (e.g.
    CPU, fp16) since only the requested levels are kept and they dominate memory.
    Cost: one rank-g downdate of ``Hinv`` per removed group, O(d_in^3) for a full path; build
    FFN databases on a GPU (a 3072-wide layer takes minutes on two CPU cores).
    """
    if w.ndim != 2:
        raise ValueError(f"W must be 2-D (d_out, d_in), got shape {tuple(w.shape)}")
    d_out, d_in = w.shape
    if tuple(h.shape) != (d_in, d_in):
        raise ValueError(f"H must be ({d_in}, {d_in}) to match W, got {tuple(h.shape)}")
    groups = contiguous_groups(d_in, group_size, device=w.device)  # (G, g)
    num_groups = groups.shape[0]
    wanted = sorted(set(int(k) for k in levels))
    if not wanted or wanted[0] < 0 or wanted[-1] > num_groups:
        raise ValueError(
            f"levels must be a non-empty list of ints in [0, {num_groups}], got {list(levels)}"
        )

    dtype = h.dtype if h.dtype == torch.float64 else torch.float32
    cur_w = w.detach().to(dtype).clone()  # (d_out, d_in)
    hinv = _invert_spd(h.detach().to(device=w.device, dtype=dtype))  # (d_in, d_in)
    alive = torch.ones(num_groups, dtype=torch.bool, device=w.device)
    order: list[int] = []
    errors = [0.0]
    stored: list[DatabaseLevel] = []

    def snapshot(k: int) -> None:
        kept = tuple(int(g) for g in torch.nonzero(alive).flatten().tolist())
        cols = groups[list(kept)].reshape(-1) if kept else groups[:0].reshape(-1)
        snap = cur_w[:, cols].to(device=store_device or w.device, dtype=store_dtype or w.dtype)
        stored.append(DatabaseLevel(k, tuple(order), kept, snap, errors[-1]))

    wanted_set = set(wanted)
    for k in range(wanted[-1] + 1):
        if k in wanted_set:
            snapshot(k)
        if k == wanted[-1]:
            break
        live = torch.nonzero(alive).flatten()  # (G_alive,)
        rho = group_saliency(cur_w, hinv, groups[live])  # (G_alive,)
        # rho < 0 or nan means Hinv lost definiteness to round-off there: never make it look free
        rho = torch.where(torch.isfinite(rho) & (rho >= 0), rho, torch.full_like(rho, float("inf")))
        best = int(torch.argmin(rho))
        g = int(live[best])
        prev_w = None if torch.isfinite(rho[best]) else cur_w.clone()
        remove_group(cur_w, hinv, groups[g], inplace=True)
        alive[g] = False
        order.append(g)
        if prev_w is None:
            step = float(rho[best]) / 2
        else:  # every block broke down: measure the step's loss directly, 0.5 tr(dW H dW^T)
            dw = cur_w - prev_w  # (d_out, d_in)
            step = 0.5 * float(((dw @ h.to(dw)) * dw).sum())
        errors.append(errors[-1] + step)
    return ShrinkDatabase(group_size, num_groups, d_out, tuple(order), tuple(errors), tuple(stored))
