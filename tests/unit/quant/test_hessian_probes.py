"""benchmarks/hessian_probes.py's cross-seed statistics: exact values on hand-made records."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "hessian_probes.py"


@pytest.fixture(scope="module")
def hp():
    spec = importlib.util.spec_from_file_location("hessian_probes_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rec(bits, traces, acc, **kw):
    return {"bits": bits, "avg_trace": traces, "acc": acc, "agreement": kw.get("agreement", 0.9),
            "significant_2se": kw.get("sig", 0), "negative": kw.get("neg", 0), "wall_s": kw.get("wall", 1.0)}


def test_summary_same_width_spearman_and_random_gap(hp):
    t_up = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    t_down = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}
    runs = {
        # three seeds that agree exactly: every pair has the same widths and rank correlation 1
        "p512": {"s1": _rec({"a": 2, "b": 3, "c": 4, "d": 8}, t_up, 0.80, sig=4),
                 "s2": _rec({"a": 2, "b": 3, "c": 4, "d": 8}, t_up, 0.82, sig=2),
                 "s3": _rec({"a": 2, "b": 3, "c": 4, "d": 8}, t_up, 0.84, sig=3)},
        # two seeds: 2 of 4 widths the same, traces in reverse order (Spearman -1)
        "p64": {"s1": _rec({"a": 2, "b": 3, "c": 4, "d": 8}, t_up, 0.70, neg=1),
                "s2": _rec({"a": 2, "b": 3, "c": 8, "d": 4}, t_down, 0.74, neg=3)},
    }
    random = {"s1": {"acc": 0.60, "bits": {"a": 2, "b": 2, "c": 2, "d": 2}},
              "s2": {"acc": 0.70, "bits": {"a": 2, "b": 2, "c": 2, "d": 3}}}
    s = hp.summarize(runs, random)
    assert list(s)[:2] == ["p64", "p512"]  # ordered by probe count, not as strings
    assert s["p512"]["same_width_pairwise"] == 1.0
    assert s["p512"]["trace_spearman_pairwise"] == pytest.approx(1.0)
    assert s["p512"]["acc_mean"] == pytest.approx(0.82)
    assert s["p512"]["acc_std"] == pytest.approx(0.02)  # sample std (ddof 1) of 0.80, 0.82, 0.84
    assert s["p512"]["significant_2se_mean"] == pytest.approx(3.0)
    assert s["p64"]["same_width_pairwise"] == 0.5
    assert s["p64"]["trace_spearman_pairwise"] == pytest.approx(-1.0)
    assert s["p64"]["negative_mean"] == pytest.approx(2.0)
    assert s["random"]["acc_mean"] == pytest.approx(0.65)
    assert s["random"]["same_width_pairwise"] == 0.75
    assert s["p512"]["minus_random"] == pytest.approx(0.17)
    assert s["p512"]["two_std_random"] == pytest.approx(2 * 0.0707107, rel=1e-5)


def test_summary_one_seed_has_no_pairs_or_std(hp):
    s = hp.summarize({"p8": {"s1": _rec({"a": 2}, {"a": 1.0}, 0.5)}}, {})
    assert s["p8"]["same_width_pairwise"] is None and s["p8"]["acc_std"] is None
    assert "random" not in s


def test_qat_summary_bar_needs_three_seeds_and_two_std(hp):
    qat = {"random": {"s1": {"acc": 0.80}, "s2": {"acc": 0.82}, "s3": {"acc": 0.84}},   # std 0.02
           "p512": {"s1": {"acc": 0.885}, "s2": {"acc": 0.885}, "s3": {"acc": 0.885}},  # +0.065 > 0.04
           "p64": {"s1": {"acc": 0.85}, "s2": {"acc": 0.85}, "s3": {"acc": 0.85}},      # +0.03 < 0.04
           "p8": {"s1": {"acc": 0.99}, "s2": {"acc": 0.99}}}                           # two seeds only
    s = hp.summarize_qat(qat)
    assert s["random"]["acc_std"] == pytest.approx(0.02)
    assert s["p512"]["minus_random"] == pytest.approx(0.065) and s["p512"]["bar_met"] is True
    assert s["p64"]["minus_random"] == pytest.approx(0.03) and s["p64"]["bar_met"] is False
    assert s["p8"]["bar_met"] is False
    assert "bar_met" not in s["random"]
