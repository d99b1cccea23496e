"""The OpenVINO backend: a tiny plain export against ORT, precision recorded and checked, skipping
when OpenVINO is missing, ``bench.backends`` validation, and best_dense recomputed from the cells."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from compresslab.bench import openvino_runner as ovr
from compresslab.bench.latency import make_inputs
from compresslab.pipeline.bench import _openvino_runners, best_dense, speedups_vs_best
from compresslab.pipeline.settings import SettingsError, default_settings

pytest.importorskip("openvino")


def test_openvino_matches_ort_at_f32_and_records_precision(tiny_onnx):
    from compresslab.bench.runners import OrtRunner

    ort, ov = OrtRunner(tiny_onnx, threads=1), ovr.OpenVinoRunner(tiny_onnx, threads=1, precision="f32")
    for batch, seq in ((1, 8), (3, 17), (1, 8)):  # dynamic dims: one compiled model, shapes vary
        x = make_inputs(batch, seq, 100, np.random.default_rng(batch))
        want = ort.session.run(None, ort.feed(x))[0]
        got = ov.run(x)
        assert got.shape == want.shape == (batch, 2)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    info = ov.info()
    assert info["precision"] == "f32" and info["precision_requested"] == "f32"
    assert info["threads"] == 1 and info["model"].endswith("tiny.onnx")
    assert set(info["first_call_ms"]) == {"b1xs8", "b3xs17"}  # first call per shape only, not per call
    assert ovr.OpenVinoRunner(tiny_onnx, threads=1).info()["precision"] in ("f32", "bf16")  # as compiled


def test_sparse_weight_decompression_rate_is_passed_and_checked(tiny_onnx):
    ov = ovr.OpenVinoRunner(tiny_onnx, threads=1, precision="f32", sparse_rate=0.5)
    assert float(ov.compiled.get_property("CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE")) == pytest.approx(0.5)
    assert ov.info()["sparse_weights_decompression_rate"] == 0.5
    x = make_inputs(2, 8, 100, np.random.default_rng(0))  # same function: a dense fp32 graph is not affected
    np.testing.assert_allclose(ov.run(x), ovr.OpenVinoRunner(tiny_onnx, threads=1, precision="f32").run(x), atol=1e-5)
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="sparse_rate"):
            ovr.OpenVinoRunner(tiny_onnx, threads=1, sparse_rate=bad)


def test_bf16_refused_without_a_bf16_cpu(monkeypatch, tiny_onnx):
    monkeypatch.setattr(ovr, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_vnni"})
    with pytest.raises(ValueError, match="bf16.*avx512_bf16"):
        ovr.OpenVinoRunner(tiny_onnx, threads=1, precision="bf16")
    with pytest.raises(ValueError, match="allowed|one of"):
        ovr.check_precision("fp16")
    assert ovr.check_precision("bf16", {"amx_bf16"}) == "bf16"
    with pytest.raises(SettingsError, match="bf16"):  # refused at start, before any model is loaded
        default_settings(bench={"openvino_precisions": ["bf16"]})


def test_openvino_refuses_ort_only_graphs_naming_the_ops(tiny_onnx, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q = tmp_path / "model.int8.onnx"
    quantize_dynamic(str(tiny_onnx), str(q), weight_type=QuantType.QInt8)
    assert "MatMulInteger" in ovr.unreadable_ops(q) or "DynamicQuantizeLinear" in ovr.unreadable_ops(q)
    assert ovr.unreadable_ops(tiny_onnx) == []
    assert ovr.plain_export(q) == q  # no model_unfused.onnx beside it
    (tmp_path / "model_unfused.onnx").write_bytes(b"")
    assert ovr.plain_export(q).name == "model_unfused.onnx"


def test_openvino_missing_is_skipped_with_a_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    reason = ovr.openvino_missing_reason()
    assert reason and "not installed" in reason and "compresslab[openvino]" in reason
    runners, why = _openvino_runners(None, None, None, 1, 100, [])  # type: ignore[arg-type]
    assert runners == {} and why == reason


def test_importing_compresslab_does_not_import_openvino():
    import subprocess

    code = ("import sys, compresslab, compresslab.bench, compresslab.pipeline.bench; "
            "sys.exit('openvino' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_backends_setting_is_validated():
    _, _, b = default_settings()
    assert b.backends == ("ort", "openvino", "torch") and b.openvino_precisions == ("default", "f32")
    assert default_settings(bench={"backends": ["ort"]})[2].backends == ("ort",)
    with pytest.raises(SettingsError, match="'ort', 'openvino', 'torch'"):
        default_settings(bench={"backends": ["ort", "tensorrt"]})
    with pytest.raises(SettingsError, match="'ort' is required"):
        default_settings(bench={"backends": ["openvino"]})
    with pytest.raises(SettingsError, match="non-empty list"):
        default_settings(bench={"backends": "ort"})
    with pytest.raises(SettingsError, match="unknown key.*torch_fp32"):  # replaced by backends
        default_settings(bench={"torch_fp32": True})


def test_best_dense_and_its_speedups_recomputed_from_the_cells():
    cells = {"ort_fp32": {"b1": 10.0, "b32": 200.0}, "openvino_default": {"b1": 4.0, "b32": 50.0},
             "openvino_f32": {"b1": 6.0, "b32": 80.0}, "torch_fp32": {"b1": 3.0, "b32": 300.0},
             "deployed": {"b1": 5.0, "b32": 100.0}, "deployed_openvino_default": {"b1": 2.0, "b32": 25.0}}
    results = {n: {s: {"p50_ms": v} for s, v in per.items()} for n, per in cells.items()}
    dense = ["ort_fp32", "openvino_default", "openvino_f32", "torch_fp32"]
    best = best_dense(results, dense)
    for shape in ("b1", "b32"):
        name = min(dense, key=lambda n: cells[n][shape])  # deployed runners never count as dense
        assert best[shape] == {"runner": name, "p50_ms": cells[name][shape]}
    assert best["b1"]["runner"] == "torch_fp32" and best["b32"]["runner"] == "openvino_default"
    sp = speedups_vs_best(results, best)
    for n, per in cells.items():
        for shape, v in per.items():
            assert sp[n][shape] == pytest.approx(best[shape]["p50_ms"] / v)
    assert sp["deployed_openvino_default"] == {"b1": 1.5, "b32": 2.0}
    assert max(sp[n]["b32"] for n in dense) == 1.0


@pytest.mark.parametrize("case", ["readable", "ort_only_with_ir", "ort_only_without_ir", "teacher_unchanged",
                                  "ir_deployed"])
def test_the_models_openvino_cells_name_the_file_they_run(tiny_onnx, tmp_path, case):
    """The pipeline's cells on OpenVINO run the deployed file (its plain twin, or the int8 IR the deploy stage made
    of an ORT-only file); the final model's fp32 export stands in only under its own name, never as ``deployed``."""
    import shutil
    from types import SimpleNamespace

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from compresslab.pipeline.deploy import convert_to_ir

    run = tmp_path / "run"
    (run / "teacher").mkdir(parents=True)
    (run / "export").mkdir()
    shutil.copy(tiny_onnx, run / "teacher" / "model.onnx")
    shutil.copy(tiny_onnx, run / "export" / "model.onnx")  # the final model's fp32 export
    deployed = run / "export" / "model.onnx"
    export: dict = {"teacher_fp32": {"path": "teacher/model.onnx"}, "fp32": {"path": "export/model.onnx"}}
    if case == "teacher_unchanged":  # no torch pass: the one fp32 export is the teacher's (an int8 pipeline)
        del export["teacher_fp32"]
    if case != "readable":
        deployed = run / "int8" / "model.onnx"
        deployed.parent.mkdir()
        quantize_dynamic(str(tiny_onnx), str(deployed), weight_type=QuantType.QInt8)  # MatMulInteger: ORT-only
    if case in ("ort_only_with_ir", "ir_deployed"):  # what deploy.runtime=openvino|auto records (an fp32 IR here)
        convert_to_ir(tiny_onnx, run / "export" / "openvino")
        export["openvino"] = {"path": "export/openvino/openvino_model.xml", "int8": True, "method": "compresslab"}
    state = SimpleNamespace(onnx=SimpleNamespace(onnx_path=str(deployed)),
                            settings=SimpleNamespace(bench=SimpleNamespace(openvino_precisions=["f32"])))
    notes: list[str] = []
    ir = (run / "export" / "openvino" / "openvino_model.xml", "f32") if case == "ir_deployed" else None  # compiled
    runners, why = _openvino_runners(state, run, SimpleNamespace(data={"export": export}), 1, 100, notes,
                                     deployed_ir=ir)
    assert why is None
    if case == "ir_deployed":  # deploy.runtime=openvino: the bench's "deployed" cell already times that IR at f32
        assert set(runners) == {"openvino_f32"}
        assert any("deployed_openvino_f32 is not timed: it is the deployed cell itself" in n and "compiled as f32" in n
                   for n in notes), notes
        return
    if case == "teacher_unchanged":  # its cells would time the teacher's own file again: none, and a note says so
        assert set(runners) == {"openvino_f32"} and str(runners["openvino_f32"].onnx_path).endswith("export/model.onnx")
        assert len(notes) == 1 and "cannot read the deployed" in notes[0] and "openvino_* stand for them" in notes[0]
        return
    want = {"readable": ("deployed_openvino_f32", "export/model.onnx"),
            "ort_only_with_ir": ("deployed_openvino_f32", "export/openvino/openvino_model.xml"),
            "ort_only_without_ir": ("final_fp32_openvino_f32", "export/model.onnx")}[case]
    assert set(runners) == {"openvino_f32", want[0]}
    assert str(runners[want[0]].onnx_path).endswith(want[1])
    assert str(runners["openvino_f32"].onnx_path).endswith("teacher/model.onnx")
    if case != "readable":
        assert any("cannot read the deployed" in n and want[0].rsplit("_", 1)[0] in n for n in notes), notes


def test_an_int8_file_on_openvino_is_labelled_int8_not_by_its_compile_precision_alone(tiny_onnx, tmp_path):
    """bench.precision of an OpenVINO cell: ``int8+f32`` for an int8 IR (FakeQuantize), the compiled precision for
    an fp32 file; a bare ``f32`` on an int8 IR reads as an fp32 model."""
    import shutil

    from compresslab.bench.latency_runtimes import as_deployed
    from compresslab.bench.latency_table import TableSettings
    from compresslab.pipeline.bench import _openvino_precision

    plain = tmp_path / "model.onnx"
    shutil.copy(tiny_onnx, plain)
    xml = as_deployed(plain, TableSettings(batch=2, seq=8, threads=1, runtime="openvino_int8"), 100)
    assert _openvino_precision(ovr.OpenVinoRunner(xml, threads=1, precision="f32")) == "int8+f32"
    fp32 = ovr.OpenVinoRunner(plain, threads=1)
    fp32.compiled_precision = "bf16"  # as compiled on an AVX512_BF16 / AMX CPU
    assert _openvino_precision(fp32) == "bf16"
