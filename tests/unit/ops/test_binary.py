"""BiBERT's binarizers and STEs (ALGORITHMS.md §3.2, property tests §3.7.1-3)."""

import math

import pytest
import torch

from compresslab.models.binary import BinaryEmbedding, BinaryLinear
from compresslab.ops.binary import bi_attention, binarize_weight, bool_ste, hard_sign, row_scale, sign_ste


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _weight(rows=16, cols=24, scale=0.05, seed=0):
    """A weight with a per-row offset, so that centring by the row mean matters."""
    g = _gen(seed)
    return torch.randn(rows, cols, generator=g) * scale + torch.randn(rows, 1, generator=g) * scale


def _reference_binary(w, ties="zero"):
    """α_r · sign(W_r − μ_r), α_r = mean|W_r| of the uncentred row (§3.2)."""
    alpha = w.abs().mean(dim=-1, keepdim=True)
    centred = w - w.mean(dim=-1, keepdim=True)
    s = torch.sign(centred) if ties == "zero" else torch.where(centred >= 0, 1.0, -1.0)
    return alpha * s


# ------------------------------------------------------------------------------- §3.7.1 Binary Linear
def test_binarize_weight_is_exactly_alpha_times_centred_sign():
    w = _weight()
    got = binarize_weight(w)
    assert torch.equal(got, _reference_binary(w))  # bit for bit, not approximately
    # the uncentred mean |w| is the scale: a row-centred α is a different number here
    assert not torch.allclose(row_scale(w), (w - w.mean(-1, keepdim=True)).abs().mean(-1, keepdim=True))
    # centring matters: sign(W) alone differs from sign(W − μ) on this weight
    assert not torch.equal(torch.sign(got), torch.sign(w))


def test_binary_weight_rows_take_only_plus_minus_alpha():
    w = _weight(rows=32, cols=40, seed=1)
    tie_row = torch.zeros(40)
    tie_row[:4] = torch.tensor([0.5, -0.5, 0.25, -0.25])  # row mean exactly 0: the zeros are exact ties
    w = torch.cat([w, tie_row[None]])
    got = binarize_weight(w)
    alpha = w.abs().mean(-1)
    for r in range(w.shape[0]):
        vals = set(got[r].tolist())
        assert vals <= {alpha[r].item(), -alpha[r].item(), 0.0}, (r, vals)
    ties = (w - w.mean(-1, keepdim=True)) == 0
    assert ties.any()
    assert torch.equal(got[ties], torch.zeros(int(ties.sum())))  # torch.sign ties stay 0 in training
    assert (got[~ties] != 0).all()
    plus = binarize_weight(w, ties="plus")
    assert torch.equal(plus[ties], alpha[:, None].expand_as(w)[ties])  # deployment: 0 -> +α
    assert torch.equal(plus[~ties], got[~ties])


def test_binary_linear_output_is_exact():
    g = _gen(2)
    lin = torch.nn.Linear(24, 16)
    with torch.no_grad():
        lin.weight.copy_(_weight(16, 24, seed=2))
        lin.bias.copy_(torch.randn(16, generator=g))
    b = BinaryLinear.from_linear(lin)
    x = torch.randn(3, 5, 24, generator=g) * 1.5
    ref = torch.sign(x) @ _reference_binary(lin.weight.detach()).T + lin.bias.detach()
    assert torch.equal(b(x), ref)
    # with requires_grad the forward value is the same (the STE changes only the backward)
    assert torch.equal(b(x.clone().requires_grad_()), ref)


def test_binary_embedding_is_exact_per_row():
    g = _gen(3)
    emb = torch.nn.Embedding(20, 12)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(20, 12, generator=g) * 0.05 + 0.02)
    b = BinaryEmbedding.from_embedding(emb)
    ids = torch.randint(0, 20, (2, 7), generator=g)
    assert torch.equal(b(ids), _reference_binary(emb.weight.detach())[ids])


