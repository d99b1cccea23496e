"""Bit allocation (``quant/allocate``): HAWQ-V3's program vs brute force and the baselines, Q-BERT's rank rule on
hand-made cases, the random control at equal average bits, scale invariance (ALGORITHMS.md §1.8 test 6), bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from compresslab.models.tiny import tiny_model
from compresslab.ops.knapsack import InfeasibleBudgetError
from compresslab.ops.quant import quant_error
from compresslab.quant.allocate import (Allocation, allocate_bits, check_choices, errors_table, qkv_groups,
                                        random_allocation)

CHOICES = (2, 3, 4, 8, 32)


def _problem(seed: int, n: int = 8, choices=CHOICES):
    """Real quantization errors of random weights of varied shapes, log-uniform sensitivities."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    weights = {f"m{i}": torch.randn(int(rng.choice([16, 32, 64])), 64, generator=g) * float(rng.uniform(0.2, 2))
               for i in range(n)}
    sens = {k: float(10 ** rng.uniform(-3, 1)) for k in weights}
    numel = {k: w.numel() for k, w in weights.items()}
    return sens, errors_table(weights, choices, block_size=32), numel


def _brute(sens, errors, numel, choices, avg_bits, couple=()):
    names, total = list(sens), sum(numel.values())
    best, best_map = math.inf, None
    for bits in itertools.product(choices, repeat=len(names)):
        m = dict(zip(names, bits))
        if any(len({m[x] for x in g}) > 1 for g in couple):
            continue
        if sum(numel[k] * m[k] for k in names) / total <= avg_bits:
            obj = sum(sens[k] * errors[k][m[k]] for k in names)
            if obj < best:
                best, best_map = obj, m
    return best, best_map


@pytest.mark.parametrize("seed, avg_bits", [(0, 3.0), (1, 2.5), (2, 4.0), (3, 6.0)])
def test_ilp_equals_brute_force_and_meets_the_budget(seed: int, avg_bits: float) -> None:
    sens, errors, numel = _problem(seed, n=6, choices=(2, 3, 4, 32))
    best, _ = _brute(sens, errors, numel, (2, 3, 4, 32), avg_bits)
    a = allocate_bits(sens, errors, numel, choices=(2, 3, 4, 32), avg_bits=avg_bits)
    assert a.objective == pytest.approx(best, rel=1e-9)
    assert a.objective == pytest.approx(sum(sens[k] * errors[k][b] for k, b in a.bits.items()), rel=1e-12)
    total = sum(numel.values())
    assert a.avg_bits == pytest.approx(sum(numel[k] * b for k, b in a.bits.items()) / total, rel=1e-12)
    assert a.avg_bits <= avg_bits + 1e-12
    assert a.size_bytes == sum(numel[k] * b for k, b in a.bits.items()) / 8
    assert a.method == "ilp" and a.status == "optimal" and a.budget == {"avg_bits": avg_bits}


@pytest.mark.parametrize("seed", range(3))
def test_ilp_beats_or_equals_rank_rule_and_random(seed: int) -> None:
    sens, errors, numel = _problem(seed, n=12)
    ilp = allocate_bits(sens, errors, numel, avg_bits=3.0)
    rnd = random_allocation(numel, avg_bits=ilp.avg_bits, seed=seed)
    rnd_obj = sum(sens[k] * errors[k][b] for k, b in rnd.items())
    assert ilp.objective <= rnd_obj
    two = allocate_bits(sens, errors, numel, choices=(2, 4), avg_bits=3.0)
    rank = allocate_bits(sens, errors, numel, choices=(2, 4), avg_bits=3.0, method="rank")
    assert rank.avg_bits <= 3.0 and rank.status == "rank"
    assert two.objective <= rank.objective + 1e-15
    assert ilp.objective <= two.objective + 1e-15  # more widths never hurt


