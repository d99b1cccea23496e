"""Property tests for OBS saliency/update and global ranking (ALGORITHMS.md §2.7, 2-4, 6)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch

from compresslab.ops.fisher import BlockFisherInverse
from compresslab.ops.obs import (
    block4_scores,
    expand_group_mask,
    global_prune_masks,
    magnitude_scores,
    obs_prune_set,
    obs_scores,
    obs_update,
    unstructured_scores,
)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _spd(n: int) -> torch.Tensor:
    m = torch.randn(n, n, dtype=F64)
    return m @ m.T + 0.5 * torch.eye(n, dtype=F64)


def _loss(w: torch.Tensor, w_star: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    d = w - w_star
    return 0.5 * d @ a @ d


def _kkt(w_star: torch.Tensor, a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """argmin_w 0.5 (w-w*)^T A (w-w*) s.t. w_Q = 0, via the KKT linear system."""
    n, q = w_star.numel(), idx.numel()
    e = torch.eye(n, dtype=F64)[idx]  # (q, n)
    k = torch.zeros(n + q, n + q, dtype=F64)
    k[:n, :n], k[:n, n:], k[n:, :n] = a, e.T, e
    rhs = torch.cat([a @ w_star, torch.zeros(q, dtype=F64)])
    return torch.linalg.solve(k, rhs)[:n]


def _fisher(numel: int, bsz: int, damp: float, m: int = 24, dtype=F64):
    """A BlockFisherInverse plus its dense per-block Fisher (float64) for brute force."""
    grads = torch.randn(m, numel, dtype=F64) * torch.linspace(0.2, 3.0, numel, dtype=F64)
    fi = BlockFisherInverse(numel, bsz, damp, m, dtype=dtype)
    for g in grads:
        fi.update(g)
    return fi, torch.linalg.inv(fi.inverse.double())


@pytest.mark.parametrize("trial", range(6))
def test_obs_exact_on_quadratic_for_random_sets(trial: int) -> None:
    n = 8
    a, w_star = _spd(n), torch.randn(n, dtype=F64)
    idx = torch.randperm(n)[: 1 + trial % 4]  # arbitrary Q, |Q| in 1..4
    rho, delta = obs_prune_set(w_star, torch.linalg.inv(a), idx)
    w_new = w_star + delta
    assert w_new[idx].abs().max() < 1e-12
    assert torch.isclose(_loss(w_new, w_star, a), rho, rtol=1e-10)
    assert torch.allclose(w_new, _kkt(w_star, a, idx), atol=1e-10)
    for _ in range(200):  # any other feasible point is no better
        w = torch.randn(n, dtype=F64) * 0.3 + w_new
        w[idx] = 0.0
        assert _loss(w, w_star, a) >= rho - 1e-12


@pytest.mark.parametrize("group_size", [1, 4])
def test_batched_scores_and_update_match_kkt(group_size: int) -> None:
    n = 16  # one Fisher block; F^-1 = A^-1 makes the local model exact
    a, w_star = _spd(n), torch.randn(n, dtype=F64)
    finv = torch.linalg.inv(a)[None]
    scores = obs_scores(w_star, finv, group_size)
    assert scores.shape == (n // group_size,)
    for gi in range(n // group_size):
        idx = torch.arange(gi * group_size, (gi + 1) * group_size)
        new = torch.zeros(n, dtype=torch.bool)
        new[idx] = True
        w_new = w_star + obs_update(w_star, finv, new, group_size)
        assert torch.all(w_new[idx] == 0)
        assert torch.allclose(w_new, _kkt(w_star, a, idx), atol=1e-10)
        assert torch.isclose(_loss(w_new, w_star, a), scores[gi], rtol=1e-10)


def test_block_size_one_reduces_to_diagonal_formula() -> None:
    numel, damp, m = 30, 1e-2, 10
    grads = torch.randn(m, numel, dtype=F64) * torch.rand(numel, dtype=F64) * 3
    fi = BlockFisherInverse(numel, 1, damp, m, dtype=F64)
    for g in grads:
        fi.update(g)
    w = torch.randn(numel, dtype=F64)
    f_diag = damp + grads.square().mean(dim=0)
    assert torch.allclose(unstructured_scores(w, fi.inverse), w.square() * f_diag / 2, rtol=1e-10)
    # The Fisher must matter: with such uneven gradients the order differs from magnitude.
    assert not torch.equal(unstructured_scores(w, fi.inverse).argsort(), w.abs().argsort())


@pytest.mark.parametrize("group_size", [1, 4])
def test_large_damp_reduces_to_magnitude_ranking(group_size: int) -> None:
    fi, _ = _fisher(64, 16, damp=1e7)
    w = torch.randn(64, dtype=F64)
    obs = obs_scores(w, fi.inverse, group_size)
    mag = magnitude_scores(w, group_size)
    assert torch.equal(obs.argsort(), mag.argsort())
    if group_size == 1:
        assert torch.equal(mag.argsort(), w.abs().argsort())


def test_block4_matches_brute_force_constrained_minimization() -> None:
    numel, bsz = 32, 16
    fi, f_dense = _fisher(numel, bsz, damp=0.1)
    w = torch.randn(numel, dtype=F64)
    scores = block4_scores(w, fi.inverse)
    for gi in (0, 3, 5, 7):  # groups in both blocks
        blk, off = divmod(gi * 4, bsz)
        f = f_dense[blk].numpy()
        wq = w[gi * 4 : gi * 4 + 4].numpy()
        free = np.setdiff1d(np.arange(bsz), np.arange(off, off + 4))

        def obj(x: np.ndarray) -> tuple[float, np.ndarray]:
            d = np.zeros(bsz)
            d[off : off + 4], d[free] = -wq, x  # constraint w_Q + d_Q = 0 built in
            return 0.5 * d @ f @ d, (f @ d)[free]

        res = scipy.optimize.minimize(obj, np.zeros(free.size), jac=True, method="BFGS",
                                      options={"gtol": 1e-12, "maxiter": 1000})
        assert scores[gi].item() == pytest.approx(res.fun, rel=1e-6)
        new = torch.zeros(numel, dtype=torch.bool)
        new[gi * 4 : gi * 4 + 4] = True
        delta = obs_update(w, fi.inverse, new, group_size=4)
        assert torch.all((w + delta)[new] == 0)
        assert np.allclose(delta[blk * bsz : (blk + 1) * bsz].numpy()[free], res.x, atol=1e-5)
        assert delta[(blk ^ 1) * bsz : ((blk ^ 1) + 1) * bsz].abs().max() == 0  # other block


@pytest.mark.parametrize("group_size", [1, 4])
def test_update_is_sum_of_single_set_updates_then_hard_zeroed(group_size: int) -> None:
    numel, bsz = 40, 16  # 3 blocks, last one padded
    fi, _ = _fisher(numel, bsz, damp=0.05, dtype=torch.float32)
    w = torch.randn(numel)
    groups = [0, 2, 5, 9] if group_size == 4 else [0, 3, 7, 20, 39]
    old = torch.zeros(numel, dtype=torch.bool)
    old[[12, 13, 14, 15] if group_size == 4 else [1]] = True
    w = w.masked_fill(old, 0.0)
    new = torch.zeros(numel, dtype=torch.bool)
    expected = torch.zeros(numel, dtype=F64)
    finv64 = fi.inverse.double()
    for gi in groups:
        idx = torch.arange(gi * group_size, (gi + 1) * group_size)
        new[idx] = True
        blk = idx[0] // bsz
        wb = torch.zeros(bsz, dtype=F64)
        seg = w[blk * bsz : (blk + 1) * bsz].double()
        wb[: seg.numel()] = seg
        _, d = obs_prune_set(wb, finv64[blk], idx - blk * bsz)
        expected[blk * bsz : (blk + 1) * bsz] += d[: seg.numel()]
    delta = obs_update(w, fi.inverse, new, group_size, pruned_mask=old)
    w_new = w + delta
    assert torch.all(w_new[new | old] == 0)  # exact zeros, even in fp32
    keep = ~(new | old)
    assert torch.allclose(delta[keep].double(), expected[keep], rtol=1e-4, atol=1e-5)


def test_global_count_is_exact_and_prunes_lowest() -> None:
    scores = [torch.rand(10), torch.rand(7, 3), torch.rand(45)]
    total = 10 + 21 + 45
    for s in (0.0, 0.1, 0.33, 0.5, 0.77, 0.9, 1.0):
        masks = global_prune_masks(scores, None, s)
        assert sum(int(m.sum()) for m in masks) == round(s * total)
        assert [m.shape for m in masks] == [x.shape for x in scores]
        pruned = torch.cat([x[m] for x, m in zip(scores, masks)])
        kept = torch.cat([x[~m] for x, m in zip(scores, masks)])
        if pruned.numel() and kept.numel():
            assert pruned.max() <= kept.min()


def test_global_ranking_keeps_old_pruned_and_counts_them() -> None:
    scores = [torch.rand(50) + 10, torch.rand(30)]
    old = [torch.rand(50) < 0.3, torch.zeros(30, dtype=torch.bool)]  # high-scoring but pruned
    n_old = int(old[0].sum())
    masks = global_prune_masks(scores, old, 0.5)
    assert sum(int(m.sum()) for m in masks) == 40
    assert torch.all(masks[0][old[0]])  # never revived
    assert int(masks[1].sum()) == 40 - n_old  # the rest come from the low-scoring tensor
    # Target below what is already pruned: nothing revived, nothing new.
    masks = global_prune_masks(scores, old, 0.05)
    assert torch.equal(masks[0], old[0]) and not masks[1].any()


def test_ties_break_deterministically_with_exact_count() -> None:
    masks = global_prune_masks([torch.zeros(7), torch.zeros(5)], None, 0.5)
    assert masks[0].tolist() == [True] * 6 + [False] and not masks[1].any()


@pytest.mark.parametrize("group_size", [1, 4])
def test_padding_never_scored_or_pruned(group_size: int) -> None:
    numel, bsz = 40, 16  # 8 padding coordinates in the tail block
    fi, _ = _fisher(numel, bsz, damp=0.1, dtype=torch.float32)
    w = torch.randn(numel) + 3.0  # real weights far from zero; padding would score 0
    scores = obs_scores(w, fi.inverse, group_size)
    assert scores.shape == (numel // group_size,) and torch.all(scores > 0)
    masks = global_prune_masks([scores], None, 1.0)
    assert int(masks[0].sum()) == numel // group_size
    new = expand_group_mask(masks[0], group_size)
    delta = obs_update(w, fi.inverse, new, group_size)
    assert delta.shape == (numel,) and torch.all(w + delta == 0)


def test_invalid_inputs_raise_value_error() -> None:
    fi10 = BlockFisherInverse(40, 10, 1.0, 1)
    with pytest.raises(ValueError, match="multiple of group_size=4"):
        block4_scores(torch.randn(40), fi10.inverse)
    fi = BlockFisherInverse(32, 16, 1.0, 1)
    with pytest.raises(ValueError, match=r"\(1, 4\)"):
        obs_scores(torch.randn(32), fi.inverse, 2)
    with pytest.raises(ValueError, match="blocks"):
        obs_scores(torch.randn(50), fi.inverse, 1)
    partial = torch.zeros(32, dtype=torch.bool)
    partial[:2] = True
    with pytest.raises(ValueError, match="whole groups"):
        obs_update(torch.randn(32), fi.inverse, partial, group_size=4)
    with pytest.raises(ValueError, match="sparsity"):
        global_prune_masks([torch.rand(4)], None, 1.5)
    with pytest.raises(ValueError, match="NaN"):
        global_prune_masks([torch.tensor([0.0, float("nan")])], None, 0.5)
