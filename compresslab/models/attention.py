"""Which attention implementation a model runs for export, parity and Hessian-vector products.

transformers' fused kernels (sdpa, flash, flex, ...) compute eager softmax attention but export as one opaque op
and have no double backward; :func:`eager_attention` switches them to eager for the block. Export (ORT's fuser
matches the eager op pattern) and HAWQ's HVPs (quant/sensitivity.py) both need it, so it lives with the models.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from torch import nn

log = logging.getLogger(__name__)


def _plain_attention() -> frozenset[str]:
    """Attention implementations written in plain torch ops, which export as they run: eager and
    Bi-Attention (binary models: ``bool`` of the binarized scores, no softmax)."""
    from compresslab.models.binary import BI_ATTENTION  # lazy: registers Bi-Attention with transformers

    return frozenset({"eager", BI_ATTENTION})


def _is_fused_kernel(name: str | None) -> bool:
    """True for transformers' own fused softmax-attention kernels (sdpa, flash, flex, paged, hub
    kernels ``org/repo``), whose eager form computes the same function; False for anything else.

    A custom implementation registered with ``AttentionInterface`` is *not* one: replacing it by
    eager softmax attention would change what the model computes (and parity, which runs the same
    swap on the torch side, would not notice). It is kept, and the exporter traces it as it is.
    """
    if name is None:
        return True
    if name in _plain_attention():
        return False
    from transformers import AttentionInterface

    fn = AttentionInterface._global_mapping.get(name)
    if fn is not None:
        return getattr(fn, "__module__", "").startswith("transformers.")
    return "/" in name or name.startswith(("sdpa", "flash", "flex", "paged"))


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Switch every config in ``model`` that uses a fused attention kernel to eager attention, and
    the model to eval mode; restore both after.

    Eager attention is the op pattern ORT's fuser matches (SDPA exports as one opaque op). Only
    transformers' fused kernels (sdpa, flash, flex, ...) are switched: they compute eager softmax
    attention. Plain-torch implementations (eager, Bi-Attention) and custom registered ones are
    kept, since swapping them would silently change the function exported and parity-checked.
    """
    configs = {id(m.config): m.config for m in model.modules()
               if hasattr(getattr(m, "config", None), "_attn_implementation")}
    saved = {k: c._attn_implementation for k, c in configs.items()}
    was_training = model.training
    try:
        for c in configs.values():
            if _is_fused_kernel(c._attn_implementation):
                c._attn_implementation = "eager"
            elif c._attn_implementation not in _plain_attention():
                log.info("attention implementation %r is not one of transformers' fused kernels: kept as is "
                         "for export and parity", c._attn_implementation)
        model.eval()
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = saved[k]
        model.train(was_training)


__all__ = ["eager_attention"]