def test_average_bits_are_weighted_by_numel_and_fp32_counts_as_32() -> None:
    errors = {"big": {2: 1.0, 32: 0.0}, "small": {2: 1.0, 32: 0.0}}
    sens = {"big": 1.0, "small": 1.0}
    numel = {"big": 100, "small": 1}
    at = (100 * 2 + 1 * 32) / 101  # the small one kept fp32: 2.297...
    a = allocate_bits(sens, errors, numel, choices=(2, 32), avg_bits=at)
    assert a.bits == {"big": 2, "small": 32} and a.avg_bits == pytest.approx(at, rel=1e-15)
    b = allocate_bits(sens, errors, numel, choices=(2, 32), avg_bits=at - 1e-6)
    assert b.bits == {"big": 2, "small": 2} and b.objective == 2.0


def test_sensitivity_weights_the_error() -> None:
    # room for one module at 8 bits: the one with the larger sensitivity x (error(2) - error(8)) gets it,
    # not the one with the larger raw error
    errors = {"a": {2: 10.0, 8: 0.0}, "b": {2: 1.0, 8: 0.0}}
    numel = {"a": 10, "b": 10}
    a = allocate_bits({"a": 0.01, "b": 1.0}, errors, numel, choices=(2, 8), avg_bits=5.0)
    assert a.bits == {"a": 2, "b": 8} and a.objective == pytest.approx(0.1)


def test_size_budget_in_nominal_bytes() -> None:
    sens, errors, numel = _problem(4, n=5)
    target = sum(numel.values()) * 3.5 / 8
    a = allocate_bits(sens, errors, numel, size_bytes=target)
    assert a.size_bytes <= target and a.size_bytes == sum(numel[k] * b for k, b in a.bits.items()) / 8
    b = allocate_bits(sens, errors, numel, avg_bits=3.5)
    assert a.bits == b.bits  # the same budget in other units


def test_latency_budget() -> None:
    sens, errors, numel = _problem(5, n=5, choices=(2, 4, 8))
    rng = np.random.default_rng(0)
    lat = {k: {2: float(t) * 1.5, 4: float(t), 8: float(t) * 1.2} for k, t in zip(sens, rng.uniform(1, 2, 5))}
    limit = sum(v[4] for v in lat.values()) * 1.1
    a = allocate_bits(sens, errors, numel, choices=(2, 4, 8), latency=lat, latency_limit=limit)
    assert a.latency == pytest.approx(sum(lat[k][b] for k, b in a.bits.items()))
    assert a.latency <= limit
    best = min(sum(sens[k] * errors[k][b] for k, b in zip(sens, bits))
               for bits in itertools.product((2, 4, 8), repeat=5)
               if sum(lat[k][b] for k, b in zip(sens, bits)) <= limit)
    assert a.objective == pytest.approx(best, rel=1e-9)
    assert allocate_bits(sens, errors, numel, choices=(2, 4, 8), latency=lat, avg_bits=3).latency is not None


def test_couplings_share_a_width_and_match_brute_force() -> None:
    sens, errors, numel = _problem(6, n=6, choices=(2, 4, 8))
    couple = [["m0", "m1", "m2"], ["m3", "m4"]]
    a = allocate_bits(sens, errors, numel, choices=(2, 4, 8), avg_bits=4.0, couple=couple)
    for g in couple:
        assert len({a.bits[k] for k in g}) == 1
    assert a.objective == pytest.approx(_brute(sens, errors, numel, (2, 4, 8), 4.0, couple)[0], rel=1e-9)
    assert a.couple == couple


