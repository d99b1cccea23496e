"""Hessian-vector products of a loss with respect to chosen weights: the mode they run in, the per-batch
gradient graph and the product function, as every sensitivity measure of :mod:`compresslab.quant.sensitivity`
takes them (math in ``ops/loss_hessian.py``).

:func:`batch_hvps` is the one entry for code outside this package (benchmarks/hessian_sensitivity.py probes the
HVPs directly): the mode for the whole block, one product function per batch.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from compresslab.models.attention import eager_attention
from compresslab.ops.loss_hessian import hvp
from compresslab.training.losses import LossFn

__all__ = ["EAGER_NOTE", "HVP", "DoubleBackwardError", "batch_hvps", "gradient_graph", "hessian_mode", "hvp_fn"]

HVP = Callable[[list[Tensor]], list[Tensor]]  # [v_i] (each of params[i]'s shape) -> [(H v)_i]

EAGER_NOTE = ("transformers' fused attention kernels (sdpa, flash, ...) run as eager here, but an attention "
              "implementation registered by you is kept as it is: load the model with attn_implementation='eager'")


class DoubleBackwardError(ValueError, RuntimeError):
    """An op on the loss path has no double backward, even with eager attention."""


@contextlib.contextmanager
def hessian_mode(model: nn.Module, targets: Sequence[Tensor]) -> Iterator[torch.dtype]:
    """Eval + eager attention, float32 compute, grad only on ``targets``; all restored on exit.
    Yields the compute dtype."""
    tensors = list(model.parameters()) + list(model.buffers())
    cast = [t for t in tensors if t.dtype in (torch.float16, torch.bfloat16)]
    saved_dtypes = [t.dtype for t in cast]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    target_ids = {id(t) for t in targets}
    try:
        for t in cast:
            t.data = t.data.float()
        for p in params:
            p.requires_grad_(id(p) in target_ids)
        with eager_attention(model):
            yield targets[0].dtype
    finally:
        for t, dt in zip(cast, saved_dtypes):
            t.data = t.data.to(dt)
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def gradient_graph(model: nn.Module, batch: dict[str, Tensor], params: list[Tensor],
                   loss_fn: LossFn) -> list[Tensor | None]:
    """Gradients of the loss with ``create_graph=True`` (the HVP graph for this batch); None for a
    weight the loss does not reach."""
    loss = loss_fn(model, batch)
    try:
        return list(torch.autograd.grad(loss, params, create_graph=True, allow_unused=True))
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as e:  # pragma: no cover - depends on the model's ops
        raise DoubleBackwardError(f"cannot build the gradient graph for Hessian-vector products: {e}") from e


def hvp_fn(grads: list[Tensor | None], params: list[Tensor]) -> HVP:
    """The product ``v -> H v`` on the graph ``grads`` (from :func:`gradient_graph`), one tensor per weight of
    ``params``; a weight the loss does not reach gets zeros. The function holds the graph: drop it to free it.
    DoubleBackwardError (naming the eager-attention rule) when an op on the path has no second derivative."""
    live = [i for i, g in enumerate(grads) if g is not None]

    def fn(vecs: list[Tensor]) -> list[Tensor]:
        out = [torch.zeros_like(p) for p in params]
        try:
            hv = hvp([grads[i] for i in live], [params[i] for i in live], [vecs[i] for i in live])  # type: ignore[misc]
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as e:
            raise DoubleBackwardError(
                f"double backward failed; an op on the loss path has no second derivative. {EAGER_NOTE}: {e}") from e
        for i, h in zip(live, hv):
            out[i] = h
        return out

    return fn


@contextlib.contextmanager
def batch_hvps(model: nn.Module, params: list[Tensor]) -> Iterator[Callable[[dict[str, Tensor], LossFn], HVP]]:
    """Hessian-vector products of ``model``'s loss with respect to ``params`` (weights of ``model``), batch by batch,
    in the mode the sensitivity measures use (:func:`hessian_mode`: eval, eager attention, float32 compute, grad on
    ``params`` only; all restored on exit).

    Yields ``hvps(batch, loss_fn) -> fn``: the gradient graph of ``loss_fn(model, batch)`` is built once
    (:func:`gradient_graph`) and ``fn([v_i]) -> [(H v)_i]`` probes it as often as wanted (:func:`hvp_fn`; drop
    ``fn`` to free the graph). A batch's tensors must be on the model's device. DoubleBackwardError when an op on
    the loss path has no second derivative."""
    with hessian_mode(model, params):
        yield lambda batch, loss_fn: hvp_fn(gradient_graph(model, batch, params, loss_fn), params)
