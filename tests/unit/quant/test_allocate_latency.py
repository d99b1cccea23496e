"""``allocate_bits`` under a latency limit with a fake per-module table: the map obeys the limit and
equals brute force (alone, with average bits, with couplings; a table where 2 bits is slower than fp32,
as ORT's dequantizing 2-bit kernel is), and an infeasible limit names the smallest achievable."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from compresslab.ops.knapsack import InfeasibleBudgetError
from compresslab.quant.allocate import allocate_bits

CHOICES = (2, 3, 4, 8, 32)


def _problem(seed: int, n: int = 5):
    """Random sensitivities, errors decreasing in width (0 at fp32), numel and a fake latency table whose
    2-bit entry is slower than fp32 and 3 bits costs what 4 does (its deployed width)."""
    rng = np.random.default_rng(seed)
    names = [f"m{i}" for i in range(n)]
    sens = {k: float(10 ** rng.uniform(-2, 1)) for k in names}
    errors = {k: {2: float(e) * 16, 3: float(e) * 4, 4: float(e), 8: float(e) / 256, 32: 0.0}
              for k, e in zip(names, rng.uniform(0.5, 2, n))}
    numel = {k: int(rng.choice([256, 1024, 4096])) for k in names}
    lat = {}
    for k in names:
        t = numel[k] * float(rng.uniform(0.8, 1.2)) * 1e-6
        lat[k] = {2: 1.4 * t, 3: 0.5 * t, 4: 0.5 * t, 8: 0.7 * t, 32: t}
    return sens, errors, numel, lat


def _brute(sens, errors, numel, lat, limit, avg_bits=None, couple=()):
    names, total = list(sens), sum(numel.values())
    best = math.inf
    for bits in itertools.product(CHOICES, repeat=len(names)):
        m = dict(zip(names, bits))
        if any(len({m[x] for x in g}) > 1 for g in couple):
            continue
        if sum(lat[k][m[k]] for k in names) > limit:
            continue
        if avg_bits is not None and sum(numel[k] * m[k] for k in names) / total > avg_bits:
            continue
        best = min(best, sum(sens[k] * errors[k][m[k]] for k in names))
    return best


@pytest.mark.parametrize("seed, rel", [(0, 0.55), (1, 0.6), (2, 0.75), (3, 0.9), (4, 1.2)])
def test_latency_limit_is_obeyed_and_the_map_equals_brute_force(seed: int, rel: float) -> None:
    sens, errors, numel, lat = _problem(seed)
    limit = rel * sum(t[32] for t in lat.values())
    a = allocate_bits(sens, errors, numel, choices=CHOICES, latency=lat, latency_limit=limit)
    assert sum(lat[k][b] for k, b in a.bits.items()) <= limit * (1 + 1e-9)
    assert a.latency == pytest.approx(sum(lat[k][b] for k, b in a.bits.items()), rel=1e-12)
    assert a.objective == pytest.approx(_brute(sens, errors, numel, lat, limit), rel=1e-9)
    assert a.budget == {"latency": limit}


@pytest.mark.parametrize("seed", [5, 6])
def test_latency_with_average_bits_and_couplings_equals_brute_force(seed: int) -> None:
    sens, errors, numel, lat = _problem(seed)
    limit = 0.7 * sum(t[32] for t in lat.values())
    a = allocate_bits(sens, errors, numel, choices=CHOICES, latency=lat, latency_limit=limit, avg_bits=6.0)
    assert a.objective == pytest.approx(_brute(sens, errors, numel, lat, limit, 6.0), rel=1e-9)
    assert a.avg_bits <= 6.0 + 1e-9 and a.latency <= limit * (1 + 1e-9)
    couple = [["m0", "m1"], ["m2", "m3", "m4"]]
    c = allocate_bits(sens, errors, numel, choices=CHOICES, latency=lat, latency_limit=limit, couple=couple)
    assert all(len({c.bits[k] for k in g}) == 1 for g in couple)
    assert c.objective == pytest.approx(_brute(sens, errors, numel, lat, limit, couple=couple), rel=1e-9)


def test_an_infeasible_latency_limit_names_the_smallest_achievable() -> None:
    sens, errors, numel, lat = _problem(7)
    least = sum(min(t.values()) for t in lat.values())  # every module at its fastest width (3 or 4 bits)
    with pytest.raises(InfeasibleBudgetError, match="latency limit .* is below the smallest achievable .*latency "
                                                    "table") as e:
        allocate_bits(sens, errors, numel, choices=CHOICES, latency=lat, latency_limit=0.9 * least)
    assert e.value.smallest["latency"] == pytest.approx(least, rel=1e-9)
    assert f"{least:g}" in str(e.value)
    # without the fast widths, fp32 (not 2 bits, slower here) is the least
    with pytest.raises(InfeasibleBudgetError) as e:
        allocate_bits(sens, errors, numel, choices=(2, 32), latency=lat, latency_limit=0.9 * least)
    assert e.value.smallest["latency"] == pytest.approx(sum(t[32] for t in lat.values()), rel=1e-9)
