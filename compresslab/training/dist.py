"""Data-parallel helpers: this process's rank, and its share of a loader's batches.

Statistics (Fisher outer-product sums, layer Hessians) are summed per rank over disjoint batches
and all-reduced before anything is divided or inverted (DESIGN.md "Scale beyond one machine").
Without ``torch.distributed`` initialised every helper behaves as a world of one.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` when not distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_batches(loader: Any, device: torch.device) -> Iterator[dict[str, Tensor]]:
    """Endless batches for this rank: every ``world``-th batch, so ranks see disjoint data."""
    rank, size = world()
    i = 0
    while True:
        empty = True
        for batch in loader:
            empty = False
            if i % size == rank:
                yield {k: v.to(device) for k, v in batch.items()}
            i += 1
        if empty:
            raise ValueError("the gradient loader is empty")


__all__ = ["rank_batches", "world"]
