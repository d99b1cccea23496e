"""oBERT: Fisher collection, OBS beats magnitude where it must, schedules, bad input before work."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from compresslab.data.schema import MissingSplit
from compresslab.models.tiny import tiny_model
from compresslab.passes.magnitude import Magnitude, MagnitudeScorer
from compresslab.passes.obert import OBert, validation_loss
from compresslab.pruning import fisher as _fisher
from compresslab.pruning.fisher import OBSScorer
from compresslab.pruning.masks import MaskKeeper
from compresslab.pruning.unstructured import Scope, prune_to
from compresslab.testing import tiny_task
from compresslab.training import Recovery, TaskLoss, TrainConfig, train

FAST = dict(num_grads=8, grad_batch_size=4)


# ---------------------------------------------------------------- a quadratic where OBS must win
def _correlated_regression(n: int = 512, d: int = 8):
    torch.manual_seed(0)
    x = torch.repeat_interleave(torch.randn(n, d // 2), 2, dim=1) + 0.05 * torch.randn(n, d)  # near-copy pairs
    y = x @ torch.randn(d) + 0.1 * torch.randn(n)
    model = nn.Sequential(nn.Linear(d, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.linalg.lstsq(x, y.unsqueeze(1)).solution.T)  # at the optimum
    return model, x, y


def _mse(model, batch):
    return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()


def test_obs_beats_magnitude_on_correlated_regression():
    """Pruning one of two near-copies costs little if its partner absorbs it: only OBS does that."""
    increase = {}
    for name in ("magnitude", "obs"):
        model, x, y = _correlated_regression()
        batches = ({"x": x[i:i + 8], "y": y[i:i + 8]} for i in itertools.cycle(range(0, 512, 8)))
        scorer = (MagnitudeScorer() if name == "magnitude"
                  else OBSScorer(batches, num_grads=64, block_size=8, damp=1e-6, loss_fn=_mse))
        keeper = MaskKeeper({"0.weight": torch.zeros(1, 8, dtype=torch.bool)})
        with torch.no_grad():
            before = float(_mse(model, {"x": x, "y": y}))
        prune_to(scorer, model, {"0": model[0]}, keeper, 0.5, Scope.GLOBAL)
        with torch.no_grad():
            increase[name] = float(_mse(model, {"x": x, "y": y})) - before
        assert int((model[0].weight == 0).sum()) == 4
    assert increase["obs"] < 0.5 * increase["magnitude"]


def test_streamed_fisher_equals_whole_state_when_gradients_repeat():
    """Groups under ``max_state_mb`` give the same pruned weights as one whole-state pass when every
    pass sees the same mini-batches (here: a cycle of 8), and the groups partition the modules."""
    from compresslab.pruning.fisher import fisher_state_bytes, stream_groups

    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = torch.randn(64)
    base = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
    data = [{"x": x[i:i + 8], "y": y[i:i + 8]} for i in range(0, 64, 8)]
    mse = lambda m, b: ((m(b["x"]).squeeze(-1) - b["y"]) ** 2).mean()  # noqa: E731
    results, metrics = [], []
    for cap in (None, fisher_state_bytes(base[0], 4) / 2**20):  # the cap fits exactly one module
        model = copy.deepcopy(base)
        mods = {"0": model[0], "2": model[2], "4": model[4]}
        groups = stream_groups(mods, 4, cap)
        assert sum(groups, []) == list(mods) and len(groups) == (1 if cap is None else 3)
        scorer = OBSScorer(iter(itertools.cycle(data)), num_grads=8, block_size=4, damp=1e-4, loss_fn=mse,
                           max_state_mb=cap)
        keeper = MaskKeeper({f"{n}.weight": torch.zeros_like(m.weight, dtype=torch.bool) for n, m in mods.items()})
        prune_to(scorer, model, mods, keeper, 0.5, Scope.GLOBAL)
        results.append([m.weight.detach().clone() for m in mods.values()])
        metrics.append(scorer.metrics)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert metrics[0]["fisher_groups"] == 1 and metrics[1]["fisher_groups"] == 3
    assert metrics[1]["fisher_grads"] == 2 * 3 * 8  # scores + update, per group


def test_outer_sums_match_direct_masked_sum_any_chunk():
    model, x, y = _correlated_regression(64, 8)
    data = [{"x": x[i:i + 8], "y": y[i:i + 8]} for i in range(0, 64, 8)]
    pruned = {"0": torch.tensor([False, True] + [False] * 6)}
    expect = torch.zeros(2, 5, 5)  # block_size 5: 8 weights -> 2 blocks, tail padded
    for b in data:
        (g,) = torch.autograd.grad(_mse(model, b), [model[0].weight])
        g = torch.cat([g.reshape(-1) * ~pruned["0"], torch.zeros(2)]).view(2, 5)
        expect += g.unsqueeze(2) * g.unsqueeze(1)
    for chunk in (1, 3, 16):
        got = _fisher.collect_outer_sums(model, {"0": model[0]}, pruned, iter(data), 8, 5, _mse, chunk=chunk)
        torch.testing.assert_close(got["0"], expect, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- the pass on a tiny BERT
def _fit(model, ctx):
    train(model, ctx.train_loader(batch_size=16), TrainConfig(lr=3e-3, steps=40, batch_size=16), [TaskLoss()])
    return model


def test_oneshot_loss_increase_not_worse_than_magnitude(tiny_ctx):
    ctx = tiny_ctx(task=tiny_task(n_train=96, n_val=64, seed=1))
    dense = _fit(tiny_model("bert", seed=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), ctx)
    val = ctx.validation_loader()
    losses = {}
    for name, p in (("magnitude", Magnitude(sparsity=0.7, recovery=Recovery(steps=0))),
                    ("obert", OBert(sparsity=0.7, mode="oneshot", recovery=Recovery(steps=0), num_grads=24,
                                    grad_batch_size=4, damp=1e-5))):
        m = copy.deepcopy(dense)
        res = p.apply(m, ctx)
        assert res.metrics["num_zero"] == round(0.7 * res.metrics["num_targeted"])  # exact global count
        losses[name] = validation_loss(m, val)["val_loss"]
    assert losses["obert"] <= losses["magnitude"]


def test_gradual_schedule_masks_and_metrics(tiny_ctx):
    model = tiny_model("bert")
    ctx = tiny_ctx(teacher=copy.deepcopy(model).eval())
    res = OBert(sparsity=0.6, init_sparsity=0.3, recovery=Recovery(steps=8), num_events=3, block_size=16,
                **FAST).apply(model, ctx)
    m = res.metrics
    sched = [s for _, s in m["prune_steps"]]
    assert sched[0] == 0.3 and sched[-1] == 0.6 and sched == sorted(sched)
    assert [st for st, _ in m["prune_steps"]] == [m["dense_steps"] + i * m["cycle_steps"] for i in range(3)]
    assert m["num_zero"] == round(0.6 * m["num_targeted"]) and m["fisher_grads"] == 3 * 8
    assert set(res.structure["layer_sparsity"]) == {"layer.0", "layer.1"}
    assert m["size"]["sparse_int8"]["encoder"] < m["size"]["int8"]["encoder"] < m["size"]["fp32"]["encoder"]


def test_block4_prunes_whole_groups(tiny_ctx):
    model = tiny_model("bert")
    res = OBert(sparsity=0.5, mode="oneshot", recovery=Recovery(steps=2), mask_type="block4", **FAST).apply(
        model, tiny_ctx(teacher=copy.deepcopy(model).eval()))
    assert res.metrics["block_size"] == 32
    for n in res.structure["targets"]:
        g = (model.get_submodule(n).weight == 0).view(-1, 4)
        assert torch.equal(g.all(1), g.any(1))


def test_damp_grid_selects_on_validation_never_dev(tiny_ctx):
    task = tiny_task()
    task.dev = MissingSplit("dev is the test set")  # any use of dev would raise
    model = tiny_model("bert")
    res = OBert(sparsity=0.5, mode="oneshot", recovery=Recovery(steps=0), damp_grid=[1e-2, 1e-6], **FAST).apply(
        model, tiny_ctx(task=task))
    grid = res.metrics["damp_grid"]
    assert [r["damp"] for r in grid["results"]] == [1e-2, 1e-6]
    assert res.metrics["damp"] == min(grid["results"], key=lambda r: r["val_loss"])["damp"]
    assert res.metrics["fisher_grads"] == 8  # one gradient pass served both damps and the final prune


@pytest.mark.parametrize("kw,match", [
    ({"sparsity": 1.0}, r"sparsity=1.0 must be in \[0, 1\)"),
    ({"sparsity": -0.1}, "must be in"),
    ({"mask_type": "block2"}, "allowed: 'unstructured', 'block4'"),
    ({"mode": "fast"}, "allowed: 'oneshot', 'gradual'"),
    ({"mask_type": "block4", "block_size": 50}, "block_size % 4 == 0"),
    ({"init_sparsity": 0.9}, "init_sparsity=0.9 must be <= sparsity=0.8"),
    ({"recovery": {"steps": 1}}, "steps >= 2"),
    ({"num_grads": 0}, "num_grads must be an integer >= 1"),
    ({"damp": 0}, "damp must be a number > 0"),
    ({"damp_grid": []}, "damp_grid must be a non-empty list"),
    ({"targets": "q"}, "must be a list"),
])
def test_bad_settings_raise_on_construction(kw, match):
    with pytest.raises(ValueError, match=match):
        OBert(**kw)


def test_bad_data_and_targets_raise_before_the_fisher_pass(tiny_ctx, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the Fisher pass started")

    monkeypatch.setattr(_fisher, "collect_outer_sums", boom)
    ctx = tiny_ctx()
    with pytest.raises(ValueError, match="'attention.query' matches no nn.Linear"):
        OBert(targets=["attention.query"], **FAST).apply(tiny_model("bert"), ctx)
    with pytest.raises(ValueError, match="in_features % 4 == 0"):
        OBert(mask_type="block4", targets=["classifier"], **FAST).apply(
            tiny_model("bert", num_labels=2, hidden_size=30, num_attention_heads=3), ctx)


def test_num_grads_beyond_the_train_split_is_capped_and_recorded(tiny_ctx, caplog):
    """A train split with fewer mini-batches than num_grads (the README's defaults on a small CSV) runs on every
    batch it has: the same Fisher estimator over fewer gradients, warned about and recorded in the metrics."""
    ctx = tiny_ctx()  # 96 train examples = 24 mini-batches of 4
    p = OBert(sparsity=0.5, mode="oneshot", recovery=Recovery(steps=0), num_grads=100, grad_batch_size=4,
              block_size=16)
    p.check(ctx.task)  # no refusal before work
    assert p.grads_used(len(ctx.task.train)) == 24
    with caplog.at_level("WARNING", logger="compresslab.passes.obert"):
        m = p.apply(tiny_model("bert"), ctx).metrics
    assert m["num_grads"] == 24 and m["num_grads_capped_from"] == 100 and m["fisher_grads"] == 24
    assert "num_grads=100 but the train split has 96 examples (24 mini-batches of grad_batch_size=4); using 24" \
        in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="compresslab.passes.obert"):
        m = OBert(sparsity=0.5, mode="oneshot", recovery=Recovery(steps=0), block_size=16, **FAST).apply(
            tiny_model("bert"), ctx).metrics
    assert m["num_grads"] == 8 and "num_grads_capped_from" not in m and "num_grads=" not in caplog.text


@pytest.mark.slow
def test_two_process_fisher_sums_match_one(tmp_path):
    """Ranks take disjoint batches and all-reduce their sums: the total equals one process's (the
    one-process sums are computed here, in the test's own process; the two ranks run under torchrun)."""
    import importlib.util
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    worker = Path(__file__).with_name("fisher_ddp_worker.py")
    spec = importlib.util.spec_from_file_location("fisher_ddp_worker", worker)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    one = mod.fisher_sums()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    two = tmp_path / "two.safetensors"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
                    str(worker), str(two)], check=True, env=env, timeout=300, capture_output=True)
    torch.testing.assert_close(one, load_file(str(two))["0"], rtol=1e-5, atol=1e-7)
