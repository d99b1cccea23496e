"""Bit-packed XNOR-popcount GEMM: the binary matmul a 1-bit (BiBERT) Linear runs on.

For ``a, b`` in ``{-1, +1}^K`` stored as bits (1 for +1, 0 for -1), the positions where they
agree contribute +1 and those where they differ -1, so

    a . b = (K - d) - d = K - 2 * popcount(a XOR b),      d = number of differing positions

(XNOR-Net, Rastegari et al., ECCV 2016, §3.2: "dot products can be computed by XNOR and
bit-counting operations"). Here the popcount is numpy's ``np.bitwise_count`` over uint64 words.

Bit layout (:func:`pack_signs`): element ``j`` of the last axis is bit ``j % 64`` (least
significant first) of word ``j // 64``; a row of ``K`` signs takes ``ceil(K / 64)`` words and the
unused high bits of the last word (the pad) are 0 in both operands, so they agree and add nothing
to the popcount; the identity then uses the true ``K``, not ``64 * words``. :func:`xnor_gemm`
clears pad bits set by other packers before it counts, so foreign pad bits cannot corrupt the result.

Signs follow the deployment convention: ``x >= 0`` is +1, so a tie (0) maps to +1, unlike
``torch.sign`` (0 -> 0).

Only numpy (and torch, for input conversion) is used; there is no torch kernel because torch has
no popcount op for integer tensors.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np
import torch

WORD_BITS = 64
# Elements of one (rows x N) chunk the kernel works on at a time: a 1 MiB uint64 XOR buffer plus
# its uint8 counts and uint16 sums. Large enough to keep numpy's per-call overhead small, small
# enough to bound memory (the full M x N x words XOR tensor is never built).
_CHUNK_ELEMS = 1 << 17


def words_for(k: int) -> int:
    """Number of uint64 words that hold ``k`` sign bits: ``ceil(k / 64)``."""
    return -(-k // WORD_BITS)


def pack_signs(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Sign bits of the last axis packed into uint64 words.

    Args:
        x: real-valued array or tensor of shape ``(..., K)`` (any float or integer dtype; a torch
            tensor may live on any device and need not be contiguous).

    Returns:
        ``np.ndarray`` of dtype ``uint64`` and shape ``(..., ceil(K / 64))``; bit ``j % 64`` of
        word ``j // 64`` is 1 where ``x[..., j] >= 0`` (ties 0 -> +1) and 0 where it is negative;
        pad bits past ``K`` are 0.

    Raises:
        ValueError: ``x`` is 0-dimensional, is not of a real numeric dtype (bool and complex are
            refused: their sign is not meant), or contains NaN (whose sign is undefined).
    """
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"pack_signs needs real numbers, got a {x.dtype} tensor")
        if x.dim() == 0:
            raise ValueError("pack_signs needs at least one axis (the K axis), got a 0-d tensor")
        if x.is_floating_point() and bool(torch.isnan(x).any()):
            raise ValueError("pack_signs: x contains NaN, whose sign is undefined")
        bits = (x >= 0).cpu().numpy()
    else:
        x = np.asarray(x)
        if x.dtype.kind not in "iuf":
            raise ValueError(f"pack_signs needs real numbers, got dtype {x.dtype}")
        if x.ndim == 0:
            raise ValueError("pack_signs needs at least one axis (the K axis), got a 0-d array")
        if x.dtype.kind == "f" and bool(np.isnan(x).any()):
            raise ValueError("pack_signs: x contains NaN, whose sign is undefined")
        bits = x >= 0
    k = bits.shape[-1]
    pad = words_for(k) * WORD_BITS - k
    if pad:
        bits = np.concatenate([bits, np.zeros((*bits.shape[:-1], pad), dtype=bool)], axis=-1)
    packed = np.packbits(bits, axis=-1, bitorder="little")  # (..., words * 8) uint8, bit j%8 of byte j//8
    # 8 little-endian bytes are one word with element j at bit j % 64; astype is a no-op on
    # little-endian machines and swaps to the native order elsewhere.
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def _check_packed(name: str, p: Any, k: int) -> np.ndarray:
    if not isinstance(p, np.ndarray) or p.dtype != np.uint64:
        got = p.dtype if isinstance(p, np.ndarray) else type(p).__name__
        raise ValueError(f"{name} must be a uint64 np.ndarray from pack_signs, got {got}")
    if p.ndim == 0 or p.shape[-1] != words_for(k):
        raise ValueError(f"{name} has shape {p.shape}: k={k} sign bits need {words_for(k)} words "
                         f"on the last axis (ceil(k / 64)); were both operands packed with the same K?")
    rem = k % WORD_BITS
    if rem:
        mask = np.uint64((1 << rem) - 1)
        if bool((p[..., -1] & ~mask).any()):  # foreign pad bits: clear them in a copy
            p = p.copy()
            p[..., -1] &= mask
    return p


