"""Structured OBS (ZipLM §4.7 tests 1-3): exact refits, sequential downdates, database sanity."""

from __future__ import annotations

import itertools

import pytest
import torch

from compresslab.ops.shrink import (
    batched_block_inverse,
    build_database,
    contiguous_groups,
    group_saliency,
    remove_group,
)

D64 = torch.float64


def _problem(
    seed: int = 0, d_out: int = 8, d_in: int = 16, n: int = 200
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d_out, d_in, generator=g, dtype=D64)  # (d_out, d_in)
    # correlated inputs, so compensation actually moves the kept weights
    mix = torch.randn(d_in, d_in, generator=g, dtype=D64) / d_in**0.5 + torch.eye(d_in, dtype=D64)
    x = mix @ torch.randn(d_in, n, generator=g, dtype=D64)  # (d_in, N): tokens as columns
    h = 2.0 * x @ x.T / n  # (d_in, d_in), no damping
    return w, x, h


def _refit(w: torch.Tensor, h: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """argmin_{W'} tr((W - W') H (W - W')^T) with W'[:, removed] = 0, solved directly."""
    out = torch.zeros_like(w)
    out[:, keep] = torch.linalg.solve(h[keep][:, keep], (w @ h[:, keep]).T).T
    return out


def _loss(w: torch.Tensor, w2: torch.Tensor, x: torch.Tensor) -> float:
    return float(((w - w2) @ x).pow(2).sum() / x.shape[1])  # (1/N)||WX - W'X||_F^2


@pytest.mark.parametrize("cols", [[4, 5, 6, 7], [3], [0, 9, 15]])
def test_one_removal_is_the_least_squares_refit(cols: list[int]) -> None:
    w, x, h = _problem()
    keep = [c for c in range(16) if c not in cols]
    new_w, _ = remove_group(w, torch.linalg.inv(h), torch.tensor(cols))
    # least squares on the data itself: W' = argmin ||WX - W'_keep X_keep||
    x_keep = x[keep]  # (k, N)
    lstsq = torch.linalg.lstsq(x_keep.T, (w @ x).T).solution.T  # (d_out, k)
    torch.testing.assert_close(new_w[:, keep], lstsq, rtol=1e-9, atol=1e-9)
    assert new_w[:, cols].abs().max() == 0
    rho = group_saliency(w, torch.linalg.inv(h), torch.tensor([cols]))
    assert rho.shape == (1,)
    assert _loss(w, new_w, x) == pytest.approx(float(rho[0]) / 2, rel=1e-9)


def test_saliency_of_every_group_matches_its_true_loss() -> None:
    w, x, h = _problem(1)
    hinv = torch.linalg.inv(h)
    for size in (1, 4):
        groups = contiguous_groups(16, size)
        rho = group_saliency(w, hinv, groups)  # batched path (Cholesky blocks or 1x1 shortcut)
        for g, cols in enumerate(groups.tolist()):
            keep = [c for c in range(16) if c not in cols]
            assert float(rho[g]) / 2 == pytest.approx(_loss(w, _refit(w, h, keep), x), rel=1e-9)


def test_inputs_are_not_modified_unless_inplace() -> None:
    w, _, h = _problem(2)
    hinv = torch.linalg.inv(h)
    w0, hinv0 = w.clone(), hinv.clone()
    remove_group(w, hinv, torch.tensor([1, 2]))
    assert torch.equal(w, w0) and torch.equal(hinv, hinv0)
    remove_group(w, hinv, torch.tensor([1, 2]), inplace=True)
    assert w[:, [1, 2]].abs().max() == 0 and hinv[1, 1] == 1


@pytest.mark.parametrize("first,second", [([0, 1, 2, 3], [8, 9, 10, 11]), ([5], [12, 13])])
def test_sequential_downdates_give_the_inverse_of_the_kept_block(
    first: list[int], second: list[int]
) -> None:
    w, x, h = _problem(3)
    removed = first + second
    keep = [c for c in range(16) if c not in removed]
    finals = []
    for a, b in ((first, second), (second, first)):
        cur_w, hinv = remove_group(w, torch.linalg.inv(h), torch.tensor(a))
        cur_w, hinv = remove_group(cur_w, hinv, torch.tensor(b))
        torch.testing.assert_close(
            hinv[keep][:, keep], torch.linalg.inv(h[keep][:, keep]), rtol=1e-8, atol=1e-9
        )
        # removed coordinates are parked: zero off-diagonal, unit diagonal
        torch.testing.assert_close(hinv[removed][:, removed], torch.eye(len(removed), dtype=D64))
        assert hinv[removed][:, keep].abs().max() < 1e-12
        finals.append(cur_w)
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-9, atol=1e-9)  # order does not matter
    lstsq = torch.linalg.lstsq(x[keep].T, (w @ x).T).solution.T
    torch.testing.assert_close(finals[0][:, keep], lstsq, rtol=1e-8, atol=1e-9)


