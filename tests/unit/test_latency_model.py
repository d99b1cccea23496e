"""ZipLM's latency model with a fixed cost per present module (issue #13), on synthetic ground truth
(:class:`~compresslab.testing.LatencyTruth`; the table's measuring and caching: ``bench/test_latency_calibration.py``).

No test times anything: the "runtime" is a known function of the structure,

    T(config) = t_0 + sum over present modules (c_kind + scale * t_kind(size)),

whose one-layer probes measure ``t_kind`` exactly, as ``bench/latency_table.py`` would. On it the
one-layer table alone over-predicts the speedup of shrunk models (as on the bench teacher: 2.82x
predicted, 2.17x measured), the least-squares fit recovers ``t_0``, the fixed costs and the scale,
and the DP prices each layer's choice with them.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from compresslab.bench.latency_table import TableSettings, calibration_points, one_layer_table
from compresslab.models.tiny import tiny_model
from compresslab.ops.knapsack import solve_dp
from compresslab.ops.spdy import FixedCostFit, LatencyTable, fit_fixed_costs
from compresslab.pruning.speedup import Choice, LatencyModel, SpeedupLab, SpeedupSettings, result_metrics
from compresslab.testing import LATENCY_KINDS, LatencyTruth

torch.set_num_threads(1)


# the bench teacher's shape (6 x 12 heads x 1536) with costs in the range its data suggest
BERT6 = LatencyTruth(12, 1536, 6, 32, FixedCostFit(0.013, {"attention": 0.008, "ffn": 0.007}, 0.93))


def _points(truth: LatencyTruth) -> list[dict[str, list[int]]]:
    table = LatencyTable(0.0, truth.one_layer())
    return list(calibration_points(table, truth.heads, truth.ffn, truth.layers, (0.5, 0.25, 0.125)).values())


def _random_configs(truth: LatencyTruth, n: int, rng: np.random.Generator) -> list[dict[str, list[int]]]:
    return [{k: [int(rng.choice(truth.sizes(k))) for _ in range(truth.layers)] for k in LATENCY_KINDS}
            for _ in range(n)]


# ------------------------------------------------------------------ the fit


def test_fit_recovers_the_fixed_costs_exactly_without_noise() -> None:
    points = _points(BERT6)
    names = list(calibration_points(LatencyTable(0.0, BERT6.one_layer()), 12, 1536, 6, (0.5, 0.25, 0.125)))
    assert names == ["dense", "uniform_0.5", "uniform_0.25", "uniform_0.125", "no_attention", "no_ffn", "empty"]
    assert points[3] == BERT6.uniform(2, 192)  # 1.5 heads: ties go to the larger size
    fit = fit_fixed_costs(LatencyTable(0.0, BERT6.one_layer()), points, [BERT6.time(c) for c in points])
    assert fit.base_time == pytest.approx(0.013, rel=1e-9)
    assert fit.fixed == pytest.approx({"attention": 0.008, "ffn": 0.007}, rel=1e-9)
    assert fit.scale == pytest.approx(0.93, rel=1e-9)
    table = fit.apply(LatencyTable(0.0, BERT6.one_layer()))
    for config in _random_configs(BERT6, 50, np.random.default_rng(0)):  # held out: any mix of sizes
        assert table.predict(config) == pytest.approx(BERT6.time(config), rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_fit_with_timing_noise_stays_within_tolerance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = _points(BERT6)
    noisy = [BERT6.time(c) * (1 + 0.01 * rng.standard_normal()) for c in points]  # 1% median noise
    fit = fit_fixed_costs(LatencyTable(0.0, BERT6.one_layer()), points, noisy)
    assert fit.base_time == pytest.approx(0.013, rel=0.05) and fit.scale == pytest.approx(0.93, rel=0.05)
    assert fit.fixed == pytest.approx({"attention": 0.008, "ffn": 0.007}, rel=0.3)  # small beside 0.75 s
    table = fit.apply(LatencyTable(0.0, BERT6.one_layer()))
    errors = [table.predict(c) / BERT6.time(c) - 1 for c in _random_configs(BERT6, 100, rng)]
    assert max(abs(e) for e in errors) < 0.025


def test_a_table_of_only_full_sizes_fits_the_fixed_costs_at_scale_one() -> None:
    """Timing noise can leave only 0 and the full size per kind (the rest dominated): every uniform
    shrink is then the dense shape, the scale cannot be told from the fixed costs, and need not be."""
    truth = LatencyTruth(4, 64, 2, 16, FixedCostFit(2e-3, {"attention": 3e-3, "ffn": 2.5e-3}, 0.8))
    table = LatencyTable(0.0, {k: {0: 0.0, full: truth.t(k, full)} for k, full in (("attention", 4), ("ffn", 64))})
    points = calibration_points(table, 4, 64, 2, (0.5, 0.25, 0.125))
    assert list(points) == ["dense", "no_attention", "no_ffn", "empty"]
    times = [truth.time(c) for c in points.values()]
    with pytest.raises(ValueError, match="cannot separate"):
        fit_fixed_costs(table, list(points.values()), times)
    fit = fit_fixed_costs(table, list(points.values()), times, fit_scale=False)
    assert fit.scale == 1.0 and fit.base_time == pytest.approx(2e-3, rel=1e-9)
    assert fit.fixed["attention"] == pytest.approx(3e-3 - 0.2 * truth.t("attention", 4), rel=1e-9)  # absorbs it
    fitted = fit.apply(table)
    for heads in itertools.product((0, 4), repeat=2):  # every choice this table allows is priced exactly
        for ffn in itertools.product((0, 64), repeat=2):
            config = {"attention": list(heads), "ffn": list(ffn)}
            assert fitted.predict(config) == pytest.approx(truth.time(config), rel=1e-9)


def test_one_layer_table_over_predicts_and_the_fitted_model_does_not() -> None:
    alone = BERT6.table_alone()
    points = _points(BERT6)
    fitted = fit_fixed_costs(alone, points, [BERT6.time(c) for c in points]).apply(alone)
    t_dense = BERT6.time(BERT6.dense)
    assert alone.predict(BERT6.dense) == pytest.approx(t_dense)  # exact at dense by construction
    shrunk = [BERT6.uniform(5, 672), BERT6.uniform(2, 256),  # structured L1's 2x and 4x members
              {"attention": [5, 7, 5, 8, 5, 8], "ffn": [352, 736, 736, 672, 384, 352]}]  # ZipLM's 2x member
    for config in shrunk:
        true = t_dense / BERT6.time(config)
        assert t_dense / alone.predict(config) > 1.05 * true  # the one-layer table promises too much
        assert t_dense / fitted.predict(config) == pytest.approx(true, rel=1e-9)
    # and the more a layer is shrunk, the more the table alone over-predicts
    gaps = [t_dense / alone.predict(BERT6.uniform(h, n)) / (t_dense / BERT6.time(BERT6.uniform(h, n)))
            for h, n in ((8, 960), (5, 672), (3, 448), (2, 256))]
    assert gaps == sorted(gaps) and gaps[0] > 1.0


def test_a_removed_module_pays_no_fixed_cost() -> None:
    fit = FixedCostFit(0.01, {"attention": 0.004, "ffn": 0.003}, 0.9)
    table = fit.apply(LatencyTable(0.02, {"attention": {0: 0.0, 1: 0.002, 2: 0.004}, "ffn": {0: 0.0, 8: 0.005}}))
    assert table.time("attention", 0) == 0.0 and table.time("ffn", 0) == 0.0
    assert table.time("attention", 1) == pytest.approx(0.004 + 0.9 * 0.002)
    assert table.base_time == 0.01  # the fitted t_0 replaces the table's
    full = {"attention": [2, 2], "ffn": [8, 8]}
    emptied = {"attention": [0, 2], "ffn": [8, 8]}
    one_head = {"attention": [1, 2], "ffn": [8, 8]}
    # emptying layer 0's attention saves its fixed cost too; keeping one head pays it
    assert table.predict(full) - table.predict(emptied) == pytest.approx(0.004 + 0.9 * 0.004)
    assert table.predict(one_head) - table.predict(emptied) == pytest.approx(0.004 + 0.9 * 0.002)


# ------------------------------------------------------------------ the DP prices each layer's choice


def _brute_force(options: list[tuple[list[int], list[float], list[float]]], budget: float,
                 heads: tuple[int, ...] = ()) -> float:
    """The least error within ``budget``; with ``heads`` (the attention options), only structures that keep a
    head somewhere (ZipLM never removes every head)."""
    best = np.inf
    for pick in itertools.product(*(range(len(sizes)) for sizes, _, _ in options)):
        if heads and not any(options[j][0][pick[j]] for j in heads):
            continue
        if sum(times[i] for (_, times, _), i in zip(options, pick)) <= budget:
            best = min(best, sum(errs[i] for (_, _, errs), i in zip(options, pick)))
    return best


@pytest.mark.parametrize("target", [1.3, 1.8, 2.5, 4.0])
def test_ziplm_dp_with_fixed_costs_equals_brute_force(target: float) -> None:
    """ZipLM's own solver on a tiny BERT (2 layers x 4 heads x FFN 64, grid 16): the best of the 5^4 choices that
    keep a head (heads are cheap to remove here: from 1.8x the plain DP would keep none)."""
    from compresslab.passes.ziplm import ZipLM

    truth = LatencyTruth(4, 64, 2, 16, FixedCostFit(2e-3, {"attention": 3e-3, "ffn": 2.5e-3}, 0.8),
                         per_head=1e-3, per_neuron=8e-5)
    points = _points(truth)
    table = fit_fixed_costs(truth.table_alone(), points, [truth.time(c) for c in points]).apply(truth.table_alone())
    rng = np.random.default_rng(int(target * 10))
    model = tiny_model("bert")
    errors: dict[tuple[int, str], list[float]] = {}  # by number removed; grows with it, 0 at none
    dbs = {}
    for layer, kind in itertools.product(range(2), LATENCY_KINDS):
        full = 4 if kind == "attention" else 64
        errs = np.concatenate([[0.0], np.cumsum(rng.random(full))]).tolist()
        errors[(layer, kind)] = errs
        dbs[(layer, kind)] = SimpleNamespace(level=lambda k, e=errs: SimpleNamespace(error=e[k]))
    solve = ZipLM().solver(model, dbs, table)
    budget = truth.time(truth.dense) / target - table.base_time
    choice = solve(budget)
    options = []
    for layer in range(2):
        for kind, full in (("attention", 4), ("ffn", 64)):
            sizes = truth.sizes(kind)
            errs = [errors[(layer, kind)][full - s] for s in sizes]  # by number removed
            options.append((sizes, [table.time(kind, s) for s in sizes], errs))
    picked = [choice["heads"][0], choice["ffn"][0], choice["heads"][1], choice["ffn"][1]]
    objective = sum(errs[sizes.index(s)] for (sizes, _, errs), s in zip(options, picked))
    assert objective == pytest.approx(_brute_force(options, budget, heads=(0, 2)))
    assert sum(choice["heads"]) >= 1
    config = {"attention": choice["heads"], "ffn": choice["ffn"]}
    assert truth.time(truth.dense) / truth.time(config) >= target * (1 - 1e-9)  # the true speedup is met


def test_fixed_costs_change_the_dp_choice_toward_emptying_a_module() -> None:
    """With a large fixed cost per present module, removing one whole FFN beats thinning two."""
    one = {"attention": {0: 0.0, 1: 1.0}, "ffn": {0: 0.0, 1: 1.0, 2: 2.0}}
    fitted = FixedCostFit(0.0, {"attention": 0.0, "ffn": 1.5}, 1.0).apply(LatencyTable(0.0, one))
    errors = [[0.0, 1.0, 2.2], [0.0, 1.0, 2.2]]  # per FFN: remove nothing, one neuron, both (by removed count)
    sizes = [2, 1, 0]

    def solve(table: LatencyTable) -> list[int]:
        times = [[table.time("ffn", s) for s in sizes]] * 2
        return [sizes[i] for i in solve_dp(times, errors, budget=4.5).choice]  # dense: 7 fitted, 4 alone

    assert sorted(solve(fitted)) == [0, 2]  # one FFN emptied: saves 2 + 1.5 at error 2.2
    assert solve(LatencyTable(0.0, one)) != solve(fitted)


# ------------------------------------------------------------------ retries before and after


class SyntheticLab(SpeedupLab):
    """The real search loop (solve, build, measure, tighten) against the synthetic runtime."""

    def __init__(self, truth: LatencyTruth, table: LatencyTable, p: SpeedupSettings) -> None:  # no export, no timing
        self.truth, self.table, self.p = truth, table, p
        self.dense_choice = {"heads": [truth.heads] * truth.layers, "ffn": [truth.ffn] * truth.layers}
        self.t_dense = self.predict(self.dense_choice)

    def measure(self, model: nn.Module) -> dict[str, float]:
        dense, cand = self.truth.time(self.truth.dense), self.truth.time(model.config_)
        return {"speedup": dense / cand, "dense_ms": dense * 1e3, "candidate_ms": cand * 1e3, "busy": False}


def _solver(truth: LatencyTruth, table: LatencyTable):
    rng = np.random.default_rng(0)
    weight = {(i, k): rng.uniform(0.5, 2.0) for i in range(truth.layers) for k in LATENCY_KINDS}
    sizes = {k: table.sizes(k) for k in LATENCY_KINDS}
    full = {"attention": truth.heads, "ffn": truth.ffn}
    keys = [(i, k) for i in range(truth.layers) for k in LATENCY_KINDS]
    times = [[table.time(k, s) for s in sizes[k]] for _, k in keys]
    errors = [[weight[(i, k)] * (1 - s / full[k]) ** 2 for s in sizes[k]] for i, k in keys]

    def solve(budget: float) -> Choice:
        picked = [sizes[k][s] for (_, k), s in zip(keys, solve_dp(times, errors, budget).choice)]
        return {"heads": picked[0::2], "ffn": picked[1::2]}

    return solve


def _build(choice: Choice) -> nn.Module:
    m = nn.Linear(1, 1)
    m.config_ = {"attention": choice["heads"], "ffn": choice["ffn"]}
    return m


def test_first_try_lands_in_the_window_and_4x_meets_its_floor() -> None:
    p = SpeedupSettings(speedup=4.0, max_retries=2, tolerance=0.02)
    alone = BERT6.table_alone()
    points = _points(BERT6)
    fitted = fit_fixed_costs(alone, points, [BERT6.time(c) for c in points]).apply(alone)
    before, after = {}, {}
    for table, out in ((alone, before), (fitted, after)):
        lab = SyntheticLab(BERT6, table, p)
        for target in (1.5, 2.0, 3.0, 4.0):
            _, _, rec = lab.search(target, _solver(BERT6, table), _build)
            out[target] = rec
    for target, rec in after.items():
        assert rec["retries"] == 0 and rec["met_target"]
        assert 0.98 <= rec["first_try_ratio"] <= 1.15, (target, rec["first_try_ratio"])
    assert after[4.0]["measured_speedup_b32"] >= 4.0 * (1 - p.tolerance)
    # the one-layer table alone misses the heavy targets on the first try and needs retries
    assert before[4.0]["first_try_ratio"] < 0.95 and before[4.0]["retries"] >= 1
    assert sum(r["retries"] for r in before.values()) > sum(r["retries"] for r in after.values())


def test_step_metrics_record_the_fit_the_points_and_retries() -> None:
    cal = {"fit_ms": {"t_0": 13.0, "fixed": {"attention": 8.0, "ffn": 7.0}, "scale": 0.93},
           "points": [{"name": "dense", "measured_ms": 750.0, "before_ms": 750.0, "after_ms": 749.0}],
           "max_abs_rel_error_before": 0.2, "max_abs_rel_error_after": 0.01, "fit": {}, "one_layer_table": {}}
    lab = SimpleNamespace(table_info={"cached": True, "raw": {"calibration": cal}}, t_dense=0.75, max_speedup=50.0,
                          linear_record=None, settings=SimpleNamespace(runtime="ort"), runtime_choice=None)
    recs = {2.0: {"target_speedup": 2.0, "attempts": [{}, {}], "structure": {}, "retries": 1},
            4.0: {"target_speedup": 4.0, "attempts": [{}], "structure": {}, "retries": 0}}
    m = result_metrics(SpeedupSettings(speedup=2.0, family=[4.0], latency_model="calibrated"), recs, lab, 100)
    table = m["latency_table"]
    assert table["model"] == "calibrated" and table["calibration"]["fit_ms"]["fixed"] == {"attention": 8.0, "ffn": 7.0}
    assert table["calibration"]["points"][0]["after_ms"] == 749.0 and "one_layer_table" not in table["calibration"]
    assert m["retries_total"] == 1 and m["family"]["4x"]["retries"] == 0 and "linear" not in table
    lab.linear_record = {"lines_ms": {"ffn": {"intercept": -1.0, "slope": 0.02}}, "fit": {}, "points": []}
    m = result_metrics(SpeedupSettings(speedup=2.0, family=[4.0], latency_model="linear"), recs, lab, 100)
    assert m["latency_table"]["model"] == "linear" and m["latency_table"]["linear"] == {
        "lines_ms": {"ffn": {"intercept": -1.0, "slope": 0.02}}, "points": []}


# ------------------------------------------------------------------ bad input: clear errors before work


def test_bad_inputs_are_refused_clearly() -> None:
    table = LatencyTable(0.0, BERT6.one_layer())
    points = _points(BERT6)
    times = [BERT6.time(c) for c in points]
    uniform_only = [BERT6.dense, BERT6.uniform(6, 768), BERT6.uniform(3, 384), BERT6.uniform(2, 192)]
    with pytest.raises(ValueError, match="cannot separate.*removed in every layer"):
        fit_fixed_costs(table, uniform_only, [BERT6.time(c) for c in uniform_only])
    with pytest.raises(ValueError, match=">= 4 whole-model timings"):
        fit_fixed_costs(table, points[:3], times[:3])
    with pytest.raises(ValueError, match="one measured time per configuration"):
        fit_fixed_costs(table, points, times[:-1])
    with pytest.raises(ValueError, match="finite and > 0"):
        fit_fixed_costs(table, points, [*times[:-1], 0.0])
    with pytest.raises(ValueError, match="module types"):
        fit_fixed_costs(table, [{"attention": c["attention"]} for c in points], times)
    with pytest.raises(ValueError, match="no latency for 'ffn' at size 100"):
        fit_fixed_costs(table, [*points[:-1], BERT6.uniform(0, 100)], times)
    with pytest.raises(ValueError, match="finite and >= 0"):
        FixedCostFit(-1e-3, {"attention": 0.0, "ffn": 0.0}, 1.0)
    with pytest.raises(ValueError, match="no fixed cost for module type"):
        FixedCostFit(0.0, {"attention": 0.0}, 1.0).apply(table)
    for bad in ((), (1.0,), (0.5, 0.0)):
        with pytest.raises(ValueError, match="calibration_fractions"):
            TableSettings(calibration_fractions=bad)
    with pytest.raises(ValueError, match="latency_model='exact' is not valid; allowed: 'calibrated', 'linear', 'one_layer'"):
        SpeedupSettings(latency_model="exact")
    assert SpeedupSettings(latency_model="one_layer").latency_model is LatencyModel.ONE_LAYER
    with pytest.raises(ValueError, match="delete its cache file"):
        one_layer_table({"raw": {"dense_ms": 5.0}})


def test_ziplm_prices_at_the_runs_threads_when_it_names_none(monkeypatch):
    # a review found ZipLM's table and checks at all physical cores while run.threads=4 timed the report's bench
    import torch

    from compresslab.passes.ziplm import ZipLM

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)  # what cli.setup_process pinned from run.threads
    assert ZipLM().table_settings("ort").threads == 3
    assert ZipLM(threads=1).table_settings("ort").threads == 1  # bench.threads, when set, wins
