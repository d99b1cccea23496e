"""Model-side Hessian sensitivity on tiny BERTs: exact against a dense Hessian, deterministic per seed,
scale-equivariant (§1.8 test 6), and leaving the model as it found it."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from compresslab.models.adapters import get_adapter
from compresslab.models.tiny import tiny_model
from compresslab.quant.sensitivity import layer_eigenvalues, linear_traces
from compresslab.training.losses import task_loss


def _batches(n: int, seed: int = 0, batch: int = 4, seq: int = 10) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[0, seq - 3:] = 0  # one padded row
        out.append({"input_ids": torch.randint(5, 60, (batch, seq), generator=g), "attention_mask": mask,
                    "labels": torch.randint(0, 2, (batch,), generator=g)})
    return out


def _names(model: nn.Module) -> list[str]:
    return get_adapter(model).encoder_linear_names() + ["classifier"]


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-convergence warnings are asserted elsewhere
        return fn(*args, **kw)


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("wall_s", "peak_mb", "eigen_s_per_layer")} | (
        {"layers": [{k: v for k, v in lay.items() if k != "seconds"} for lay in d["layers"]]} if "layers" in d else {})


def _dense_layer_hessian(model: nn.Module, batch: dict, names: list[str]) -> torch.Tensor:
    """The dense Hessian of the task loss over the weights of ``names`` (flattened in order)."""
    mods = dict(model.named_modules())
    ws = [mods[n].weight.detach() for n in names]
    shapes, sizes = [w.shape for w in ws], [w.numel() for w in ws]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        ps = {f"{n}.weight": c.reshape(s) for n, c, s in zip(names, flat.split(sizes), shapes)}
        return task_loss(lambda **kw: torch.func.functional_call(model, ps, (), kw), batch)  # type: ignore[arg-type]

    return torch.autograd.functional.hessian(loss_of, torch.cat([w.reshape(-1) for w in ws]), vectorize=True)


@pytest.fixture(scope="module")
def small() -> tuple[nn.Module, list[str], list[dict], torch.Tensor]:
    """A two-layer float64 BERT 8 wide (384 weights per layer) and layer 1's dense Hessian on one batch
    (the second layer makes the per-layer block restriction matter)."""
    model = tiny_model(hidden_size=8, num_attention_heads=2, intermediate_size=8).double()
    names = get_adapter(model).encoder_linear_names()[6:]  # layer 1's six Linears
    batches = _batches(1, seed=3)
    return model, names, batches, _dense_layer_hessian(model, batches[0], names)


def test_traces_match_the_dense_hessian_blocks(small) -> None:
    model, names, batches, h = small
    res = _quiet(linear_traces, model, batches, names, probes_per_batch=400, max_batches=1, min_probes=400,
                 rel_se_tol=1e-9, seed=0)
    assert res.probes == 400 and res.batches == 1 and res.dtype == "float64"
    mods = dict(model.named_modules())
    i = 0
    for n in names:
        k = mods[n].weight.numel()
        exact = h[i:i + k, i:i + k].trace().item()
        i += k
        t = res.traces[n]
        assert t.numel == k and t.avg_trace == pytest.approx(t.trace / k)
        assert abs(t.trace - exact) <= 4 * t.se + 1e-9, (n, t, exact)
        assert not t.converged and n in res.not_converged  # 1e-9 relative SE is out of reach: reported
    assert not res.converged


def test_layer_eigenvalue_matches_the_dense_hessian(small) -> None:
    model, names, batches, h = small
    ev = torch.linalg.eigvalsh(h)
    top = ev[ev.abs().argmax()].item()
    out = layer_eigenvalues(model, batches, max_batches=1, max_iter=2000, tol=1e-8, seed=0)
    lay1 = out["layers"][1]
    assert lay1["names"] == names and lay1["numel"] == h.shape[0]
    assert lay1["converged"] == [True]
    assert lay1["eigenvalues"][0] == pytest.approx(top, rel=1e-3)  # the whole model's top |λ| is 1.4% off
    assert lay1["omega"] == pytest.approx(abs(top), rel=1e-3)  # one batch: std = 0


def test_traces_are_deterministic_per_seed_and_the_seed_matters() -> None:
    model = tiny_model()
    names = _names(model)
    kw = dict(probes_per_batch=3, max_batches=3, min_probes=4, rel_se_tol=0.05)
    a = _quiet(linear_traces, model, _batches(3), names, seed=1, **kw).to_dict()
    b = _quiet(linear_traces, model, _batches(3), names, seed=1, **kw).to_dict()
    c = _quiet(linear_traces, model, _batches(3), names, seed=2, **kw).to_dict()
    assert _strip(a) == _strip(b)
    assert a["traces"] != c["traces"]
    assert set(a["traces"]) == set(names) and a["probes"] == 9 and a["batches"] == 3
    assert a["not_converged"] == [n for n in names if not a["traces"][n]["converged"]]


@pytest.mark.parametrize("c", [0.25, 3.0])
def test_scaling_the_loss_scales_every_avg_trace_and_keeps_the_ranking(c: float) -> None:
    model = tiny_model()
    names = _names(model)
    kw = dict(probes_per_batch=2, max_batches=2, min_probes=4, rel_se_tol=0.05, seed=5)
    base = _quiet(linear_traces, model, _batches(2), names, **kw)
    scaled = _quiet(linear_traces, model, _batches(2), names, loss_fn=lambda m, b: c * task_loss(m, b), **kw)
    rtol = 0.0 if c == 0.25 else 1e-4  # a power of two scales every float exactly
    for n in names:
        assert scaled.traces[n].avg_trace == pytest.approx(c * base.traces[n].avg_trace, rel=rtol, abs=1e-12)
        assert scaled.traces[n].se == pytest.approx(c * base.traces[n].se, rel=rtol, abs=1e-12)
    rank = sorted(names, key=lambda n: -base.traces[n].avg_trace)
    assert rank == sorted(names, key=lambda n: -scaled.traces[n].avg_trace)
    eb = _quiet(layer_eigenvalues, model, _batches(2), max_batches=2, max_iter=20, seed=5)
    es = _quiet(layer_eigenvalues, model, _batches(2), max_batches=2, max_iter=20, seed=5,
                loss_fn=lambda m, b: c * task_loss(m, b))
    assert es["omega"] == pytest.approx([c * o for o in eb["omega"]], rel=1e-3)


def test_model_state_is_restored() -> None:
    model = tiny_model()
    model.config._attn_implementation = "sdpa"
    model.train()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []

    def spy(m: nn.Module, batch: dict) -> torch.Tensor:  # the state the Hessian is computed in
        seen.append((m.config._attn_implementation, m.training, m.bert.pooler.dense.weight.requires_grad))
        return task_loss(m, batch)

    _quiet(linear_traces, model, _batches(1), _names(model), probes_per_batch=2, max_batches=1, min_probes=2,
           rel_se_tol=0.1, seed=0, loss_fn=spy)
    _quiet(layer_eigenvalues, model, _batches(1), max_batches=1, max_iter=5, seed=0, loss_fn=spy)
    assert seen == [("eager", False, False)] * 2  # eager, eval, grads only on the targets
    assert model.config._attn_implementation == "sdpa" and model.training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_half_precision_is_computed_in_fp32_and_cast_back() -> None:
    model = tiny_model().to(torch.bfloat16)
    names = _names(model)[:2]
    res = _quiet(linear_traces, model, _batches(1), names, probes_per_batch=2, max_batches=1, min_probes=2,
                 rel_se_tol=0.5, seed=0)
    assert res.dtype == "float32"
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_layer_eigenvalues_one_entry_per_layer() -> None:
    model = tiny_model()
    out = _quiet(layer_eigenvalues, model, _batches(3), max_batches=3, max_iter=20, seed=0)
    assert len(out["layers"]) == len(out["omega"]) == 2 and out["batches"] == 3
    for lay in out["layers"]:
        lam = torch.tensor(lay["eigenvalues"], dtype=torch.float64)
        assert len(lay["names"]) == 6 and len(lam) == 3
        assert lay["omega"] == pytest.approx(abs(lam.mean().item()) + lam.std(unbiased=False).item())
        assert torch.isfinite(torch.tensor(lay["omega"]))
    assert out["eigen_s_per_layer"] > 0
    again = _quiet(layer_eigenvalues, model, _batches(3), max_batches=3, max_iter=20, seed=0)
    assert _strip(again) == _strip(out)


def test_non_convergence_is_reported_and_warned() -> None:
    model = tiny_model()
    with pytest.warns(UserWarning, match="not converged"):
        res = linear_traces(model, _batches(1), _names(model), probes_per_batch=2, max_batches=1, min_probes=2,
                            rel_se_tol=1e-6, seed=0)
    assert not res.converged and res.not_converged
    with pytest.warns(UserWarning, match="did not converge"):
        out = layer_eigenvalues(model, _batches(1), max_batches=1, max_iter=2, tol=1e-12, seed=0)
    assert not out["converged"] and out["not_converged"]


def test_bad_inputs_raise() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="not found"):
        linear_traces(model, _batches(1), ["bert.nope"], min_probes=2, rel_se_tol=0.1)
    with pytest.raises(ValueError, match="not Linear"):
        linear_traces(model, _batches(1), ["bert.embeddings"], min_probes=2, rel_se_tol=0.1)
    with pytest.raises(ValueError, match="min_probes"):
        linear_traces(model, _batches(1), ["classifier"], probes_per_batch=1, max_batches=1, min_probes=4)
    with pytest.raises(ValueError, match="no batches"):
        linear_traces(model, [], ["classifier"], probes_per_batch=2, max_batches=1, min_probes=2)


def test_a_loss_without_double_backward_raises_a_clear_error() -> None:
    from compresslab.quant.sensitivity import DoubleBackwardError

    model = tiny_model()

    def loss(m: nn.Module, batch: dict) -> torch.Tensor:  # fused SDPA (CPU flash) has no double backward
        w = m.classifier.weight.view(1, 1, 2, 32)
        return task_loss(m, batch) + nn.functional.scaled_dot_product_attention(w, w, w).pow(2).sum()

    with pytest.raises(DoubleBackwardError, match="no second derivative.*attn_implementation=.eager."):
        linear_traces(model, _batches(1), ["classifier"], probes_per_batch=2, max_batches=1, min_probes=2,
                      rel_se_tol=0.1, loss_fn=loss)
    assert all(p.requires_grad for p in model.parameters())  # restored on the error path too


_WORKER = '''
import json, os, sys
import torch
torch.set_num_threads(1)
if "RANK" in os.environ:
    torch.distributed.init_process_group("gloo")
from compresslab.models.tiny import tiny_model
from compresslab.quant.sensitivity import layer_eigenvalues, linear_traces
from compresslab.training.dist import rank_batches, world

g = torch.Generator().manual_seed(0)
loader = [{"input_ids": torch.randint(5, 60, (4, 10), generator=g),
           "attention_mask": torch.ones(4, 10, dtype=torch.long),
           "labels": torch.randint(0, 2, (4,), generator=g)} for _ in range(4)]
model = tiny_model()
names = ["classifier", "bert.pooler.dense"]
tr = linear_traces(model, rank_batches(loader, torch.device("cpu")), names, probes_per_batch=2, max_batches=4,
                   min_probes=8, rel_se_tol=1e-9, seed=3).to_dict()
ev = layer_eigenvalues(model, rank_batches(loader, torch.device("cpu")), max_batches=4, max_iter=5, seed=3)
for d in (tr, ev):
    for k in ("wall_s", "peak_mb", "eigen_s_per_layer"):
        d.pop(k, None)
for lay in ev["layers"]:
    lay.pop("seconds")
with open(sys.argv[1] + f".{world()[0]}.json", "w") as f:
    json.dump({"traces": tr, "eigen": ev}, f)
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
'''


@pytest.mark.slow
def test_two_processes_sum_their_statistics(tmp_path) -> None:
    """Each rank takes its own batches; both return the same totals over all four batches."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = tmp_path / "worker.py"
    worker.write_text(_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    out = tmp_path / "two"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547",
                    str(worker), str(out)], check=True, env=env, timeout=300, capture_output=True)
    r0, r1 = (json.loads(Path(f"{out}.{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1
    assert r0["traces"]["batches"] == 4 and r0["traces"]["probes"] == 8
    assert r0["traces"]["settings"]["world_size"] == 2
    assert r0["eigen"]["batches"] == 4 and all(len(lay["eigenvalues"]) == 4 for lay in r0["eigen"]["layers"])
