"""Loss-Hessian probes through Hessian-vector products: top eigenvalue and block traces.

Pure math over an HVP callable ``hvp_fn(v) -> H v`` (``v`` and ``H v`` are lists of tensors shaped
like the parameters); nothing here knows about models. ``quant/sensitivity.py`` is the glue.

* :func:`hvp` — Pearlmutter's double backprop: ``H v = ∇_θ (∇_θ L · v)`` from gradients built with
  ``create_graph=True``. The graph is retained, so several probes reuse one forward/backward.
* :func:`power_iteration` — the eigenvalue of largest magnitude, sign kept (Q-BERT, Shen et al.
  2020 §3.2; PyHessian, Yao et al. 2020; ALGORITHMS.md §1.3).
* :func:`hutchinson` / :class:`RunningTrace` — Hutchinson's (1989) estimator ``Tr(H_jj) ≈ mean z_jᵀ(Hz)_j``
  with ONE Rademacher probe ``z`` shared by every block per HVP (HAWQ-V2, Dong et al. 2020 §3;
  ALGORITHMS.md §1.6), stopped on each block's standard error.

Variance of one shared-probe block sample (``J`` = block j's coordinates, ``J^c`` the rest; ``H``
symmetric). ``s_j = Σ_{k∈J} H_kk + Σ_{k∈J, l≠k} z_k z_l H_kl`` and the products ``z_k z_l`` of
distinct unordered pairs are uncorrelated with unit variance; a pair inside ``J`` appears twice,
a pair straddling ``J`` and ``J^c`` once, so

    Var(s_j) = 2 (‖H_JJ‖_F² − Σ_{k∈J} H_kk²) + ‖H_{J,J^c}‖_F²

(for a single block, ``J^c = ∅``, this is Hutchinson's ``2(‖H‖_F² − Σ H_kk²)``). The estimate is
unbiased either way; the off-diagonal blocks only widen it, which is why the standard error is
reported per block and the stopping rule uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

HvpFn = Callable[[list[Tensor]], list[Tensor]]

__all__ = [
    "EigenResult",
    "HvpFn",
    "RunningTrace",
    "TraceEstimate",
    "block_quadratic",
    "check_probes",
    "hutchinson",
    "hvp",
    "power_iteration",
    "rademacher",
]


def hvp(grads: Sequence[Tensor], params: Sequence[Tensor], vecs: Sequence[Tensor]) -> list[Tensor]:
    """``H v`` by double backprop (Pearlmutter 1994): ``∇_params (Σ_i ⟨grads_i, vecs_i⟩)``.

    ``grads`` must come from ``torch.autograd.grad(loss, params, create_graph=True)``; ``vecs[i]``
    has ``params[i]``'s shape. The graph is retained so the caller can run several probes on it;
    it is freed when the caller drops ``grads``. A parameter the gradient does not depend on
    (zero Hessian rows) gets zeros. Passing a subset of ``params``/``grads`` gives the diagonal
    block ``H_ii v_i``. Errors: RuntimeError from autograd when an op has no double backward.
    """
    if not (len(grads) == len(params) == len(vecs)):
        raise ValueError(f"hvp: {len(grads)} grads, {len(params)} params, {len(vecs)} vecs; all must match")
    dot = sum((g * v).sum() for g, v in zip(grads, vecs))
    if not isinstance(dot, Tensor) or not dot.requires_grad:  # loss linear in every param: H = 0
        return [torch.zeros_like(p) for p in params]
    out = torch.autograd.grad(dot, list(params), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h for h, p in zip(out, params)]


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return float(sum(torch.sum(x * y).item() for x, y in zip(a, b)))


def _randn(like: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
    # drawn on the generator's device, then moved: same numbers whatever device the params are on
    return [torch.randn(t.shape, generator=generator, device=generator.device).to(t) for t in like]


def rademacher(like: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Independent ±1 entries (equal odds) shaped, typed and placed like each tensor of ``like``."""
    return [(torch.randint(0, 2, t.shape, generator=generator, device=generator.device) * 2 - 1).to(t)
            for t in like]


@dataclass(frozen=True)
class EigenResult:
    """Power iteration's eigenvalue estimate (in loss units per parameter²), the number of HVPs
    run, and whether the relative-change rule was met (False: ``value`` is the last iterate)."""

    value: float
    iterations: int
    converged: bool


