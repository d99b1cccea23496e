"""benchmarks/ziplm_retries.py (issue 13): the two retries runs are found by their settings (not by order or
name), per-target figures come from the ZipLM step's family, and compound.json's ``ziplm_retries`` is each run's
``retries_total`` (recomputed here from the per-target retries)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "compound.json"


@pytest.fixture(scope="module")
def zr():
    from compresslab.testing import import_benchmark

    return import_benchmark("ziplm_retries", ROOT)


def _manifest(lm: str, retries: list[int], *, speedup: float = 4, steps: int = 0, finished: str = "2026-12-01T12:00",
              table: str = "latency/t.json"):
    fam = {f"{t:g}x": {"retries": r, "first_try_ratio": 0.9 + 0.01 * r, "predicted_speedup": t,
                       "measured_speedup_b32": t, "met_target": True}
           for t, r in zip([1.5, 2.0, 3.0, 4.0], retries)}
    return {"steps": [{"name": "ziplm", "status": "done", "finished": finished,
                       "pass": {"speedup": speedup, "family": [1.5, 2.0, 3.0, 4.0], "latency_model": lm,
                                "recovery": {"steps": steps}},
                       "result": {"metrics": {"retries_total": sum(retries), "busy_checks": 0, "family": fam,
                                              "latency_table": {"busy": False, "cache_file": table}}}}]}


def test_runs_are_found_by_their_settings(zr, tmp_path):
    runs = {"a1": _manifest("one_layer", [1, 2, 2, 2]), "b2": _manifest("calibrated", [1, 2, 1, 0]),
            "c3": _manifest("calibrated", [0, 0, 0, 0], speedup=2),  # another speedup: not a retries run
            "d4": _manifest("calibrated", [0, 0, 0, 0], steps=200)}  # with recovery: not a retries run
    for name, m in runs.items():
        (tmp_path / "ziplm_2x" / name).mkdir(parents=True)
        (tmp_path / "ziplm_2x" / name / "manifest.json").write_text(json.dumps(m))
    found = zr.find_runs(tmp_path)
    assert {k: v.name for k, v in found.items()} == {"one_layer": "a1", "calibrated": "b2"}


def test_summary_per_target(zr):
    s = zr.summarize(_manifest("calibrated", [1, 2, 1, 0])["steps"][0])
    assert s["retries_total"] == 4 and [t["retries"] for t in s["targets"].values()] == [1, 2, 1, 0]
    assert s["targets"]["4x"]["first_try_within"] is False  # 0.90 < 0.95
    assert zr.summarize(_manifest("x", [6, 0, 0, 0])["steps"][0])["targets"]["1.5x"]["first_try_within"] is True


@pytest.mark.skipif(not RESULTS.is_file(), reason="compound.json not measured")
def test_stored_retries_are_each_runs_total():
    data = json.loads(RESULTS.read_text())
    if data.get("ziplm_retries") is None:
        pytest.skip("ziplm_retries not measured yet")
    d = data["ziplm_retries_detail"]
    from compresslab.pruning.speedup import SpeedupSettings

    for side, lm in (("before", "one_layer"), ("after", SpeedupSettings().latency_model.value)):
        assert d[side] == lm  # after: the model ZipLM ships as its default
        assert data["ziplm_retries"][side] == d[lm]["retries_total"] == sum(t["retries"] for t in d[lm]["targets"].values())
    assert "ziplm_retries" not in (data["meta"].get("pending") or {})


def test_runs_priced_with_different_tables_are_refused_before_writing(zr, tmp_path, monkeypatch):
    runs = {"a1": _manifest("one_layer", [1, 2, 2, 2], table="latency/old.json"),
            "b2": _manifest("calibrated", [1, 2, 1, 0]), "c3": _manifest("linear", [0, 1, 0, 0])}
    for name, m in runs.items():
        (tmp_path / "ziplm_2x" / name).mkdir(parents=True)
        (tmp_path / "ziplm_2x" / name / "manifest.json").write_text(json.dumps(m))
    out = tmp_path / "compound.json"
    monkeypatch.setattr("sys.argv", ["ziplm_retries", "--outputs", str(tmp_path), "--results", str(out)])
    with pytest.raises(SystemExit, match="different .*latency tables"):
        zr.main()
    assert not out.exists()
    runs["a1"] = _manifest("one_layer", [1, 2, 2, 2])
    (tmp_path / "ziplm_2x" / "a1" / "manifest.json").write_text(json.dumps(runs["a1"]))
    zr.main()
    data = json.loads(out.read_text())
    assert set(data["ziplm_retries_detail"]) >= {"one_layer", "calibrated", "linear"}
    assert data["ziplm_retries"]["before"] == 7
    # the same file measured anew (other calibration timings) is another measurement; an optional model's run
    # (neither one_layer nor the default) that priced with another one is left out, not a reason to refuse
    from compresslab.pruning.speedup import SpeedupSettings

    optional = ({"calibrated", "linear"} - {SpeedupSettings().latency_model.value}).pop()
    anew = _manifest(optional, [0, 1, 0, 0])
    anew["steps"][0]["result"]["metrics"]["latency_table"]["calibration"] = {"points": [{"measured_ms": 270.0}]}
    (tmp_path / "ziplm_2x" / {"calibrated": "b2", "linear": "c3"}[optional] / "manifest.json").write_text(json.dumps(anew))
    out.unlink()
    zr.main()
    assert optional not in json.loads(out.read_text())["ziplm_retries_detail"]


def test_heldout_prices_every_measured_structure_with_every_model(zr):
    """Each model predicts T(dense) / T(structure) for the same structures; errors are predicted / measured - 1."""
    from compresslab.ops.spdy import LatencyTable

    times = {"attention": {0: 0.0, 1: 1.0, 2: 2.0}, "ffn": {0: 0.0, 4: 3.0, 8: 6.0}}
    exact = LatencyTable(2.0, times)  # dense (2 layers, 2 heads, 8 neurons): 2 + 2 * (2 + 6) = 18
    slow_small = LatencyTable(2.0, {"attention": {0: 0.0, 1: 1.5, 2: 2.0}, "ffn": times["ffn"]})
    dense = {"attention": [2, 2], "ffn": [8, 8]}
    half = {"heads": [1, 1], "ffn": [4, 4]}  # exact: 2 + 2 * (1 + 3) = 10 -> 1.8x
    points = [{"run": "calibrated", "target": "2x", **half, "measured": 1.8},
              {"run": "linear", "target": "2x", **half, "measured": 1.8 * 1.2}]  # a noisy check: 20% faster
    out = zr.heldout({"exact": exact, "slow_small": slow_small}, points, dense)
    e = out["exact"]
    assert [r["predicted"] for r in e["points"]] == pytest.approx([1.8, 1.8])
    assert [r["rel_error"] for r in e["points"]] == pytest.approx([0.0, 1 / 1.2 - 1])
    assert e["max_abs_rel_error"] == pytest.approx(1 - 1 / 1.2) and e["within_first_try_window"] == 1  # 1.2 > 1.15
    # slow_small prices the half model at 2 + 2 * (1.5 + 3) = 11 -> 18 / 11
    assert out["slow_small"]["points"][0]["predicted"] == pytest.approx(18 / 11)
    assert out["slow_small"]["mean_rel_error"] == pytest.approx(((18 / 11) / 1.8 - 1 + (18 / 11) / 2.16 - 1) / 2)
    # a size the table dropped as dominated (ffn 4 here) is priced at the next larger size kept (8)
    no4 = LatencyTable(2.0, {"attention": times["attention"], "ffn": {0: 0.0, 8: 6.0}})
    assert zr.heldout({"no4": no4}, points[:1], dense)["no4"]["points"][0]["predicted"] == pytest.approx(18 / 16)


def test_measured_structures_are_each_runs_final_members(zr):
    m = _manifest("calibrated", [1, 0, 0, 0])
    fam = m["steps"][0]["result"]["metrics"]["family"]
    for key, r in fam.items():
        r["structure"] = {"heads": [6, 6], "ffn": [512, 512]}
        r["target_speedup"] = float(key[:-1])
    fam["1x"] = {"target_speedup": 1.0, "structure": {"heads": [12, 12], "ffn": [1536, 1536]},
                 "measured_speedup_b32": 1.0}  # the dense member: not a structure the model priced
    pts = zr.measured_structures({"calibrated": m})
    assert [p["target"] for p in pts] == ["1.5x", "2x", "3x", "4x"]
    assert all(p["run"] == "calibrated" and p["heads"] == [6, 6] for p in pts)