@lru_cache(maxsize=None)
def _pool(threads: int) -> ThreadPoolExecutor:
    """One long-lived pool per thread count, so a call does not pay for starting threads."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="xnor_gemm")


def _kernel(at: np.ndarray, bt: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
    """popcount(a XOR b) summed over words, for rows ``start:stop`` of out.

    at: (words, M) uint64, bt: (words, N) uint64, out: (M, N) int32. One word at a time over a
    (rows, N) chunk: a vectorised outer XOR, popcount, add (no (M, N, words) temporary).
    """
    words, n = bt.shape
    rows = max(1, min(stop - start, _CHUNK_ELEMS // max(n, 1)))
    buf = np.empty((rows, n), np.uint64)
    cnt = np.empty((rows, n), np.uint8)  # popcount of one word: <= 64
    acc = np.empty((rows, n), np.uint16 if words * WORD_BITS < 1 << 16 else np.uint32)
    for s in range(start, stop, rows):
        e = min(s + rows, stop)
        b_, c_, a_ = buf[: e - s], cnt[: e - s], acc[: e - s]
        a_.fill(0)
        for w in range(words):
            np.bitwise_xor(at[w, s:e, None], bt[w][None, :], out=b_)
            np.bitwise_count(b_, out=c_)
            np.add(a_, c_, out=a_)
        out[s:e] = a_


def xnor_gemm(a_packed: np.ndarray, b_packed: np.ndarray, k: int, *, threads: int = 1) -> np.ndarray:
    """``A @ B.T`` for ±1 matrices given as packed sign bits, exactly, as int32.

    Args:
        a_packed: ``(..., W)`` uint64, :func:`pack_signs` of ``A`` with shape ``(..., K)``.
        b_packed: ``(N, W)`` uint64, :func:`pack_signs` of ``B`` with shape ``(N, K)``.
        k: the true row length ``K`` (``W == ceil(K / 64)``); pad bits past ``K`` are ignored.
        threads: worker threads; rows of ``A`` are split into ``threads`` contiguous blocks (numpy
            releases the GIL inside ufuncs, so the blocks run in parallel).

    Returns:
        ``np.ndarray`` int32 of shape ``(..., N)``: ``K - 2 * popcount(a XOR b)`` per pair of rows,
        which equals the float matmul of the ±1 matrices (XNOR-Net, Rastegari et al. 2016).

    Raises:
        ValueError: an operand is not a uint64 ndarray, ``b_packed`` is not 2-D, the word count of
            either operand does not match ``ceil(k / 64)``, ``k`` is not an int >= 0 or ``threads``
            is not an int >= 1.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an int >= 0 (the unpacked row length K), got {k!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    k = int(k)
    a = _check_packed("a_packed", a_packed, k)
    b = _check_packed("b_packed", b_packed, k)
    if b.ndim != 2:
        raise ValueError(f"b_packed must be 2-D (N, words), got shape {b.shape}")
    lead = a.shape[:-1]
    at = np.ascontiguousarray(a.reshape(-1, a.shape[-1]).T)  # (W, M): a word's column is contiguous
    bt = np.ascontiguousarray(b.T)  # (W, N)
    m, n = at.shape[1], bt.shape[1]
    out = np.empty((m, n), np.int32)
    if m and n:
        if threads == 1 or m < 2 * threads:
            _kernel(at, bt, out, 0, m)
        else:
            step = -(-m // threads)
            futures = [_pool(threads).submit(_kernel, at, bt, out, s, min(s + step, m)) for s in range(0, m, step)]
            for f in futures:
                f.result()
    # out holds popcounts (<= K); turn them into dot products in place
    np.multiply(out, -2, out=out)
    np.add(out, k, out=out)
    return out.reshape(*lead, n)


def binary_linear(
    x_signs_packed: np.ndarray,
    w_packed: np.ndarray,
    k: int,
    alpha: np.ndarray | torch.Tensor,
    bias: np.ndarray | torch.Tensor | None = None,
    *,
    threads: int = 1,
) -> np.ndarray:
    """A BiBERT binary Linear on packed operands: ``sign(x) @ (alpha * sign(W - mu)).T + b``.

    Args:
        x_signs_packed: ``(..., W)`` uint64, :func:`pack_signs` of the activations ``(..., K)``.
        w_packed: ``(N, W)`` uint64, :func:`pack_signs` of the row-centred weight ``W - mu``.
        k: the input width ``K``.
        alpha: ``(N,)`` per-output-row scale (mean ``|W - mu|`` of each row).
        bias: ``(N,)`` or None.
        threads: as in :func:`xnor_gemm`.

    Returns:
        ``np.ndarray`` float32 of shape ``(..., N)``: ``alpha[None, :] * xnor_gemm(...) + bias``.

    Raises:
        ValueError: as :func:`xnor_gemm`, or ``alpha`` / ``bias`` are not of shape ``(N,)``.
    """
    n = w_packed.shape[0] if isinstance(w_packed, np.ndarray) and w_packed.ndim == 2 else None
    acc = xnor_gemm(x_signs_packed, w_packed, k, threads=threads)
    n = acc.shape[-1] if n is None else n
    scale = _vector("alpha", alpha, n)
    out = acc.astype(np.float32) * scale
    if bias is not None:
        out += _vector("bias", bias, n)
    return out


def _vector(name: str, v: np.ndarray | torch.Tensor, n: int) -> np.ndarray:
    arr = v.detach().cpu().float().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, np.float32)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one per output row), got {arr.shape}")
    return arr