def power_iteration(hvp_fn: HvpFn, like: Sequence[Tensor], *, max_iter: int = 100, tol: float = 1e-3,
                    generator: torch.Generator) -> EigenResult:
    """Eigenvalue of largest magnitude of the symmetric operator ``hvp_fn``, sign kept (§1.3).

    ``v ~ N(0, I)`` over tensors shaped like ``like``, ``v ← v/(‖v‖ + 1e-6)``; repeat
    ``u = H v``, ``λ = vᵀu / vᵀv``, ``v = u/(‖u‖ + 1e-6)`` until
    ``|λ − λ_prev| / (|λ_prev| + 1e-6) < tol`` (PyHessian's rule) or ``max_iter`` HVPs. A negative
    dominant eigenvalue comes out negative. ``λ`` is the Rayleigh quotient: PyHessian's plain
    ``vᵀu`` with the 1e-6 norm guard understates ``|λ|`` by about ``2e-6/|λ|`` relative (0.2 % at
    ``|λ| = 1e-3``, which small models do reach).
    Convergence is geometric in ``|λ_2/λ_1|``; when it is not reached the result says so
    (``converged=False``). Errors: ValueError for ``max_iter < 1`` or ``tol <= 0``.
    """
    if max_iter < 1 or not tol > 0:
        raise ValueError(f"power_iteration: max_iter={max_iter} must be >= 1 and tol={tol} > 0")
    v = _randn(like, generator)
    norm = math.sqrt(_dot(v, v))
    v = [x / (norm + 1e-6) for x in v]
    prev: float | None = None
    lam = 0.0
    for it in range(1, max_iter + 1):
        u = hvp_fn(v)
        lam = _dot(v, u) / _dot(v, v)
        norm = math.sqrt(_dot(u, u))
        v = [x / (norm + 1e-6) for x in u]
        if prev is not None and abs(lam - prev) / (abs(prev) + 1e-6) < tol:
            return EigenResult(lam, it, True)
        prev = lam
    return EigenResult(lam, max_iter, False)


def block_quadratic(z: Sequence[Tensor], hz: Sequence[Tensor], sizes: Sequence[int]) -> Tensor:
    """Per-block samples ``z_jᵀ (Hz)_j``, float64 ``(len(sizes),)``; block j is the next
    ``sizes[j]`` tensors of the flat lists ``z`` and ``hz``."""
    if sum(sizes) != len(z) or len(z) != len(hz):
        raise ValueError(f"block sizes {list(sizes)} do not cover {len(z)} probe tensors / {len(hz)} products")
    parts = [torch.sum(a.double() * b.double()) for a, b in zip(z, hz)]
    out, i = [], 0
    for s in sizes:
        out.append(torch.stack(parts[i:i + s]).sum().cpu() if s else torch.zeros((), dtype=torch.float64))
        i += s
    return torch.stack(out)


@dataclass(frozen=True)
class TraceEstimate:
    """One block's trace estimate: ``mean`` of the probe samples, its standard error ``se`` (sample
    std / √probes; ``inf`` below two probes), ``probes`` used and whether the SE rule was met."""

    mean: float
    se: float
    probes: int
    converged: bool