def test_rank_rule_hand_made() -> None:
    errors = {k: {2: 1.0, 3: 0.5} for k in "abcd"}
    sens = {"a": 0.1, "b": 5.0, "c": 1.0, "d": 3.0}
    equal = {k: 100 for k in "abcd"}
    r = allocate_bits(sens, errors, equal, choices=(3, 2), avg_bits=2.5, method="rank")
    assert r.bits == {"a": 2, "b": 3, "c": 2, "d": 3}  # the two most sensitive at 3 bits
    assert r.objective == pytest.approx(0.1 * 1 + 5 * 0.5 + 1 * 1 + 3 * 0.5)
    # b is large: b alone at 3 bits is (900 + 600) / 600 = 2.5; adding d would be 1600 / 600
    r = allocate_bits(sens, errors, {**equal, "b": 300}, choices=(2, 3), avg_bits=2.5, method="rank")
    assert r.bits == {"a": 2, "b": 3, "c": 2, "d": 2}
    for budget, width in ((3.0, 3), (2.0, 2)):
        r = allocate_bits(sens, errors, equal, choices=(2, 3), avg_bits=budget, method="rank")
        assert r.bits == dict.fromkeys("abcd", width)
    # a coupled unit moves as one, ranked by its numel-weighted mean sensitivity: d (3) > {a, b} (2.55) > c (1);
    # at 2.5 bits the pair does not fit after d; at 2.75 it does
    r = allocate_bits(sens, errors, equal, choices=(2, 3), avg_bits=2.5, method="rank", couple=[["a", "b"]])
    assert r.bits == {"a": 2, "b": 2, "c": 2, "d": 3}
    r = allocate_bits(sens, errors, equal, choices=(2, 3), avg_bits=2.75, method="rank", couple=[["a", "b"]])
    assert r.bits == {"a": 3, "b": 3, "c": 2, "d": 3}


def test_rank_rule_with_more_widths_uses_the_lowest_and_highest_and_reports_infeasible() -> None:
    errors = {k: {2: 1.0, 3: 0.5, 4: 0.2, 8: 0.0} for k in "abcd"}
    sens = {"a": 0.1, "b": 5.0, "c": 1.0, "d": 3.0}
    r = allocate_bits(sens, errors, dict.fromkeys("abcd", 100), choices=(4, 2, 8, 3), avg_bits=3.5, method="rank")
    assert r.bits == {"a": 2, "b": 8, "c": 2, "d": 2}  # (8 + 2 + 2 + 2) / 4 = 3.5; 3 and 4 are never used
    r = allocate_bits(sens, errors, dict.fromkeys("abcd", 100), choices=(2, 3, 32), avg_bits=9.5, method="rank")
    assert r.bits == {"a": 2, "b": 32, "c": 2, "d": 2}  # 32 = fp32 is the highest width
    sens, errors, numel = _problem(0, n=3)
    with pytest.raises(InfeasibleBudgetError, match="average bits 1.5 is below the smallest achievable 2"):
        allocate_bits(sens, errors, numel, choices=(2, 4), avg_bits=1.5, method="rank")


@pytest.mark.parametrize("method", ["ilp", "rank"])
def test_scaling_sensitivity_leaves_the_allocation_unchanged(method: str) -> None:
    sens, errors, numel = _problem(7, n=10)
    choices = CHOICES if method == "ilp" else (2, 4)
    ref = allocate_bits(sens, errors, numel, choices=choices, avg_bits=3.0, method=method)
    for c in (1e-9, 0.37, 1e6):
        a = allocate_bits({k: c * v for k, v in sens.items()}, errors, numel, choices=choices, avg_bits=3.0,
                          method=method)
        assert a.bits == ref.bits
        assert a.objective == pytest.approx(c * ref.objective, rel=1e-9)


def test_random_allocation_is_seeded_and_at_the_budget() -> None:
    rng = np.random.default_rng(0)
    numel = {f"m{i}": int(rng.choice([384 * 384, 384 * 1536])) for i in range(24)}
    total = sum(numel.values())
    maps = [random_allocation(numel, avg_bits=3.0, seed=s) for s in range(3)]
    assert maps[0] == random_allocation(numel, avg_bits=3.0, seed=0)
    assert len({tuple(m.values()) for m in maps}) == 3
    for m in maps:
        assert set(m.values()) <= set(CHOICES)
        avg = sum(numel[k] * b for k, b in m.items()) / total
        assert 3.0 - 0.05 - 1e-12 <= avg <= 3.0 + 1e-12
    tight = random_allocation(numel, avg_bits=3.0, seed=1, tol=0.0, choices=(2, 4))
    assert sum(numel[k] * b for k, b in tight.items()) / total == pytest.approx(3.0, abs=1e-12)
    coupled = random_allocation(numel, avg_bits=3.0, seed=1, couple=[["m0", "m1", "m2"]])
    assert len({coupled[k] for k in ("m0", "m1", "m2")}) == 1
    with pytest.raises(InfeasibleBudgetError, match="widen tol"):
        random_allocation({"a": 10, "b": 10}, avg_bits=2.9, seed=0, choices=(2, 4), tol=0.1)


