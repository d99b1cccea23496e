"""Magnitude baseline: exact sparsity (global / per tensor), the shared gradual schedule, errors."""

from __future__ import annotations

import copy

import pytest
import torch

from compresslab.models.tiny import tiny_model
from compresslab.passes.magnitude import Magnitude
from compresslab.pruning.unstructured import plan_events
from compresslab.targets import select_modules
from compresslab.training import Recovery


def test_oneshot_global_exact_and_smallest_weights_go(tiny_ctx):
    model = tiny_model("bert")
    mods = select_modules(model)
    allw = torch.cat([m.weight.detach().reshape(-1).abs() for m in mods.values()])
    k = round(0.5 * allw.numel())
    thr = allw.kthvalue(k).values
    res = Magnitude(sparsity=0.5, recovery=Recovery(steps=0)).apply(model, tiny_ctx())
    assert res.metrics["num_zero"] == k and res.metrics["sparsity"] == pytest.approx(0.5)
    assert res.formats == ["sparse_int8"]  # declared by the pass, not inferred from the sparsity metric
    # without recovery, exactly the k smallest |w| are gone
    kept = torch.cat([m.weight.detach().reshape(-1) for m in mods.values()])
    assert bool((allw[kept == 0] <= thr).all()) and bool((allw[kept != 0] >= thr).all())


def test_per_layer_scope_gives_every_tensor_the_target(tiny_ctx):
    model = tiny_model("bert")
    res = Magnitude(sparsity=0.25, scope="per_layer", recovery=Recovery(steps=2)).apply(
        model, tiny_ctx(teacher=copy.deepcopy(model)))
    assert set(res.structure["tensor_sparsity"].values()) == {0.25}
    assert res.metrics["scope"] == "per_layer"


def test_gradual_monotone_and_masks_hold_through_recovery(tiny_ctx):
    model = tiny_model("bert")
    res = Magnitude(sparsity=0.6, mode="gradual", init_sparsity=0.2, num_events=4,
                    recovery=Recovery(steps=10, lr=1e-2)).apply(
        model, tiny_ctx(teacher=copy.deepcopy(model)))
    sched = [s for _, s in res.metrics["prune_steps"]]
    assert sched[0] == 0.2 and sched[-1] == 0.6 and sched == sorted(sched)
    assert res.metrics["num_zero"] == round(0.6 * res.metrics["num_targeted"])  # no weight revived
    assert res.metrics["train_s"] >= 0 and res.metrics["recovery_steps"] == 10


def test_plan_events_is_the_recipe_compressed():
    """30 'epochs', 7 events: dense 0-2, events 2, 6, ..., 26, fixed mask 26-30 (ALGORITHMS.md §2.3)."""
    w, c, events = plan_events(30, 7, 0.7, 0.9)
    assert (w, c) == (2, 4) and [e.step for e in events] == [2, 6, 10, 14, 18, 22, 26]
    assert events[0].sparsity == 0.7 and events[-1].sparsity == pytest.approx(0.9)
    w, c, events = plan_events(3, 7, 0.5, 0.8)  # too few steps: fewer events, every one followed by training
    assert len(events) == 2 and w + len(events) * c == 3


def test_recovery_block_accepts_a_mapping():
    """Hydra (``_convert_="all"``) and ``pass_from_dict`` give the nested block as a dict."""
    p = Magnitude(recovery={"steps": 7, "lr": 1e-4})
    assert p.recovery == Recovery(steps=7, lr=1e-4) == Magnitude(recovery=Recovery(steps=7, lr=1e-4)).recovery


def test_default_init_follows_the_recipe():
    assert Magnitude(sparsity=0.9, mode="gradual").init_sparsity == 0.7
    assert Magnitude(sparsity=0.4, mode="gradual").init_sparsity == pytest.approx(0.35)


@pytest.mark.parametrize("kw,match", [
    ({"sparsity": 1.0}, r"must be in \[0, 1\)"),
    ({"sparsity": 1.5}, r"must be in \[0, 1\)"),
    ({"sparsity": "half"}, "must be a number"),
    ({"scope": "layer"}, "allowed: 'global', 'per_layer'"),
    ({"mode": "gradual", "recovery": {"steps": 0}}, "steps >= 2"),
    ({"mode": "gradual", "init_sparsity": 0.6}, "init_sparsity=0.6 must be <= sparsity=0.5"),
    ({"recovery": {"steps": -1}}, "recovery.steps must be an integer >= 0"),
    ({"recovery": {"steps": True}}, "magnitude.recovery.steps must be an integer, got True"),  # a wrong type
    ({"recovery": {"lr": 0}}, "recovery.lr must be a number > 0"),
    ({"recovery": {"hardness": 2}}, r"recovery.hardness=2 must be in \[0, 1\]"),
    ({"recovery": {"temperature": -1.0}}, "recovery.temperature must be a finite number > 0"),
    ({"recovery": {"hidden_weight": -1.0}}, "recovery.hidden_weight must be >= 0"),
    ({"recovery": {"stepz": 3}}, r"recovery has no option\(s\) \['stepz'\]; options: \['steps', 'lr'"),
    ({"recovery": 3}, "recovery must be a mapping"),
    ({"ignore": []}, "non-empty list"),
])
def test_bad_settings_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        Magnitude(**kw)


def test_target_that_matches_nothing_raises(tiny_ctx):
    with pytest.raises(ValueError, match="'layer.9.output.dense' matches no nn.Linear"):
        Magnitude(targets=["layer.9.output.dense"], recovery=Recovery(steps=0)).apply(tiny_model("bert"), tiny_ctx())
