"""MaskKeeper: pruned weights stay zero through AdamW training, their moments stay zero."""

from __future__ import annotations

import pytest
import torch

from compresslab.data.loaders import make_loader
from compresslab.models.tiny import tiny_model
from compresslab.targets import layer_keys, select_modules
from compresslab.testing import tiny_sentiment
from compresslab.training import TaskLoss, TrainConfig, train
from compresslab.pruning.masks import MaskKeeper, sparsity_stats


def _half_masks(model) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"{n}.weight": torch.rand(m.weight.shape, generator=g) < 0.5 for n, m in select_modules(model).items()}


class _Spy:
    """Records, after every step, whether any pruned weight or Adam moment is non-zero."""

    def __init__(self, keeper: MaskKeeper) -> None:
        self.keeper, self.revived, self.steps = keeper, 0, 0

    def on_step_end(self, step, model, optimizer):
        self.steps += 1
        for name, mask in self.keeper.masks.items():
            p = model.get_parameter(name)
            bad = [p] + [v for v in optimizer.state[p].values() if torch.is_tensor(v) and v.shape == p.shape]
            self.revived += sum(int((t[mask] != 0).sum()) for t in bad)


def test_masks_hold_through_training(tiny_tok):
    model = tiny_model("bert")
    keeper = MaskKeeper(_half_masks(model))
    keeper.apply(model)
    spy = _Spy(keeper)
    loader = make_loader(tiny_sentiment(32, 0), tiny_tok, 8, 16, shuffle=True)
    before = {n: model.get_parameter(n).detach().clone() for n in keeper.masks}
    train(model, loader, TrainConfig(lr=1e-2, steps=5, batch_size=8), [TaskLoss()], callbacks=[keeper, spy])
    assert spy.steps == 5 and spy.revived == 0
    moved = sum(int((model.get_parameter(n) != before[n])[~m].sum()) for n, m in keeper.masks.items())
    assert moved > 0  # the surviving weights did train


def test_without_keeper_weights_revive(tiny_tok):
    """The control: AdamW alone moves zeroed weights (why the keeper exists)."""
    model = tiny_model("bert")
    keeper = MaskKeeper(_half_masks(model))
    keeper.apply(model)
    loader = make_loader(tiny_sentiment(16, 0), tiny_tok, 8, 16)
    train(model, loader, TrainConfig(lr=1e-2, steps=2, batch_size=8), [TaskLoss()])
    assert any(bool((model.get_parameter(n)[m] != 0).any()) for n, m in keeper.masks.items())


def test_mask_validation_and_from_zeros():
    model = tiny_model("bert")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    with pytest.raises(ValueError, match="bool"):
        MaskKeeper({name: torch.zeros(32, 32)})
    with pytest.raises(ValueError, match="shape"):
        MaskKeeper({name: torch.zeros(3, dtype=torch.bool)}).apply(model)
    with torch.no_grad():
        model.get_parameter(name)[:4] = 0
    k = MaskKeeper.from_zeros(model, [name])
    assert k.num_pruned() == 4 * 32


def test_sparsity_stats_counts_zeros_per_layer():
    model = tiny_model("bert")
    mods = select_modules(model)
    with torch.no_grad():
        for n, m in mods.items():
            if ".layer.0." in n:
                m.weight.zero_()
    s = sparsity_stats(mods, layer_keys(model, mods))
    assert s["layer_sparsity"] == {"layer.0": 1.0, "layer.1": 0.0}
    assert s["sparsity"] == pytest.approx(0.5) and s["num_targeted"] == 2 * s["num_zero"]
