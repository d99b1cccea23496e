"""Bitmask + values packing: exact round trip, documented bit order, size."""

from __future__ import annotations

import pytest
import torch

from compresslab.ops.bitpack import nonzero_rows, pack_bits, pack_sparse, unpack_bits, unpack_sparse


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 64, 1001])
def test_bits_round_trip(numel):
    mask = torch.rand(numel, generator=torch.Generator().manual_seed(numel)) < 0.3
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-numel // 8)
    assert torch.equal(unpack_bits(packed, numel), mask)


def test_bit_order_is_little_endian_within_a_byte():
    assert pack_bits(torch.tensor([True, False, True] + [False] * 5)).tolist() == [0b101]


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8, torch.float16])
def test_sparse_round_trip_is_exact(dtype):
    t = (torch.randn(13, 24) * 50).to(dtype)
    t[torch.rand(13, 24) < 0.8] = 0
    bits, values = pack_sparse(t)
    assert values.numel() == int((t != 0).sum())
    back = unpack_sparse(bits, values, t.shape)
    assert back.dtype == dtype and torch.equal(back, t)
    assert bits.numel() + values.numel() * values.element_size() < t.numel() * t.element_size()


def test_nonzero_rows_and_errors():
    t = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    bits, _ = pack_sparse(t)
    assert nonzero_rows(bits, (3, 3)).tolist() == [0, 0, 2]
    with pytest.raises(ValueError, match="bool"):
        pack_bits(torch.zeros(3))
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_bits(bits, 100)
    with pytest.raises(ValueError, match="set bits"):
        unpack_sparse(bits, torch.ones(2), (3, 3))
