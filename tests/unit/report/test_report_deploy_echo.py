"""What a report and a manifest say about the exported files and the deploy settings must be true:

* the final model's export (``export.fp32``) is labelled by what its graph is (an int8 QDQ graph after int8 QAT),
  for new manifests (``format``) and older ones (their ``qdq`` / ``binary`` flags);
* a deploy setting is echoed as the user set it, beside what ``auto`` chose (``deploy.runtime``, ``deploy.int8``,
  and the bench note on the deployed IR);
* the OpenVINO IR's parity shows beside the ONNX parity with a verdict per compiled precision, a failure loudly.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from compresslab.pipeline.bench import deployed_ir_note
from compresslab.report.render import to_markdown
from compresslab.report.sections import build_document
from compresslab.testing import md_section

FIXTURE = Path(__file__).with_name("manifest_full.json")
QDQ_RULE = "int8 QDQ model (uint8 activations): at least 90% of examples within atol"


def _manifest() -> dict[str, Any]:
    return copy.deepcopy(json.loads(FIXTURE.read_text()))


def _md(m: dict[str, Any]) -> str:
    return to_markdown(build_document(m, set(), {}, "outputs/x/y"))


def _qat(m: dict[str, Any], new: bool) -> dict[str, Any]:
    """export.fp32 of an int8 QAT run, as this version records it (``new``) or as older ones did."""
    rec = m["export"]["fp32"]
    rec["qdq"] = {"qdq_matmuls": 36}
    rec["parity"] = {"graph": "QDQ (ORT basic)", "max_abs_diff": 0.0054, "atol": 0.05, "passed": True,
                     "rule": QDQ_RULE}
    if new:
        rec.update(precision="int8", format="int8 QDQ (QAT)")
    return m


@pytest.mark.parametrize("new", [True, False])
def test_the_final_export_of_an_int8_qat_run_is_not_called_fp32(new):
    sec = md_section(_md(_qat(_manifest(), new)), "Export and parity")
    assert "| fp32 | export/model.onnx | int8 QDQ (QAT) |" in sec
    assert "final model's export (export.fp32: int8 QDQ (QAT))" in sec and "on the fp32 export" not in sec
    assert "export.fp32 is the final model's export, here int8 QDQ (QAT), not an fp32 graph" in sec


@pytest.mark.parametrize("kernels", [
    {"status": "informative", "rule": "measured, no tolerance: ORT's int8 kernels compute another function",
     "max_abs_diff": 0.21, "argmax_agreement": 0.97, "n_examples": 64, "cpu_int8_dot_product": False},
    # what older manifests wrote: a verdict at an infinite tolerance (atol null), never one in fact
    {"graph": "QDQ (ORT int8 kernels)", "max_abs_diff": 0.21, "atol": None, "n_examples": 64,
     "argmax_agreement": 0.97, "examples_over_atol": 0, "passed": True, "rule": QDQ_RULE,
     "cpu_int8_dot_product": False},
], ids=["new", "older"])
def test_the_int8_kernel_parity_reads_as_informative_never_as_passed(kernels):
    m = _qat(_manifest(), True)
    m["export"]["fp32"]["parity"]["int8_kernels"] = kernels
    sec = md_section(_md(m), "Export and parity")
    row = next(line for line in sec.splitlines() if line.startswith("| int8_kernels |"))
    assert ("| int8_kernels | informative (measured, no tolerance): max \\|diff\\| 0.21, argmax agreement 0.97 over 64 "
            "examples; CPU int8 dot product: no |") == row
    assert "passed" not in row and "| verdict | ok |" in sec  # the judged check's verdict stands


def test_a_dense_run_says_fp32_and_no_key_note():
    sec = md_section(_md(_manifest()), "Export and parity")
    assert "| fp32 | export/model.onnx | fp32 |" in sec and "not an fp32 graph" not in sec
    assert "| deployed_ort_int8 | export/model.int8.onnx | — |" in sec  # older deployed records: no precision


def _deploy(m: dict[str, Any], requested: str, runtime: str, int8: str | None = None) -> dict[str, Any]:
    m["deploy"] = {"requested": requested, "runtime": runtime, "notes": []}
    if requested == "auto":
        m["deploy"]["auto"] = {"chosen": runtime, "agreement_key": "agreement", "tolerance": 0.005,
                               "validation": {"ort": {"agreement": 0.95}, "openvino": {"agreement": 0.96}},
                               "eligible": ["ort", "openvino"], "shape": "b32xs128",
                               "p50_ms": {"ort": 20.0, "openvino": 15.0}, "busy": False}
    if runtime == "openvino":
        m["export"]["deployed"] = {"path": "export/openvino/openvino_model.xml", "runtime": "openvino",
                                   "precision": "default", "compiled_precision": "bf16", "label": "openvino_int8",
                                   "int8": True, "size_bytes": 1000}
    if int8:
        m["export"]["openvino"] = {
            "path": "export/openvino_nncf/openvino_model.xml", "int8": True, "int8_method": "nncf",
            "int8_choice": {"rule": "the higher validation agreement with the teacher; a tie keeps ours",
                            "requested": int8, "candidates": ["ours", "nncf"], "agreement_key": "agreement",
                            "validation": {"ours": {"agreement": 0.9}, "nncf": {"agreement": 0.92}}}}
    return m


def test_deploy_auto_is_echoed_as_set_with_what_it_chose():
    md = _md(_deploy(_manifest(), "auto", "openvino", int8="auto"))
    summary = md_section(md, "Summary")
    assert ("Deploy: deploy.runtime=auto: chose openvino (validation agreement: ort 95.00%, openvino 96.00%; "
            "eligible (within 0.50 pt of ORT's): ort, openvino; the faster at b32xs128: ort 20.0 ms, "
            "openvino 15.0 ms)") in summary
    assert "deploy.int8=auto: chose nncf (validation agreement: ours 90.00%, nncf 92.00%" in summary
    assert "deploy.runtime=openvino" not in md and "deploy.int8=nncf" not in md  # never the choice as if set
    assert "| deployed_openvino_int8 | export/openvino/openvino_model.xml | int8+bf16 |" in md


@pytest.mark.parametrize("requested, runtime, want", [
    ("openvino", "openvino", "Deploy: deploy.runtime=openvino."),
    ("openvino", "ort", "Deploy: deploy.runtime=openvino: ort deployed (the deploy notes say why)."),
    ("ort", "ort", "Deploy: deploy.runtime=ort."),
])
def test_a_runtime_the_user_named_is_echoed_as_named(requested, runtime, want):
    assert want in md_section(_md(_deploy(_manifest(), requested, runtime)), "Summary")


def test_the_bench_note_on_the_deployed_ir_names_the_setting_as_given(tmp_path):
    xml = tmp_path / "export" / "openvino" / "openvino_model.xml"
    auto = _deploy(_manifest(), "auto", "openvino")
    note = deployed_ir_note(auto, xml, "bf16", tmp_path)
    assert "(deploy.runtime=auto: chose openvino), compiled as bf16" in note
    assert "deploy.runtime=openvino" not in note
    named = deployed_ir_note(_deploy(_manifest(), "openvino", "openvino"), xml, "f32", tmp_path)
    assert "export/openvino/openvino_model.xml (deploy.runtime=openvino), compiled as f32" in named


def _ir(m: dict[str, Any], deployed: dict[str, Any] | None, ptq: bool = False) -> dict[str, Any]:
    f32 = {"graph": "openvino_ir", "precision": "f32", "max_abs_diff": 0.0075, "atol": 0.05, "n_examples": 64,
           "argmax_agreement": 1.0, "examples_over_atol": 0, "passed": True, "rule": QDQ_RULE}
    if ptq:
        f32.update(passed=None, rule="int8 IR quantized after training (post-training quantization ...)")
    m["export"]["openvino"] = {"path": "export/openvino/openvino_model.xml", "int8": True, "parity": f32,
                               "compiled_precision": {"f32": "f32", "default": "bf16"}}
    if deployed:
        m["export"]["openvino"]["parity_deployed"] = {"graph": "openvino_ir", "precision": "bf16", "n_examples": 64,
                                                      "argmax_agreement": 0.9, "examples_over_atol": 30,
                                                      **deployed}
    return m


def test_the_ir_parity_shows_beside_the_onnx_parity_with_a_verdict_per_precision():
    sec = md_section(_md(_ir(_manifest(), {"max_abs_diff": 0.03, "atol": 0.15, "passed": True,
                                          "examples_over_atol": 0})), "Export and parity")
    assert sec.index("ONNX Runtime vs PyTorch") < sec.index("OpenVINO IR vs PyTorch")
    assert "| openvino | f32 | 0.0075 | 0.05 | 0 | 1 | ok |" in sec
    assert "| openvino | bf16 | 0.03 | 0.15 | 0 | 0.9 | ok |" in sec and QDQ_RULE in sec
    assert "FAILED" not in sec


def test_a_failed_ir_verdict_is_loud_and_a_ptq_ir_is_not_judged():
    sec = md_section(_md(_ir(_manifest(), {"max_abs_diff": 0.9, "atol": 0.15, "passed": False})), "Export and parity")
    assert "| openvino | bf16 | 0.9 | 0.15 | 30 | 0.9 | FAILED |" in sec
    assert "> **OpenVINO IR parity FAILED: openvino compiled bf16: max |diff| 0.9 against atol 0.15.**" in sec
    ptq = md_section(_md(_ir(_manifest(), None, ptq=True)), "Export and parity")
    assert "| openvino | f32 | 0.0075 | 0.05 | 0 | 1 | not judged (quantization error) |" in ptq
    # an older manifest's int8 IR had no verdict at all: said so, not judged by the fp32 atol it was recorded with
    old = _ir(_manifest(), None)
    old["export"]["openvino"]["parity"] = {"precision": "f32", "max_abs_diff": 0.0075, "atol": 1e-4}
    assert ("| openvino | f32 | 0.0075 | 0.0001 | — | — | not recorded |"
            in md_section(_md(old), "Export and parity"))
