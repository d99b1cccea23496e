"""Collect masked mini-batch gradients and build oBERT's block-diagonal Fisher inverses.

The math is in ``ops/fisher.py``; this module is the glue that touches models and data.

Why outer-product sums and not the Sherman-Morrison recursion (``BlockFisherInverse``): both
give ``inv(damp*I + (1/m) sum g g^T)``, but the sums (1) merge across processes with one
``all_reduce`` (data-parallel runs, DESIGN.md "Scale beyond one machine"), (2) are shared by every
value of a damp grid (one gradient pass, one inversion per damp), (3) are inverted in float64
(the recursion runs at 1/damp = 1e7 scale in the working dtype), and (4) accept gradients
``chunk`` at a time as one batched matmul, so the (num_blocks, B, B) state is swept once per
chunk instead of twice per gradient.

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
                       loss_fn: LossFn = task_loss, chunk: int = 8, progress: Any = None) -> dict[str, Tensor]:
    """Per module, sum over ``num_grads`` mini-batch gradients of per-block ``g g^T`` (fp32).

    Gradients come from eval mode (no dropout) and are masked (pruned coordinates contribute
    nothing). With torch.distributed initialised, the ``num_grads`` are split over ranks and the
    sums all-reduced, so every rank returns the same total.
    """
    rank, world = _world()
    names = list(modules)
    params = [modules[n].weight for n in names]
    sums = {n: torch.zeros(num_blocks(p.numel(), block_size), block_size, block_size, dtype=torch.float32,
                           device=p.device) for n, p in zip(names, params)}
    keep = {n: ~pruned[n].to(p.device) for n, p in zip(names, params)}
    local = len(range(rank, num_grads, world))
    was_training, had_grad = model.training, [p.requires_grad for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(True)
    bufs: dict[str, list[Tensor]] = {n: [] for n in names}
    steps = range(local)
    if progress is not None:
        steps = progress(steps, total=local, desc="fisher grads")
    try:
        for i in steps:
            grads = torch.autograd.grad(loss_fn(model, next(batches)), params)
            for n, g in zip(names, grads):
                bufs[n].append(to_blocks((g.reshape(-1) * keep[n]).float(), block_size))  # (nb, B)
            if len(bufs[names[0]]) == chunk or i == local - 1:
                for n in names:
                    gb = torch.stack(bufs[n], dim=2)  # (nb, B, k): k gradients side by side
                    sums[n].baddbmm_(gb, gb.transpose(1, 2))  # += sum_j g_j g_j^T per block
                    bufs[n].clear()
    finally:
        model.train(was_training)
        for p, h in zip(params, had_grad):
            p.requires_grad_(h)
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
                   progress: Any = None) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Collect + invert, with (seconds, Fisher state MB, peak memory MB) for the manifest."""
    device = next(iter(modules.values())).weight.device
    t0 = time.perf_counter()
    sums = collect_outer_sums(model, modules, pruned, batches, num_grads, block_size, progress=progress)
    t1 = time.perf_counter()
    state_mb = sum(s.numel() * s.element_size() for s in sums.values()) / 2**20
    finv = invert_sums(sums, num_grads, damp, consume=True)
    t2 = time.perf_counter()
    return finv, {"grads_s": t1 - t0, "invert_s": t2 - t1, "state_mb": state_mb,
                  "peak_mb": peak_memory_mb(device)}


__all__ = ["collect_outer_sums", "invert_sums", "peak_memory_mb", "rank_batches", "task_loss", "timed_inverses"]
