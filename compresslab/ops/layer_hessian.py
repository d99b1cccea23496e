"""Layer-wise Hessian of the loss ``||WX - W'X||^2`` (ZipLM / OBS, ALGORITHMS.md §4.2).

For a linear layer the Hessian of ``(1/N) ||WX - W'X||_F^2`` w.r.t. each row of ``W'`` is
``H = (2/N) X X^T`` whatever the weights, so it can be collected once from calibration inputs.

Workflow::

    acc = HessianAccumulator(d_in)
    for x, mask in batches:            # x: (B, T, d_in), mask: (B, T)
        acc.add_batch(x, mask)
    # several processes: all-reduce acc.xxt_sum and acc.count_tensor() here, then acc.load_raw(...)
    res = acc.finalize(damp=0.01)      # res.hessian: (d_in, d_in), res.dead: (d_in,) bool
    zero_dead_columns_(W, res.dead)

Padding choice: when an attention mask is given, padded positions are **excluded** from ``H``.
Pad-token activations never reach the loss of an encoder (they are masked out of attention and
pooling), so reconstructing them only wastes the layer's capacity. The reference implementation
uses all positions; pass ``attention_mask=None`` to reproduce that.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "HessianAccumulator",
    "HessianResult",
    "finalize_hessian",
    "zero_dead_columns_",
]


@dataclass(frozen=True)
class HessianResult:
    """A finalized, dampened Hessian and the inputs that never fired."""

    hessian: Tensor  # (d_in, d_in), symmetric positive definite after dampening
    dead: Tensor  # (d_in,) bool: inputs with H_kk == 0; zero these weight columns
    num_tokens: int  # N, the number of calibration tokens behind H

    @property
    def num_dead(self) -> int:
        """How many inputs were dead (reported so the caller can log them)."""
        return int(self.dead.sum().item())


class HessianAccumulator:
    """Running sum of ``X X^T`` over calibration tokens.

    The raw sum and token count are kept (not a running mean) so that several processes can
    all-reduce them exactly before :meth:`finalize` divides and inverts anything.
    """

    def __init__(
        self,
        d_in: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not isinstance(d_in, int) or d_in <= 0:
            raise ValueError(f"d_in must be a positive int, got {d_in!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.d_in = d_in
        self.dtype = dtype
        self.xxt_sum = torch.zeros(d_in, d_in, device=device, dtype=dtype)  # (d_in, d_in)
        self.count = 0  # number of tokens summed into xxt_sum

    def add_batch(self, x: Tensor, attention_mask: Tensor | None = None) -> None:
        """Add ``x`` (..., d_in); ``attention_mask`` (``x.shape[:-1]``, 0 = pad) drops pads."""
        if x.ndim < 1 or x.shape[-1] != self.d_in:
            raise ValueError(f"expected inputs of shape (..., {self.d_in}), got {tuple(x.shape)}")
        tokens = x.reshape(-1, self.d_in)  # (n, d_in)
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(x.shape[:-1]):
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} must equal the input's "
                    f"leading shape {tuple(x.shape[:-1])}"
                )
            keep = attention_mask.reshape(-1).to(device=tokens.device) != 0  # (n,)
            tokens = tokens[keep]  # (n_kept, d_in)
        if tokens.shape[0] == 0:
            return
        tokens = tokens.to(device=self.xxt_sum.device, dtype=self.dtype)
        # (d_in, n) @ (n, d_in): accumulate in fp32 at least, even for half-precision activations
        self.xxt_sum.addmm_(tokens.T, tokens)
        self.count += int(tokens.shape[0])

    def count_tensor(self) -> Tensor:
        """The token count as a float64 tensor on the sum's device, ready for ``all_reduce``."""
        return torch.tensor([float(self.count)], dtype=torch.float64, device=self.xxt_sum.device)

    def raw(self) -> tuple[Tensor, int]:
        """The un-normalized ``sum X X^T`` (d_in, d_in) and the token count."""
        return self.xxt_sum, self.count

    def load_raw(self, xxt_sum: Tensor, count: int | float | Tensor) -> None:
        """Replace the state with (e.g. all-reduced) raw statistics."""
        if tuple(xxt_sum.shape) != (self.d_in, self.d_in):
            raise ValueError(
                f"xxt_sum must be ({self.d_in}, {self.d_in}), got {tuple(xxt_sum.shape)}"
            )
        n = float(count.item()) if isinstance(count, Tensor) else float(count)
        if n < 0 or n != int(n):
            raise ValueError(f"count must be a non-negative integer, got {count!r}")
        self.xxt_sum = xxt_sum.to(device=self.xxt_sum.device, dtype=self.dtype).clone()
        self.count = int(n)

    def merge_(self, other: HessianAccumulator) -> HessianAccumulator:
        """Add another accumulator's statistics into this one (in place)."""
        if other.d_in != self.d_in:
            raise ValueError(f"cannot merge d_in={other.d_in} into d_in={self.d_in}")
        self.xxt_sum += other.xxt_sum.to(device=self.xxt_sum.device, dtype=self.dtype)
        self.count += other.count
        return self

    def finalize(self, damp: float = 0.01, out_dtype: torch.dtype | None = None) -> HessianResult:
        """``H = (2/N) sum X X^T``, dead inputs set to diag 1, plus relative dampening."""
        return finalize_hessian(self.xxt_sum, self.count, damp=damp, out_dtype=out_dtype)