class RunningTrace:
    """Sufficient statistics of per-block Hutchinson samples: count, Σs and Σs² (float64 tensors).

    Feed samples with :meth:`add` (from any number of batches), combine accumulators with
    :meth:`merge` / ``+``, or all-reduce :meth:`state` across processes and read it back with
    :meth:`from_state`; the estimate of a merged state equals that of one run over all samples.
    """

    def __init__(self, num_blocks: int) -> None:
        self.count = torch.zeros((), dtype=torch.float64)
        self.sum = torch.zeros(num_blocks, dtype=torch.float64)
        self.sumsq = torch.zeros(num_blocks, dtype=torch.float64)

    @property
    def num_blocks(self) -> int:
        return self.sum.numel()

    @property
    def probes(self) -> int:
        return int(round(self.count.item()))

    def add(self, samples: Sequence[float] | Tensor) -> None:
        """Add one probe: one sample per block, shape ``(num_blocks,)``."""
        s = torch.as_tensor(samples, dtype=torch.float64).detach().cpu().reshape(-1)
        if s.numel() != self.num_blocks:
            raise ValueError(f"RunningTrace.add: {s.numel()} samples for {self.num_blocks} blocks")
        self.count += 1
        self.sum += s
        self.sumsq += s * s

    def merge(self, other: "RunningTrace") -> "RunningTrace":
        """Add ``other``'s statistics into this accumulator (in place); returns ``self``."""
        if other.num_blocks != self.num_blocks:
            raise ValueError(f"cannot merge {other.num_blocks} blocks into {self.num_blocks}")
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq
        return self

    def __add__(self, other: "RunningTrace") -> "RunningTrace":
        return RunningTrace.from_state(self.state()).merge(other)

    def state(self) -> Tensor:
        """``[count, Σs (num_blocks), Σs² (num_blocks)]`` as one float64 tensor: ``all_reduce`` it."""
        return torch.cat([self.count.reshape(1), self.sum, self.sumsq])

    @classmethod
    def from_state(cls, state: Tensor) -> "RunningTrace":
        """The accumulator whose :meth:`state` is ``state`` (e.g. after an all-reduce)."""
        state = state.detach().to("cpu", torch.float64)
        n = (state.numel() - 1) // 2
        if state.numel() != 2 * n + 1:
            raise ValueError(f"a RunningTrace state has odd length 2*blocks+1, got {state.numel()}")
        acc = cls(n)
        acc.count, acc.sum, acc.sumsq = state[0].clone(), state[1:n + 1].clone(), state[n + 1:].clone()
        return acc

    def mean_se(self) -> tuple[Tensor, Tensor]:
        """Per-block running mean and standard error (sample std with ddof=1, over √count)."""
        m = self.count.item()
        if m < 1:
            nan = torch.full_like(self.sum, math.nan)
            return nan, torch.full_like(self.sum, math.inf)
        mean = self.sum / m
        if m < 2:
            return mean, torch.full_like(self.sum, math.inf)
        var = ((self.sumsq - self.sum * mean) / (m - 1)).clamp_min(0.0)
        return mean, (var / m).sqrt()

    def converged(self, rel_se_tol: float, abs_se_tol: float = 0.0) -> Tensor:
        """Bool ``(num_blocks,)``: ``se <= max(rel_se_tol·|mean|, abs_se_tol)`` (needs two probes)."""
        mean, se = self.mean_se()
        return se <= torch.maximum(rel_se_tol * mean.abs(), torch.tensor(abs_se_tol, dtype=torch.float64))

    def estimates(self, rel_se_tol: float, abs_se_tol: float = 0.0) -> list[TraceEstimate]:
        """One :class:`TraceEstimate` per block, judged by :meth:`converged`."""
        mean, se = self.mean_se()
        ok = self.converged(rel_se_tol, abs_se_tol)
        return [TraceEstimate(float(a), float(b), self.probes, bool(c)) for a, b, c in zip(mean, se, ok)]


def check_probes(min_probes: int, max_probes: int, rel_se_tol: float, abs_se_tol: float = 0.0) -> None:
    """ValueError unless ``2 <= min_probes <= max_probes``, ``rel_se_tol > 0`` and ``abs_se_tol >= 0``."""
    if not 2 <= min_probes <= max_probes:
        raise ValueError(f"need 2 <= min_probes <= max_probes (an SE needs two probes); "
                         f"got min_probes={min_probes}, max_probes={max_probes}")
    if not rel_se_tol > 0 or not abs_se_tol >= 0:
        raise ValueError(f"rel_se_tol={rel_se_tol} must be > 0 and abs_se_tol={abs_se_tol} >= 0")


def hutchinson(hvp_fn: HvpFn, blocks: Sequence[Sequence[Tensor]], *, min_probes: int = 10, max_probes: int = 100,
               rel_se_tol: float = 0.05, abs_se_tol: float = 0.0,
               generator: torch.Generator) -> list[TraceEstimate]:
    """Per-block traces ``Tr(H_jj)`` by Hutchinson with one shared Rademacher probe per HVP.

    ``blocks[j]`` lists the tensors of block j; ``hvp_fn`` takes and returns the flat list of all
    blocks' tensors in that order. Each probe gives every block the unbiased sample ``z_jᵀ(Hz)_j``.
    Stops once every block has ``se <= max(rel_se_tol·|mean|, abs_se_tol)`` after at least
    ``min_probes`` probes, or at ``max_probes`` (blocks short of the rule get ``converged=False``).
    ``abs_se_tol`` is a floor in trace units for blocks whose trace is ~0. Errors: ValueError from
    :func:`check_probes`.
    """
    check_probes(min_probes, max_probes, rel_se_tol, abs_se_tol)
    flat = [t for b in blocks for t in b]
    sizes = [len(b) for b in blocks]
    acc = RunningTrace(len(blocks))
    for m in range(1, max_probes + 1):
        z = rademacher(flat, generator)
        acc.add(block_quadratic(z, hvp_fn(z), sizes))
        if m >= min_probes and bool(acc.converged(rel_se_tol, abs_se_tol).all()):
            break
    return acc.estimates(rel_se_tol, abs_se_tol)