# ------------------------------------------------------------------------------- §3.7.2 STE masks
def test_weight_gradient_is_autograd_of_centred_clamp():
    g = _gen(4)
    w = torch.randn(8, 10, generator=g) * 0.8  # many entries with |W − μ| > 1, some rows without
    w[0] *= 0.1
    assert ((w - w.mean(-1, keepdim=True)).abs() > 1).any()
    upstream = torch.randn(8, 10, generator=g)

    wq = w.clone().requires_grad_()
    binarize_weight(wq).backward(upstream)

    wr = w.clone().requires_grad_()
    torch.clamp(wr - wr.mean(-1, keepdim=True), -1, 1).backward(upstream)
    torch.testing.assert_close(wq.grad, wr.grad, rtol=0, atol=1e-6)

    # the same thing by hand: mask where |W − μ| ≤ 1, then subtract the row mean of the masked gradient
    masked = upstream * ((w - w.mean(-1, keepdim=True)).abs() <= 1)
    torch.testing.assert_close(wq.grad, masked - masked.mean(-1, keepdim=True), rtol=0, atol=1e-6)
    assert (masked.mean(-1).abs() > 1e-3).all()  # the row-mean term is not negligible here


def test_binary_linear_weight_gradient_through_the_layer():
    g = _gen(5)
    b = BinaryLinear(6, 4)
    with torch.no_grad():
        b.weight.copy_(torch.randn(4, 6, generator=g) * 0.9)
    x = torch.randn(5, 6, generator=g)
    up = torch.randn(5, 4, generator=g)
    b(x).backward(up)
    # upstream to the binary weight is up^T · sign(x); then the centred-clamp STE
    wr = b.weight.detach().clone().requires_grad_()
    torch.clamp(wr - wr.mean(-1, keepdim=True), -1, 1).backward(up.T @ torch.sign(x))
    torch.testing.assert_close(b.weight.grad, wr.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.bias.grad, up.sum(0))


def test_activation_gradient_is_masked_pass_through():
    g = _gen(6)
    x = torch.randn(50, generator=g) * 2
    x[:4] = torch.tensor([1.0, -1.0, 0.0, 1.0000001])
    up = torch.randn(50, generator=g)
    xq = x.clone().requires_grad_()
    sign_ste(xq).backward(up)
    outside = x.abs() > 1
    assert outside.any() and (~outside).any()
    assert torch.equal(xq.grad[outside], torch.zeros(int(outside.sum())))  # exactly 0
    assert torch.equal(xq.grad[~outside], up[~outside])  # exactly the upstream gradient


def test_binary_linear_input_gradient():
    g = _gen(7)
    b = BinaryLinear(6, 4)
    x = (torch.randn(5, 6, generator=g) * 1.5).requires_grad_()
    up = torch.randn(5, 4, generator=g)
    b(x).backward(up)
    ref = (up @ binarize_weight(b.weight).detach()) * (x.detach().abs() <= 1)
    torch.testing.assert_close(x.grad, ref, rtol=0, atol=1e-6)
    assert torch.equal(x.grad[x.detach().abs() > 1], torch.zeros(int((x.detach().abs() > 1).sum())))


def test_bool_ste_forward_and_gradient():
    g = _gen(8)
    s = torch.randn(64, generator=g) * 2
    s[0] = 0.0
    sq = s.clone().requires_grad_()
    a = bool_ste(sq)
    assert torch.equal(a, (s > 0).float())  # bool(0) = 0
    up = torch.randn(64, generator=g)
    a.backward(up)
    inside = s.abs() <= 1
    assert torch.equal(sq.grad, torch.where(inside, up, torch.zeros_like(up)))


# ------------------------------------------------------------------------------- ties
def test_hard_sign_ties():
    x = torch.tensor([-2.0, -0.0, 0.0, 3.0])
    assert hard_sign(x, "zero").tolist() == [-1.0, 0.0, 0.0, 1.0]
    assert hard_sign(x, "plus").tolist() == [-1.0, 1.0, 1.0, 1.0]
    assert sign_ste(x, "plus").tolist() == [-1.0, 1.0, 1.0, 1.0]
    assert sign_ste(x, "zero").tolist() == [-1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="ties"):
        hard_sign(x, "nearest")


def test_binarize_weight_needs_2d():
    with pytest.raises(ValueError, match="2-D"):
        binarize_weight(torch.randn(2, 3, 4))


# ------------------------------------------------------------------------------- §3.7.3 Bi-Attention
def _qkv(b=2, h=3, t=6, d=8, seed=9):
    g = _gen(seed)
    return tuple(torch.randn(b, h, t, d, generator=g) for _ in range(3))


def _padding_mask(b, t, keep, additive=True, value=None):
    """(B, 1, T, T) mask: query i may attend key j iff j < keep[b]."""
    keys = torch.arange(t)[None, :] < torch.tensor(keep)[:, None]
    allowed = keys[:, None, None, :].expand(b, 1, t, t)
    if not additive:
        return allowed
    neg = torch.finfo(torch.float32).min if value is None else value
    return torch.where(allowed, 0.0, neg)


