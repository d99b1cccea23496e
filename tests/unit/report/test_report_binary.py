"""A binary (BiBERT) run's report says that ORT has no 1-bit kernels, reports sign flips and the
theoretical FLOPs, and judges parity by the binary rule; other runs say none of it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from compresslab.report.render import to_markdown
from compresslab.report.sections import build_document
from compresslab.testing import md_section

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


def test_binary_report_states_no_1bit_kernels_flips_and_theoretical_flops():
    md = _markdown(_binary_manifest())
    notes = md_section(md, "Notes")
    assert "ONNX Runtime has no 1-bit kernels" in notes
    assert "Sign flips: 1 of 64 parity examples" in notes and "argmax agreement 1" in notes
    assert "Theoretical FLOPs per sequence at s64" in notes and "64.00x" in notes and "not measured" in notes
    # max |diff| is past atol, but the binary rule passed: the verdict follows the rule
    assert "| verdict | ok |" in md_section(md, "Export and parity")


def test_binary_step_alone_gets_the_note_and_a_failed_rule_says_failed():
    m = _binary_manifest()
    del m["export"]["fp32"]["notes"], m["export"]["fp32"]["binary"]
    m["steps"][0]["result"]["structure"] = {"binary": {"linears": ["x"], "embeddings": [], "attention": "bool"}}
    m["export"]["fp32"]["parity"]["passed"] = False
    md = _markdown(m)
    assert "ONNX Runtime has no 1-bit kernels" in md_section(md, "Notes")
    assert "| verdict | FAILED |" in md_section(md, "Export and parity")


def test_dense_report_has_no_binary_notes():
    md = _markdown(copy.deepcopy(json.loads(FIXTURE.read_text())))
    assert "1-bit" not in md and "Theoretical FLOPs" not in md and "Sign flips" not in md


def _summary_size(m: dict[str, Any]) -> str:
    (line,) = [ln for ln in md_section(_markdown(m), "Summary").splitlines() if ln.startswith("- Size:")]
    return line


def _deployed_as_fp32(m: dict[str, Any], fmt: str, packed: str | None) -> dict[str, Any]:
    """``m`` deploying its fp32 export (a binary or fake-quant graph worded ``fmt``), with a torch step that wrote
    the ``packed`` checkpoint format (19.0 MB fp32 -> 1.0 MB)."""
    fp32 = m["export"]["fp32"]
    fp32.update(precision="fp32", format=fmt)
    m["export"]["deployed"] = {"path": fp32["path"], "label": "ort_fp32", "precision": "fp32",
                               "runtime": "ort", "size_bytes": fp32["size_bytes"]}
    if packed:
        step = m["steps"][1]
        step["dir"] = "steps/01_quant"
        step.setdefault("result", {})["formats"] = [packed]
        step["result"].setdefault("metrics", {})["size"] = {"fp32": {"encoder": 4e6, "total": 19e6},
                                                            packed: {"encoder": 2e5, "total": 1e6}}
    return m


def test_the_summary_size_says_the_deployed_file_holds_binary_values_and_gives_the_packed_size():
    """A BiBERT run deploys the fp32 export holding ±1 values (no smaller): the Size line says so and gives the
    packed 1-bit checkpoint's size, instead of leaving the reason to the Notes (session 47's trial, #10)."""
    m = _deployed_as_fp32(_binary_manifest(), "fp32 (binary: ±1 weights and sign activations as fp32 values)",
                          "packed_binary")
    line = _summary_size(m)
    assert "(the same size): the file is fp32 (binary: ±1 weights and sign activations as fp32 values), not packed " \
           "(ONNX Runtime has no 1-bit kernels); the packed checkpoint (packed_binary, in steps/01_quant) is 1.00 MB, " \
           "19.00x smaller than its fp32 checkpoint." in line
    m["steps"][1]["result"]["formats"] = []  # no packed file written: the words alone
    assert _summary_size(m).endswith("not packed (ONNX Runtime has no 1-bit kernels).")


def test_the_summary_size_of_an_nbit_fake_quant_fp32_file_names_the_step_that_would_pack_it():
    m = _deployed_as_fp32(json.loads(FIXTURE.read_text()), "fp32 (4-bit fake-quant weights as fp32 values)",
                          "packed_nbits")
    line = _summary_size(m)
    assert "the file is fp32 (4-bit fake-quant weights as fp32 values), not packed (an ort_matmul_nbits step would " \
           "deploy the n-bit weights packed); the packed checkpoint (packed_nbits, in steps/01_quant) is 1.00 MB" in line


def test_the_summary_size_of_a_file_that_stores_what_it_computes_with_adds_nothing():
    m = json.loads(FIXTURE.read_text())  # the int8 file deployed: its bytes are its weights
    assert _summary_size(m).endswith("smaller).")
    m = _deployed_as_fp32(json.loads(FIXTURE.read_text()), "fp32", None)  # a plain fp32 export
    assert _summary_size(m).endswith("(the same size).")
