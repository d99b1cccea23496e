"""benchmarks/ziplm_retries.py (issue 13): the two retries runs are found by their settings (not by order or
name), per-target figures come from the ZipLM step's family, and compound.json's ``ziplm_retries`` is each run's
``retries_total`` (recomputed here from the per-target retries)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
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
    # that priced with another one is left out, not a reason to refuse the required pair
    anew = _manifest("linear", [0, 1, 0, 0])
    anew["steps"][0]["result"]["metrics"]["latency_table"]["calibration"] = {"points": [{"measured_ms": 270.0}]}
    (tmp_path / "ziplm_2x" / "c3" / "manifest.json").write_text(json.dumps(anew))
    out.unlink()
    zr.main()
    assert "linear" not in json.loads(out.read_text())["ziplm_retries_detail"]
