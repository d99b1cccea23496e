"""Pinned widths in the bit allocation (hawq ``rules``): hand-computed optima that move when a module is
pinned, pins counted in every budget, the rank rule and the random control keeping them, couplings, errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from compresslab.ops.knapsack import InfeasibleBudgetError
from compresslab.quant.allocate import allocate_bits, errors_table, expand_pins, random_allocation

# three one-weight modules, so average bits = the mean width; widths {2, 4}; error 0 at 4 bits
SENS = {"a": 1.0, "b": 1.0, "c": 1.0}
ERR = {"a": {2: 10.0, 4: 0.0}, "b": {2: 6.0, 4: 0.0}, "c": {2: 1.0, 4: 0.0}}
ONE = {"a": 1, "b": 1, "c": 1}


def test_ilp_optimum_moves_with_a_pin() -> None:
    # Σ bits <= 8: exactly one module at 4 bits; the best is a (objective 6 + 1 = 7)
    free = allocate_bits(SENS, ERR, ONE, choices=(2, 4), avg_bits=8 / 3)
    assert free.bits == {"a": 4, "b": 2, "c": 2} and free.objective == 7.0 and free.pinned == {}
    # c pinned at 4 uses the one 4-bit slot: a and b drop to 2 (objective 10 + 6)
    c4 = allocate_bits(SENS, ERR, ONE, choices=(2, 4), avg_bits=8 / 3, pinned={"c": 4})
    assert c4.bits == {"a": 2, "b": 2, "c": 4} and c4.objective == 16.0 and c4.pinned == {"c": 4}
    # a pinned at 2: the slot goes to the next best, b (objective 10 + 1)
    a2 = allocate_bits(SENS, ERR, ONE, choices=(2, 4), avg_bits=8 / 3, pinned={"a": 2})
    assert a2.bits == {"a": 2, "b": 4, "c": 2} and a2.objective == 11.0
    assert a2.avg_bits == pytest.approx(8 / 3) and a2.size_bytes == 1.0  # the pin is in the totals


def test_pins_count_in_the_budget_and_an_infeasible_one_names_them() -> None:
    assert allocate_bits(SENS, ERR, ONE, choices=(2, 4), avg_bits=2.5).bits == {"a": 2, "b": 2, "c": 2}
    with pytest.raises(InfeasibleBudgetError, match=r"smallest achievable 2\.66667.*1 module\(s\) are pinned "
                                                    r"\(\{c: 4\}\)") as e:
        allocate_bits(SENS, ERR, ONE, choices=(2, 4), avg_bits=2.5, pinned={"c": 4})
    assert e.value.smallest["avg_bits"] == pytest.approx(8 / 3)
    with pytest.raises(InfeasibleBudgetError, match=r"size in bytes 0\.9 .*pinned \(\{a: 4\}\)"):
        allocate_bits(SENS, ERR, ONE, choices=(2, 4), size_bytes=0.9, pinned={"a": 4})  # 4 + 2 + 2 bits = 1 byte
    with pytest.raises(InfeasibleBudgetError, match=r"rank rule.*pinned \(\{c: 4\}\)"):
        allocate_bits(SENS, ERR, ONE, choices=(2, 4), avg_bits=2.5, pinned={"c": 4}, method="rank")


def test_latency_budget_counts_pins() -> None:
    lat = {"a": {2: 1.0, 4: 3.0}, "b": {2: 1.0, 4: 3.0}, "c": {2: 1.0, 4: 3.0}}
    free = allocate_bits(SENS, ERR, ONE, choices=(2, 4), latency=lat, latency_limit=5.0)
    assert free.bits == {"a": 4, "b": 2, "c": 2} and free.latency == 5.0
    pin = allocate_bits(SENS, ERR, ONE, choices=(2, 4), latency=lat, latency_limit=5.0, pinned={"b": 4})
    assert pin.bits == {"a": 2, "b": 4, "c": 2} and pin.latency == 5.0


def test_rank_rule_keeps_pins_and_ranks_the_rest() -> None:
    sens = {"a": 3.0, "b": 2.0, "c": 1.0}
    assert allocate_bits(sens, ERR, ONE, choices=(2, 4), avg_bits=10 / 3, method="rank").bits == \
        {"a": 4, "b": 4, "c": 2}
    # a held at 2 bits: the two 4-bit places go to the next in rank, b and c
    r = allocate_bits(sens, ERR, ONE, choices=(2, 4), avg_bits=10 / 3, method="rank", pinned={"a": 2})
    assert r.bits == {"a": 2, "b": 4, "c": 4} and r.status == "rank" and r.pinned == {"a": 2}
    # c pinned at 4 fills Σ <= 8 with a and b at 2, although a ranks first
    r = allocate_bits(sens, ERR, ONE, choices=(2, 4), avg_bits=8 / 3, method="rank", pinned={"c": 4})
    assert r.bits == {"a": 2, "b": 2, "c": 4}


def test_coupled_group_takes_its_pinned_members_width() -> None:
    a = allocate_bits(SENS, ERR, ONE, choices=(2, 4), avg_bits=8 / 3 + 1, couple=[["b", "c"]], pinned={"c": 4})
    assert a.bits == {"a": 2, "b": 4, "c": 4} and a.pinned == {"b": 4, "c": 4}
    assert expand_pins({"c": 4}, ["a", "b", "c"], [["a", "b"], ["b", "c"]]) == {"a": 4, "b": 4, "c": 4}
    with pytest.raises(ValueError, match=r"coupled modules \['a', 'b'\] share one width, but are pinned to different "
                                         r"widths \{'a': 2, 'b': 4\}"):
        allocate_bits(SENS, ERR, ONE, choices=(2, 4), avg_bits=4, couple=[["a", "b"]], pinned={"a": 2, "b": 4})


@pytest.mark.parametrize("pinned,match", [({"a": 3}, r"pinned width 3 of a is not one of choices=\[2, 4\]"),
                                          ({"z": 2}, r"pinned names \['z'\]"),
                                          ({"a": True}, "pinned width True"),
                                          ({"a": 4.0}, "pinned width 4.0")])
def test_bad_pins_raise(pinned, match) -> None:
    with pytest.raises(ValueError, match=match):
        allocate_bits(SENS, ERR, ONE, choices=(2, 4), avg_bits=4, pinned=pinned)
    with pytest.raises(ValueError, match=match):
        random_allocation(ONE, avg_bits=4, choices=(2, 4), seed=0, pinned=pinned)


def test_expand_pins_without_choices_takes_any_width() -> None:
    assert expand_pins({"a": 6}, ["a", "b"]) == {"a": 6}
    assert expand_pins(None, ["a"]) == {}
    with pytest.raises(ValueError, match=r"not an integer in \[1, 8\] or 32"):
        expand_pins({"a": 9}, ["a", "b"])


def _problem(seed: int, n: int = 6, choices=(2, 3, 4, 32)):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    weights = {f"m{i}": torch.randn(int(rng.choice([16, 32, 64])), 64, generator=g) * float(rng.uniform(0.2, 2))
               for i in range(n)}
    sens = {k: float(10 ** rng.uniform(-3, 1)) for k in weights}
    return sens, errors_table(weights, choices, block_size=32), {k: w.numel() for k, w in weights.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ilp_with_pins_equals_brute_force(seed: int) -> None:
    ch = (2, 3, 4, 32)
    sens, errors, numel = _problem(seed)
    names, total = list(sens), sum(numel.values())
    pins = {names[1]: 32, names[4]: 2}
    best = math.inf
    for bits in itertools.product(ch, repeat=len(names)):
        m = dict(zip(names, bits))
        if all(m[k] == b for k, b in pins.items()) and sum(numel[k] * m[k] for k in names) / total <= 9.0:
            best = min(best, sum(sens[k] * errors[k][m[k]] for k in names))
    a = allocate_bits(sens, errors, numel, choices=ch, avg_bits=9.0, pinned=pins)
    assert math.isfinite(best)
    assert a.objective == pytest.approx(best, rel=1e-9)
    assert all(a.bits[k] == b for k, b in pins.items()) and a.avg_bits <= 9.0 + 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pinning_a_module_at_its_optimal_width_changes_nothing(seed: int) -> None:
    sens, errors, numel = _problem(seed)
    free = allocate_bits(sens, errors, numel, choices=(2, 3, 4, 32), avg_bits=3.5)
    name = list(free.bits)[seed]
    pinned = allocate_bits(sens, errors, numel, choices=(2, 3, 4, 32), avg_bits=3.5, pinned={name: free.bits[name]})
    assert pinned.bits == free.bits and pinned.objective == pytest.approx(free.objective)
    ctrl = random_allocation(numel, avg_bits=3.5, choices=(2, 3, 4, 32), seed=seed, tol=0.5)
    assert random_allocation(numel, avg_bits=3.5, choices=(2, 3, 4, 32), seed=seed, tol=0.5,
                             pinned={name: ctrl[name]}) == ctrl  # the same draws: pins leave the rng alone


@pytest.mark.parametrize("seed", range(5))
def test_random_control_respects_pins_at_equal_average_bits(seed: int) -> None:
    _, _, numel = _problem(seed, n=8)
    names = list(numel)
    pins = {names[0]: 8, names[5]: 2}
    m = random_allocation(numel, avg_bits=4.0, choices=(2, 3, 4, 8), seed=seed, tol=0.5, pinned=pins,
                          couple=[[names[5], names[6]]])
    avg = sum(numel[k] * b for k, b in m.items()) / sum(numel.values())
    assert 3.5 - 1e-9 <= avg <= 4.0 + 1e-9
    assert m[names[0]] == 8 and m[names[5]] == 2 and m[names[6]] == 2  # the coupled partner follows the pin


def test_random_control_infeasible_with_pins_names_them() -> None:
    with pytest.raises(InfeasibleBudgetError, match=r"pinned \(\{a: 4\}\)"):
        random_allocation(ONE, avg_bits=2.2, choices=(2, 4), seed=0, tol=0.1, pinned={"a": 4})
