"""Collect masked mini-batch gradients and build oBERT's block-diagonal Fisher inverses.

The math is in ``ops/fisher.py``; this module is the glue that touches models and data.

Why outer-product sums and not the Sherman-Morrison recursion (``BlockFisherInverse``): both
give ``inv(damp*I + (1/m) sum g g^T)``, but the sums (1) merge across processes with one
``all_reduce`` (data-parallel runs, DESIGN.md "Scale beyond one machine"), (2) are shared by every
value of a damp grid (one gradient pass, one inversion per damp), (3) are inverted in float64
(the recursion runs at 1/damp = 1e7 scale in the working dtype), and (4) accept gradients
``chunk`` at a time as one batched matmul, so the (num_blocks, B, B) state is swept once per
chunk instead of twice per gradient (measured on MiniLM, 1 thread: ~0.05 s of Fisher work per
gradient at chunk=16 vs ~0.3 s one at a time).

Memory: one fp32 (ceil(numel/B), B, B) tensor per targeted weight, i.e. about ``4*B`` bytes per
weight: O(numel * B). MiniLM-L6's encoder (10.6M weights) at B=50 holds 2.1 GB; BERT-base
(85M) 17 GB. The inversion is done tensor by tensor, so it adds one tensor's float64 copies.
"""

from __future__ import annotations

import resource
import time
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from compresslab.ops.fisher import fisher_inverse_from_outer_sums, num_blocks, to_blocks

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LossFn = Callable[[nn.Module, dict[str, Tensor]], Tensor]


def task_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Mean task loss of one batch (CE, or MSE for one output): the empirical Fisher's loss.

    Not the KD loss: at the start of pruning the student equals the teacher, so the KD gradient
    is exactly zero and its Fisher would be ``damp*I`` (magnitude pruning in disguise).
    """
    from compresslab.training.losses import TaskLoss

    out = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS}, return_dict=True)
    return TaskLoss()(out, None, batch)


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_batches(loader: Any, device: torch.device) -> Iterator[dict[str, Tensor]]:
    """Endless batches for this rank: every ``world``-th batch, so ranks see disjoint data."""
    rank, world = _world()
    i = 0
    while True:
        empty = True
        for batch in loader:
            empty = False
            if i % world == rank:
                yield {k: v.to(device) for k, v in batch.items()}
            i += 1
        if empty:
            raise ValueError("the gradient loader is empty")


def peak_memory_mb(device: torch.device) -> float:
    """High-water mark: CUDA allocator peak, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def collect_outer_sums(model: nn.Module, modules: Mapping[str, nn.Linear], pruned: Mapping[str, Tensor],
                       batches: Iterator[dict[str, Tensor]], num_grads: int, block_size: int,
                       loss_fn: LossFn = task_loss, chunk: int = 16, progress: Any = None) -> dict[str, Tensor]:
    """Per module, sum over ``num_grads`` masked mini-batch gradients of per-block ``g g^T`` (fp32).

    Gradients come from eval mode (no dropout). Masking is applied once to the sums, since
    ``sum (m*g)(m*g)^T = (m m^T) * sum g g^T`` for a fixed mask ``m``. Gradients are buffered
    ``chunk`` at a time (``chunk * 4 * numel`` bytes) so each block's sum is one (B, k) x (k, B)
    product per chunk. With torch.distributed initialised, the ``num_grads`` are split over
    ranks and the sums all-reduced, so every rank returns the same total.
    """
    rank, world = _world()
    names = list(modules)
    params = [modules[n].weight for n in names]
    nbs = [num_blocks(p.numel(), block_size) for p in params]
    sums = {n: torch.zeros(nb, block_size, block_size, dtype=torch.float32, device=p.device)
            for n, nb, p in zip(names, nbs, params)}
    local = len(range(rank, num_grads, world))
    k = max(1, min(chunk, local))
    # (k, nb*B) per module; the zero-padded tail of each row is never written
    bufs = [torch.zeros(k, nb * block_size, dtype=torch.float32, device=p.device) for nb, p in zip(nbs, params)]
    was_training, had_grad = model.training, [p.requires_grad for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(True)
    steps = range(local) if progress is None else progress(range(local), total=local, desc="fisher grads")
    try:
        j = 0
        for i in steps:
            grads = torch.autograd.grad(loss_fn(model, next(batches)), params)
            for buf, g in zip(bufs, grads):
                buf[j, : g.numel()].copy_(g.reshape(-1))
            j += 1
            if j == k or i == local - 1:
                for n, nb, buf in zip(names, nbs, bufs):
                    gb = buf[:j].view(j, nb, block_size).permute(1, 0, 2)  # (nb, j, B) view
                    sums[n].baddbmm_(gb.transpose(1, 2), gb)  # += sum_j g_j g_j^T per block
                j = 0
    finally:
        model.train(was_training)
        for p, h in zip(params, had_grad):
            p.requires_grad_(h)
    del bufs
    for n in names:
        if pruned[n].any():
            keep = to_blocks((~pruned[n]).to(sums[n]), block_size)  # (nb, B)
            sums[n].mul_(keep.unsqueeze(2)).mul_(keep.unsqueeze(1))
    if world > 1:
        import torch.distributed as dist

        for n in names:
            dist.all_reduce(sums[n])
    return sums


def invert_sums(sums: dict[str, Tensor], num_grads: int, damp: float, consume: bool = False) -> dict[str, Tensor]:
    """Block inverses of ``damp*I + sums/num_grads`` per module, one tensor at a time.

    ``consume=True`` frees each sum as soon as it is inverted, so peak memory stays one copy
    of the Fisher state (plus one tensor's float64 temporaries).
    """
    out: dict[str, Tensor] = {}
    for n in list(sums):
        out[n] = fisher_inverse_from_outer_sums(sums[n], num_grads, damp)
        if consume:
            del sums[n]
    return out


def timed_inverses(model: nn.Module, modules: Mapping[str, nn.Linear], pruned: Mapping[str, Tensor],
                   batches: Iterator[dict[str, Tensor]], num_grads: int, block_size: int, damp: float,
                   loss_fn: LossFn = task_loss, progress: Any = None) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Collect + invert, with (seconds, Fisher state MB, peak memory MB) for the manifest."""
    device = next(iter(modules.values())).weight.device
    t0 = time.perf_counter()
    sums = collect_outer_sums(model, modules, pruned, batches, num_grads, block_size, loss_fn, progress=progress)
    t1 = time.perf_counter()
    state_mb = sum(s.numel() * s.element_size() for s in sums.values()) / 2**20
    finv = invert_sums(sums, num_grads, damp, consume=True)
    t2 = time.perf_counter()
    return finv, {"grads_s": t1 - t0, "invert_s": t2 - t1, "state_mb": state_mb,
                  "peak_mb": peak_memory_mb(device)}


__all__ = ["LossFn", "collect_outer_sums", "invert_sums", "peak_memory_mb", "rank_batches", "task_loss", "timed_inverses"]
