"""Collect masked mini-batch gradients and build oBERT's block-diagonal Fisher inverses.

The math is in ``ops/fisher.py`` and ``ops/obs.py``; this module is the glue that touches models
and data, and :class:`OBSScorer`, the :class:`~compresslab.pruning.unstructured.Scorer` that
``obert`` plugs into the shared pruning driver.

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

import time
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn

from compresslab.bench.env import peak_memory_mb
from compresslab.failure import raise_if_interrupted
from compresslab.ops.fisher import fisher_inverse_from_outer_sums, num_blocks, to_blocks
from compresslab.ops.obs import obs_scores, obs_update
from compresslab.runlock import holds_training_lock
from compresslab.training.dist import world
from compresslab.training.losses import LossFn, task_loss
from compresslab.training.resume import ResumeError

# Blocks per inversion call: a held Ctrl-C waits for one call at most. A MiniLM FFN weight (11.8k blocks of
# 50) took 7-17 s as one call on 2 busy cores, a chunk of 2048 blocks 1.5-4 s, and BERT-base's weights are 4x
# larger; at 1024, a SIGINT in MiniLM's inverse stopped the run 0.2 s later. Blocks are inverted
# independently, so the result is the same bit for bit at any chunk.
INVERT_CHUNK = 1024


@holds_training_lock("fisher")  # as heavy as training: timings elsewhere wait for it
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
    rank, world_size = world()
    names = list(modules)
    params = [modules[n].weight for n in names]
    nbs = [num_blocks(p.numel(), block_size) for p in params]
    sums = {n: torch.zeros(nb, block_size, block_size, dtype=torch.float32, device=p.device)
            for n, nb, p in zip(names, nbs, params)}
    local = len(range(rank, num_grads, world_size))
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
            raise_if_interrupted()  # a rebuild runs inside a training step (gradual events): stop between gradients
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
    if world_size > 1:
        import torch.distributed as dist

        for n in names:
            dist.all_reduce(sums[n])
    return sums


@holds_training_lock("fisher inverse")
def invert_sums(sums: dict[str, Tensor], num_grads: int, damp: float, consume: bool = False,
                progress: Any = None) -> dict[str, Tensor]:
    """Block inverses of ``damp*I + sums/num_grads`` per module, one tensor at a time.

    ``consume=True`` frees each sum as soon as it is inverted, so peak memory stays one copy
    of the Fisher state (plus one tensor's float64 temporaries). ``progress`` (the run's
    reporter) shows one tick per module: inverting MiniLM's 36 weights takes 44-225 s on 2 cores.
    """
    out: dict[str, Tensor] = {}
    names = list(sums)
    steps = names if progress is None else progress(names, total=len(names), desc="fisher inverse")
    for n in steps:
        s = sums[n]
        inv = torch.empty_like(s)  # filled chunk by chunk: also keeps the float64 temporaries to one chunk's
        for lo in range(0, s.shape[0], INVERT_CHUNK):
            raise_if_interrupted()
            inv[lo:lo + INVERT_CHUNK] = fisher_inverse_from_outer_sums(s[lo:lo + INVERT_CHUNK], num_grads, damp)
        out[n] = inv
        del s
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
    finv = invert_sums(sums, num_grads, damp, consume=True, progress=progress)
    t2 = time.perf_counter()
    return finv, {"grads_s": t1 - t0, "invert_s": t2 - t1, "state_mb": state_mb,
                  "peak_mb": peak_memory_mb(device)}


def fisher_state_bytes(module: nn.Linear, block_size: int) -> int:
    """Bytes of one module's fp32 (num_blocks, B, B) Fisher state."""
    return num_blocks(module.weight.numel(), block_size) * block_size * block_size * 4


def stream_groups(modules: Mapping[str, nn.Linear], block_size: int, max_state_mb: float | None) -> list[list[str]]:
    """Consecutive module groups whose Fisher state fits ``max_state_mb`` (one group when None).

    A module larger than the budget gets a group of its own (the budget cannot split a tensor).
    """
    names = list(modules)
    if max_state_mb is None:
        return [names]
    cap, groups, cur, used = max_state_mb * 2**20, [], [], 0
    for n in names:
        b = fisher_state_bytes(modules[n], block_size)
        if cur and used + b > cap:
            groups.append(cur)
            cur, used = [], 0
        cur.append(n)
        used += b
    return groups + ([cur] if cur else [])


class DrawnBatches:
    """An iterator that counts what it gave: a resumed run skips as many to continue the same stream."""

    def __init__(self, batches: Iterator[dict[str, Tensor]]) -> None:
        self.batches, self.drawn = batches, 0

    def __iter__(self) -> "DrawnBatches":
        return self

    def __next__(self) -> dict[str, Tensor]:
        batch = next(self.batches)
        self.drawn += 1
        return batch

    def skip_to(self, drawn: int) -> None:
        """Draw (and drop) batches until ``drawn`` have been given; ResumeError if more were given already."""
        if self.drawn > drawn:
            raise ResumeError(f"the checkpoint's Fisher batch stream is at batch {drawn}, this run's at "
                              f"{self.drawn} already: it is not built the same way")
        for _ in range(drawn - self.drawn):
            next(self)


