"""Headline row labels: the dense teacher's baseline cells say so, so a deploy label that is the same word
(``deployed (ort_int8)``) is not mistaken for the teacher's ``ort_int8`` row (new-user trial, session 40)."""

from __future__ import annotations

from compresslab.report import facts as F


def test_dense_teacher_rows_are_labelled_and_the_deployed_row_keeps_its_deploy_label() -> None:
    m = {"export": {"deployed": {"label": "ort_int8"}},
         "eval": {"models": {k: {"score": 0.9} for k in ("teacher_torch", "torch_final", "ort_fp32", "deployed")}},
         "bench": {"latency": {k: {"b32xs128": {"p50_ms": 10.0}} for k in
                               ("ort_fp32", "ort_int8", "openvino_bf16", "torch_fp32", "deployed")}}}
    labels = {r.key: r.label for r in F.model_rows(m)}
    assert labels["deployed"] == "deployed (ort_int8)"
    assert labels["ort_int8"] == "ort_int8 (dense teacher)" and labels["ort_fp32"] == "ort_fp32 (dense teacher)"
    assert labels["openvino_bf16"] == "openvino_bf16 (dense teacher)"
    assert labels["torch_fp32"] == "torch_fp32 (dense teacher)"
    assert labels["teacher_torch"] == "teacher_torch" and labels["torch_final"] == "torch_final"
