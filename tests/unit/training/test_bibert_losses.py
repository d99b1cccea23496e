"""BiBERT's distillation losses (ALGORITHMS.md §3.3; property tests §3.7.4), against hand computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compresslab.training.losses import (
    DirectionMatchingKD, NormalizedHiddenKD, SoftCrossEntropyKD, _bibert_layer_map)


class _Out:
    def __init__(self, qkv=None, hidden_states=None, logits=None):
        self.qkv, self.hidden_states, self.logits = qkv, hidden_states, logits


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _qkv(layers=2, b=2, h=3, t=5, d=4, seed=0, dtype=torch.float64, head_scales=True):
    """Per layer (q, k, v), each (B, H, T, d_h); heads on different scales, so that a per-head norm
    gives a different number than the one global norm."""
    g = _gen(seed)
    scale = torch.tensor([1.0, 3.0, 0.2][:h], dtype=dtype)[None, :, None, None] if head_scales else 1.0
    return [tuple(torch.randn(b, h, t, d, generator=g, dtype=dtype) * scale for _ in range(3)) for _ in range(layers)]


def _np_dmd(student, teacher):
    """§3.3 in numpy: P = F·Fᵀ/√d_h, P̃ = P/‖P‖_F over the whole tensor, ℓ = ‖P̃_S − P̃_T‖_F, summed."""
    r = len(teacher) // len(student)
    total = 0.0
    for l, fs_all in enumerate(student):
        for fs, ft in zip(fs_all, teacher[l * r + r - 1]):
            a, b = fs.detach().numpy(), ft.detach().numpy()
            ps, pt = [f @ np.swapaxes(f, -1, -2) / np.sqrt(f.shape[-1]) for f in (a, b)]
            ps, pt = ps / np.sqrt((ps ** 2).sum()), pt / np.sqrt((pt ** 2).sum())
            total += np.sqrt(((ps - pt) ** 2).sum())
    return total


def _dmd(s, t):
    return DirectionMatchingKD()(_Out(qkv=s), _Out(qkv=t), {})


# ------------------------------------------------------------------------------- DMD
def test_dmd_matches_hand_computation_with_global_norm():
    s, t = _qkv(seed=1), _qkv(seed=2)
    got = _dmd(s, t)
    assert got.item() == pytest.approx(_np_dmd(s, t), rel=1e-10)
    # the per-head norm variant is a different number here (§3.6 "norm scope")
    per_head = 0.0
    for fs_all, ft_all in zip(s, t):
        for fs, ft in zip(fs_all, ft_all):
            ps, pt = fs @ fs.transpose(-1, -2), ft @ ft.transpose(-1, -2)
            ps = ps / torch.linalg.vector_norm(ps, dim=(-2, -1), keepdim=True)
            pt = pt / torch.linalg.vector_norm(pt, dim=(-2, -1), keepdim=True)
            per_head += torch.linalg.vector_norm(ps - pt).item()
    assert abs(per_head - got.item()) > 0.05


def test_dmd_is_zero_iff_the_normalized_matrices_coincide():
    s = _qkv(seed=3)
    assert _dmd(s, [tuple(x.clone() for x in fs) for fs in s]).item() == 0.0
    # other F with the same normalized F·Fᵀ: a rotation of the head dimension and a positive scale
    rot, _ = torch.linalg.qr(torch.randn(4, 4, generator=_gen(4), dtype=torch.float64))
    same = [tuple(2.5 * x @ rot for x in fs) for fs in s]
    assert _dmd(s, same).item() < 1e-7
    # anything else is > 0, term by term
    other = _qkv(seed=5)
    for l in range(2):
        for f in range(3):
            t = [list(fs) for fs in s]
            t[l][f] = other[l][f]
            assert _dmd(s, [tuple(x) for x in t]).item() > 1e-3


@pytest.mark.parametrize("c", [1e-3, 0.5, 7.0, 1e3])
def test_dmd_is_invariant_to_scaling_the_students_q(c):
    s, t = _qkv(seed=6), _qkv(seed=7)
    scaled = [(q * c, k, v) for q, k, v in s]
    assert _dmd(scaled, t).item() == pytest.approx(_dmd(s, t).item(), rel=1e-9)
    scaled_all = [tuple(x * c for x in fs) for fs in s]
    assert _dmd(scaled_all, t).item() == pytest.approx(_dmd(s, t).item(), rel=1e-9)


def test_each_dmd_term_lies_in_0_2():
    terms = []
    for seed in range(20):
        g = _gen(100 + seed)
        # one layer; q and k shared, so the loss is the single V term
        q, k = torch.randn(2, 2, 6, 3, generator=g), torch.randn(2, 2, 6, 3, generator=g)
        vs = torch.randn(2, 2, 6, 3, generator=g) * torch.rand(1, generator=g) * 10
        vt = torch.randn(2, 2, 6, 3, generator=g) * torch.rand(2, 2, 6, 1, generator=g)
        terms.append(_dmd([(q, k, vs)], [(q, k, vt)]).item())
    # far apart: a rank-one pattern (all tokens alike) against the identity (all tokens orthogonal)
    e = torch.zeros(1, 1, 8, 8)
    e[..., 0] = 1.0
    terms.append(_dmd([(e, e, e)], [(e, e, torch.eye(8)[None, None])]).item())
    assert all(0.0 <= x <= 2.0 for x in terms), terms
    assert max(terms) > 0.5
    total = _dmd(_qkv(layers=3, seed=8), _qkv(layers=3, seed=9)).item()
    assert 0.0 <= total <= 2.0 * 3 * 3


def test_no_gradient_reaches_the_teacher():
    s = [tuple(x.clone().requires_grad_() for x in fs) for fs in _qkv(seed=10)]
    t = [tuple(x.clone().requires_grad_() for x in fs) for fs in _qkv(seed=11)]
    _dmd(s, t).backward()
    assert all(x.grad is None for fs in t for x in fs)
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for fs in s for x in fs)


def test_dmd_layer_map_when_depths_differ():
    assert _bibert_layer_map(2, 2) == [0, 1]
    assert _bibert_layer_map(2, 4) == [1, 3]
    assert _bibert_layer_map(2, 6) == [2, 5]
    assert _bibert_layer_map(3, 12) == [3, 7, 11]
    with pytest.raises(ValueError, match="multiple"):
        _bibert_layer_map(4, 6)
    s, t = _qkv(layers=2, seed=12), _qkv(layers=6, seed=13)
    assert _dmd(s, t).item() == pytest.approx(_np_dmd(s, t), rel=1e-10)
    # a teacher whose layers 2 and 5 are the student's: 0
    t[2], t[5] = s[0], s[1]
    assert _dmd(s, t).item() == 0.0


# ------------------------------------------------------------------------------- hidden states
def _np_hidden(hs, ht):
    r = (len(ht) - 1) // (len(hs) - 1)
    total = 0.0
    for l in range(len(hs)):
        a, b = hs[l].detach().numpy(), ht[l * r].detach().numpy()
        total += np.sqrt(((a / np.sqrt((a ** 2).sum()) - b / np.sqrt((b ** 2).sum())) ** 2).sum())
    return total


def _hidden(n, seed, b=2, t=5, d=6):
    g = _gen(seed)
    return [torch.randn(b, t, d, generator=g, dtype=torch.float64) * (1 + i) for i in range(n)]


def test_normalized_hidden_kd_matches_hand_computation():
    hs, ht = _hidden(3, 20), _hidden(3, 21)
    got = NormalizedHiddenKD()(_Out(hidden_states=hs), _Out(hidden_states=ht), {})
    assert got.item() == pytest.approx(_np_hidden(hs, ht), rel=1e-10)
    # scale-free, and 0 against itself
    assert NormalizedHiddenKD()(_Out(hidden_states=[h * 3 for h in ht]), _Out(hidden_states=ht), {}).item() < 1e-7


def test_normalized_hidden_kd_layer_map_and_teacher_detached():
    hs = [h.requires_grad_() for h in _hidden(3, 22)]  # embeddings + 2 layers
    ht = [h.requires_grad_() for h in _hidden(5, 23)]  # embeddings + 4 layers: student l reads teacher 2l
    loss = NormalizedHiddenKD()(_Out(hidden_states=hs), _Out(hidden_states=ht), {})
    assert loss.item() == pytest.approx(_np_hidden(hs, ht), rel=1e-10)
    loss.backward()
    assert all(h.grad is None for h in ht) and all(h.grad is not None for h in hs)
    matched = [x.detach() for x in ht]
    assert NormalizedHiddenKD()(_Out(hidden_states=[matched[0], matched[2], matched[4]]),
                                _Out(hidden_states=matched), {}).item() == 0.0
    with pytest.raises(ValueError, match="multiple"):
        NormalizedHiddenKD()(_Out(hidden_states=_hidden(3, 0)), _Out(hidden_states=_hidden(4, 1)), {})


# ------------------------------------------------------------------------------- prediction
def test_soft_cross_entropy_matches_hand_computation():
    g = _gen(30)
    zs = torch.randn(6, 3, generator=g, dtype=torch.float64)
    zt = torch.randn(6, 3, generator=g, dtype=torch.float64) * 2
    y = torch.tensor([0, 2, 1, 1, 0, 2])
    a, b = zs.numpy(), zt.numpy()
    log_q = a - np.log(np.exp(a).sum(-1, keepdims=True))
    p = np.exp(b) / np.exp(b).sum(-1, keepdims=True)
    soft = (-p * log_q).sum() / (6 * 3)  # the mean over batch × classes
    ce = -log_q[np.arange(6), y.numpy()].mean()
    got = SoftCrossEntropyKD()(_Out(logits=zs), _Out(logits=zt), {"labels": y})
    assert got.item() == pytest.approx(soft + 0.5 * ce, rel=1e-12)
    got0 = SoftCrossEntropyKD(label_weight=0.0)(_Out(logits=zs), _Out(logits=zt), {})
    assert got0.item() == pytest.approx(soft, rel=1e-12)


def test_soft_cross_entropy_regression_and_teacher_detached():
    g = _gen(31)
    zs = torch.randn(5, 1, generator=g).requires_grad_()
    zt = torch.randn(5, 1, generator=g).requires_grad_()
    loss = SoftCrossEntropyKD()(_Out(logits=zs), _Out(logits=zt), {"labels": torch.zeros(5)})
    torch.testing.assert_close(loss, F.mse_loss(zs, zt))
    loss.backward()
    assert zt.grad is None and zs.grad is not None
