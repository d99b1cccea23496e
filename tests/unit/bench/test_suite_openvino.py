"""benchmarks/suite_openvino.py (issue 14): which file a pipeline's OpenVINO cell runs (never ORT's fused
com.microsoft graph, never its MatMulInteger form; a MatMulNBits model refused with the reason), and which
runtime is faster per pipeline. Graphs are hand-made one-node ONNX files: only their op types matter here."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
OV = importlib.import_module("benchmarks.suite_openvino")


def _graph(path: Path, op: str, domain: str = "") -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets), str(path))
    return path


def _cell(file: Path, **kw) -> dict:
    return {"status": "finished", "artifact": {"file": str(file), "backend": "ort", "precision": "fp32"},
            "run_dir": str(file.parent), **kw}


def test_a_file_openvino_reads_is_run_as_is(tmp_path) -> None:
    f = _graph(tmp_path / "model.onnx", "Relu")
    a = OV.openvino_artifact(_cell(f), tmp_path / "w", [])
    assert a.file == f and a.backend == "openvino" and a.info["source"] == "the deployed file"


def test_a_fused_file_runs_as_its_plain_twin(tmp_path) -> None:
    fused = _graph(tmp_path / "model.onnx", "SkipLayerNormalization", "com.microsoft")
    plain = _graph(tmp_path / "model_unfused.onnx", "Relu")
    a = OV.openvino_artifact(_cell(fused), tmp_path / "w", [])
    assert a.file == plain and "plain twin" in a.info["source"]


def test_a_4bit_matmulnbits_file_is_refused_with_the_reason(tmp_path) -> None:
    f = _graph(tmp_path / "model.onnx", "MatMulNBits", "com.microsoft")
    with pytest.raises(ValueError, match=r"OpenVINO cannot read model.onnx \(ops com.microsoft.MatMulNBits\)"):
        OV.openvino_artifact(_cell(f), tmp_path / "w", [])


def test_a_failed_pipeline_gives_no_openvino_cell(tmp_path) -> None:
    with pytest.raises(ValueError, match="did not finish: boom"):
        OV.openvino_artifact({"status": "failed", "error": "boom"}, tmp_path, [])


def test_faster_runtime_per_pipeline() -> None:
    sysd = {"int8": {"latency_ms_b32": 100.0, "score": 0.9}, "int8_openvino": {"latency_ms_b32": 40.0, "score": 0.89},
            "hawq": {"latency_ms_b32": 50.0}, "hawq_openvino": {"latency_ms_b32": None, "error": "ValueError: no"}}
    r = OV.faster_runtime(sysd, ["int8", "hawq"])
    assert r["int8"]["faster"] == "openvino" and r["int8"]["ratio"] == 2.5
    assert r["hawq"]["faster"] is None and "hawq_openvino: ValueError: no" in r["hawq"]["why"]