def test_errors_table_uses_the_deployed_quantizer() -> None:
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    t = errors_table({"x": w}, (2, 3, 8, 32), block_size=32, group_rows=2)
    assert t["x"][32] == 0.0
    assert t["x"][3] == quant_error(w, 3, 32, 2)
    assert t["x"][2] > t["x"][3] > t["x"][8] > 0
    with pytest.raises(ValueError, match="x: block_size=48"):
        errors_table({"x": w}, (2,), block_size=48)


@pytest.mark.parametrize("choices", [(2, 9), (0, 2), (16,), (True, 2), (), (2, 2), "2,3", (2.5,)])
def test_bad_choices_name_the_setting(choices) -> None:
    sens, errors, numel = _problem(0, n=2)
    with pytest.raises(ValueError, match="choices"):
        allocate_bits(sens, errors, numel, choices=choices, avg_bits=3.0)
    with pytest.raises(ValueError, match="choices"):
        check_choices(choices)


def test_bad_input_raises_clear_errors() -> None:
    sens, errors, numel = _problem(0, n=3)
    with pytest.raises(ValueError, match="no budget"):
        allocate_bits(sens, errors, numel)
    with pytest.raises(ValueError, match="latency table"):
        allocate_bits(sens, errors, numel, latency_limit=1.0)
    with pytest.raises(ValueError, match="method"):
        allocate_bits(sens, errors, numel, avg_bits=3.0, method="greedy")
    with pytest.raises(ValueError, match=r"no entry for 3 bits"):
        allocate_bits(sens, {k: {2: 1.0} for k in sens}, numel, choices=(2, 3), avg_bits=3.0)
    with pytest.raises(ValueError, match="sensitivity"):
        allocate_bits({**sens, "m0": -1.0}, errors, numel, avg_bits=3.0)
    with pytest.raises(ValueError, match="missing"):
        allocate_bits(sens, {k: errors[k] for k in ["m0"]}, numel, avg_bits=3.0)
    with pytest.raises(ValueError, match="avg_bits"):
        allocate_bits(sens, errors, numel, avg_bits=-1.0)
    with pytest.raises(ValueError, match="not among"):
        allocate_bits(sens, errors, numel, avg_bits=3.0, couple=[["m0", "nope"]])
    with pytest.raises(InfeasibleBudgetError, match="average bits 1.5 is below the smallest achievable 2") as e:
        allocate_bits(sens, errors, numel, avg_bits=1.5)
    assert e.value.smallest["avg_bits"] == pytest.approx(2.0)
    with pytest.raises(InfeasibleBudgetError, match="size in bytes 10 is below the smallest achievable"):
        allocate_bits(sens, errors, numel, size_bytes=10)


def test_to_dict_round_trips_through_json() -> None:
    import json

    sens, errors, numel = _problem(0, n=3)
    a = allocate_bits(sens, errors, numel, avg_bits=3.0)
    d = json.loads(json.dumps(a.to_dict()))
    assert Allocation(**{**d, "bits": {k: int(v) for k, v in d["bits"].items()}}) == a


def test_qkv_groups_on_the_tiny_model() -> None:
    model = tiny_model()
    groups = qkv_groups(model)
    mods = dict(model.named_modules())
    assert len(groups) == model.config.num_hidden_layers
    for i, g in enumerate(groups):
        assert [n.rsplit(".", 1)[1] for n in g] == ["query", "key", "value"]
        assert all(f"layer.{i}." in n and isinstance(mods[n], nn.Linear) for n in g)
    numel = {n: m.weight.numel() for n, m in mods.items() if isinstance(m, nn.Linear) and ".encoder." in n}
    m = random_allocation(numel, avg_bits=4.0, seed=0, couple=groups, tol=0.5)
    assert all(len({m[n] for n in g}) == 1 for g in groups)