class OBSScorer:
    """Fisher inverses from fresh gradients at each ``scores`` call, used once by ``update``.

    Memory is bounded by ``max_state_mb``: when the whole encoder's (num_blocks, B, B) state would
    not fit (BERT-base at B=50 needs 17 GB), modules are processed in groups. Saliencies need every
    group's inverse before the global threshold is known, and the OBS update needs them again after,
    so a streamed step costs two gradient passes per group (fresh mini-batches each time: both are
    estimates of the same Fisher) instead of one pass in total.
    """

    def __init__(self, batches: Iterator[dict[str, Tensor]], num_grads: int, block_size: int, damp: float,
                 group_size: int = 1, progress: Any = None, sums: dict[str, Tensor] | None = None,
                 loss_fn: LossFn = task_loss, max_state_mb: float | None = None) -> None:
        self.batches = batches if isinstance(batches, DrawnBatches) else DrawnBatches(batches)
        self.num_grads, self.block_size = num_grads, block_size
        self.damp, self.group_size, self.progress, self.loss_fn = damp, group_size, progress, loss_fn
        self.max_state_mb = max_state_mb
        self._sums = sums  # precomputed outer sums for the first step (damp grid), not consumed
        self._finv: dict[str, Tensor] | None = None
        self._groups: list[list[str]] | None = None  # set when the last scores() call streamed
        self._model: nn.Module | None = None  # the model scores() saw: update() rebuilds inverses on it
        self.metrics: dict[str, Any] = {"fisher_s": 0.0, "fisher_invert_s": 0.0, "fisher_grads": 0,
                                        "fisher_state_mb": 0.0, "fisher_peak_mb": 0.0, "fisher_groups": 1}

    def state_dict(self) -> dict[str, Any]:
        """The gradient stream's position (a training callback's state: gradual pruning's checkpoints keep it)."""
        return {"batches_drawn": self.batches.drawn}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the stream where the checkpointed run was: the next rebuild sees the batches it would have."""
        self.batches.skip_to(int(state["batches_drawn"]))

    def _inverses(self, model: nn.Module, modules: Mapping[str, nn.Linear],
                  pruned: Mapping[str, Tensor]) -> dict[str, Tensor]:
        finv, t = timed_inverses(model, modules, pruned, self.batches, self.num_grads, self.block_size,
                                 self.damp, self.loss_fn, self.progress)
        m = self.metrics
        m["fisher_s"] = round(m["fisher_s"] + t["grads_s"] + t["invert_s"], 3)
        m["fisher_invert_s"] = round(m["fisher_invert_s"] + t["invert_s"], 3)
        m["fisher_grads"] += self.num_grads
        m["fisher_state_mb"] = round(max(m["fisher_state_mb"], t["state_mb"]), 1)
        m["fisher_peak_mb"] = round(max(m["fisher_peak_mb"], t["peak_mb"]), 1)
        return finv

    def scores(self, model: nn.Module, modules: Mapping[str, nn.Linear],
               pruned: Mapping[str, Tensor]) -> dict[str, Tensor]:
        groups = stream_groups(modules, self.block_size, self.max_state_mb)
        self._groups = groups if len(groups) > 1 else None
        self._model = model
        self.metrics["fisher_groups"] = len(groups)
        if self._sums is not None:
            if self._groups is not None:
                raise ValueError("precomputed Fisher sums (damp grid) need the whole state in memory; "
                                 "raise fisher_max_mb or drop damp_grid")
            t0 = time.perf_counter()
            self._finv, self._sums = invert_sums(self._sums, self.num_grads, self.damp, progress=self.progress), None
            self.metrics["fisher_invert_s"] = round(self.metrics["fisher_invert_s"] + time.perf_counter() - t0, 3)
            self.metrics["fisher_grads"] += self.num_grads  # collected once by the damp grid
        elif self._groups is None:
            self._finv = self._inverses(model, modules, pruned)
        else:
            out: dict[str, Tensor] = {}
            for g in self._groups:
                finv = self._inverses(model, {n: modules[n] for n in g}, pruned)
                out.update({n: obs_scores(modules[n].weight.detach().reshape(-1), finv[n], self.group_size)
                            for n in g})
                del finv
            return out
        return {n: obs_scores(m.weight.detach().reshape(-1), self._finv[n], self.group_size)
                for n, m in modules.items()}

    @torch.no_grad()
    def _deltas(self, modules: Mapping[str, nn.Linear], finv: dict[str, Tensor], new: Mapping[str, Tensor],
                pruned: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for n, mod in modules.items():
            out[n] = obs_update(mod.weight.detach().reshape(-1), finv[n], new[n], self.group_size, pruned[n])
            del finv[n]  # free each inverse as soon as it is used (§2.6)
        return out

    @staticmethod
    @torch.no_grad()
    def _apply(modules: Mapping[str, nn.Linear], deltas: Mapping[str, Tensor]) -> None:
        for n, delta in deltas.items():
            w = modules[n].weight
            w.add_(delta.view_as(w).to(w.dtype))  # pruned entries: w + (-w) == 0 exactly

    def update(self, modules: Mapping[str, nn.Linear], new: Mapping[str, Tensor],
               pruned: Mapping[str, Tensor]) -> None:
        if self._groups is not None:
            # streamed: rebuild each group's inverse at the weights the saliencies saw, so every
            # group's update is computed before any is applied (one weight-sized buffer of deltas)
            deltas: dict[str, Tensor] = {}
            for g in self._groups:
                sub = {n: modules[n] for n in g}
                with torch.enable_grad():
                    finv = self._inverses(self._model, sub, pruned)
                deltas.update(self._deltas(sub, finv, new, pruned))
            self._apply(modules, deltas)
            self._groups = None
            return
        if self._finv is None:
            raise RuntimeError("OBSScorer.update() called before scores()")
        self._apply(modules, self._deltas(modules, self._finv, new, pruned))
        self._finv = None


__all__ = ["DrawnBatches", "INVERT_CHUNK", "OBSScorer", "collect_outer_sums", "fisher_state_bytes", "invert_sums",
           "stream_groups", "timed_inverses"]
