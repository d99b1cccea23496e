"""bench/latency_table.py's calibrated table on a synthetic runtime (issue #13): the whole-model points measured in one
interleaved call give the fitted table (fixed cost + scale x probe time), cached with its calibration; a busy
calibration is used but not cached; the cache key names the method and the calibration. Nothing is timed: exports
record the shape asked for and runners "run" in :class:`~compresslab.testing.LatencyTruth`'s time."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from compresslab.bench.latency_table import (TABLE_METHOD, TableSettings, build_latency_table, cache_file, environment,
                                             linear_table, one_layer_table)
from compresslab.models.tiny import tiny_model
from compresslab.ops.spdy import FixedCostFit, LatencyTable
from compresslab.testing import LATENCY_KINDS, LatencyTruth

SETTINGS = TableSettings(batch=2, seq=16, threads=1, ffn_grid=16, warmup=0, runs=2, chunk=3)
TINY = LatencyTruth(4, 64, 2, 16, FixedCostFit(2e-3, {"attention": 3e-3, "ffn": 2.5e-3}, 0.8), per_head=1e-3,
                    per_neuron=8e-5)


def _fp(cpu: str = "Test CPU") -> dict[str, Any]:
    return {"cpu": {"model": cpu, "isa": {"avx2": True}}, "libraries": {"onnxruntime": "1.0", "torch": "t",
            "transformers": "x"}, "threads": 1}


@pytest.fixture
def synthetic_runtime(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Exports record the shape they were asked for; runners 'run' in TINY's time; no ORT, no clock."""
    import compresslab.bench.latency as latency
    import compresslab.bench.latency_probes as lp
    import compresslab.bench.latency_table as lt
    import compresslab.bench.machine_load as ml
    import compresslab.bench.runners as runners
    from compresslab.testing import FakeCpu

    state: dict[str, Any] = {"shapes": {}, "timed": [], "cpu": FakeCpu(other=0.0)}
    monkeypatch.setattr(ml, "read_cpu", state["cpu"])
    monkeypatch.setattr(ml, "PROBE_S", 0.0)
    monkeypatch.setattr(lt, "probe_model", lambda model, h, n: ("probe", h, n))
    monkeypatch.setattr(lt, "uniform_model", lambda model, h, n: ("whole", h, n))

    def export(marker: tuple, path: Path) -> int:
        state["shapes"][Path(path).name] = marker
        return (1 if marker[0] == "probe" else TINY.layers) if marker[1] else 0

    class Runner:
        def __init__(self, path: Any, threads: int, provider: str = "", vocab_size: int | None = None) -> None:
            self.marker = state["shapes"].get(Path(path).name, ("whole", TINY.heads, TINY.ffn))  # dense.onnx

    def measure(timed: dict[str, Runner], shapes: list, **kw: Any) -> dict[str, Any]:
        state["timed"].append(sorted(timed))

        def seconds(marker: tuple) -> float:
            kind, h, n = marker
            if kind == "probe":
                return TINY.probe_base + TINY.t("attention", h) + TINY.t("ffn", n)
            return TINY.time(TINY.uniform(h, n))

        key = f"b{shapes[0][0]}xs{shapes[0][1]}"
        return {"results": {name: {key: {"p50_ms": seconds(r.marker) * 1e3}} for name, r in timed.items()},
                "machine_load": {"busy": False}}

    monkeypatch.setattr(lp, "export_probe", export)  # deploy_probe's, in latency_probes
    monkeypatch.setattr(runners, "OrtRunner", Runner)
    monkeypatch.setattr(latency, "measure_latency", measure)
    return state


