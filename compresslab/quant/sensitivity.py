"""Second-order sensitivity of a model's Linears to weight perturbation, from the task loss's Hessian.

Two measures (math in ``ops/loss_hessian.py``):

* :func:`linear_traces` (default; HAWQ-V2, Dong et al. 2020 §3): per Linear weight, Hutchinson's
  trace of its diagonal Hessian block with one Rademacher probe shared by all Linears per HVP, and
  the average trace ``Tr(H_i)/n_i`` (the Ω numerator of ALGORITHMS.md §1.6). Stops on the
  standard error of every Linear's estimate.
* :func:`fisher_traces`: per Linear weight, the EXACT trace of the diagonal block of the Gauss-Newton
  matrix (the Hessian of ``training.losses.teacher_kl_loss``, equal to the Fisher of the model's
  predictive distribution) on each batch, from per-example gradients: no probe noise, and no
  leakage from the other Linears' blocks, which is what dominates the shared-probe Hutchinson
  variance on a fine-tuned encoder (benchmarks/results/hessian_sensitivity.json). Its standard
  error is the spread over batches.
* :func:`layer_eigenvalues` (Q-BERT, Shen et al. 2020 §3.2; §1.3): per encoder layer and batch,
  the top eigenvalue of the layer's weight block by power iteration, and
  ``Ω_i = |mean_j λ_ij| + std_j λ_ij``. It costs one HVP chain (≤ ``max_iter`` HVPs) per layer and
  batch, against ``probes_per_batch`` HVPs for all Linears together in :func:`linear_traces`.

Conditions (§1.7): eval mode (no dropout), eager attention (fused SDPA/Flash kernels may lack a
double backward), the graph rebuilt per batch, and HVPs in float32: half-precision floating
parameters and buffers are cast to float32 for the computation and cast back afterwards (exact:
every fp16/bf16 value is a float32 value). float64 models stay float64. Only the target weights
require grad during the computation; every flag is restored.

With ``torch.distributed`` initialised, each process feeds its own batches (e.g. from
``training.dist.rank_batches``); the trace statistics (count, Σs, Σs²) and the eigenvalues are
all-reduced each round, so every rank stops together and returns the same result.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from compresslab.bench.env import peak_memory_mb
from compresslab.failure import error_text, raise_if_interrupted
from compresslab.ops.loss_hessian import RunningTrace, block_quadratic, check_probes, hvp, power_iteration, rademacher
from compresslab.quant.hvp import EAGER_NOTE, DoubleBackwardError, gradient_graph, hessian_mode, hvp_fn
from compresslab.training.dist import world
from compresslab.training.losses import LossFn, task_loss

__all__ = ["DoubleBackwardError", "LinearTrace", "SensitivityResult", "fisher_traces", "layer_eigenvalues",
           "linear_traces"]

LAYER_ROLES = ("q", "k", "v", "o", "ffn_in", "ffn_out")


@dataclass(frozen=True)
class LinearTrace:
    """One Linear's Hessian trace estimate: ``trace`` ≈ Tr(H_ii) (loss units per weight²), its
    standard error ``se``, ``avg_trace = trace / numel`` and ``converged`` (the SE rule met)."""

    trace: float
    avg_trace: float
    se: float
    numel: int
    converged: bool


@dataclass
class SensitivityResult:
    """Output of :func:`linear_traces`: per qualified Linear name a :class:`LinearTrace`, plus the
    run's totals (over all processes) and cost."""

    traces: dict[str, LinearTrace]
    batches: int
    probes: int
    converged: bool
    not_converged: list[str]
    wall_s: float
    peak_mb: float
    seed: int
    dtype: str
    settings: dict[str, Any] = field(default_factory=dict)

    def avg_traces(self) -> dict[str, float]:
        """``{name: Tr(H_i)/n_i}``, the HAWQ-V2 sensitivity numerator."""
        return {n: t.avg_trace for n, t in self.traces.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (manifest / results files)."""
        d = asdict(self)
        d["traces"] = {n: asdict(t) for n, t in self.traces.items()}
        return d


# ---------------------------------------------------------------------------------------------- glue

def _linears(model: nn.Module, names: Sequence[str]) -> list[nn.Linear]:
    if not names:
        raise ValueError("names must list at least one Linear (qualified module names)")
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods]
    wrong = [n for n in names if n in mods and not isinstance(mods[n], nn.Linear)]
    if missing or wrong:
        raise ValueError(f"sensitivity targets must be nn.Linear modules of the model; not found: {missing}, "
                         f"not Linear: {wrong}; e.g. {[n for n, m in mods.items() if isinstance(m, nn.Linear)][:4]}")
    if len(set(names)) != len(names):
        raise ValueError(f"names repeat a module: {list(names)}")
    return [mods[n] for n in names]


def check_double_backward(model: nn.Module, names: Sequence[str]) -> None:
    """One Hessian-vector product through the Linear ``names[0]`` on a fixed tiny batch (2 sequences of 8 tokens,
    loss Σ logits²), in the mode the estimates run in (:func:`hessian_mode`): DoubleBackwardError when an op on the
    path has no second derivative, naming the attention implementation kept as registered (transformers' fused
    kernels run as eager) when there is one; a forward that fails raises as it is. A pass calls it before any step runs,
    so a model that cannot give Hessian-vector products is refused before fine-tuning, not after. The model is left
    as it was (no ``.grad`` written, every flag restored)."""
    (linear,) = _linears(model, list(names[:1]))
    params = [linear.weight]
    vocab = int(getattr(model.config, "vocab_size", 0) or 2)
    ids = (torch.arange(16) % max(vocab - 1, 1) + 1).reshape(2, 8).to(linear.weight.device)
    with hessian_mode(model, params), torch.enable_grad():  # a caller under no_grad still gets its answer
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))  # a failing forward is not ours to explain
        logits = out.logits if hasattr(out, "logits") else out[0]
        # as the estimates see them: transformers' fused kernels are eager here, a registered one is kept
        kept = sorted({str(m.config._attn_implementation) for m in model.modules()
                       if hasattr(getattr(m, "config", None), "_attn_implementation")} - {"eager"})
        try:
            (grad,) = torch.autograd.grad(logits.float().pow(2).sum(), params, create_graph=True)
            hvp([grad], params, [torch.ones_like(grad)])
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as e:
            where = (f"its attention implementation {', '.join(kept)} has none here ({EAGER_NOTE})" if kept
                     else "an op on the path has none")
            raise DoubleBackwardError(f"Hessian-vector products need a second derivative through the model, and "
                                      f"{where}: {error_text(e, typed=False, limit=300)}") from e


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _all_reduce(t: Tensor, device: torch.device) -> Tensor:
    """Sum ``t`` over processes (identity in a world of one); returned on the CPU."""
    if world()[1] == 1:
        return t
    import torch.distributed as dist

    buf = t.to(device)
    dist.all_reduce(buf)
    return buf.cpu()


def _generator(seed: int) -> torch.Generator:
    rank = world()[0]
    return torch.Generator().manual_seed(int(seed) * 65537 + rank)  # distinct probes per rank


# ------------------------------------------------------------------------------------------ traces

def _rounds(max_batches: int, progress: Any, desc: str) -> tuple[int, Iterable[int]]:
    """(world size, the rounds to iterate): ``max_batches`` over all processes, one batch per process
    per round, wrapped in ``progress`` when given."""
    size = world()[1]
    rounds = math.ceil(max_batches / size)
    return size, range(rounds) if progress is None else progress(range(rounds), total=rounds, desc=desc)


def _trace_result(names: Sequence[str], params: Sequence[Tensor], total: RunningTrace, rel_se_tol: float,
                  abs_se_tol: float, warning: str, *, batches: int, probes: int, t0: float, seed: int,
                  dtype: torch.dtype, settings: dict[str, Any]) -> SensitivityResult:
    """The :class:`SensitivityResult` of per-Linear trace statistics ``total``; warns ``warning`` (on the
    caller's caller) with the Linears whose standard error misses the rule."""
    ests = total.estimates(rel_se_tol, abs_se_tol)
    traces = {n: LinearTrace(e.mean, e.mean / p.numel(), e.se, p.numel(), e.converged)
              for n, e, p in zip(names, ests, params)}
    bad = [n for n, t in traces.items() if not t.converged]
    if bad:
        warnings.warn(f"{warning} for {len(bad)} Linear(s): {bad[:6]}{' ...' if len(bad) > 6 else ''}", stacklevel=3)
    return SensitivityResult(
        traces=traces, batches=batches, probes=probes, converged=not bad, not_converged=bad,
        wall_s=time.perf_counter() - t0, peak_mb=peak_memory_mb(params[0].device), seed=seed,
        dtype=str(dtype).replace("torch.", ""), settings=settings)


def linear_traces(model: nn.Module, batches: Iterable[dict[str, Tensor]], names: Sequence[str], *,
                  probes_per_batch: int = 4, max_batches: int = 16, min_probes: int = 16,
                  rel_se_tol: float = 0.05, abs_se_tol: float = 0.0, seed: int = 0,
                  loss_fn: LossFn = task_loss, progress: Any = None) -> SensitivityResult:
    """HAWQ-V2 average Hessian trace of each named Linear's weight (bias excluded), by Hutchinson.

    Per batch (dicts of ``(B, T)`` model inputs plus ``labels``; moved to the model's device): one
    forward/backward with ``create_graph=True`` of ``loss_fn`` (default the mean task loss), then
    ``probes_per_batch`` HVPs, each with one Rademacher probe over all named weights; Linear i's
    sample is ``z_iᵀ(Hz)_i`` (unbiased for ``Tr(H_ii)``). After each batch, stops once
    ``probes >= min_probes`` and every Linear has ``se <= max(rel_se_tol·|trace|, abs_se_tol)``;
    at most ``max_batches`` batches over all processes (rounded up to a multiple of the world
    size). Linears short of the rule are listed in ``not_converged`` and warned about.

    Deterministic for a given ``seed``, batches and world size. ``progress`` is a tqdm-like
    ``progress(iterable, total=, desc=)``. Errors: ValueError for unknown or non-Linear names,
    bad probe settings or no batches; :class:`DoubleBackwardError` when the loss has no double
    backward.
    """
    if probes_per_batch < 1 or max_batches < 1:
        raise ValueError(f"probes_per_batch={probes_per_batch} and max_batches={max_batches} must be >= 1")
    if min_probes > probes_per_batch * max_batches:
        raise ValueError(f"min_probes={min_probes} exceeds probes_per_batch*max_batches="
                         f"{probes_per_batch * max_batches}: the stopping rule could never be checked")
    check_probes(min_probes, probes_per_batch * max_batches, rel_se_tol, abs_se_tol)
    mods = _linears(model, names)
    params = [m.weight for m in mods]
    device = params[0].device
    size, steps = _rounds(max_batches, progress, "hessian traces")
    gen = _generator(seed)
    local = RunningTrace(len(params))
    total = RunningTrace(len(params))
    n_batches = 0
    t0 = time.perf_counter()
    it = iter(batches)
    with hessian_mode(model, params) as dtype:
        for _ in steps:
            raise_if_interrupted()
            batch = next(it, None)
            if batch is not None:
                grads = gradient_graph(model, _to(batch, device), params, loss_fn)
                fn = hvp_fn(grads, params)
                for _p in range(probes_per_batch):
                    z = rademacher(params, gen)
                    local.add(block_quadratic(z, fn(z), [1] * len(params)))
                del grads, fn  # frees this batch's graph
            had = torch.tensor([0.0 if batch is None else 1.0], dtype=torch.float64)
            reduced = _all_reduce(torch.cat([local.state(), had]), device)
            total = RunningTrace.from_state(reduced[:-1])
            if reduced[-1].item() == 0:
                break
            n_batches += int(reduced[-1].item())
            if total.probes >= min_probes and bool(total.converged(rel_se_tol, abs_se_tol).all()):
                break
    if total.probes == 0:
        raise ValueError("linear_traces got no batches")
    return _trace_result(
        names, params, total, rel_se_tol, abs_se_tol, f"Hessian trace not converged to rel_se_tol={rel_se_tol} "
        f"after {total.probes} probes", batches=n_batches, probes=total.probes, t0=t0, seed=seed, dtype=dtype,
        settings={"probes_per_batch": probes_per_batch, "max_batches": max_batches, "min_probes": min_probes,
                  "rel_se_tol": rel_se_tol, "abs_se_tol": abs_se_tol, "world_size": size})


# --------------------------------------------------------------------------------- exact GGN traces

def _output_directions(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Factor the output-space curvature of :func:`teacher_kl_loss` per example: ``(w, U)`` with
    ``diag(p) − ppᵀ = Σ_k w_k u_k u_kᵀ`` (``w`` ``(B, C)`` ≥ 0, ``U`` ``(B, C, C)``, columns ``u_k``);
    for one output (MSE) ``w = 2`` and ``u = 1``. ``logits`` ``(B, C)``, detached. The eigenvalues
    come ascending, so column 0 is the null direction (``1/√C``, eigenvalue 0) when ``C > 1``."""
    if logits.shape[-1] == 1:
        return torch.full_like(logits, 2.0), torch.ones_like(logits).unsqueeze(-1)
    p = torch.softmax(logits.double(), -1)
    m = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    w, u = torch.linalg.eigh(m)  # one eigenvalue is 0 (direction 1): Σ_c p_c = 1
    return w.clamp_min(0.0).to(logits.dtype), u.to(logits.dtype)


def fisher_traces(model: nn.Module, batches: Iterable[dict[str, Tensor]], names: Sequence[str], *,
                  max_batches: int = 16, rel_se_tol: float = 0.1, seed: int = 0,
                  progress: Any = None) -> SensitivityResult:
    """Exact per-Linear traces of the Gauss-Newton matrix ``(1/B) Σ_n J_nᵀ(diag(p_n) − p_n p_nᵀ)J_n``
    (the Hessian of :func:`~compresslab.training.losses.teacher_kl_loss`; ``J_n`` = ∂logits_n/∂θ).

    With ``diag(p_n) − p_n p_nᵀ = Σ_k w_nk u_nk u_nkᵀ``, ``tr(H_ii) = (1/B) Σ_n Σ_k w_nk
    ‖∂(u_nkᵀ z_n)/∂W_i‖²``. Examples do not interact in eval mode, so one backward of
    ``Σ_n √w_nk u_nkᵀ z_n`` per direction ``k`` (C − 1 of them; one for two classes) gives every
    example's gradient at every Linear's output, ``δ_n`` ``(T, out)``; with the Linear's input
    ``x_n`` ``(T, in)`` the per-example weight gradient is ``δ_nᵀ x_n``, whose squared norm is
    summed. Padded positions get ``δ = 0`` (masked out of attention), so they add nothing.

    Per batch this is exact (no Hutchinson probe, so no leakage from the other blocks); the
    estimate is the mean over batches and ``se`` its standard error over batches (``converged``:
    ``se <= rel_se_tol·trace``). ``probes`` in the result counts backward passes. Deterministic
    (``seed`` is recorded only). Batches are dicts of ``(B, T)`` inputs; labels are not used.
    Errors: ValueError for unknown or non-Linear names, ``max_batches < 1`` or no batches.
    """
    from compresslab.models.hooks import capture_inputs, capture_outputs
    from compresslab.training.losses import MODEL_INPUTS

    if max_batches < 1:
        raise ValueError(f"max_batches={max_batches} must be >= 1")
    check_probes(2, 2, rel_se_tol)
    mods = _linears(model, names)
    params = [m.weight for m in mods]
    device = params[0].device
    size, steps = _rounds(max_batches, progress, "fisher traces")
    local = RunningTrace(len(params))
    backwards = 0
    t0 = time.perf_counter()
    it = iter(batches)
    keyed = dict(enumerate(mods))
    with hessian_mode(model, params) as dtype:
        for _ in steps:
            raise_if_interrupted()
            batch = next(it, None)
            if batch is None:
                break
            xs: dict[int, Tensor] = {}
            ys: dict[int, Tensor] = {}
            with capture_inputs(keyed, lambda k, x: xs.__setitem__(k, x.detach())), \
                    capture_outputs(keyed, ys.__setitem__):
                batch = _to(batch, device)
                z = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS}, return_dict=True).logits
            w, u = _output_directions(z.detach())
            keys = [k for k in keyed if k in ys and ys[k].requires_grad]
            tr = torch.zeros(len(params), dtype=torch.float64)
            b = z.shape[0]
            # eigh sorts ascending: column 0 is diag(p) − ppᵀ's null direction (the all-ones vector), skipped
            dirs = list(range(1, w.shape[1])) if w.shape[1] > 1 else [0]
            for j, k in enumerate(dirs):
                s = (w[:, k].sqrt() * (u[:, :, k] * z).sum(-1)).sum()
                deltas = torch.autograd.grad(s, [ys[i] for i in keys], retain_graph=j < len(dirs) - 1,
                                             allow_unused=True)
                backwards += 1
                for i, d in zip(keys, deltas):
                    if d is None:
                        continue
                    x = xs[i].reshape(b, -1, xs[i].shape[-1])  # (B, T, in); (B, 1, in) for a pooled input
                    g = torch.einsum("bto,bti->boi", d.reshape(b, -1, d.shape[-1]), x)  # per-example dL/dW
                    tr[i] += g.double().pow(2).sum().item()
            local.add(tr / b)
            del xs, ys, z
    reduced = _all_reduce(local.state(), device)
    total = RunningTrace.from_state(reduced)
    if total.probes == 0:
        raise ValueError("fisher_traces got no batches")
    n_back = int(_all_reduce(torch.tensor([float(backwards)], dtype=torch.float64), device).item())
    return _trace_result(
        names, params, total, rel_se_tol, 0.0, f"Fisher trace standard error over {total.probes} batches above "
        f"rel_se_tol={rel_se_tol} (more batches narrow it)", batches=total.probes, probes=n_back, t0=t0, seed=seed,
        dtype=dtype, settings={"estimator": "exact", "max_batches": max_batches, "rel_se_tol": rel_se_tol,
                               "world_size": size, "se": "over batches (each batch's trace is exact)",
                               "probes": "backward passes"})


# ------------------------------------------------------------------------------------- eigenvalues

def layer_eigenvalues(model: nn.Module, batches: Iterable[dict[str, Tensor]], *, max_batches: int = 16,
                      max_iter: int = 100, tol: float = 1e-3, seed: int = 0, loss_fn: LossFn = task_loss,
                      progress: Any = None) -> dict[str, Any]:
    """Q-BERT sensitivity: per encoder layer i, ``Ω_i = |mean_j λ_ij| + std_j λ_ij`` (population std).

    ``λ_ij`` is the eigenvalue of largest magnitude (sign kept) of the Hessian block of layer i's
    q, k, v, o, ffn_in, ffn_out weights (biases excluded) on batch j, by power iteration (one HVP
    chain per layer and batch on one shared gradient graph). ``max_batches`` counts batches over
    all processes (rounded up to a multiple of the world size).

    Returns ``{"layers": [{"index", "names", "numel", "eigenvalues", "iterations", "converged",
    "mean", "std", "omega", "seconds"}], "omega": [Ω_i], "batches", "converged",
    "not_converged": [[layer, batch], ...], "eigen_s_per_layer", "wall_s", "peak_mb", "seed",
    "settings"}``; ``seconds`` is this process's power-iteration time for the layer over all its
    batches, ``eigen_s_per_layer`` the whole run's wall time (gradient graphs included) divided by
    the number of layers. Errors: as :func:`linear_traces`; UnsupportedArchitectureError for a
    model without an adapter.
    """
    from compresslab.models.adapters import get_adapter

    if max_batches < 1:
        raise ValueError(f"max_batches={max_batches} must be >= 1")
    views = list(get_adapter(model).layers())
    layer_names = [[lv.names[r] for r in LAYER_ROLES if getattr(lv, r) is not None] for lv in views]
    layer_params = [[getattr(lv, r).weight for r in LAYER_ROLES if getattr(lv, r) is not None] for lv in views]
    params = [p for ps in layer_params for p in ps]
    offsets = [0]
    for ps in layer_params:
        offsets.append(offsets[-1] + len(ps))
    device = params[0].device
    rank, size = world()
    rounds = math.ceil(max_batches / size)
    n_layers = len(views)
    gen = _generator(seed)
    # (world, rounds, layers, [λ, iterations, converged]) and (world, rounds) "had a batch"
    vals = torch.zeros(size, rounds, n_layers, 3, dtype=torch.float64)
    had = torch.zeros(size, rounds, dtype=torch.float64)
    seconds = [0.0] * n_layers
    t0 = time.perf_counter()
    it = iter(batches)
    steps: Iterable[int] = range(rounds) if progress is None else progress(range(rounds), total=rounds,
                                                                              desc="hessian eigenvalues")
    with hessian_mode(model, params):
        for r in steps:
            raise_if_interrupted()
            batch = next(it, None)
            if batch is None:
                break
            grads = gradient_graph(model, _to(batch, device), params, loss_fn)
            for i in range(n_layers):
                raise_if_interrupted()
                a, b = offsets[i], offsets[i + 1]
                ts = time.perf_counter()
                res = power_iteration(hvp_fn(grads[a:b], params[a:b]), params[a:b], max_iter=max_iter, tol=tol,
                                      generator=gen)
                seconds[i] += time.perf_counter() - ts
                vals[rank, r, i] = torch.tensor([res.value, res.iterations, float(res.converged)])
            had[rank, r] = 1.0
            del grads
    reduced = _all_reduce(torch.cat([vals.reshape(-1), had.reshape(-1)]), device)
    vals = reduced[:vals.numel()].reshape(vals.shape)
    had = reduced[vals.numel():].reshape(had.shape).bool()
    # batch order: round-major, then rank (the order rank_batches deals them)
    rows = [vals[w, r] for r in range(rounds) for w in range(size) if had[w, r]]
    if not rows:
        raise ValueError("layer_eigenvalues got no batches")
    table = torch.stack(rows)  # (batches, layers, 3)
    layers, omega, not_conv = [], [], []
    for i, lv in enumerate(views):
        lam = table[:, i, 0]
        mean, std = lam.mean().item(), lam.std(unbiased=False).item()
        om = abs(mean) + std
        omega.append(om)
        conv = [bool(c) for c in table[:, i, 2]]
        not_conv += [[lv.index, j] for j, c in enumerate(conv) if not c]
        layers.append({"index": lv.index, "names": layer_names[i], "numel": sum(p.numel() for p in layer_params[i]),
                       "eigenvalues": lam.tolist(), "iterations": [int(x) for x in table[:, i, 1]],
                       "converged": conv, "mean": mean, "std": std, "omega": om, "seconds": seconds[i]})
    wall = time.perf_counter() - t0
    if not_conv:
        warnings.warn(f"power iteration did not converge (tol={tol}, max_iter={max_iter}) for "
                      f"{len(not_conv)} (layer, batch) pair(s): {not_conv[:6]}", stacklevel=2)
    return {"layers": layers, "omega": omega, "batches": len(rows), "converged": not not_conv,
            "not_converged": not_conv, "eigen_s_per_layer": wall / n_layers, "wall_s": wall,
            "peak_mb": peak_memory_mb(device), "seed": seed,
            "settings": {"max_batches": max_batches, "max_iter": max_iter, "tol": tol, "world_size": size}}
