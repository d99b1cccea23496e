"""A binary (BiBERT) run's report says that ORT has no 1-bit kernels, reports sign flips and the
theoretical FLOPs, and judges parity by the binary rule; other runs say none of it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from compresslab.report.render import to_markdown
from compresslab.report.sections import build_document

FIXTURE = Path(__file__).with_name("manifest_full.json")


def _binary_manifest() -> dict[str, Any]:
    m = json.loads(FIXTURE.read_text())
    m["pipeline"] = "bibert"
    fp32 = m["export"]["fp32"]
    fp32["binary"] = True
    fp32["notes"] = ["ONNX Runtime has no 1-bit kernels: the binary model runs as fp32 MatMuls on ±1 values"]
    fp32["parity"] = {"graph": "fused", "max_abs_diff": 0.326, "atol": 1e-4, "n_examples": 64,
                      "argmax_agreement": 1.0, "examples_over_atol": 1, "passed": True,
                      "rule": "binary model (sign activations): at least 90% of examples within atol"}
    fp32["theoretical_flops"] = {"s64": {"theoretical": True, "flops_fp32": 1.397e9, "flops": 2.183e7,
                                         "flops_ratio": 63.996}}
    return m


def _markdown(m: dict[str, Any]) -> str:
    return to_markdown(build_document(m, set(), {}, "outputs/bibert/x"))


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_binary_report_states_no_1bit_kernels_flips_and_theoretical_flops():
    md = _markdown(_binary_manifest())
    notes = _section(md, "Notes")
    assert "ONNX Runtime has no 1-bit kernels" in notes
    assert "Sign flips: 1 of 64 parity examples" in notes and "argmax agreement 1" in notes
    assert "Theoretical FLOPs per sequence at s64" in notes and "64.00x" in notes and "not measured" in notes
    # max |diff| is past atol, but the binary rule passed: the verdict follows the rule
    assert "| verdict | ok |" in _section(md, "Export and parity")


def test_binary_step_alone_gets_the_note_and_a_failed_rule_says_failed():
    m = _binary_manifest()
    del m["export"]["fp32"]["notes"], m["export"]["fp32"]["binary"]
    m["steps"][0]["result"]["structure"] = {"binary": {"linears": ["x"], "embeddings": [], "attention": "bool"}}
    m["export"]["fp32"]["parity"]["passed"] = False
    md = _markdown(m)
    assert "ONNX Runtime has no 1-bit kernels" in _section(md, "Notes")
    assert "| verdict | FAILED |" in _section(md, "Export and parity")


def test_dense_report_has_no_binary_notes():
    md = _markdown(copy.deepcopy(json.loads(FIXTURE.read_text())))
    assert "1-bit" not in md and "Theoretical FLOPs" not in md and "Sign flips" not in md
