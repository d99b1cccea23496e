"""Hessian accumulation for ZipLM: H = (2/N) X X^T, padding, dampening, dead inputs, all-reduce."""

from __future__ import annotations

import warnings

import pytest
import torch

from compresslab.ops.layer_hessian import HessianAccumulator, finalize_hessian, zero_dead_columns_


def _tokens(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_batched_accumulation_equals_closed_form() -> None:
    x = _tokens(0, 300, 12)  # (N, d_in): tokens as rows
    acc = HessianAccumulator(12, dtype=torch.float64)
    for chunk in x.split(70):
        acc.add_batch(chunk.reshape(-1, 1, 12))  # (B, T=1, d_in): leading dims are flattened
    res = acc.finalize(damp=0.0)
    torch.testing.assert_close(res.hessian, 2.0 * x.T @ x / 300, rtol=1e-12, atol=1e-12)
    assert res.num_tokens == 300 and res.num_dead == 0


def test_attention_mask_excludes_padded_positions() -> None:
    x = _tokens(1, 4, 50, 8)  # (B, T, d_in)
    mask = torch.ones(4, 50, dtype=torch.long)
    mask[1, 30:] = 0
    mask[3, 10:] = 0
    x[mask == 0] = 100.0  # pads are huge: any leak would show
    acc = HessianAccumulator(8, dtype=torch.float64)
    acc.add_batch(x, mask)
    kept = x[mask.bool()]  # (n_kept, d_in)
    assert acc.count == kept.shape[0] == int(mask.sum())
    torch.testing.assert_close(acc.finalize(damp=0.0).hessian, 2.0 * kept.T @ kept / kept.shape[0])
    unmasked = HessianAccumulator(8, dtype=torch.float64)
    unmasked.add_batch(x)  # reference behaviour: every position counts
    assert unmasked.count == 200
    assert not torch.allclose(unmasked.finalize(damp=0.0).hessian, acc.finalize(damp=0.0).hessian)


def test_relative_dampening() -> None:
    x = _tokens(2, 100, 6)
    h = 2.0 * x.T @ x / 100
    res = finalize_hessian(x.T @ x, 100, damp=0.01)
    expected = h + 0.01 * torch.diagonal(h).mean() * torch.eye(6, dtype=torch.float64)
    torch.testing.assert_close(res.hessian, expected, rtol=1e-12, atol=1e-12)


def test_dead_inputs_get_unit_diagonal_and_are_reported() -> None:
    x = _tokens(3, 100, 6)
    x[:, [1, 4]] = 0.0  # two inputs never fire (e.g. dead GELU units)
    acc = HessianAccumulator(6, dtype=torch.float64)
    acc.add_batch(x)
    res = acc.finalize(damp=0.0)
    assert res.dead.tolist() == [False, True, False, False, True, False]
    assert res.num_dead == 2
    assert res.hessian[1, 1] == 1.0 and res.hessian[4, 4] == 1.0
    torch.linalg.cholesky(res.hessian)  # invertible despite the dead inputs
    damped = acc.finalize(damp=0.01).hessian
    live_mean = (torch.diagonal(2.0 * x.T @ x / 100).sum() + 2.0) / 6  # dead diag counts as 1
    assert torch.isclose(damped[1, 1], 1.0 + 0.01 * live_mean)
    w = torch.ones(3, 6)
    zero_dead_columns_(w, res.dead)
    assert w[:, [1, 4]].abs().sum() == 0 and w[:, [0, 2, 3, 5]].min() == 1


def test_raw_statistics_all_reduce_to_the_single_process_result() -> None:
    x = _tokens(4, 240, 10)
    whole = HessianAccumulator(10, dtype=torch.float64)
    whole.add_batch(x)
    ranks = [HessianAccumulator(10, dtype=torch.float64) for _ in range(3)]
    for rank, part in zip(ranks, x.split([50, 100, 90]), strict=True):
        rank.add_batch(part)
    # what an all_reduce(SUM) over ranks would produce
    total_sum = sum(r.raw()[0] for r in ranks)
    total_count = sum(r.count_tensor() for r in ranks)
    reduced = HessianAccumulator(10, dtype=torch.float64)
    reduced.load_raw(total_sum, total_count)
    torch.testing.assert_close(
        reduced.finalize().hessian, whole.finalize().hessian, rtol=1e-12, atol=1e-12
    )
    merged = ranks[0].merge_(ranks[1]).merge_(ranks[2])
    assert merged.count == 240
    torch.testing.assert_close(
        merged.finalize().hessian, whole.finalize().hessian, rtol=1e-12, atol=1e-12
    )


def test_half_precision_inputs_accumulate_in_fp32() -> None:
    x = _tokens(5, 64, 8).to(torch.bfloat16)
    acc = HessianAccumulator(8)
    acc.add_batch(x)
    assert acc.xxt_sum.dtype == torch.float32
    ref = x.float()
    torch.testing.assert_close(
        acc.finalize(damp=0.0).hessian, 2.0 * ref.T @ ref / 64, rtol=1e-5, atol=1e-5
    )


def test_warns_when_fewer_tokens_than_inputs() -> None:
    small = HessianAccumulator(16)
    small.add_batch(torch.randn(10, 16))
    with pytest.warns(UserWarning, match="calibration tokens"):
        small.finalize()
    enough = HessianAccumulator(16)
    enough.add_batch(torch.randn(16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enough.finalize()


def test_invalid_inputs_raise_value_error() -> None:
    acc = HessianAccumulator(4)
    with pytest.raises(ValueError, match="shape"):
        acc.add_batch(torch.randn(3, 5))
    with pytest.raises(ValueError, match="attention_mask"):
        acc.add_batch(torch.randn(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="no calibration tokens"):
        acc.finalize()
    with pytest.raises(ValueError, match="damp"):
        finalize_hessian(torch.eye(4), 10, damp=-1.0)
    with pytest.raises(ValueError, match="d_in"):
        HessianAccumulator(0)
    with pytest.raises(ValueError, match="xxt_sum"):
        acc.load_raw(torch.eye(3), 5)
