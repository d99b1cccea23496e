"""Latency table (ZipLM §4.3): real probe measurement at a tiny shape, and the cache rules.

A cached table is reused only in the exact environment it was measured in; a changed fingerprint
(another CPU, ORT version, thread count, shape) re-measures and says why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from compresslab.bench.latency_runtimes import ORT_INT8_RECIPE, as_deployed, fastest_runtime, measure_speedup
from compresslab.bench.latency_table import (
    TableSettings, build_latency_table, cache_file, efficient_sizes, environment, ffn_sizes, one_layer_table,
    probe_model)
from compresslab.export.openvino_int8 import RECIPE
from compresslab.models.adapters import get_adapter
from compresslab.models.tiny import tiny_model
from compresslab.ops.spdy import LatencyTable

torch.set_num_threads(1)
SETTINGS = TableSettings(batch=2, seq=16, threads=1, ffn_grid=16, warmup=0, runs=2, chunk=3)


def _fp(cpu: str = "Test CPU", ort: str = "1.0") -> dict[str, Any]:
    return {"cpu": {"model": cpu, "isa": {"avx2": True}}, "libraries": {"onnxruntime": ort, "torch": "t",
            "transformers": "x"}, "threads": 1}


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cache rules are tested on a quiet machine (a busy one never caches: tests/robustness/test_load.py),
    whatever else runs on the real one."""
    import compresslab.bench.machine_load as ml
    from compresslab.testing import FakeCpu

    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=0.0))
    monkeypatch.setattr(ml, "PROBE_S", 0.0)


@pytest.fixture(scope="module")
def dense_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from compresslab.export import export_model
    from compresslab.models.tiny import tiny_tokenizer

    out = tmp_path_factory.mktemp("dense")
    tok = tiny_tokenizer(out / "tok")
    batch = dict(tok(["the movie was good", "bad"], padding=True, return_tensors="pt"))
    return export_model(tiny_model("bert"), tok, out / "onnx", [batch], threads=1).onnx_path


def test_ffn_sizes_and_settings() -> None:
    assert ffn_sizes(64, 16) == [0, 16, 32, 48, 64]
    assert ffn_sizes(100, 32) == [0, 32, 64, 96, 100]
    with pytest.raises(ValueError, match="runs"):
        TableSettings(runs=0)
    with pytest.raises(ValueError, match="threads"):
        TableSettings(threads=0)


def test_dominated_sizes_are_dropped_not_averaged() -> None:
    # tile effects: 448 neurons slower than 512, 192 slower than 256; both are never worth picking
    t = {0: 0.0, 64: 0.5, 128: 0.6, 192: 1.8, 256: 0.9, 448: 3.7, 512: 1.8}
    assert efficient_sizes(t) == {0: 0.0, 64: 0.5, 128: 0.6, 256: 0.9, 512: 1.8}
    assert efficient_sizes({0: 0.0, 4: 1.0, 3: 1.0}) == {0: 0.0, 4: 1.0}  # ties go to the larger size


def test_probe_models_have_the_asked_shape() -> None:
    model = tiny_model("bert")
    for heads, ffn in ((4, 0), (0, 32), (0, 0)):
        probe = probe_model(model, heads, ffn)
        assert get_adapter(probe).structure() == [{"heads": heads, "ffn": ffn}]
        assert probe.config.vocab_size > probe.config.max_position_embeddings  # embeddings fuse