@pytest.mark.parametrize("kind", ["hf_min", "minus_10000", "bool"])
def test_bi_attention_is_binary_and_zero_at_masked_keys(kind):
    q, k, v = _qkv()
    b, _, t, d = q.shape
    keep = [4, 6]
    mask = _padding_mask(b, t, keep, additive=kind != "bool", value=-10000.0 if kind == "minus_10000" else None)
    ctx, a = bi_attention(q, k, v, mask)
    assert a.shape == (b, 3, t, t) and ctx.shape == (b, t, 3, d)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a[0, :, :, 4:], torch.zeros_like(a[0, :, :, 4:]))
    assert a[0, :, :, :4].sum() > 0 and a[1, :, :, 4:].sum() > 0  # unmasked keys do get ones


def test_bi_attention_scores_and_context_are_exact():
    q, k, v = _qkv(seed=10)
    d = q.shape[-1]
    mask = _padding_mask(2, 6, [5, 6])
    ctx, a = bi_attention(q, k, v, mask)
    s = torch.sign(q) @ torch.sign(k).transpose(-1, -2) / math.sqrt(d) + mask
    assert torch.equal(a, (s > 0).float())
    assert torch.equal(ctx, (a @ torch.sign(v)).transpose(1, 2))  # no softmax, no row normalization
    # training mode without dropout gives the same values
    ctx2, a2 = bi_attention(*(x.clone().requires_grad_() for x in (q, k, v)), mask, training=True)
    assert torch.equal(a2, a) and torch.equal(ctx2, ctx)


def test_bi_attention_gradient_reaches_q_k_v():
    q, k, v = (x.clone().requires_grad_() for x in _qkv(seed=11))
    ctx, _ = bi_attention(q * 0.5, k * 0.5, v, None, training=True)
    ctx.sum().backward()
    for x in (q, k, v):
        assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("d", [33, 64])
def test_bi_attention_has_about_one_bit_of_entropy_where_signed_softmax_has_none(d):
    g = _gen(12)
    q = torch.randn(4, 4, 64, d, generator=g)
    k = torch.randn(4, 4, 64, d, generator=g)
    v = torch.randn(4, 4, 64, d, generator=g)
    _, a = bi_attention(q, k, v, None)
    p = a.mean().item()
    # bool(0) = 0: with an even d_h a score is exactly 0 with probability C(d, d/2)/2^d
    p0 = math.comb(d, d // 2) / 2 ** d if d % 2 == 0 else 0.0
    assert p == pytest.approx((1 - p0) / 2, abs=0.01)
    assert abs(p - 0.5) < 0.06
    entropy = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    assert entropy > 0.95
    s = torch.sign(q) @ torch.sign(k).transpose(-1, -2) / math.sqrt(d)
    assert torch.equal(torch.sign(torch.softmax(s, -1)), torch.ones_like(s))  # binarized softmax: all ones


def test_bi_attention_softmax_mode_keeps_softmax():
    q, k, v = _qkv(seed=13)
    mask = _padding_mask(2, 6, [3, 6])
    ctx, a = bi_attention(q, k, v, mask, mode="softmax")
    s = torch.sign(q) @ torch.sign(k).transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask
    torch.testing.assert_close(a, torch.softmax(s, -1))
    torch.testing.assert_close(ctx, (a @ torch.sign(v)).transpose(1, 2))
    with pytest.raises(ValueError, match="attention mode"):
        bi_attention(q, k, v, None, mode="sparsemax")


def test_bi_attention_ties_plus_maps_zero_to_plus_one():
    q, k, v = _qkv(b=1, h=1, t=3, d=4, seed=14)
    q[0, 0, 0, 0] = 0.0
    v[0, 0, 1, 2] = 0.0
    _, a_zero = bi_attention(q, k, v, None, ties="zero")
    ctx, a = bi_attention(q, k, v, None, ties="plus")
    sq = torch.where(q >= 0, 1.0, -1.0)
    sk = torch.where(k >= 0, 1.0, -1.0)
    sv = torch.where(v >= 0, 1.0, -1.0)
    s = sq @ sk.transpose(-1, -2) / 2.0
    assert torch.equal(a, (s > 0).float())
    assert torch.equal(ctx, (a @ sv).transpose(1, 2))
