"""Block-diagonal dampened empirical Fisher inverse (oBERT, ALGORITHMS.md §2.2).

A weight tensor is flattened row-major and cut into contiguous blocks of ``B``
coordinates; the tail block is zero-padded. Each block keeps its own ``B x B``
inverse of

    F_hat = damp * I + (1/m) * sum_j g_j g_j^T

so memory is O(numel * B) instead of O(numel^2). Padding coordinates never see
a gradient, so their rows/columns of ``F_hat`` carry only the dampening.

Two ways to build the inverse:

* ``BlockFisherInverse.update`` -- the WoodFisher recursion (Sherman-Morrison),
  one rank-1 update per gradient, batched over all blocks. It is sequential in
  the gradients, so it cannot be merged across processes after the fact.
* ``block_outer_sum_`` + ``fisher_inverse_from_outer_sums`` -- for data-parallel
  runs: each rank accumulates per-block sums of ``g g^T``, the sums are
  all-reduced (summed) across ranks, then every rank inverts once. Both paths
  give the same matrix up to round-off.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_ALLOWED_DTYPES = (torch.float32, torch.float64)


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in _ALLOWED_DTYPES:
        raise ValueError(f"dtype must be one of {_ALLOWED_DTYPES}, got {dtype}")


def num_blocks(numel: int, block_size: int) -> int:
    """Number of Fisher blocks covering ``numel`` coordinates (tail padded)."""
    if numel < 1:
        raise ValueError(f"numel must be >= 1, got {numel}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return math.ceil(numel / block_size)


def to_blocks(flat: Tensor, block_size: int) -> Tensor:
    """Zero-pad a flat tensor (numel,) and view it as (num_blocks, B)."""
    if flat.dim() != 1:
        raise ValueError(f"expected a flat (1-D) tensor, got shape {tuple(flat.shape)}")
    nb = num_blocks(flat.numel(), block_size)
    pad = nb * block_size - flat.numel()
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(nb, block_size)  # (nb, B)


class BlockFisherInverse:
    """Inverse of ``damp*I + (1/m) sum g g^T`` per block, built by Sherman-Morrison.

    Start from ``(1/damp) I`` and for each gradient ``g`` apply
    ``Finv -= u u^T / (m + g^T u)`` with ``u = Finv g``. After exactly
    ``num_grads`` updates this equals the direct inverse; after fewer it is the
    inverse with only the gradients seen so far (still scaled by ``1/m``).
    """

    def __init__(
        self,
        numel: int,
        block_size: int,
        damp: float,
        num_grads: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.num_blocks = num_blocks(numel, block_size)
        if not damp > 0:
            raise ValueError(f"damp must be > 0, got {damp}")
        if num_grads < 1:
            raise ValueError(f"num_grads must be >= 1, got {num_grads}")
        _check_dtype(dtype)
        self.numel = numel
        self.block_size = block_size
        self.damp = float(damp)
        self.num_grads = num_grads
        self.num_updates = 0
        eye = torch.eye(block_size, dtype=dtype, device=device) / self.damp
        # (nb, B, B); contiguous copy so updates can run in place.
        self._finv = eye.expand(self.num_blocks, block_size, block_size).contiguous()

    @property
    def dtype(self) -> torch.dtype:
        return self._finv.dtype

    @property
    def device(self) -> torch.device:
        return self._finv.device

    @property
    def inverse(self) -> Tensor:
        """The per-block inverse, shape (num_blocks, B, B)."""
        return self._finv

    @property
    def complete(self) -> bool:
        """True once ``num_grads`` gradients have been folded in."""
        return self.num_updates == self.num_grads

    def update(self, grad_flat: Tensor) -> None:
        """Fold one (already masked) gradient of ``numel`` elements into every block."""
        if grad_flat.numel() != self.numel:
            raise ValueError(f"gradient has {grad_flat.numel()} elements, expected {self.numel}")
        if self.num_updates >= self.num_grads:
            raise ValueError(
                f"already received num_grads={self.num_grads} gradients; build a new "
                "BlockFisherInverse for the next pruning step"
            )
        g = to_blocks(grad_flat.reshape(-1).to(self._finv), self.block_size)  # (nb, B)
        u = torch.bmm(self._finv, g.unsqueeze(2)).squeeze(2)  # (nb, B)
        denom = self.num_grads + (g * u).sum(dim=1)  # (nb,); >= m > 0 since Finv is SPD
        # In-place rank-1 downdate avoids a second (nb, B, B) temporary.
        self._finv.baddbmm_(u.unsqueeze(2), (u / denom.unsqueeze(1)).unsqueeze(1), alpha=-1.0)
        self.num_updates += 1

    def diag(self) -> Tensor:
        """Flat diagonal of the inverse, length ``numel`` (padding dropped)."""
        return self._finv.diagonal(dim1=1, dim2=2).reshape(-1)[: self.numel]


def block_outer_sum_(acc: Tensor, grad_flat: Tensor) -> Tensor:
    """Add the per-block outer product ``g g^T`` of one gradient into ``acc`` in place.

    ``acc`` has shape (num_blocks, B, B); start it at zeros. Summing the ``acc``
    of several processes (all-reduce) and passing the total to
    ``fisher_inverse_from_outer_sums`` reproduces the single-process inverse.
    """
    if acc.dim() != 3 or acc.shape[1] != acc.shape[2]:
        raise ValueError(f"acc must have shape (num_blocks, B, B), got {tuple(acc.shape)}")
    nb, bsz = acc.shape[0], acc.shape[1]
    g = to_blocks(grad_flat.reshape(-1).to(acc), bsz)  # (nb', B)
    if g.shape[0] != nb:
        raise ValueError(
            f"gradient with {grad_flat.numel()} elements needs {g.shape[0]} blocks of {bsz}, "
            f"acc has {nb}"
        )
    acc.baddbmm_(g.unsqueeze(2), g.unsqueeze(1))
    return acc


def fisher_inverse_from_outer_sums(
    sum_ggT: Tensor, num_grads: int, damp: float, compute_dtype: torch.dtype = torch.float64
) -> Tensor:
    """Invert ``damp*I + sum_ggT/num_grads`` per block; returns (num_blocks, B, B).

    ``sum_ggT`` is the (possibly all-reduced) sum of per-block outer products
    over all ``num_grads`` gradients of all processes. The inversion runs in
    ``compute_dtype`` (float64 by default, as small damps make blocks
    ill-conditioned) and the result is cast back to ``sum_ggT.dtype``.
    """
    if sum_ggT.dim() != 3 or sum_ggT.shape[1] != sum_ggT.shape[2]:
        raise ValueError(f"sum_ggT must have shape (num_blocks, B, B), got {tuple(sum_ggT.shape)}")
    if num_grads < 1:
        raise ValueError(f"num_grads must be >= 1, got {num_grads}")
    if not damp > 0:
        raise ValueError(f"damp must be > 0, got {damp}")
    _check_dtype(compute_dtype)
    bsz = sum_ggT.shape[1]
    f = sum_ggT.to(compute_dtype) / num_grads  # (nb, B, B)
    f.diagonal(dim1=1, dim2=2).add_(damp)
    f = 0.5 * (f + f.transpose(1, 2))  # kill round-off asymmetry before Cholesky
    chol = torch.linalg.cholesky(f)  # (nb, B, B); SPD since damp > 0
    eye = torch.eye(bsz, dtype=compute_dtype, device=f.device).expand_as(f)
    finv = torch.cholesky_solve(eye, chol)
    return finv.to(sum_ggT.dtype)