def finalize_hessian(
    xxt_sum: Tensor,
    count: int,
    damp: float = 0.01,
    out_dtype: torch.dtype | None = None,
) -> HessianResult:
    """Turn raw statistics into the dampened Hessian used by OBS.

    Dead inputs (``H_kk == 0``: e.g. GELU units that never fire) make ``H`` singular; their
    diagonal is set to 1 so ``H`` stays invertible, and they are reported so the caller zeros the
    matching weight columns (they contribute nothing to ``WX`` anyway). Dampening
    ``H += damp * mean(diag H) * I`` is relative so it is scale-free across layers.
    """
    if xxt_sum.ndim != 2 or xxt_sum.shape[0] != xxt_sum.shape[1]:
        raise ValueError(f"xxt_sum must be square (d_in, d_in), got {tuple(xxt_sum.shape)}")
    if count <= 0:
        raise ValueError("no calibration tokens were accumulated (count == 0)")
    if not (damp >= 0.0):
        raise ValueError(f"damp must be >= 0, got {damp!r}")
    d_in = xxt_sum.shape[0]
    if count < d_in:
        warnings.warn(
            f"only {count} calibration tokens for d_in={d_in}: H = (2/N) X X^T has rank "
            f"<= {count}, so the dampening term carries the solution; use more calibration data",
            stacklevel=3,
        )
    dtype = out_dtype or (xxt_sum.dtype if xxt_sum.dtype == torch.float64 else torch.float32)
    h = xxt_sum.to(dtype) * (2.0 / count)  # (d_in, d_in)
    h = 0.5 * (h + h.T)  # remove round-off asymmetry before any Cholesky
    diag = torch.diagonal(h)  # view: writes below land in h
    dead = diag == 0  # (d_in,) bool
    diag[dead] = 1.0
    if damp > 0:
        diag += damp * diag.mean()
    return HessianResult(hessian=h, dead=dead, num_tokens=int(count))


@torch.no_grad()
def zero_dead_columns_(weight: Tensor, dead: Tensor) -> Tensor:
    """Zero the input columns of ``weight`` (d_out, d_in) whose inputs are dead; in place."""
    if weight.ndim != 2 or dead.shape != (weight.shape[1],):
        raise ValueError(
            f"weight must be (d_out, d_in) and dead (d_in,); "
            f"got {tuple(weight.shape)} and {tuple(dead.shape)}"
        )
    weight[:, dead.to(weight.device)] = 0
    return weight
