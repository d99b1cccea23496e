"""The DeepSparse part of the bench stage takes an int8 QAT export as it is: the run's own QDQ file is
``deepsparse_int8`` (timed and scored), with no fp32 twin and no ORT re-quantization of it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from compresslab.pipeline.settings import default_settings


def _section(tmp_path: Path, monkeypatch, qdq: dict | None, export: bytes = b"", **ds_settings) -> tuple[dict, dict]:
    """The bench stage's DeepSparse section over empty files (``export``: the bytes of export/model.onnx) with the
    worker faked; ``ds_settings``: bench.deepsparse settings over the test's defaults."""
    import compresslab.bench.deepsparse_backend as B
    from compresslab.data.schema import TaskKind
    from compresslab.pipeline.deepsparse import deepsparse

    for f in ("export/model.onnx", "export/teacher/model.onnx", "export/teacher/model_unfused.onnx"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(export if f == "export/model.onnx" else b"")
    monkeypatch.setattr(B, "find_python", lambda setting=None: Path("/nonexistent/python"))
    monkeypatch.setattr(B, "check_python", lambda python: "1.8.0")
    seen: dict = {}

    def fake_run(self, python, inputs=None):
        seen.update(self.models)
        seen["score"] = list(self.score)
        seen["manifest"] = manifest  # the stage's record of the files it wrote
        return {"latency": {"b1xs16": {k: {"p50_ms": 1.0} for k in self.models}}, "versions": {}, "compile_s": {},
                "logits": {}}

    monkeypatch.setattr(B.DeepSparseBench, "run", fake_run)
    ds = default_settings(bench={"deepsparse": {"enabled": True, "int8": False, "score": False, "batches": [1],
                                                "seq": 16, **ds_settings}})[2].deepsparse
    state = SimpleNamespace(settings=SimpleNamespace(bench=SimpleNamespace(deepsparse=ds)),
                            task=SimpleNamespace(spec=SimpleNamespace(kind=TaskKind.CLASSIFICATION)),
                            model=SimpleNamespace(config=SimpleNamespace(vocab_size=100)))
    manifest = SimpleNamespace(data={"export": {"fp32": {"path": "export/model.onnx", "qdq": qdq},
                                                "teacher_fp32": {"path": "export/teacher/model.onnx"}}},
                               save=lambda: None)
    return deepsparse(state, tmp_path, manifest, threads=1), seen


def test_a_qdq_export_is_timed_and_scored_as_the_sparse_int8_file(tmp_path, monkeypatch):
    section, models = _section(tmp_path, monkeypatch, {"int8_weights_zp0": 36})
    assert models["deepsparse_int8"] == (str(tmp_path / "export/model.onnx"), "deepsparse")
    assert "deepsparse_fp32" not in models and models["score"] == ["deepsparse_int8"]  # what its engine scores
    assert section["files"]["deepsparse_int8"] == "export/model.onnx"
    assert any("int8 QAT codes, never re-quantized" in n for n in section["notes"])
    assert np.isclose(section["speedups"]["deepsparse_int8"]["b1xs16"], 1.0)


def test_an_fp32_export_is_still_timed_as_fp32(tmp_path, monkeypatch):
    _, models = _section(tmp_path, monkeypatch, None)
    assert models["deepsparse_fp32"] == (str(tmp_path / "export/model.onnx"), "deepsparse")
    assert "deepsparse_int8" not in models  # int8: false (re-quantized files are the int8 path otherwise)


def test_matmulinteger_adds_the_qat_codes_in_sparsemls_form(tmp_path, monkeypatch):
    """``int8_formats`` with ``matmulinteger``: the QAT file is also timed and scored rewritten into MatMulInteger
    with uint8 weights (the form DeepSparse runs with int8 kernels), beside the file as exported; the dense
    teacher's static int8 goes through the same format list."""
    import onnx

    import compresslab.pipeline.deepsparse as P
    from tests.unit.export.test_matmul_integer import _layer

    rng = np.random.default_rng(0)
    qat = _layer(tmp_path, rng.integers(-128, 128, size=(8, 4)).astype(np.int8), np.array(0.01, np.float32),
                 np.array(0, np.int8), 0.1, 128)
    quantized: list[str] = []
    monkeypatch.setattr(P, "_quantized",
                        lambda state, src, dst, s, run_dir, fmt, manifest: quantized.append(fmt) or dst)
    section, models = _section(tmp_path, monkeypatch, {"int8_weights_zp0": 1}, qat.read_bytes(), int8=True,
                               int8_formats=["qdq", "matmulinteger"])
    path, engine = models["deepsparse_int8_matmulinteger"]
    assert engine == "deepsparse" and path == str(tmp_path / "export/deepsparse/model_int8_matmulinteger.onnx")
    assert "MatMulInteger" in [n.op_type for n in onnx.load(path).graph.node]
    assert models["deepsparse_int8"][0] == str(tmp_path / "export/model.onnx")  # the file as exported stays
    assert "deepsparse_int8_matmulinteger" in models["score"]
    assert quantized == ["qdq", "matmulinteger"]  # the dense teacher in each format
    assert any(n.startswith("matmulinteger: MatMulInteger") for n in section["notes"])
    assert "export/deepsparse/model_int8_matmulinteger.onnx" in models["manifest"].data["stage_files"]["bench"]


@pytest.mark.parametrize("formats, expected", [
    # every model file is named as the dense teacher's file in its format: like pairs with like
    (["matmulinteger"], {"deepsparse_dense_int8": "mmi", "deepsparse_int8": "mmi", "deepsparse_int8_qdq": "export"}),
    (["qoperator", "matmulinteger"], {"deepsparse_dense_int8": "qoperator", "deepsparse_dense_int8_matmulinteger": "mmi",
                                      "deepsparse_int8_matmulinteger": "mmi", "deepsparse_int8_qdq": "export"}),
    (["qdq", "matmulinteger"], {"deepsparse_dense_int8": "qdq", "deepsparse_dense_int8_matmulinteger": "mmi",
                                "deepsparse_int8": "export", "deepsparse_int8_matmulinteger": "mmi"}),
    (["qdq", "qoperator"], {"deepsparse_dense_int8": "qdq", "deepsparse_dense_int8_qoperator": "qoperator",
                            "deepsparse_int8": "export"}),
])
def test_a_qat_models_files_are_named_by_format_as_the_teachers_are(tmp_path, monkeypatch, formats, expected):
    """A trial ran int8_formats=[matmulinteger]: deepsparse_dense_int8 was the teacher in MatMulInteger form and
    deepsparse_int8 the model's QDQ file (run by DeepSparse in float), so the report read as "the sparse model is
    slower than the dense one". The model's file in each format now carries that format's name."""
    import compresslab.pipeline.deepsparse as P
    from tests.unit.export.test_matmul_integer import _layer

    rng = np.random.default_rng(0)
    qat = _layer(tmp_path, rng.integers(-128, 128, size=(8, 4)).astype(np.int8), np.array(0.01, np.float32),
                 np.array(0, np.int8), 0.1, 128)
    monkeypatch.setattr(P, "_quantized", lambda state, src, dst, s, run_dir, fmt, manifest: dst)
    section, models = _section(tmp_path, monkeypatch, {"int8_weights_zp0": 1}, qat.read_bytes(), int8=True,
                               int8_formats=formats)
    kinds = {"export/model.onnx": "export", "export/deepsparse/model_int8_matmulinteger.onnx": "mmi",
             **{f"export/deepsparse/dense_int8_{f}.onnx": ("mmi" if f == "matmulinteger" else f) for f in formats}}
    got = {k: kinds[section["files"][k]] for k in section["files"] if "int8" in k}
    assert got == expected
    qdq_name = next(k for k, v in expected.items() if v == "export")
    assert any(f"{qdq_name} is its export as written" in n for n in section["notes"])
    assert any("No qoperator file of a QAT model" in n for n in section["notes"]) is ("qoperator" in formats)
    assert not any("calibrated on train" in n and "of the model" in n for n in section["notes"])  # QAT: not calibrated
