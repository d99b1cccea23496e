"""Property tests for the cubic sparsity schedule (ALGORITHMS.md §5 and §2.7, test 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compresslab.ops.obs import global_prune_masks
from compresslab.ops.schedule import (
    PruningEvent,
    cubic_sparsity,
    gradual_pruning_events,
    recomputation_targets,
)


def _curve(start: int = 10, end: int = 110, init: float = 0.7, final: float = 0.97):
    steps = np.arange(0, 130)
    return steps, np.array([cubic_sparsity(t, start, end, init, final) for t in steps])


def test_endpoints_and_clipping() -> None:
    assert cubic_sparsity(10, 10, 110, 0.7, 0.97) == 0.7
    assert cubic_sparsity(110, 10, 110, 0.7, 0.97) == pytest.approx(0.97, abs=1e-15)
    assert cubic_sparsity(0, 10, 110, 0.7, 0.97) == 0.7  # before start: init
    assert cubic_sparsity(500, 10, 110, 0.7, 0.97) == pytest.approx(0.97, abs=1e-15)


def test_matches_zhu_gupta_closed_form() -> None:
    # s(t) = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3
    for t in range(10, 111, 7):
        zg = 0.97 + (0.7 - 0.97) * (1 - (t - 10) / 100) ** 3
        assert cubic_sparsity(t, 10, 110, 0.7, 0.97) == pytest.approx(zg, abs=1e-12)


def test_monotone_concave_and_flat_at_end() -> None:
    _, s = _curve()
    assert np.all(np.diff(s) >= 0)
    inside = s[10:111]
    assert np.all(np.diff(inside, 2) <= 1e-12)  # concave on [start, end]
    slope_end = cubic_sparsity(110, 10, 110, 0.7, 0.97) - cubic_sparsity(109, 10, 110, 0.7, 0.97)
    slope_start = cubic_sparsity(11, 10, 110, 0.7, 0.97) - cubic_sparsity(10, 10, 110, 0.7, 0.97)
    assert slope_end < 1e-5 < slope_start


def test_obert_recipe_events() -> None:
    e = 100  # steps per epoch
    ev = gradual_pruning_events(30 * e, 7, 0.7, 0.9, start_step=2 * e, end_step=26 * e)
    assert [x.step for x in ev] == [t * e for t in range(2, 27, 4)]
    assert ev[0] == PruningEvent(200, 0.7)
    assert ev[-1].sparsity == pytest.approx(0.9, abs=1e-15)
    assert all(b.sparsity >= a.sparsity for a, b in zip(ev, ev[1:]))


def test_events_default_end_and_one_shot() -> None:
    ev = gradual_pruning_events(50, 6, 0.0, 0.8)
    assert ev[0] == PruningEvent(0, 0.0) and ev[-1].step == 50
    assert all(b.step > a.step for a, b in zip(ev, ev[1:]))
    assert gradual_pruning_events(50, 1, 0.5, 0.8, start_step=5) == [PruningEvent(5, 0.8)]


def test_recomputation_targets_are_linear_and_end_exactly() -> None:
    assert recomputation_targets(0.0, 0.8, 4) == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert recomputation_targets(0.7, 0.8, 1) == [0.8]
    assert recomputation_targets(0.1, 0.7, 3)[-1] == 0.7


def test_pruned_weights_never_revive_along_schedule() -> None:
    torch.manual_seed(0)
    shapes = [(13,), (6, 5), (41,)]
    total = sum(int(np.prod(s)) for s in shapes)
    masks, prev = None, None
    for ev in gradual_pruning_events(1000, 8, 0.3, 0.95, start_step=100, end_step=800):
        for target in recomputation_targets(prev or ev.sparsity, ev.sparsity, 2):
            scores = [torch.randn(s) for s in shapes]  # fresh, unrelated scores every time
            new = global_prune_masks(scores, masks, target)
            if masks is not None:
                assert all(torch.all(n[o]) for n, o in zip(new, masks))
            assert sum(int(m.sum()) for m in new) == round(target * total)
            masks = new
        prev = ev.sparsity


@pytest.mark.parametrize(
    "args",
    [
        (5, 0, 10, -0.1, 0.5),
        (5, 0, 10, 0.1, 1.5),
        (5, 0, 10, 0.8, 0.5),
        (5, 10, 0, 0.1, 0.5),
    ],
)
def test_cubic_invalid_raises_value_error(args: tuple) -> None:
    with pytest.raises(ValueError):
        cubic_sparsity(*args)


def test_events_invalid_raise_value_error() -> None:
    with pytest.raises(ValueError, match="num_events"):
        gradual_pruning_events(10, 0, 0.1, 0.5)
    with pytest.raises(ValueError, match="start_step"):
        gradual_pruning_events(10, 3, 0.1, 0.5, start_step=8, end_step=4)
    with pytest.raises(ValueError, match="at least"):
        gradual_pruning_events(10, 8, 0.1, 0.5, start_step=5)
    with pytest.raises(ValueError, match="s_target"):
        recomputation_targets(0.8, 0.5, 2)
