"""Property tests for the block Fisher inverse (ALGORITHMS.md §2.7, test 1)."""

from __future__ import annotations

import math

import pytest
import torch

from compresslab.ops.fisher import (
    BlockFisherInverse,
    block_outer_sum_,
    fisher_inverse_from_outer_sums,
    to_blocks,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _direct_inverse(grads: torch.Tensor, block_size: int, damp: float) -> torch.Tensor:
    """inv(damp*I + (1/m) G G^T) per block, computed densely in float64; (nb, B, B)."""
    m = grads.shape[0]
    g = torch.stack([to_blocks(x, block_size) for x in grads])  # (m, nb, B)
    f = torch.einsum("mbi,mbj->bij", g, g) / m
    f = f + damp * torch.eye(block_size, dtype=torch.float64)
    return torch.linalg.inv(f)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def _build(grads: torch.Tensor, block_size: int, damp: float, dtype=torch.float64):
    fi = BlockFisherInverse(grads.shape[1], block_size, damp, grads.shape[0], dtype=dtype)
    for g in grads:
        fi.update(g)
    return fi


@pytest.mark.parametrize("numel,block_size,m", [(45, 16, 5), (45, 16, 40), (30, 1, 7), (64, 8, 20)])
def test_inverse_equals_direct_inverse_float64(numel: int, block_size: int, m: int) -> None:
    gen = torch.Generator().manual_seed(numel + block_size + m)
    grads = torch.randn(m, numel, generator=gen, dtype=torch.float64)
    damp = 1e-2
    fi = _build(grads, block_size, damp)
    assert fi.complete and fi.inverse.shape == (math.ceil(numel / block_size), block_size, block_size)
    assert _rel(fi.inverse, _direct_inverse(grads, block_size, damp)) < 1e-8


def test_inverse_independent_of_gradient_order() -> None:
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(12, 40, generator=gen, dtype=torch.float64)
    direct = _direct_inverse(grads, 10, 1e-3)
    for _ in range(3):
        perm = torch.randperm(12, generator=gen)
        assert _rel(_build(grads[perm], 10, 1e-3).inverse, direct) < 1e-8


def test_scaling_by_one_over_m_matters() -> None:
    # Guards against dropping the 1/m: inv(damp*I + G G^T) must NOT match.
    grads = torch.randn(6, 8, dtype=torch.float64)
    fi = _build(grads, 8, 1e-2)
    wrong = torch.linalg.inv(1e-2 * torch.eye(8, dtype=torch.float64) + grads.T @ grads)
    assert _rel(fi.inverse[0], wrong) > 1e-2


def test_padding_coordinates_carry_only_damp() -> None:
    numel, bsz, damp = 21, 8, 0.5  # tail block has 5 real + 3 padding coords
    fi = _build(torch.randn(9, numel, dtype=torch.float64), bsz, damp)
    tail = fi.inverse[-1]
    pad = slice(numel % bsz, bsz)
    assert torch.allclose(tail[pad, pad], torch.eye(3, dtype=torch.float64) / damp, atol=1e-12)
    assert tail[pad, : numel % bsz].abs().max() < 1e-12
    assert tail[: numel % bsz, pad].abs().max() < 1e-12


def test_diag_drops_padding_and_matches_direct() -> None:
    grads = torch.randn(7, 21, dtype=torch.float64)
    fi = _build(grads, 8, 0.1)
    direct = _direct_inverse(grads, 8, 0.1).diagonal(dim1=1, dim2=2).reshape(-1)[:21]
    assert fi.diag().shape == (21,)
    assert torch.allclose(fi.diag(), direct, rtol=1e-10)


def test_outer_sum_path_matches_recursion_and_is_rank_splittable() -> None:
    grads = torch.randn(10, 45, dtype=torch.float64)
    bsz, damp = 16, 1e-2
    nb = math.ceil(45 / bsz)
    # Two "ranks" each accumulate half the gradients; their sums are added (all-reduce).
    acc_a = torch.zeros(nb, bsz, bsz, dtype=torch.float64)
    acc_b = torch.zeros_like(acc_a)
    for g in grads[:4]:
        block_outer_sum_(acc_a, g)
    for g in grads[4:]:
        block_outer_sum_(acc_b, g)
    finv = fisher_inverse_from_outer_sums(acc_a + acc_b, 10, damp)
    assert _rel(finv, _direct_inverse(grads, bsz, damp)) < 1e-8
    assert _rel(finv, _build(grads, bsz, damp).inverse) < 1e-8


def test_float32_default_is_close_to_float64() -> None:
    grads = torch.randn(16, 48, dtype=torch.float64)
    fi32 = BlockFisherInverse(48, 16, 1e-1, 16)
    assert fi32.dtype == torch.float32
    for g in grads:
        fi32.update(g.float())
    assert _rel(fi32.inverse.double(), _direct_inverse(grads, 16, 1e-1)) < 1e-4


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(numel=0, block_size=4, damp=1.0, num_grads=1),
        dict(numel=8, block_size=0, damp=1.0, num_grads=1),
        dict(numel=8, block_size=4, damp=0.0, num_grads=1),
        dict(numel=8, block_size=4, damp=1.0, num_grads=0),
        dict(numel=8, block_size=4, damp=1.0, num_grads=1, dtype=torch.float16),
    ],
)
def test_invalid_construction_raises_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BlockFisherInverse(**kwargs)


def test_update_validates_size_and_count() -> None:
    fi = BlockFisherInverse(8, 4, 1.0, 1)
    with pytest.raises(ValueError, match="expected 8"):
        fi.update(torch.randn(9))
    fi.update(torch.randn(8))
    with pytest.raises(ValueError, match="num_grads"):
        fi.update(torch.randn(8))
