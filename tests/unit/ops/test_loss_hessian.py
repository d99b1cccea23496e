"""Loss-Hessian probes (ALGORITHMS.md §1.8 tests 1-3): HVP vs the dense Hessian, power iteration on
known spectra, Hutchinson's mean and variance incl. the shared-probe block case, the accumulator."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compresslab.ops.loss_hessian import (
    RunningTrace,
    check_probes,
    hutchinson,
    hvp,
    power_iteration,
)

D = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sym(n: int, seed: int) -> torch.Tensor:
    a = torch.randn(n, n, generator=_gen(seed), dtype=D)
    return (a + a.T) / 2


def _with_spectrum(eigs: list[float], seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=_gen(seed), dtype=D))
    return q @ torch.diag(torch.tensor(eigs, dtype=D)) @ q.T


def _quadratic(a: torch.Tensor, shapes: list[tuple[int, ...]], seed: int = 0):
    """Params shaped ``shapes`` (flattened in order = θ), loss ½θᵀAθ + a linear term, and its HVP fn."""
    g = _gen(seed)
    params = [torch.randn(s, generator=g, dtype=D, requires_grad=True) for s in shapes]
    b = torch.randn(a.shape[0], generator=g, dtype=D)
    theta = torch.cat([p.reshape(-1) for p in params])
    loss = 0.5 * theta @ a @ theta + b @ theta
    grads = torch.autograd.grad(loss, params, create_graph=True)
    return params, (lambda v: hvp(grads, params, v))


def _matvec_fn(a: torch.Tensor, shapes: list[tuple[int, ...]]):
    """``hvp_fn`` of the fixed matrix ``a`` over tensors shaped ``shapes`` (flattened in order)."""
    def fn(vs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = a @ torch.cat([v.reshape(-1) for v in vs])
        return [c.reshape(s) for c, s in zip(out.split([math.prod(s) for s in shapes]), shapes)]
    return fn


# ---------------------------------------------------------------------------------------------- HVP

def test_hvp_equals_dense_hessian_times_v_on_a_small_mlp() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()  # 67 parameters
    x = torch.randn(16, 4, dtype=D)
    y = torch.randint(0, 3, (16,))
    names = [n for n, _ in mlp.named_parameters()]
    params = list(mlp.parameters())
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    assert sum(sizes) <= 200

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        ps = {n: c.reshape(s) for n, c, s in zip(names, flat.split(sizes), shapes)}
        return nn.functional.cross_entropy(torch.func.functional_call(mlp, ps, (x,)), y)

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    dense = torch.autograd.functional.hessian(loss_of, flat)  # (67, 67)
    grads = torch.autograd.grad(nn.functional.cross_entropy(mlp(x), y), params, create_graph=True)
    for seed in (1, 2):  # two probes on one retained graph
        v = torch.randn(sum(sizes), generator=_gen(seed), dtype=D)
        hv = hvp(grads, params, [c.reshape(s) for c, s in zip(v.split(sizes), shapes)])
        torch.testing.assert_close(torch.cat([h.reshape(-1) for h in hv]), dense @ v, rtol=0, atol=1e-8)
    # a subset of params gives the diagonal block H_ii v_i
    v0 = torch.randn(shapes[0], generator=_gen(3), dtype=D)
    h0 = hvp(grads[:1], params[:1], [v0])[0]
    torch.testing.assert_close(h0.reshape(-1), dense[: sizes[0], : sizes[0]] @ v0.reshape(-1), rtol=0, atol=1e-8)


def test_hvp_of_a_loss_linear_in_the_params_is_zero() -> None:
    p = torch.randn(3, dtype=D, requires_grad=True)
    (g,) = torch.autograd.grad((2 * p).sum(), [p], create_graph=True)
    assert torch.equal(hvp([g], [p], [torch.ones(3, dtype=D)])[0], torch.zeros(3, dtype=D))


# ---------------------------------------------------------------------------------- power iteration

def test_power_iteration_keeps_a_negative_dominant_eigenvalue() -> None:
    eigs = [-5.0] + torch.linspace(-3.0, 3.0, 16).tolist()  # |λ_2/λ_1| = 0.6
    a = _with_spectrum(eigs, seed=4)
    params, fn = _quadratic(a, [(3, 4), (5,)])
    res = power_iteration(fn, params, generator=_gen(0))
    assert res.converged and res.iterations < 100
    assert res.value < 0
    assert abs(res.value - (-5.0)) / 5.0 < 1e-3


def test_power_iteration_on_a_random_symmetric_matrix() -> None:
    a = _sym(10, seed=5)
    ev = torch.linalg.eigvalsh(a)
    top = ev[ev.abs().argmax()].item()
    params, fn = _quadratic(a, [(10,)])
    res = power_iteration(fn, params, max_iter=20000, tol=1e-10, generator=_gen(1))
    assert res.converged
    assert abs(res.value - top) / abs(top) < 1e-3
    again = power_iteration(fn, params, max_iter=20000, tol=1e-10, generator=_gen(1))
    assert again == res  # same generator seed, same result


def test_power_iteration_reports_non_convergence() -> None:
    a = _with_spectrum([4.0, 3.96] + [0.5] * 8, seed=6)  # ratio 0.99: slow
    params, fn = _quadratic(a, [(10,)])
    res = power_iteration(fn, params, max_iter=3, tol=1e-9, generator=_gen(2))
    assert not res.converged and res.iterations == 3
    with pytest.raises(ValueError, match="max_iter"):
        power_iteration(fn, params, max_iter=0, generator=_gen(2))


# ------------------------------------------------------------------------------------------ Hutchinson

def test_hutchinson_single_block_mean_within_4_sigma_and_se_matches_the_formula() -> None:
    a = _sym(30, seed=7)
    m = 10_000
    (est,) = hutchinson(_matvec_fn(a, [(30,)]), [[torch.zeros(30, dtype=D)]], min_probes=m, max_probes=m,
                        rel_se_tol=1e-9, generator=_gen(3))
    var = 2 * (a.pow(2).sum() - a.diagonal().pow(2).sum()).item()  # Var(zᵀAz) for Rademacher z
    sigma = math.sqrt(var / m)
    assert est.probes == m
    assert abs(est.mean - a.trace().item()) < 4 * sigma
    assert est.se == pytest.approx(sigma, rel=0.05)


def test_hutchinson_is_exact_per_probe_for_a_diagonal_matrix() -> None:
    d = torch.randn(12, generator=_gen(8), dtype=D)
    (est,) = hutchinson(_matvec_fn(torch.diag(d), [(3, 4)]), [[torch.zeros(3, 4, dtype=D)]], min_probes=2,
                        max_probes=2, rel_se_tol=1e-9, generator=_gen(4))
    assert est.mean == pytest.approx(d.sum().item(), rel=1e-12, abs=1e-12)
    assert est.se <= 1e-12 and est.converged


# block j = the next tensors below; sizes 5 | 9 | 6 + 4, with large off-diagonal blocks
BLOCK_SHAPES = [[(5,)], [(3, 3)], [(2, 3), (4,)]]


def _block_setup(seed: int = 9):
    shapes = [s for b in BLOCK_SHAPES for s in b]
    bounds, i = [], 0
    for b in BLOCK_SHAPES:
        n = sum(math.prod(s) for s in b)
        bounds.append((i, i + n))
        i += n
    label = torch.cat([torch.full((hi - lo,), j) for j, (lo, hi) in enumerate(bounds)])
    off_block = label[:, None] != label[None, :]
    a = _sym(24, seed) * (1 + 2 * off_block)  # off-diagonal blocks 3x larger: they dominate the variance
    a += torch.diag(torch.tensor([3.0] * 5 + [-2.0] * 9 + [1.0] * 10, dtype=D))  # distinct block traces
    blocks = [[torch.zeros(s, dtype=D) for s in b] for b in BLOCK_SHAPES]
    return a, shapes, bounds, blocks


def _block_var(a: torch.Tensor, lo: int, hi: int) -> float:
    """Var(z_Jᵀ(Az)_J) = 2(‖A_JJ‖_F² − Σ_{k∈J} A_kk²) + ‖A_{J,J^c}‖_F² (module docstring)."""
    rows = a[lo:hi]
    inside = rows[:, lo:hi].pow(2).sum() - rows[:, lo:hi].diagonal().pow(2).sum()
    outside = rows.pow(2).sum() - rows[:, lo:hi].pow(2).sum()
    return (2 * inside + outside).item()


def test_shared_probe_blocks_are_unbiased_with_the_derived_variance() -> None:
    a, shapes, bounds, blocks = _block_setup()
    m = 8_000
    ests = hutchinson(_matvec_fn(a, shapes), blocks, min_probes=m, max_probes=m, rel_se_tol=1e-9, generator=_gen(5))
    naive_off = 0
    for est, (lo, hi) in zip(ests, bounds):
        var = _block_var(a, lo, hi)
        sigma = math.sqrt(var / m)
        assert abs(est.mean - a[lo:hi, lo:hi].trace().item()) < 4 * sigma
        assert est.se == pytest.approx(sigma, rel=0.05)  # sample SE = the derived σ/√m
        # the tempting 2(‖A_J·‖_F² − Σ A_kk²) double-counts the straddling pairs
        naive = 2 * (a[lo:hi].pow(2).sum() - a[lo:hi, lo:hi].diagonal().pow(2).sum()).item()
        naive_off += abs(math.sqrt(naive / m) - est.se) > 0.2 * est.se
    assert naive_off == len(bounds)  # the data tell the two formulas apart


def test_reported_se_matches_the_spread_of_independent_runs() -> None:
    a, shapes, bounds, blocks = _block_setup(seed=10)
    fn = _matvec_fn(a, shapes)
    gen = _gen(6)
    runs = [hutchinson(fn, blocks, min_probes=20, max_probes=20, rel_se_tol=1e-9, generator=gen) for _ in range(200)]
    for j in range(len(bounds)):
        means = torch.tensor([r[j].mean for r in runs], dtype=D)
        ses = torch.tensor([r[j].se for r in runs], dtype=D)
        assert means.std().item() == pytest.approx(ses.pow(2).mean().sqrt().item(), rel=0.15)


def test_hutchinson_flags_blocks_that_miss_the_se_rule_and_stops_early_when_met() -> None:
    a, shapes, _, blocks = _block_setup()
    fn = _matvec_fn(a, shapes)
    tight = hutchinson(fn, blocks, min_probes=3, max_probes=3, rel_se_tol=1e-6, generator=_gen(7))
    assert all(not e.converged and e.probes == 3 for e in tight)
    loose = hutchinson(fn, blocks, min_probes=4, max_probes=10_000, rel_se_tol=0.2, generator=_gen(7))
    assert all(e.converged for e in loose)
    assert 4 <= loose[0].probes < 10_000
    assert all(e.se <= 0.2 * abs(e.mean) for e in loose)
    # an absolute floor accepts a block whose trace is ~0
    off = torch.randn(5, 19, generator=_gen(8), dtype=D)
    z = torch.zeros(24, 24, dtype=D)
    z[:5, 5:], z[5:, :5] = off, off.T  # every diagonal block is zero: traces 0, samples noisy
    floor = hutchinson(_matvec_fn(z, shapes), blocks, min_probes=4, max_probes=50, rel_se_tol=0.1, abs_se_tol=10.0,
                       generator=_gen(9))
    assert all(e.converged for e in floor)
    no_floor = hutchinson(_matvec_fn(z, shapes), blocks, min_probes=4, max_probes=50, rel_se_tol=0.1,
                          generator=_gen(9))
    assert not all(e.converged for e in no_floor)


def test_running_trace_merge_equals_one_run() -> None:
    s = torch.randn(50, 3, generator=_gen(11), dtype=D) * torch.tensor([1.0, 5.0, 0.1], dtype=D) + 2
    whole, left, right = RunningTrace(3), RunningTrace(3), RunningTrace(3)
    for i, row in enumerate(s):
        whole.add(row)
        (left if i < 20 else right).add(row)
    summed = RunningTrace.from_state(left.state() + right.state())  # what an all_reduce does
    for acc in (summed, left + right, RunningTrace.from_state(left.state()).merge(right)):
        torch.testing.assert_close(acc.state(), whole.state(), rtol=1e-12, atol=1e-12)
        for ea, ew in zip(acc.estimates(0.05), whole.estimates(0.05)):
            assert (ea.mean, ea.se, ea.probes, ea.converged) == (pytest.approx(ew.mean), pytest.approx(ew.se),
                                                                  ew.probes, ew.converged)
    mean, se = whole.mean_se()
    torch.testing.assert_close(mean, s.mean(0))
    torch.testing.assert_close(se, s.std(0) / math.sqrt(50))
    assert whole.probes == 50
    with pytest.raises(ValueError, match="blocks"):
        whole.add([1.0, 2.0])


def test_bad_probe_settings_raise() -> None:
    for args in [(1, 10, 0.1), (5, 4, 0.1), (2, 4, 0.0), (2, 4, 0.1, -1.0)]:
        with pytest.raises(ValueError):
            check_probes(*args)