def test_measured_table_is_monotone_and_cached(tmp_path: Path, dense_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import compresslab.bench.latency_table as lt

    model = tiny_model("bert")
    table, info = build_latency_table(model, dense_onnx, SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert not info["cached"]
    measured = {"attention": [1, 2, 3, 4], "ffn": [16, 32, 48, 64]}
    alone = one_layer_table(info)  # the probes' table, before the whole-model calibration
    for kind, sizes in measured.items():  # timing noise at this shape may drop dominated sizes
        assert {0, sizes[-1]} <= set(table.sizes(kind)) == set(alone.sizes(kind)) <= {0, *sizes}
        times = list(alone.module_times[kind].values())  # t(0) = 0; then strictly increasing
        assert times[0] == 0.0 and all(a < b for a, b in zip(times[1:], times[2:])) and min(times) >= 0
        fitted = list(table.module_times[kind].values())  # fixed cost + scale x probe: never decreasing
        assert fitted[0] == 0.0 and all(a <= b for a, b in zip(fitted, fitted[1:]))
        assert set(info["raw"]["dominated"][kind]) == set(sizes) - set(table.sizes(kind))
    assert table.base_time >= 0 and info["raw"]["dense_ms"] > 0
    points = info["raw"]["calibration"]["points"]  # real exports of the whole models, timed
    assert points[0]["name"] == "dense" and {"no_attention", "no_ffn", "empty"} <= {p["name"] for p in points}
    assert all(p["measured_ms"] > 0 for p in points)
    assert len(info["raw"]["base_ms"]) == 3  # 4 + 4 probes in chunks of 3, each against the base
    monkeypatch.setattr(lt, "measure_table", lambda *a, **k: pytest.fail("re-measured a valid cache"))
    again, info2 = build_latency_table(model, dense_onnx, SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert info2["cached"] and again.to_dict() == table.to_dict()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Replace the measurement with a cheap fake that records the environment it was asked for."""
    import compresslab.bench.latency_table as lt

    calls: list[dict] = []

    def fake(model: Any, dense: Any, s: TableSettings, env: dict, progress: Any = None) -> tuple[LatencyTable, dict]:
        calls.append(env)
        return LatencyTable(1e-3, {"attention": {4: 1e-3}, "ffn": {64: 1e-3}}, env), {"dense_ms": 5.0}

    monkeypatch.setattr(lt, "measure_table", fake)
    return calls


def test_other_environment_is_never_reused(tmp_path: Path, counted: list, caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_model("bert")
    build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    with caplog.at_level(logging.WARNING, logger="compresslab.bench.latency_table"):
        _, info = build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp(cpu="Other CPU"))
    assert len(counted) == 2 and not info["cached"]
    assert "cpu.model" in caplog.text and "not reused" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="compresslab.bench.latency_table"):
        build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp(ort="2.0"))
    assert len(counted) == 3 and "libraries.onnxruntime" in caplog.text
    # the shape and thread count are part of the environment too
    other = TableSettings(batch=4, seq=16, threads=1, ffn_grid=16)
    assert environment(model, other, _fp()) != environment(model, SETTINGS, _fp())
    build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert len(counted) == 3  # the first environment's table is still there and still valid


def test_tampered_or_corrupt_cache_is_remeasured(tmp_path: Path, counted: list, caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_model("bert")
    env = environment(model, SETTINGS, _fp())
    build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    path = cache_file(tmp_path, env)
    data = json.loads(path.read_text())
    data["table"]["fingerprint"]["cpu.model"] = "edited"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="compresslab.bench.latency_table"):
        build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert len(counted) == 2 and "another environment" in caplog.text
    path.write_text("{not json")
    build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert len(counted) == 3


@pytest.mark.parametrize("noisy", [True, False])
def test_reusing_a_noisy_table_warns(tmp_path: Path, counted: list, caplog: pytest.LogCaptureFixture,
                                     noisy: bool) -> None:
    """A table flagged noisy when measured is cached (it was not busy); every run that reuses it says so."""
    model = tiny_model("bert")
    build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    path = cache_file(tmp_path, environment(model, SETTINGS, _fp()))
    data = json.loads(path.read_text())
    data["info"]["machine_load"]["spread"] = {"max": 0.42, "runner": "probe3", "shape": "b2xs16", "noisy": noisy}
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="compresslab.bench.latency_table"):
        _, info = build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert info["cached"] and len(counted) == 1  # reused either way: noisy is not busy
    assert ("flagged noisy" in caplog.text and "probe3" in caplog.text and "42%" in caplog.text) is noisy


def test_runtime_is_validated_and_keyed_only_off_the_default() -> None:
    with pytest.raises(ValueError, match="runtime must be one of"):
        TableSettings(runtime="tensorrt")
    model = tiny_model("bert")
    ort = environment(model, SETTINGS, _fp())
    # ORT tables keep the environment they had before runtimes existed: their cache files stay valid
    assert "runtime" not in ort and "libraries.openvino" not in ort
    ov = environment(model, dataclasses.replace(SETTINGS, runtime="openvino"), _fp())
    ov8 = environment(model, dataclasses.replace(SETTINGS, runtime="openvino_int8"), _fp())
    assert ov["runtime"] == "openvino" and ov["libraries.openvino"] and "int8_recipe" not in ov
    assert ov8["runtime"] == "openvino_int8" and ov8["int8_recipe"] == RECIPE
    o8 = environment(model, dataclasses.replace(SETTINGS, runtime="ort_int8"), _fp())
    assert o8["runtime"] == "ort_int8" and o8["int8_recipe"] == ORT_INT8_RECIPE and "libraries.openvino" not in o8
    assert len({cache_file(Path("c"), e) for e in (ort, ov, ov8, o8)}) == 4


def test_missing_openvino_is_refused_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import compresslab.bench.latency_table as lt
    import compresslab.bench.openvino_runner as ovr

    monkeypatch.setattr(ovr, "openvino_missing_reason", lambda: "openvino is not installed (test)")
    monkeypatch.setattr(lt, "measure_table", lambda *a, **k: pytest.fail("measured without a runtime"))
    with pytest.raises(RuntimeError, match="openvino_int8.*not installed"):
        build_latency_table(tiny_model("bert"), "dense.xml", dataclasses.replace(SETTINGS, runtime="openvino_int8"))
    TableSettings(runtime="ort").check_runtime()  # ORT needs nothing more


def test_openvino_int8_table_times_int8_irs_of_every_probe(tmp_path: Path, dense_onnx: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes, whole-model points and the dense reference are all our int8 IRs, timed on OpenVINO."""
    import openvino as ov

    import compresslab.bench.latency_table as lt

    s = dataclasses.replace(SETTINGS, runtime="openvino_int8")
    model = tiny_model("bert")
    dense_ir = as_deployed(dense_onnx.with_name("model_unfused.onnx"), s, model.config.vocab_size)
    timed: list[tuple[str, str, set[str]]] = []
    real = lt.make_runner

    def spy(path: Any, settings: TableSettings, vocab_size: int | None = None) -> Any:
        runner = real(path, settings, vocab_size)
        ops = {op.get_type_name() for op in ov.Core().read_model(str(path)).get_ops()}
        timed.append((f"{Path(path).parent.name}/{Path(path).name}", type(runner).__name__, ops))
        return runner

    monkeypatch.setattr(lt, "make_runner", spy)
    table, info = build_latency_table(model, dense_ir, s, cache_dir=tmp_path, fingerprint=_fp())
    assert not info["cached"] and info["settings"]["runtime"] == "openvino_int8"
    # a base per chunk of 3, 8 probes, the dense reference, the whole-model points
    assert len(timed) == 3 + 8 + 1 + len(info["raw"]["calibration"]["points"])
    assert all(name.endswith("_int8/openvino_model.xml") and kind == "OpenVinoRunner" for name, kind, _ in timed)
    # every timed graph with an encoder Linear is quantized (the base probe and the empty model have none)
    unquantized = {name.split("/")[0] for name, _, ops in timed if "FakeQuantize" not in ops}
    assert unquantized == {"base_0_int8", "empty_int8"}
    for kind in ("attention", "ffn"):
        fitted = list(table.module_times[kind].values())
        assert fitted[0] == 0.0 and all(a <= b for a, b in zip(fitted, fitted[1:]))
    again, info2 = build_latency_table(model, dense_ir, s, cache_dir=tmp_path, fingerprint=_fp())
    assert info2["cached"] and again.to_dict() == table.to_dict()
    assert measure_speedup(dense_ir, dense_ir, s, runs=2)["speedup"] > 0


def test_ort_int8_table_times_dynamic_int8_of_every_fused_probe(tmp_path: Path, dense_onnx: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """ort_int8: every probe, whole-model point and the dense reference is the fused export quantized as
    ort_int8_dynamic deploys it (int8 weights, per-call activations), timed on ORT; ORT fp32 stays untouched."""
    import onnx

    import compresslab.bench.latency_table as lt

    s = dataclasses.replace(SETTINGS, runtime="ort_int8")
    model = tiny_model("bert")
    dense_q = as_deployed(dense_onnx, s, model.config.vocab_size)
    assert json.loads(ORT_INT8_RECIPE.split(" ", 1)[1]) == {"per_channel": True, "reduce_range": False}
    weights = [i for i in onnx.load(str(dense_q)).graph.initializer if i.name.endswith("_scale") and i.dims]
    assert weights and any(i.dims[0] > 1 for i in weights)  # per-channel weight scales, as the recipe says
    assert dense_q.name == "model_int8.onnx" and as_deployed(dense_onnx, SETTINGS, 0) == dense_onnx
    timed: list[tuple[str, str, set[str]]] = []
    real = lt.make_runner

    def spy(path: Any, settings: TableSettings, vocab_size: int | None = None) -> Any:
        runner = real(path, settings, vocab_size)
        ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
        timed.append((Path(path).name, type(runner).__name__, ops))
        return runner

    monkeypatch.setattr(lt, "make_runner", spy)
    table, info = build_latency_table(model, dense_q, s, cache_dir=tmp_path, fingerprint=_fp())
    assert not info["cached"] and info["settings"]["runtime"] == "ort_int8"
    assert len(timed) == 3 + 8 + 1 + len(info["raw"]["calibration"]["points"])
    assert all(name.endswith("_int8.onnx") and kind == "OrtRunner" for name, kind, _ in timed)
    int8_ops = {"QAttention", "MatMulInteger", "DynamicQuantizeMatMul"}
    # every graph runs int8 kernels, as deployed (ORT's dynamic int8 also takes the pooler and classifier) ...
    assert all(ops & int8_ops for _, _, ops in timed)
    # ... and attention probes keep ORT's fused (now quantized) Attention
    att = [ops for name, _, ops in timed if name.startswith("attention_")]
    assert att and all("QAttention" in ops for ops in att)
    again, info2 = build_latency_table(model, dense_q, s, cache_dir=tmp_path, fingerprint=_fp())
    assert info2["cached"] and again.to_dict() == table.to_dict()


def test_fastest_runtime_picks_the_lowest_dense_median(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    import compresslab.bench.latency as lat
    import compresslab.bench.latency_runtimes as lt

    made: dict[str, str] = {}
    monkeypatch.setattr(lt, "make_runner", lambda path, s, vocab_size=None: made.setdefault(s.runtime, str(path)))
    medians = {"ort_int8": 80.0, "openvino_int8": 60.0, "ort": 100.0}

    def fake(runners: dict[str, Any], shapes: Any, **kw: Any) -> dict[str, Any]:
        assert set(runners) == set(medians) and shapes == [(2, 16)]  # one interleaved run at the table's shape
        return {"results": {rt: {"b2xs16": {"p50_ms": medians[rt]}} for rt in runners},
                "machine_load": {"busy": busy}}

    monkeypatch.setattr(lat, "measure_latency", fake)
    busy = False
    files = {rt: Path(f"{rt}.onnx") for rt in medians}
    got = fastest_runtime(files, SETTINGS, runs=3)
    assert got["chosen"] == "openvino_int8" and got["b2xs16_ms"] == medians and got["busy"] is False
    assert got["machine_load"] == {"busy": False}  # the record run reports read
    assert made == {rt: f"{rt}.onnx" for rt in medians}  # each file timed on its own runtime
    # the first listed stays chosen unless another is faster by more than the margin (no flip on noise) ...
    medians["openvino_int8"] = 76.5  # 4.4 % faster
    with caplog.at_level(logging.INFO, logger="compresslab.bench.latency_runtimes"):
        assert fastest_runtime(files, SETTINGS)["chosen"] == "ort_int8"
    assert "ort_int8 for the dense model" in caplog.text and "kept: listed first" in caplog.text  # not "fastest"
    caplog.clear()
    medians["openvino_int8"] = 75.0  # 6.25 % faster
    assert fastest_runtime(files, SETTINGS)["chosen"] == "openvino_int8"
    # ... and the lowest median wins among those that beat it
    medians["ort"] = 70.0
    assert fastest_runtime(files, SETTINGS)["chosen"] == "ort"
    busy = True
    with caplog.at_level(logging.WARNING):
        assert fastest_runtime(files, SETTINGS)["busy"] is True
    assert "busy" in caplog.text
    with pytest.raises(ValueError, match="two or more"):
        fastest_runtime({"ort": Path("a.onnx")}, SETTINGS)
    with pytest.raises(ValueError, match="two or more"):
        fastest_runtime({"ort": Path("a"), "tensorrt": Path("b")}, SETTINGS)


@pytest.mark.parametrize("record", [{"spread": {"noisy": True, "max": "abc"}}, {"spread": [1]}, "x",
                                    {"spread": {"noisy": "false", "max": 0.3}}, {"spread": {"noisy": True, "max": None}}])
def test_an_odd_load_record_never_stops_a_valid_table(tmp_path: Path, counted: list, record: Any,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The noisy check reads a hand-edited or older record without raising; only ``noisy: true`` warns."""
    model = tiny_model("bert")
    build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    path = cache_file(tmp_path, environment(model, SETTINGS, _fp()))
    data = json.loads(path.read_text())
    data["info"]["machine_load"] = record
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="compresslab.bench.latency_table"):
        _, info = build_latency_table(model, "dense.onnx", SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert info["cached"] and len(counted) == 1
    noisy = isinstance(record, dict) and isinstance(record["spread"], dict) and record["spread"]["noisy"] is True
    assert ("flagged noisy" in caplog.text) is noisy
    assert "between median" not in caplog.text  # no spread to print where "max" is not a number