def test_measured_table_is_the_fitted_model_and_is_cached_with_its_calibration(
        tmp_path: Path, synthetic_runtime: dict) -> None:
    model = tiny_model("bert")
    table, info = build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert not info["cached"] and info["cache_file"]
    for kind in LATENCY_KINDS:  # the table the DP sees: fixed cost + scale x probe time, 0 when removed
        for size in TINY.sizes(kind):
            want = 0.0 if size == 0 else TINY.fit.fixed[kind] + TINY.fit.scale * TINY.t(kind, size)
            assert table.time(kind, size) == pytest.approx(want, rel=1e-6, abs=1e-12)
    assert table.base_time == pytest.approx(TINY.fit.base_time, rel=1e-6)
    cal = info["raw"]["calibration"]
    assert [p["name"] for p in cal["points"]] == ["dense", "uniform_0.5", "uniform_0.25", "no_attention", "no_ffn",
                                                  "empty"]  # 0.125 of 4 heads / 64 lands on 0.25's shape
    assert synthetic_runtime["timed"][-1] == sorted(p["name"] for p in cal["points"])  # one interleaved call
    assert cal["max_abs_rel_error_after"] < 1e-6 < cal["max_abs_rel_error_before"]
    shrunk = next(p for p in cal["points"] if p["name"] == "uniform_0.25")
    assert shrunk["before_ms"] < shrunk["measured_ms"] == pytest.approx(shrunk["after_ms"])  # table alone: too fast
    assert cal["fit_ms"]["fixed"] == pytest.approx({"attention": 3.0, "ffn": 2.5}, rel=1e-6)
    alone = one_layer_table(info)  # the uncorrected table stays available (latency_model=one_layer)
    assert alone.predict(TINY.dense) == pytest.approx(TINY.time(TINY.dense))
    assert alone.time("attention", 1) == pytest.approx(TINY.t("attention", 1))
    n_calls = len(synthetic_runtime["timed"])
    again, hit = build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert hit["cached"] and len(synthetic_runtime["timed"]) == n_calls  # nothing timed again
    assert again.to_dict() == table.to_dict() and hit["raw"]["calibration"] == json.loads(json.dumps(cal))
    assert one_layer_table(hit).to_dict() == alone.to_dict()
    # latency_model=linear: the same cached measurement, the table on its lines, refitted to the same points
    line, rec = linear_table(hit)
    assert len(synthetic_runtime["timed"]) == n_calls  # nothing timed for it either
    assert rec["lines_ms"]["attention"] == pytest.approx({"intercept": 0.0, "slope": 1.0}, abs=1e-9)  # exact
    assert rec["lines_ms"]["ffn"]["slope"] == pytest.approx(8e-2, rel=0.05)  # the tile bump is averaged in
    assert [r["name"] for r in rec["points"]] == [p["name"] for p in cal["points"]]
    assert [r["measured_ms"] for r in rec["points"]] == [p["measured_ms"] for p in cal["points"]]
    assert rec["max_abs_rel_error_after"] < 0.05 and "least-squares line" in rec["model"]
    assert line.time("attention", 0) == 0.0 and line.time("attention", 2) == pytest.approx(
        rec["fit"]["fixed"]["attention"] + rec["fit"]["scale"] * 2e-3, rel=1e-6)


def test_busy_calibration_is_used_but_not_cached(tmp_path: Path, synthetic_runtime: dict,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    synthetic_runtime["cpu"].other = 1.0  # another process keeps a core busy while the whole models run
    model = tiny_model("bert")
    with caplog.at_level(logging.WARNING, logger="compresslab"):
        table, info = build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert info["machine_load"]["busy"] and info["cache_file"] is None and "busy machine" in info["not_cached"]
    assert info["raw"]["calibration"]["points"] and table.base_time == pytest.approx(TINY.fit.base_time, rel=1e-6)
    assert not list(tmp_path.rglob("*.json")) and "NOT cached" in caplog.text
    n_calls = len(synthetic_runtime["timed"])
    synthetic_runtime["cpu"].other = 0.0
    _, quiet = build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert not quiet["cached"] and len(synthetic_runtime["timed"]) > n_calls and quiet["cache_file"]


def test_cache_key_names_the_method_and_the_calibration(tmp_path: Path, synthetic_runtime: dict,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_model("bert")
    env = environment(model, SETTINGS, _fp())
    assert TABLE_METHOD == 2 and env["method"] == TABLE_METHOD
    assert env["calibration_fractions"] == [0.5, 0.25, 0.125]
    other = TableSettings(batch=2, seq=16, threads=1, ffn_grid=16, calibration_fractions=[0.5])
    assert environment(model, other, _fp()) != env and cache_file(tmp_path, environment(model, other, _fp())) != \
        cache_file(tmp_path, env)
    # a table cached by the previous method (no whole-model calibration) sits beside it: never reused
    old_env = {**env, "method": 1}
    old = cache_file(tmp_path, old_env)
    assert old.parent == cache_file(tmp_path, env).parent and old != cache_file(tmp_path, env)
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"table": LatencyTable(0.05, TINY.one_layer(), old_env).to_dict(), "info": {}}))
    with caplog.at_level(logging.WARNING, logger="compresslab.bench.latency_table"):
        _, info = build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert not info["cached"] and "['method']" in caplog.text and "not reused" in caplog.text
    assert info["raw"]["calibration"]["points"]
