"""``bench.machine_load.combine`` over every record shape it is given: live windows, combined records and a
results file's verdict with its compacted windows (a copied run's noisy timing must not read as quiet)."""

from __future__ import annotations

from compresslab.bench.machine_load import combine


def test_a_live_window_counts_its_before_during_and_spread() -> None:
    live = {"busy": False, "what": "t", "reasons": [], "before": {"other_cpu": 0.02},
            "during": {"max_other_cpu": 0.05}, "spread": {"noisy": True}}
    out = combine([live])
    assert out["max_other_cpu"] == 0.05 and out["noisy"] is True and not out["busy"]


def test_a_results_files_verdict_keeps_its_windows_load_and_noise() -> None:
    """As benchmarks/_results.py stores them: flat keys, under "timings" (hessian_mp.py copied such files as
    quiet and not noisy before)."""
    verdict = {"busy": False, "what": "results file", "reasons": [], "busy_items": {},
               "timings": [{"item": "*", "what": "a", "busy": False, "reasons": [], "other_cpu_before": 0.0,
                            "max_other_cpu_during": 0.007, "noisy": False},
                           {"item": "*", "what": "b", "busy": False, "reasons": [], "other_cpu_before": 0.03,
                            "max_other_cpu_during": 0.011, "noisy": True}]}
    out = combine([verdict])
    assert out["noisy"] is True and out["max_other_cpu"] == 0.03 and out["windows"] == 1


def test_combined_records_combine_again_and_quiet_stays_quiet() -> None:
    once = combine([{"busy": False, "reasons": [], "before": {"other_cpu": 0.01}, "during": {"max_other_cpu": 0.04},
                     "spread": {"noisy": False}}])
    twice = combine([once, {"busy": False, "reasons": [], "timings": []}])
    assert twice["max_other_cpu"] == 0.04 and twice["noisy"] is False
    assert combine([])["max_other_cpu"] is None and combine([])["noisy"] is False
