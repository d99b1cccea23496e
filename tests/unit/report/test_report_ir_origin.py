"""Where the deployed OpenVINO IR came from, said the same everywhere (new-user trial, session 45, F3).

OpenVINO cannot read ORT's dynamic int8 file (MatMulInteger, QAttention), so the deploy stage makes the int8 IR from
the final model's plain fp32 export (a static int8, calibrated, SmoothQuant), not from the int8 step's file. The
trial's report said so in one deploy note but named the step's file as the IR's source in the Size caption ("the ONNX
file it came from") and the Notes ("the int8 IR the deploy stage made of it"). The fixture is a real tiny-BERT
``+pipeline=int8 deploy=openvino deploy.int8=auto`` smoke run; an older manifest's bench note is read too.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from compresslab.pipeline.bench import int8_ir_tail
from compresslab.report.render import to_markdown
from compresslab.report.sections import build_document
from compresslab.testing import md_section

RUN = Path(__file__).with_name("runs") / "int8_openvino_smoke.json"
OLD_NOTE = ("OpenVINO cannot read the deployed steps/01_int8/model.onnx (ops DynamicQuantizeLinear, QAttention): "
            "deployed_openvino_* run the int8 IR the deploy stage made of it (export/openvino/openvino_model.xml, "
            "compresslab).")


def _run() -> dict[str, Any]:
    return copy.deepcopy(json.loads(RUN.read_text()))


def _md(m: dict[str, Any]) -> str:
    return to_markdown(build_document(m, set(), {}, "outputs/int8/x"))


def test_every_section_names_the_fp32_export_as_the_irs_source_and_the_other_int8_method() -> None:
    m = _run()
    assert m["export"]["deployed"]["source"] == "export/model_unfused.onnx"  # the recorded truth
    md = _md(m)
    summary = md_section(md, "Summary")
    assert ("Deployed: deployed_openvino_int8, export/openvino/openvino_model.xml (an OpenVINO IR: .xml + .bin), "
            "made by the deploy stage from export/model_unfused.onnx, not from the pipeline's own "
            "steps/01_int8/model.onnx, the file of step 01 int8 (ort_int8_dynamic): our static int8 calibration "
            "with SmoothQuant α=") in summary
    assert "a different int8 method than that step's dynamic int8 (activations quantized per call)" in summary
    assert "steps/01_int8/model.onnx is scored and timed on ORT as deployed_onnx_ort" in summary
    # the deploy note (recorded by this version) names the fp32 export too
    assert "of the final model's plain fp32 export export/model_unfused.onnx made the int8 IR" in summary
    size = md_section(md, "Size")
    assert "it came from" not in size
    assert "deployed_onnx is the pipeline's ONNX file steps/01_int8/model.onnx, which the IR was not made from" in size
    assert ("The deployed file is no step's: deployed_openvino_int8 was made by the deploy stage from "
            "export/model_unfused.onnx (our static int8") in md_section(md, "Steps")
    notes = md_section(md, "Notes")
    assert "made from export/model_unfused.onnx, not from it" in notes and "made of it" not in notes
    assert "made of it" not in md and "came from" not in md


def test_an_older_manifests_note_that_the_ir_was_made_of_the_step_file_names_the_true_source() -> None:
    m = _run()
    m["bench"]["notes"] = [OLD_NOTE if n.startswith("OpenVINO cannot read") else n for n in m["bench"]["notes"]]
    notes = md_section(_md(m), "Notes")
    assert ("deployed_openvino_* run the int8 IR the deploy stage made from export/model_unfused.onnx, not from it "
            "(export/openvino/openvino_model.xml, compresslab).") in notes


def test_an_ir_converted_from_the_pipelines_own_file_is_said_to_be_so() -> None:
    """A QDQ int8 step OpenVINO reads: deploy converts its plain twin, beside it; nothing says another file."""
    m = _run()
    m["export"]["deployed"].update(source="steps/01_qdq/model_unfused.onnx", onnx_path="steps/01_qdq/model.onnx")
    m["bench"]["notes"] = []
    md = _md(m)
    assert ("export/openvino/openvino_model.xml (an OpenVINO IR: .xml + .bin), converted from "
            "steps/01_qdq/model_unfused.onnx, the plain graph of the pipeline's steps/01_qdq/model.onnx.") in md
    assert "not from" not in md and "no step's" not in md and "different int8" not in md


@pytest.mark.parametrize("twin", [True, False])
def test_the_bench_note_names_the_file_the_ir_was_made_from(tmp_path: Path, twin: bool) -> None:
    plain = tmp_path / "steps" / "01_int8" / "model.onnx"
    ir = {"path": "export/openvino/openvino_model.xml", "method": "compresslab",
          "source": "steps/01_int8/model.onnx" if twin else "export/model_unfused.onnx"}
    tail = int8_ir_tail(ir, plain, tmp_path)
    if twin:
        assert tail == (": deployed_openvino_* run the int8 IR the deploy stage made of it "
                        "(export/openvino/openvino_model.xml, compresslab).")
    else:
        assert "made from export/model_unfused.onnx, not from it" in tail and "made of it" not in tail
