"""The bench stage's dense ``ort_int8`` cell (the teacher's ORT dynamic int8, a best_dense candidate) and the bytes
on disk it records per timed file (an IR's .bin, an ONNX file's external data)."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from compresslab.bench.latency_runtimes import ORT_INT8_ARGS
from compresslab.bench.runners import OrtRunner
from compresslab.export.ort_quant import quantize_dynamic_int8
from compresslab.export.size import artifact_bytes
from compresslab.pipeline.bench import _dense_int8_note, teacher_int8, best_dense, int8_drop_note
from compresslab.report.facts import model_rows


def _run_dir(tmp_path, tiny_onnx, tiny_model):
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    shutil.copy(tiny_onnx, run / "export" / "model.onnx")  # the plain (unfused) export
    tiny_model.config.to_json_file(run / "export" / "config.json")
    return run, SimpleNamespace(data={"export": {"fp32": {"path": "export/model.onnx"}}})


def test_the_teacher_int8_is_the_recipe_ziplm_times_and_its_note_says_when_it_is_the_deployed_file(
        tiny_onnx, tiny_model, tmp_path):
    from compresslab.export.ort_quant import ensure_fused

    run, manifest = _run_dir(tmp_path, tiny_onnx, tiny_model)
    path = teacher_int8(run, manifest)
    assert path == run / "bench" / "teacher_int8" / "model.onnx"
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops  # dynamic int8, not the fp32 file copied
    assert "QAttention" in ops  # an unfused export is fused first, as the int8 pass does: fused int8 kernels
    assert not list((run / "export").glob("*int8*"))  # export/ keeps optimum's layout
    same = tmp_path / "deployed.onnx"  # an int8 pipeline's file with embeddings: per_tensor and no torch pass
    fused, _ = ensure_fused(run / "export" / "model.onnx", tiny_model.config.to_dict(), tmp_path)
    quantize_dynamic_int8(fused, same, **ORT_INT8_ARGS)
    note, is_same = _dense_int8_note(path, same, run)
    assert is_same and "byte for byte" in note
    other = tmp_path / "other.onnx"
    quantize_dynamic_int8(fused, other, per_channel=False)
    note, is_same = _dense_int8_note(path, same, run, "deployed_onnx_ort")  # deploy=openvino: the IR is deployed
    assert is_same and "It is deployed_onnx_ort's file" in note
    note, is_same = _dense_int8_note(path, other, run)
    assert not is_same and "best_dense" in note and "byte for byte" not in note
    # the timed session is the scored one: the runner returns the logits
    ids = np.ones((2, 8), dtype=np.int64)
    out = OrtRunner(path, 1).run({"input_ids": ids, "attention_mask": ids, "token_type_ids": 0 * ids})
    assert out.shape[0] == 2 and np.isfinite(out).all()


def test_best_dense_takes_the_teachers_int8_when_it_is_fastest():
    results = {"ort_fp32": {"b32": {"p50_ms": 630.0}}, "openvino_f32": {"b32": {"p50_ms": 580.0}},
               "ort_int8": {"b32": {"p50_ms": 408.0}}, "deployed": {"b32": {"p50_ms": 160.0}}}
    assert best_dense(results, ["ort_fp32", "openvino_f32", "ort_int8"])["b32"] == {"runner": "ort_int8",
                                                                                     "p50_ms": 408.0}
    assert best_dense(results, ["ort_fp32", "openvino_f32"])["b32"]["runner"] == "openvino_f32"  # dense_int8=false


def test_artifact_bytes_counts_what_the_file_loads(tiny_onnx, tmp_path):
    plain = tmp_path / "plain.onnx"
    shutil.copy(tiny_onnx, plain)
    assert artifact_bytes(plain) == plain.stat().st_size
    model = onnx.load(str(tiny_onnx))
    ext = tmp_path / "ext" / "model.onnx"
    ext.parent.mkdir()
    onnx.save_model(model, str(ext), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    data = ext.with_name("model.onnx.data")
    assert data.stat().st_size > 0
    assert artifact_bytes(ext) == ext.stat().st_size + data.stat().st_size
    xml = tmp_path / "ir" / "openvino_model.xml"
    xml.parent.mkdir()
    xml.write_text("<net/>")
    with pytest.raises(FileNotFoundError):  # an IR without its weights is not a deployable file
        artifact_bytes(xml)
    xml.with_suffix(".bin").write_bytes(b"\0" * 1000)
    assert artifact_bytes(xml) == xml.stat().st_size + 1000


def test_the_report_sizes_a_cell_only_bench_ran_from_bench_size_bytes():
    m = {"bench": {"latency": {"deployed_openvino_f32": {"b32xs128": {"p50_ms": 10.0}},
                               "ort_int8": {"b32xs128": {"p50_ms": 20.0}}},
                   "size_bytes": {"deployed_openvino_f32": 23_000_000, "ort_int8": 22_965_452}}}
    sizes = {r.key: r.size_bytes for r in model_rows(m)}
    assert sizes == {"deployed_openvino_f32": 23_000_000, "ort_int8": 22_965_452}


@pytest.mark.parametrize("same", [True, False])
def test_the_summary_says_when_best_dense_is_the_deployed_file_itself(same):
    from compresslab.report.render import Document, to_markdown
    from compresslab.report.sections import _summary

    lat = {"ort_fp32": 600.0, "ort_int8": 410.0, "deployed": 400.0}
    m = {"eval": {"models": {"teacher_torch": {"score": 0.9}, "deployed": {"score": 0.9, "agreement": 1.0}}},
         "bench": {"denominator": "ort_fp32", "latency": {k: {"b32xs128": {"p50_ms": v}} for k, v in lat.items()},
                   "best_dense": {"b32xs128": {"runner": "ort_int8", "p50_ms": 410.0}},
                   "speedups_best_dense": {k: {"b32xs128": 410.0 / v} for k, v in lat.items()},
                   "deployed_same_file_as": "ort_int8" if same else None}}
    text = to_markdown(Document("run", _summary(m)))
    assert "1.02x the fastest dense backend timed here, ort_int8" in text
    assert ("byte for byte: the gap is noise" in text) is same


def test_a_teacher_int8_over_the_tolerance_is_named_in_a_note():
    assert int8_drop_note(0.90, 0.895, 0.01) is None  # within 1 pt
    assert int8_drop_note(0.90, 0.89, 0.01) is None  # exactly at the tolerance: not over
    note = int8_drop_note(0.90, 0.87, 0.01)
    assert note is not None and "3.00 pt below the teacher" in note and "1.00 pt" in note
    assert int8_drop_note(None, 0.5, 0.01) is None and int8_drop_note(0.9, None, 0.01) is None