def test_block_inverse_falls_back_to_pinv() -> None:
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3, 4, 4, generator=g, dtype=D64)
    blocks = a @ a.transpose(1, 2) + 0.1 * torch.eye(4, dtype=D64)  # (3, 4, 4) SPD
    blocks[1] = torch.diag(torch.tensor([1.0, 2.0, 0.0, -1.0], dtype=D64))  # not PD: Cholesky fails
    inv = batched_block_inverse(blocks)
    torch.testing.assert_close(inv[0], torch.linalg.inv(blocks[0]))
    torch.testing.assert_close(inv[2], torch.linalg.inv(blocks[2]))
    torch.testing.assert_close(inv[1], torch.diag(torch.tensor([1.0, 0.5, 0.0, -1.0], dtype=D64)))


@pytest.mark.parametrize("group_size", [1, 4])
def test_database_sanity(group_size: int) -> None:
    w, _, h = _problem(5)
    h = h + 0.01 * torch.diagonal(h).mean() * torch.eye(16, dtype=D64)  # as used in practice
    num_groups = 16 // group_size
    db = build_database(w, h, group_size, levels=range(num_groups + 1))
    assert [lv.num_removed for lv in db] == list(range(num_groups + 1))
    assert sorted(db.order) == list(range(num_groups))  # every group removed exactly once
    errors = [lv.error for lv in db]
    assert errors[0] == 0.0 and list(db.errors) == errors
    assert all(b >= a for a, b in itertools.pairwise(errors)), errors
    assert torch.equal(db[0].weight, w) and torch.equal(db.full_weight(0), w)
    assert db[-1].weight.shape == (8, 0) and db.full_weight(num_groups).abs().max() == 0
    groups = contiguous_groups(16, group_size)
    for lv in db:
        assert lv.removed == db.order[: lv.num_removed]
        assert sorted(lv.kept + lv.removed) == list(range(num_groups)) and list(lv.kept) == sorted(
            lv.kept
        )
        keep = groups[list(lv.kept)].reshape(-1).tolist()
        assert lv.kept_columns(group_size).tolist() == keep
        full = db.full_weight(lv.num_removed)
        torch.testing.assert_close(
            full, _refit(w, h, keep), rtol=1e-8, atol=1e-10
        )  # optimal for its set
        dw = full - w
        assert lv.error == pytest.approx(0.5 * float(((dw @ h) * dw).sum()), rel=1e-8, abs=1e-12)


def test_database_is_greedy_and_keeps_only_requested_levels() -> None:
    w, _, h = _problem(6)
    db = build_database(w, h, 4, levels=[2, 0], store_dtype=torch.float32)
    assert [lv.num_removed for lv in db] == [0, 2] and len(db.order) == 2 and len(db.errors) == 3
    assert db[1].weight.dtype == torch.float32 and db[1].weight.shape == (8, 8)
    rho = group_saliency(w, torch.linalg.inv(h), contiguous_groups(16, 4))
    assert db.order[0] == int(torch.argmin(rho))
    assert db.errors[1] == pytest.approx(float(rho.min()) / 2, rel=1e-10)
    with pytest.raises(ValueError, match="not stored"):
        db.level(1)


def test_dead_columns_are_removed_first_at_no_cost() -> None:
    w, x, _ = _problem(7)
    x[[2, 11]] = 0.0  # dead inputs, handled as compresslab.ops.layer_hessian does: diag 1, columns zeroed
    h = 2.0 * x @ x.T / x.shape[1]
    h[2, 2] = h[11, 11] = 1.0
    w[:, [2, 11]] = 0.0
    db = build_database(w, h, 1, levels=[0, 2, 3])
    assert set(db.order[:2]) == {2, 11}
    assert db.errors[2] == pytest.approx(0.0, abs=1e-12) and db.errors[3] > 0


def test_invalid_inputs_raise_value_error() -> None:
    w, _, h = _problem()
    with pytest.raises(ValueError, match="divisor"):
        build_database(w, h, 5, levels=[0])
    with pytest.raises(ValueError, match="levels"):
        build_database(w, h, 4, levels=[5])
    with pytest.raises(ValueError, match="levels"):
        build_database(w, h, 4, levels=[])
    with pytest.raises(ValueError, match="H must be"):
        build_database(w, h[:8, :8], 4, levels=[0])
    with pytest.raises(ValueError, match="Hinv"):
        group_saliency(w, h[:8, :8], contiguous_groups(16, 4))
    with pytest.raises(ValueError, match="cols"):
        remove_group(w, h, torch.tensor([16]))
