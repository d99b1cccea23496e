"""XNOR-popcount GEMM: exactly the float matmul of the ±1 signs (ties 0 -> +1), pad bits harmless."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compresslab.ops.xnor import binary_linear, pack_signs, words_for, xnor_gemm


def _signs(x: torch.Tensor) -> torch.Tensor:
    """torch.sign with ties -> +1 (the deployment convention), in float64 so the matmul is exact."""
    return torch.where(x >= 0, 1.0, -1.0).to(torch.float64)


def _data(m: int, n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # rounded: about a third of the entries are exact zeros, so the tie convention is exercised
    return (torch.randn(m, k, generator=g) * 1.5).round(), (torch.randn(n, k, generator=g) * 1.5).round()


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 5, 63), (3, 4, 64), (8, 7, 65), (16, 9, 100),
                                   (5, 3, 130), (1, 24, 384), (33, 12, 1536)])
def test_equals_float_sign_matmul(m, n, k):
    a, b = _data(m, n, k, seed=m * 1000 + k)
    ref = (_signs(a) @ _signs(b).T).to(torch.int64).numpy()
    out = xnor_gemm(pack_signs(a), pack_signs(b), k)
    assert out.dtype == np.int32 and out.shape == (m, n)
    np.testing.assert_array_equal(out, ref)


def test_threads_and_leading_axes_give_the_same_result():
    a, b = _data(70, 11, 300, seed=1)
    ref = (_signs(a) @ _signs(b).T).to(torch.int64).numpy()
    np.testing.assert_array_equal(xnor_gemm(pack_signs(a), pack_signs(b), 300, threads=2), ref)
    out = xnor_gemm(pack_signs(a.reshape(7, 10, 300)), pack_signs(b), 300, threads=3)
    assert out.shape == (7, 10, 11)
    np.testing.assert_array_equal(out.reshape(70, 11), ref)
    assert xnor_gemm(pack_signs(a[:0]), pack_signs(b), 300).shape == (0, 11)


def test_ties_map_to_plus_one_and_bit_layout():
    # element j is bit j % 64 of word j // 64, least significant first; 0 and -0.0 count as +1
    packed = pack_signs(np.array([0.0, -0.0, -1.0, 2.0]))
    assert packed.dtype == np.uint64 and packed.tolist() == [0b1011]
    x = -np.ones(70)
    x[65] = 3.0
    assert pack_signs(x).tolist() == [0, 1 << 1]
    assert pack_signs(np.zeros((2, 3, 129))).shape == (2, 3, 3)


def test_pad_correction_uses_true_k():
    # K = 65: one real bit in the second word and 63 pad bits. Using 64 * words (= 128) instead
    # of K would give 128 and -2 here instead of 65 and -65.
    k = 65
    plus, minus = pack_signs(np.ones((1, k))), pack_signs(-np.ones((1, k)))
    assert xnor_gemm(plus, plus, k).item() == k
    assert xnor_gemm(plus, minus, k).item() == -k


def test_foreign_pad_bits_are_ignored_and_inputs_untouched():
    a, b = _data(6, 5, 100, seed=2)
    pa, pb = pack_signs(a), pack_signs(b)
    ref = xnor_gemm(pa, pb, 100)
    dirty = pa.copy()
    dirty[:, -1] |= ~np.uint64((1 << 36) - 1)  # all 28 pad bits set in A, clear in B
    before = dirty.copy()
    np.testing.assert_array_equal(xnor_gemm(dirty, pb, 100), ref)
    np.testing.assert_array_equal(dirty, before)


def test_torch_and_numpy_inputs_pack_alike():
    x = torch.randn(4, 2 * 77)[:, ::2]  # non-contiguous
    assert not x.is_contiguous()
    np.testing.assert_array_equal(pack_signs(x), pack_signs(x.numpy()))
    np.testing.assert_array_equal(pack_signs(x.to(torch.bfloat16)), pack_signs(x.numpy()))
    np.testing.assert_array_equal(pack_signs(np.array([[-3, 0, 5]], dtype=np.int8)), [[0b110]])


def test_binary_linear_matches_the_bibert_formula():
    g = torch.Generator().manual_seed(3)
    x, w, bias = torch.randn(9, 100, generator=g), torch.randn(13, 100, generator=g), torch.randn(13, generator=g)
    centred = w - w.mean(dim=1, keepdim=True)
    alpha = centred.abs().mean(dim=1)
    ref = _signs(x).float() @ (alpha[:, None] * _signs(centred).float()).T + bias
    out = binary_linear(pack_signs(x), pack_signs(centred), 100, alpha, bias)
    assert out.dtype == np.float32 and out.shape == (9, 13)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=1e-4)
    no_bias = binary_linear(pack_signs(x), pack_signs(centred), 100, alpha.numpy())
    np.testing.assert_allclose(no_bias, out - bias.numpy(), rtol=1e-5, atol=1e-4)


def test_bad_input_errors():
    p64, p65 = pack_signs(np.ones((2, 64))), pack_signs(np.ones((3, 65)))
    assert words_for(64) == 1 and words_for(65) == 2
    with pytest.raises(ValueError, match=r"k=65 sign bits need 2 words.*same K"):
        xnor_gemm(p64, p65, 65)
    with pytest.raises(ValueError, match=r"k=64 sign bits need 1 words"):
        xnor_gemm(p64, p65, 64)
    with pytest.raises(ValueError, match="uint64 np.ndarray from pack_signs, got uint8"):
        xnor_gemm(p64.view(np.uint8), p64, 64)
    with pytest.raises(ValueError, match="got Tensor"):
        xnor_gemm(torch.zeros(2, 1), p64, 64)
    with pytest.raises(ValueError, match="b_packed must be 2-D"):
        xnor_gemm(p64, p64[0], 64)
    for k in (-1, True, 64.0):
        with pytest.raises(ValueError, match="k must be an int >= 0"):
            xnor_gemm(p64, p64, k)
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        xnor_gemm(p64, p64, 64, threads=0)
    with pytest.raises(ValueError, match="NaN"):
        pack_signs(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="NaN"):
        pack_signs(torch.tensor([np.nan]))
    with pytest.raises(ValueError, match="real numbers"):
        pack_signs(np.array([True, False]))
    with pytest.raises(ValueError, match="real numbers"):
        pack_signs(torch.ones(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="at least one axis"):
        pack_signs(np.float32(1.0))
    with pytest.raises(ValueError, match=r"alpha must have shape \(2,\)"):
        binary_linear(p64, p64, 64, np.ones(3))
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        binary_linear(p64, p64, 64, np.ones(2), np.ones((2, 1)))
