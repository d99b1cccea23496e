"""Load time and peak RSS come from a fresh child process per model: an ONNX file on ORT, or an OpenVINO IR."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from compresslab.bench.load_probe import PROBE_SCRIPT, probe_load
from compresslab.bench.runners import OrtRunner


def test_probe_load_returns_json_from_a_child(tiny_onnx):
    out = probe_load(tiny_onnx, threads=1, vocab_size=100)
    assert out["load_s"] > 0 and out["first_run_ms"] > 0
    assert out["peak_rss_mb"] >= out["baseline_rss_mb"] > 1.0
    assert out["shape"] == [1, 128] and out["threads"] == 1
    assert out["provider"] == "CPUExecutionProvider"
    assert out["bytes"] == tiny_onnx.stat().st_size


def test_probe_load_failure_carries_the_child_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="load probe failed"):
        probe_load(bad, threads=1)


def test_probe_child_stays_self_contained():
    # Run by path in a fresh interpreter: importing compresslab (torch, transformers) there
    # would inflate the baseline RSS and break the script, so the module level imports only the
    # standard library, and compresslab is imported only inside the parent's `probe_load`.
    tree = ast.parse(PROBE_SCRIPT.read_text())

    def roots(nodes):
        out = {alias.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for alias in n.names}
        return out | {n.module.split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom) and n.module}

    assert roots(tree.body) <= {"__future__", "argparse", "json", "subprocess", "sys", "time", "pathlib",
                                "typing"}
    funcs = {f.name: roots(list(ast.walk(f))) for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert {name for name, mods in funcs.items() if "compresslab" in mods} == {"probe_load"}
    child = set().union(*(mods for name, mods in funcs.items() if name != "probe_load"))
    assert child <= {"resource", "numpy", "onnxruntime", "openvino"}


@pytest.fixture(scope="module")
def tiny_ir(tiny_onnx, tmp_path_factory):
    pytest.importorskip("openvino")
    from compresslab.pipeline.deploy import convert_to_ir

    out = tmp_path_factory.mktemp("ir") / "openvino"
    convert_to_ir(tiny_onnx, out)
    return out / "openvino_model.xml"


def _child_imports(*args: str) -> tuple[dict, set[str]]:
    """Run the probe's child as `probe_load` does (this file by path) under ``-X importtime``: its JSON and the
    top-level packages it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", str(PROBE_SCRIPT), *args], capture_output=True,
                          text=True, check=True)
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
             if line.startswith("import time:") and "|" in line}
    return json.loads(proc.stdout.strip().splitlines()[-1]), names


@pytest.mark.parametrize("runtime", ["ort", "openvino"])
def test_the_child_imports_neither_compresslab_nor_torch_nor_transformers(runtime, tiny_onnx, request):
    # the AST check above reads the source; this one runs the child: what it imports is what its baseline counts
    model = tiny_onnx if runtime == "ort" else request.getfixturevalue("tiny_ir")
    out, imported = _child_imports(f"--{'onnx' if runtime == 'ort' else 'openvino'}", str(model),
                                   "--threads", "1", "--seq", "16")
    assert out["runtime"] == runtime and out["load_s"] > 0
    assert {"onnxruntime" if runtime == "ort" else "openvino", "numpy"} <= imported  # the parse saw the imports
    assert not imported & {"compresslab", "torch", "transformers"}


def test_probe_load_on_an_openvino_ir_compiles_as_the_bench_runner_does(tiny_ir):
    from compresslab.bench.openvino_runner import OpenVinoRunner

    out = probe_load(tiny_ir, threads=1, runtime="openvino", precision_hint="f32", vocab_size=100)
    assert out["runtime"] == "openvino" and out["provider"] == "OpenVINO CPU"
    assert out["load_s"] > 0 and out["first_run_ms"] > 0
    assert out["peak_rss_mb"] >= out["baseline_rss_mb"] > 1.0
    assert out["shape"] == [1, 128] and out["threads"] == 1
    assert out["bytes"] == tiny_ir.stat().st_size + tiny_ir.with_suffix(".bin").stat().st_size  # what ships
    runner = OpenVinoRunner(tiny_ir, 1, "f32")
    assert runner.config == {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY",
                             "INFERENCE_PRECISION_HINT": "f32"}  # the dict the child builds (openvino_config)
    assert out["precision_hint"] == runner.hint and out["precision"] == runner.compiled_precision == "f32"
    with pytest.raises(ValueError, match="runtime must be one of"):
        probe_load(tiny_ir, threads=1, runtime="tensorrt")
    with pytest.raises(RuntimeError, match="load probe failed"):
        probe_load(tiny_ir.with_name("missing.xml"), threads=1, runtime="openvino")


def test_probe_matches_the_in_process_runner_session(tiny_onnx):
    out = probe_load(tiny_onnx, threads=1, seq=16)
    opts = OrtRunner(tiny_onnx, threads=1).session.get_session_options()
    assert out["threads"] == opts.intra_op_num_threads and out["shape"] == [1, 16]
