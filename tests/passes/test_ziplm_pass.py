"""ZipLM pass on a tiny BERT: physical shrink exactness (§4.7-4), one-shot and gradual flows,
save/reload, the re-measure-and-tighten loop, and bad inputs.

Timing is replaced by a synthetic latency table and scripted speedup measurements, so the tests
are deterministic; the candidates are still really exported (with parity) on every attempt.
The real measurement path is tested in tests/unit/bench/test_latency_table.py.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from compresslab.data.schema import Example, TaskData
from compresslab.data.tasks import TASKS
from compresslab.models.adapters import get_adapter
from compresslab.checkpoint import load, save
from compresslab.models.structure import shrink_ffn, shrink_heads
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.ops.spdy import LatencyTable
from compresslab.testing import synthetic_latency_table
from compresslab.types import PassContext

torch.set_num_threads(1)
_WORDS = ["the", "a", "movie", "film", "good", "bad", "great", "awful", "is", "not", "very", "fun", "plot"]


def make_ctx(tmp_path: Path, n: int = 48, teacher: Any = None) -> PassContext:
    rng = random.Random(0)
    ex = [Example(" ".join(rng.choices(_WORDS, k=rng.randint(3, 14))), None, rng.randint(0, 1)) for _ in range(n)]
    task = TaskData(spec=TASKS["sst2"], train=ex, validation=ex[:8], dev=ex[:8])
    return PassContext(tokenizer=tiny_tokenizer(tmp_path / "tok"), task=task, run_dir=tmp_path,
                       step_dir=tmp_path / "step", device=torch.device("cpu"), seed=0, teacher=teacher,
                       max_length=32, batch_size=8, cache_dir=tmp_path / "cache")


def fake_table(base_ms: float = 1.0) -> tuple[LatencyTable, dict[str, Any]]:
    """Tiny BERT (4 heads, FFN 64, grid 16): 1 ms per head, 0.05 ms per neuron, with its calibration record."""
    return synthetic_latency_table(base_ms)


@pytest.fixture
def fake_timing(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Synthetic table; measurements pop from ``script`` (default: always fast enough)."""
    import compresslab.pruning.speedup as st

    state: dict[str, Any] = {"table": fake_table(), "script": [], "calls": 0}
    monkeypatch.setattr(st, "build_latency_table", lambda *a, **k: state["table"])

    def measure(dense: Any, cand: Any, settings: Any, **kw: Any) -> dict[str, float]:
        state["calls"] += 1
        s = state["script"].pop(0) if state["script"] else 100.0
        return {"speedup": s, "dense_ms": 10.0, "candidate_ms": 10.0 / s}

    monkeypatch.setattr(st, "measure_speedup", measure)
    return state


def _batches(ctx: PassContext) -> list[dict]:
    return list(ctx.calibration_batches(16))


def _logits(model: torch.nn.Module, batches: list[dict]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}).logits for b in batches])


def _ziplm(**kw: Any):
    from compresslab.passes.ziplm import ZipLM

    base = dict(batch=2, seq=16, threads=1, ffn_grid=16, latency_warmup=0, latency_runs=2, check_runs=2,
                num_calibration=32, max_retries=0)
    return ZipLM(**{**base, **kw})


