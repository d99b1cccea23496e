"""Keep pruned weights at zero while training, and count sparsity.

Why a callback and not a hook: AdamW moves a zero weight as soon as its gradient or its moments
are non-zero (and a weight pruned mid-training still carries moments from when it was alive),
so after every optimizer step the mask is re-applied and the Adam moments of pruned entries are
zeroed (ALGORITHMS.md §2.6 "keep pruned weights at zero"). Masks are bool with ``True`` meaning
*pruned*, the convention of ``compresslab.ops.obs``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn


class MaskKeeper:
    """Training-loop callback holding one bool mask per parameter (qualified name -> mask).

    Use ``apply(model)`` after changing masks; pass the keeper in ``callbacks=`` of
    :func:`compresslab.training.train` so masks hold through every optimizer step.
    """

    def __init__(self, masks: Mapping[str, Tensor] | None = None) -> None:
        self.masks: dict[str, Tensor] = {}
        if masks:
            self.update(masks)

    @classmethod
    def from_zeros(cls, model: nn.Module, param_names: list[str]) -> "MaskKeeper":
        """Masks that keep today's exact zeros at zero (resuming from a pruned checkpoint)."""
        return cls({n: model.get_parameter(n).detach() == 0 for n in param_names})

    def update(self, masks: Mapping[str, Tensor]) -> None:
        """Replace the masks of the given parameters (others keep theirs)."""
        for name, m in masks.items():
            if m.dtype != torch.bool:
                raise ValueError(f"mask for {name} must be bool (True = pruned), got {m.dtype}")
            self.masks[name] = m.detach()

    def _mask_for(self, name: str, p: Tensor) -> Tensor:
        m = self.masks[name]
        if m.shape != p.shape:
            raise ValueError(f"mask for {name} has shape {tuple(m.shape)}, parameter has {tuple(p.shape)}")
        if m.device != p.device:  # the loop may have moved the model (accelerate); follow it once
            m = self.masks[name] = m.to(p.device)
        return m

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero every pruned entry in place."""
        for name in self.masks:
            p = model.get_parameter(name)
            p.masked_fill_(self._mask_for(name, p), 0.0)

    @torch.no_grad()
    def zero_moments(self, model: nn.Module, optimizer: Any) -> None:
        """Zero optimizer state (AdamW exp_avg, exp_avg_sq, ...) of pruned entries."""
        state = optimizer.state
        for name in self.masks:
            p = model.get_parameter(name)
            mask = self._mask_for(name, p)
            for v in state.get(p, {}).values():
                if isinstance(v, Tensor) and v.shape == p.shape:
                    v.masked_fill_(mask, 0.0)

    def on_step_end(self, step: int, model: nn.Module, optimizer: Any) -> None:
        self.apply(model)
        self.zero_moments(model, optimizer)

    def num_pruned(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))


def sparsity_stats(modules: Mapping[str, nn.Module], layer_of: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Sparsity (fraction of exact zeros) of the modules' weights: overall, per layer, per tensor.

    Counted from the weights, not from masks, because a saved model carries only its zeros.
    ``layer_of`` maps a module name to its layer key (``"layer.0"``); default: the name itself.
    """
    zeros: dict[str, int] = {}
    sizes: dict[str, int] = {}
    per_tensor: dict[str, float] = {}
    for name, mod in modules.items():
        w = mod.weight.detach()
        z, n = int((w == 0).sum()), w.numel()
        per_tensor[name] = round(z / n, 6)
        key = (layer_of or {}).get(name, name)
        zeros[key] = zeros.get(key, 0) + z
        sizes[key] = sizes.get(key, 0) + n
    total_z, total_n = sum(zeros.values()), sum(sizes.values())
    return {"sparsity": round(total_z / max(1, total_n), 6), "num_zero": total_z, "num_targeted": total_n,
            "layer_sparsity": {k: round(zeros[k] / sizes[k], 6) for k in zeros},
            "tensor_sparsity": per_tensor}


__all__ = ["MaskKeeper", "sparsity_stats"]
