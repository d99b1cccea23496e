"""Load time and peak RSS come from a fresh child process per model."""

from __future__ import annotations

import ast

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
    assert child <= {"resource", "numpy", "onnxruntime"}


def test_probe_matches_the_in_process_runner_session(tiny_onnx):
    out = probe_load(tiny_onnx, threads=1, seq=16)
    opts = OrtRunner(tiny_onnx, threads=1).session.get_session_options()
    assert out["threads"] == opts.intra_op_num_threads and out["shape"] == [1, 16]
