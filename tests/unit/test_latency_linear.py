"""``latency_model=linear`` (issue #13): the one-layer table on one least-squares line per module type.

A search that minimises error under a time budget picks the sizes whose probes came out low (the winner's
curse), so the calibrated table over-prices its own choices; on the line nothing is cheap by chance. No test
times anything: the runtime is a known function of the structure.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from compresslab.bench.latency_table import calibration_points
from compresslab.models.tiny import tiny_model
from compresslab.ops.spdy import FixedCostFit, LatencyTable, fit_fixed_costs

torch.set_num_threads(1)
KINDS = ("attention", "ffn")


def test_linear_in_size_is_the_least_squares_line_per_module_type() -> None:
    table = LatencyTable(0.01, {"attention": {0: 0.0, 1: 1e-3, 2: 3e-3, 3: 2e-3},  # line 1e-3 + 0.5e-3 s
                                "ffn": {0: 0.0, 1: 0.0, 2: 0.0, 3: 3e-3},  # line -2e-3 + 1.5e-3 s: clamped at 0
                                "other": {0: 0.0, 8: 4e-3}})  # one size: kept as it is
    lin, lines = table.linear_in_size()
    assert lines["attention"] == pytest.approx((1e-3, 0.5e-3)) and lines["ffn"] == pytest.approx((-2e-3, 1.5e-3))
    assert lin.module_times["attention"] == pytest.approx({0: 0.0, 1: 1.5e-3, 2: 2e-3, 3: 2.5e-3})
    assert lin.module_times["ffn"] == pytest.approx({0: 0.0, 1: 0.0, 2: 1e-3, 3: 2.5e-3})
    assert lin.module_times["other"] == {0: 0.0, 8: 4e-3} and lines["other"] == (4e-3, 0.0)
    assert lin.base_time == 0.01 and table.module_times["attention"][3] == 2e-3  # the original is untouched
    exact = LatencyTable(0.0, {"ffn": {s: 1e-3 + 2e-5 * s for s in (32, 64, 96, 128)}})  # on a line already
    assert exact.linear_in_size()[0].module_times["ffn"] == pytest.approx(exact.module_times["ffn"], rel=1e-9)


@dataclass
class LinearTruth:
    """A synthetic runtime whose module time is exactly linear in size (FLOPs), no tile bump: what the
    probes' noise is measured against; whole models follow ``t_0 + sum (c_kind + scale * t_kind(size))``
    (the law of ``test_latency_model.Truth``)."""

    heads: int
    ffn: int
    layers: int
    grid: int
    fit: FixedCostFit
    per_head: float
    per_neuron: float

    def t(self, kind: str, size: int) -> float:
        return self.per_head * size if kind == "attention" else self.per_neuron * size

    def sizes(self, kind: str) -> list[int]:
        if kind == "attention":
            return list(range(self.heads + 1))
        return sorted({*range(0, self.ffn, self.grid), self.ffn})

    def time(self, config: dict[str, list[int]]) -> float:
        f = self.fit
        return f.base_time + sum(f.fixed[k] + f.scale * self.t(k, s) for k in KINDS for s in config[k] if s > 0)

    @property
    def dense(self) -> dict[str, list[int]]:
        return {"attention": [self.heads] * self.layers, "ffn": [self.ffn] * self.layers}


def test_noisy_probes_bias_the_search_toward_over_prediction_and_the_linear_table_removes_it() -> None:
    """The winner's curse on the bench teacher's shape (6 x 12 heads x 1536): probes carry 4% noise per size
    (the scatter around a line on the real tables), the whole models are timed exactly. The DP minimises
    error under a time budget, so it picks the sizes whose probes came out low: the speedup it predicts for
    its own choice is above the true one (as on the real runs: first tries at 0.91-0.95 of the target).
    On the least-squares line nothing is cheap by chance and the bias goes."""
    from compresslab.bench.latency_table import efficient_sizes
    from compresslab.passes.ziplm import ZipLM

    truth = LinearTruth(12, 1536, 6, 32, FixedCostFit(0.045, {"attention": 1.3e-3, "ffn": 0.0}, 0.95),
                        per_head=1.2e-3, per_neuron=1.6e-5)
    model = tiny_model("bert", num_hidden_layers=6, num_attention_heads=12, hidden_size=48, intermediate_size=1536)
    points = list(calibration_points(LatencyTable(0.0, {k: {s: truth.t(k, s) for s in truth.sizes(k)} for k in KINDS}),
                                     truth.heads, truth.ffn, truth.layers, (0.5, 0.25, 0.125)).values())
    bias: dict[str, list[float]] = {"calibrated": [], "linear": []}
    for seed in range(6):
        rng = np.random.default_rng(seed)
        probes = {k: efficient_sizes({s: 0.0 if s == 0 else truth.t(k, s) * (1 + 0.04 * rng.standard_normal())
                                      for s in truth.sizes(k)}) for k in KINDS}
        one = LatencyTable.from_dense(truth.time(truth.dense), probes, {k: truth.layers for k in KINDS}, {})
        measured = [truth.time(c) for c in points if all(s in one.module_times[k] for k in KINDS for s in c[k])]
        points_here = [c for c in points if all(s in one.module_times[k] for k in KINDS for s in c[k])]
        line, _ = one.linear_in_size()
        dbs = {}
        for layer, kind in itertools.product(range(truth.layers), KINDS):  # error grows with what is removed
            full = truth.heads if kind == "attention" else truth.ffn
            errs = np.concatenate([[0.0], np.cumsum(rng.random(full))]).tolist()
            dbs[(layer, kind)] = SimpleNamespace(level=lambda k, e=errs: SimpleNamespace(error=e[k]))
        for name, base in (("calibrated", one), ("linear", line)):
            table = fit_fixed_costs(base, points_here, measured).apply(base)
            t_dense = table.predict(truth.dense)
            for target in (1.5, 2.0, 3.0):
                choice = ZipLM().solver(model, dbs, table)(t_dense / target - table.base_time)
                config = {"attention": choice["heads"], "ffn": choice["ffn"]}
                predicted = t_dense / table.predict(config)
                bias[name].append(predicted / (truth.time(truth.dense) / truth.time(config)) - 1)
    mean = {k: float(np.mean(v)) for k, v in bias.items()}
    assert mean["calibrated"] > 0.01, mean  # over-predicts its own choices
    assert abs(mean["linear"]) < 0.3 * mean["calibrated"], mean