def test_zeroed_structures_equal_physical_shrink(tmp_path: Path) -> None:
    """§4.7-4: zeroing W_O columns + Q/K/V rows (and W_1 rows + W_2 columns) == slicing them."""
    ctx = make_ctx(tmp_path)
    batches = _batches(ctx)
    masked, sliced = tiny_model("bert", initializer_range=0.3), tiny_model("bert", initializer_range=0.3)
    drop_heads, keep_heads, keep_ffn = [1, 3], [0, 2], list(range(0, 64, 3))
    with torch.no_grad():
        lv = get_adapter(masked).layer(0)
        for h in drop_heads:
            cols = slice(h * lv.head_size, (h + 1) * lv.head_size)
            lv.o.weight[:, cols] = 0
            for lin in (lv.q, lv.k, lv.v):
                lin.weight[cols] = 0
                lin.bias[cols] = 0
        lv = get_adapter(masked).layer(1)
        dead = [k for k in range(64) if k not in keep_ffn]
        lv.ffn_in.weight[dead] = 0
        lv.ffn_in.bias[dead] = 0
        lv.ffn_out.weight[:, dead] = 0
    shrink_heads(get_adapter(sliced).layer(0), keep_heads)
    shrink_ffn(get_adapter(sliced).layer(1), keep_ffn)
    assert get_adapter(sliced).structure() == [{"heads": 2, "ffn": 64}, {"heads": 4, "ffn": len(keep_ffn)}]
    torch.testing.assert_close(_logits(sliced, batches), _logits(masked, batches), atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:only .* calibration tokens")
def test_oneshot_family_structure_reload(tmp_path: Path, fake_timing: dict, caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_ctx(tmp_path)
    model = tiny_model("bert")
    p = _ziplm(speedup=2.0, family=[1.5, 3.0], num_calibration=3)
    with caplog.at_level(logging.WARNING):
        res = p.apply(model, ctx)
    s = res.structure
    assert len(s["heads"]) == len(s["ffn"]) == 2
    assert get_adapter(model).structure() == [{"heads": h, "ffn": f} for h, f in zip(s["heads"], s["ffn"])]
    assert all(f % 16 == 0 for f in s["ffn"]) and sum(s["heads"]) < 8
    m = res.metrics
    assert m["structure_before"] == {"heads": [4, 4], "ffn": [64, 64]}  # the report's structure plot draws it
    assert m["target_speedup"] == 2.0 and m["predicted_speedup"] >= 2.0 and m["met_target"]
    assert m["measured_speedup_b2"] == 100.0 and m["params"] < m["params_dense"]
    assert set(m["family"]) == {"1.5x", "2x", "3x"}
    assert m["family"]["3x"]["predicted_speedup"] >= 3.0 and m["family"]["1.5x"]["predicted_speedup"] >= 1.5
    assert m["family"]["3x"]["params"] < m["family"]["1.5x"]["params"]
    assert "calibration tokens" in caplog.text  # 3 sentences < FFN width: warned, dampened
    assert m["calibration_examples"] == 3
    # save / reload the step's model and a family member with identical logits
    batches = _batches(ctx)
    out = save(model, tmp_path / "saved", ctx.tokenizer)
    torch.testing.assert_close(_logits(load(out), batches), _logits(model, batches), atol=1e-5, rtol=0)
    member = load(ctx.run_dir / "family" / "step" / "3x")
    assert get_adapter(member).structure() == [{"heads": h, "ffn": f} for h, f in
                                               zip(*m["family"]["3x"]["structure"].values())]
    assert not (ctx.run_dir / "family" / "step" / "2x").exists()  # the step's own model is the pass output
    assert not list(ctx.step_dir.glob(".speedup-*"))  # temporary exports are cleaned up


def test_stitch_loads_compensated_weights(tmp_path: Path, fake_timing: dict) -> None:
    from compresslab.passes.ziplm import ZipLM

    ctx = make_ctx(tmp_path)
    model = tiny_model("bert")
    p = _ziplm()
    dbs = p.databases(model, ctx, fake_table()[0])
    choice = {"heads": [2, 0], "ffn": [32, 64]}
    ZipLM.stitch(model, dbs, choice)
    lv0, lv1 = get_adapter(model).layer(0), get_adapter(model).layer(1)
    assert (lv0.num_heads, lv0.ffn_size, lv1.num_heads, lv1.ffn_size) == (2, 32, 0, 64)
    torch.testing.assert_close(lv0.o.weight, dbs[(0, "attention")].level(2).weight)
    torch.testing.assert_close(lv0.ffn_out.weight, dbs[(0, "ffn")].level(32).weight)
    assert _logits(model, _batches(ctx)).isfinite().all()  # a layer with no heads still runs


def test_short_measurement_tightens_budget(tmp_path: Path, fake_timing: dict) -> None:
    fake_timing["script"] = [1.6, 2.1]  # first candidate misses 2x, the re-solve meets it
    res = _ziplm(speedup=2.0, max_retries=2).apply(tiny_model("bert"), make_ctx(tmp_path))
    att = res.metrics["attempts"]
    assert len(att) == 2 and att[1]["budget_ms"] < att[0]["budget_ms"]
    assert res.metrics["measured_speedup_b2"] == 2.1 and res.metrics["met_target"]


def test_gradual_recovers_each_target(tmp_path: Path, fake_timing: dict) -> None:
    ctx = make_ctx(tmp_path, teacher=tiny_model("bert"))
    model = tiny_model("bert")
    res = _ziplm(speedup=1.5, family=[1.5, 2.5], mode="gradual", recovery={"steps": 2}).apply(model, ctx)
    fam = res.metrics["family"]
    assert fam["1.5x"]["recovery"]["steps"] == 2 and fam["2.5x"]["recovery"]["steps"] == 2
    assert res.structure == fam["1.5x"]["structure"]  # the pass output stays at the step's target
    big = load(ctx.run_dir / "family" / "step" / "2.5x")
    assert sum(s["heads"] for s in get_adapter(big).structure()) <= sum(res.structure["heads"])


def test_bad_inputs(tmp_path: Path, fake_timing: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import compresslab.passes.ziplm as zl

    for kw, msg in (({"speedup": 0.5}, ">= 1"), ({"family": [2, 0.9]}, ">= 1"), ({"mode": "fast"}, "allowed"),
                    ({"damp": -1}, "damp"), ({"ffn_grid": 0}, "ffn_grid"), ({"tolerance": 0.7}, "tolerance")):
        with pytest.raises(ValueError, match=msg):
            _ziplm(**kw)
    fake_timing["table"] = fake_table(base_ms=10.0)  # T_dense 24.4 ms; 11 ms with the one head kept: at most 2.22x
    monkeypatch.setattr(zl, "collect_hessians", lambda *a, **k: pytest.fail("Hessians before the target check"))
    with pytest.raises(ValueError, match="largest reachable speedup is 2.22x"):
        _ziplm(speedup=3.0).apply(tiny_model("bert"), make_ctx(tmp_path))
    with pytest.raises(ValueError, match="bert and roberta"):
        _ziplm().apply(tiny_model("distilbert"), make_ctx(tmp_path))


def test_registry_and_round_trip() -> None:
    from compresslab.registry import get_pass, pass_from_dict, pass_to_dict

    p = _ziplm(speedup=3.0, family=[1.5], mode="gradual")
    assert get_pass("ziplm") is type(p)
    d = pass_to_dict(p)
    assert d["mode"] == "gradual" and pass_from_dict(d) == p


def test_speedup_one_keeps_the_dense_model(tmp_path: Path, fake_timing: dict, caplog: pytest.LogCaptureFixture
                                           ) -> None:
    fake_timing["script"] = [0.9]  # timing noise below 1x: nothing to tighten, no retry
    model = tiny_model("bert")
    with caplog.at_level(logging.WARNING):  # more calibration than the 48 train examples: all of them, recorded
        res = _ziplm(speedup=1.0, max_retries=3, num_calibration=2048).apply(model, make_ctx(tmp_path))
    assert res.structure == {"heads": [4, 4], "ffn": [64, 64]} and len(res.metrics["attempts"]) == 1
    assert res.metrics["met_target"] and res.metrics["params"] == res.metrics["params_dense"]
    assert res.metrics["calibration_examples"] == 48 and "num_calibration=2048 but the train split has 48" in caplog.text


def test_hooks_are_always_removed_and_pads_excluded(tmp_path: Path) -> None:
    from compresslab.passes.ziplm import collect_hessians

    ctx = make_ctx(tmp_path)
    model = tiny_model("bert")
    batches = list(ctx.calibration_batches(16))
    accs = collect_hessians(model, batches, ctx)
    assert not any(m._forward_pre_hooks for m in model.modules())
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    assert {a.count for a in accs.values()} == {real_tokens} and len(accs) == 4  # W_O and W_2 of 2 layers
    with pytest.raises(KeyError):  # a batch without a mask fails while the hooks are registered
        collect_hessians(model, [{"input_ids": batches[0]["input_ids"]}], ctx)
    assert not any(m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("runtime", ["ort", "ort_int8", "openvino", "openvino_int8"])
def test_table_and_checks_time_the_files_the_runtime_deploys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             runtime: str) -> None:
    """latency_runtime reaches the table and every check, and both time that runtime's files of the dense model
    and the candidate: ORT the fused export, OpenVINO the plain export, openvino_int8 our int8 IR of it."""
    import compresslab.pruning.speedup as st

    seen: dict[str, Any] = {"checks": []}

    def table(model: Any, dense: Any, settings: Any, **kw: Any) -> Any:
        seen["table"] = (Path(dense), settings.runtime)
        return fake_table()

    def measure(dense: Any, cand: Any, settings: Any, **kw: Any) -> dict[str, float]:
        assert Path(dense).is_file() and Path(cand).is_file()  # still there while timed
        seen["checks"].append((Path(dense), Path(cand), settings.runtime))
        if settings.runtime == "openvino_int8":  # what is timed is int8
            import openvino as ov

            seen["ops"] = {op.get_type_name() for op in ov.Core().read_model(str(cand)).get_ops()}
        if settings.runtime == "ort_int8":
            import onnx

            seen["ops"] = {n.op_type for n in onnx.load(str(cand), load_external_data=False).graph.node}
        return {"speedup": 100.0, "dense_ms": 10.0, "candidate_ms": 0.1}

    monkeypatch.setattr(st, "build_latency_table", table)
    monkeypatch.setattr(st, "measure_speedup", measure)
    _ziplm(speedup=2.0, latency_runtime=runtime).apply(tiny_model("bert"), make_ctx(tmp_path))
    want = {"ort": "model.onnx", "ort_int8": "model_int8.onnx", "openvino": "model_unfused.onnx",
            "openvino_int8": "model_unfused_int8/openvino_model.xml"}[runtime]
    dense, rt = seen["table"]
    assert rt == runtime and dense.as_posix().endswith(f"/dense/{want}")
    (d, cand, rt2), = seen["checks"]
    assert d == dense and cand.as_posix().endswith(f"/candidate1/{want}") and rt2 == runtime
    assert runtime != "openvino_int8" or "FakeQuantize" in seen["ops"]
    assert runtime != "ort_int8" or "QAttention" in seen["ops"]


def test_a_list_of_runtimes_prices_on_the_one_fastest_for_the_dense_model(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """latency_runtime: [ort_int8, openvino_int8] times the dense model's file on each, then the table and every
    check use the fastest only; the choice and its timings are in the step's metrics."""
    import onnx
    import openvino as ov

    import compresslab.pruning.speedup as st

    seen: dict[str, Any] = {"checks": []}

    def fastest(files: dict[str, Path], settings: Any, **kw: Any) -> dict[str, Any]:
        seen["files"] = {rt: Path(f) for rt, f in files.items()}
        assert {n.op_type for n in onnx.load(str(files["ort_int8"]), load_external_data=False).graph.node} \
            & {"QAttention", "MatMulInteger"}
        assert "FakeQuantize" in {op.get_type_name() for op in ov.Core().read_model(str(files["openvino_int8"])).get_ops()}
        return {"chosen": "openvino_int8", "b32xs128_ms": {"ort_int8": 9.0, "openvino_int8": 7.0}, "busy": True,
                "machine_load": {"busy": True}}

    def table(model: Any, dense: Any, settings: Any, **kw: Any) -> Any:
        seen["table"] = (Path(dense), settings.runtime)
        return fake_table()

    def measure(dense: Any, cand: Any, settings: Any, **kw: Any) -> dict[str, float]:
        seen["checks"].append(settings.runtime)
        return {"speedup": 100.0, "dense_ms": 10.0, "candidate_ms": 0.1}

    import compresslab.export as ex

    exports: list[str] = []
    real_export = ex.export_model

    def export(model: Any, tok: Any, out: Any, *a: Any, **kw: Any) -> Any:
        exports.append(Path(out).name)
        return real_export(model, tok, out, *a, **kw)

    monkeypatch.setattr(ex, "export_model", export)
    monkeypatch.setattr(st, "fastest_runtime", fastest)
    monkeypatch.setattr(st, "build_latency_table", table)
    monkeypatch.setattr(st, "measure_speedup", measure)
    res = _ziplm(speedup=2.0, latency_runtime=["ort_int8", "openvino_int8"]).apply(tiny_model("bert"),
                                                                                 make_ctx(tmp_path))
    assert seen["files"]["ort_int8"].as_posix().endswith("/dense/model_int8.onnx")
    assert seen["files"]["openvino_int8"].as_posix().endswith("/dense/model_unfused_int8/openvino_model.xml")
    dense, rt = seen["table"]
    assert rt == "openvino_int8" and dense == seen["files"]["openvino_int8"]  # the chosen runtime's file of it
    assert exports == ["dense", "candidate1"]  # the dense model exported once for the choice and the table
    assert seen["checks"] == ["openvino_int8"]
    info = res.metrics["latency_table"]
    assert info["runtime"] == "openvino_int8" and info["runtime_choice"]["chosen"] == "openvino_int8"
    assert info["busy"] is True  # a choice timed on a busy machine flags the step's latency figures
    assert not any(p.name.startswith(".speedup-") for p in (tmp_path).rglob("*"))  # work dirs removed


def test_latency_runtime_is_checked_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import compresslab.bench.openvino_runner as ovr

    with pytest.raises(ValueError, match="latency_runtime must be one of .*'tensorrt' unknown"):
        _ziplm(latency_runtime="tensorrt")
    # a value of the wrong type is said as one (validate.typed_post_init); the runtimes are listed for a text
    with pytest.raises(ValueError, match=r"ziplm.latency_runtime must be text or a list of texts .*got None \(default 'ort'\)$"):
        _ziplm(latency_runtime=None)
    monkeypatch.setattr(ovr, "openvino_missing_reason", lambda: "openvino is not installed (test)")
    with pytest.raises(RuntimeError, match="not installed"):
        _ziplm(latency_runtime="openvino")
    _ziplm(latency_runtime="ort")  # ORT needs nothing more
    _ziplm(latency_runtime=["ort", "ort_int8"])
    with pytest.raises(RuntimeError, match="openvino_int8.*not installed"):  # each candidate is checked
        _ziplm(latency_runtime=["ort_int8", "openvino_int8"])
    with pytest.raises(ValueError, match="latency_runtime must be one of .*'tensorrt' unknown"):
        _ziplm(latency_runtime=["ort", "tensorrt"])
    with pytest.raises(ValueError, match="latency_runtime is an empty list"):
        _ziplm(latency_runtime=[])
    with pytest.raises(ValueError, match="lists a runtime twice"):
        _ziplm(latency_runtime=["ort", "ort"])
    with pytest.raises(ValueError, match=r"ziplm.latency_runtime must be text or a list of texts .*got 3 \(default 'ort'\)$"):
        _ziplm(latency_runtime=3)
