"""Names of the deployed artifact and the dense baselines (new-user trials, sessions 40 and 45).

An int8 pipeline deploys its ORT dynamic int8 file under the deploy label ``ort_int8``, the name bench gives the dense
teacher's ORT int8 (``bench/teacher_int8/model.onnx``). Every table, the Summary and the plots call the deployed file
``deployed_<label>`` and only the teacher's file ``ort_int8``, so no figure of one passes for the other's (the trial's
size plot showed the deployed file's 24.1 MB on a bar named ``onnx ort_int8``, the teacher's 23.0 MB file's name). The
manifest keeps the label as recorded: older manifests read the same way.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from compresslab.report import facts as F
from compresslab.report.plots import size_bars
from compresslab.report.render import Table
from compresslab.report.sections import build_document

RUNS = Path(__file__).with_name("runs")


def _int8_run() -> dict[str, Any]:
    """The recorded int8 smoke run with bench's dense ``ort_int8`` cell beside the deployed ``ort_int8`` file, the
    way the trial's runs/int8 has them (bench.dense_int8 postdates the recording)."""
    m = copy.deepcopy(json.loads((RUNS / "int8_smoke.json").read_text()))
    b = m["bench"]
    for shape, v in copy.deepcopy(b["latency"]["deployed"]).items():
        b["latency"].setdefault("ort_int8", {})[shape] = {**v, "p50_ms": v["p50_ms"] * 1.3}
    b["files"]["ort_int8"] = "bench/teacher_int8/model.onnx"
    b["precision"]["ort_int8"] = "int8"
    b["size_bytes"] = {"ort_int8": 48_000}
    b.setdefault("scores", {})["ort_int8"] = {"score": 0.5, "agreement": 0.98, "mcnemar_p": 1.0}
    return m


def _rows(m: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(table caption, row) for every row of every table of the report."""
    return [(b.caption, list(r)) for b in build_document(m, set(), {}, "outputs/x").blocks if isinstance(b, Table)
            for r in b.rows]


def test_the_deployed_file_is_named_deployed_label_in_every_table_and_the_bare_label_is_the_teachers() -> None:
    m = _int8_run()
    assert m["export"]["deployed"]["label"] == "ort_int8"  # the recorded label, unchanged
    rows = _rows(m)
    named = [(cap, r) for cap, r in rows if r[0] == "deployed_ort_int8"]
    captions = " ".join(cap for cap, _ in named)
    for table in ("Δ in points", "Median (p50)", "Deployed files", "Real token lengths", "Load time"):
        assert table in captions, f"no deployed_ort_int8 row in the table captioned {table!r}"
    assert any(r[1] == "steps/01_int8/model.onnx" for _, r in named)  # the Export and parity table
    # a row named ort_int8 (bare or as the dense teacher) is the teacher's file and figures, never the deployed file's
    for cap, r in rows:
        if r[0].startswith("ort_int8"):
            assert "steps/01_int8/model.onnx" not in r, (cap, r)
            if cap.startswith("Median (p50)"):
                assert r[-1] == "bench/teacher_int8/model.onnx"
    assert not any(r[0] in ("deployed", "deployed (ort_int8)") for _, r in rows)
    md_summary = [b for b in build_document(m, set(), {}, "x").blocks if getattr(b, "text", "").startswith("Deployed:")]
    assert md_summary[0].text == "Deployed: deployed_ort_int8, steps/01_int8/model.onnx."


def test_the_size_plot_names_the_deployed_file_apart_from_the_teachers_int8_and_an_ir_as_ir() -> None:
    m = _int8_run()
    bars = {label: mb for label, mb, _ in size_bars(m)}
    assert bars["onnx deployed_ort_int8"] == m["export"]["deployed"]["size_bytes"] / 1e6
    assert not any(label.endswith(" ort_int8") for label in bars)  # the deployed file's bytes under no baseline name
    ov = json.loads((RUNS / "int8_openvino_smoke.json").read_text())
    labels = [label for label, _, _ in size_bars(ov)]
    assert "IR deployed_openvino_int8" in labels and not any(label.startswith("onnx deployed_openvino") for label in
                                                              labels)


def test_dense_teacher_rows_say_so_and_a_name_taken_by_another_cell_falls_back_to_the_bracketed_label() -> None:
    m = {"export": {"deployed": {"label": "ort_int8"}},
         "eval": {"models": {k: {"score": 0.9} for k in ("teacher_torch", "torch_final", "ort_fp32", "deployed")}},
         "bench": {"latency": {k: {"b32xs128": {"p50_ms": 10.0}} for k in
                               ("ort_fp32", "ort_int8", "openvino_bf16", "torch_fp32", "deployed")}}}
    labels = {r.key: r.label for r in F.model_rows(m)}
    assert labels["deployed"] == "deployed_ort_int8"
    assert labels["ort_int8"] == "ort_int8 (dense teacher)" and labels["ort_fp32"] == "ort_fp32 (dense teacher)"
    assert labels["openvino_bf16"] == "openvino_bf16 (dense teacher)"
    assert labels["torch_fp32"] == "torch_fp32 (dense teacher)"
    assert labels["teacher_torch"] == "teacher_torch" and labels["torch_final"] == "torch_final"
    # an IR deployed as openvino_f32 beside bench's deployed_openvino_f32 cell (an older manifest timed both)
    m["export"]["deployed"]["label"] = "openvino_f32"
    m["bench"]["latency"]["deployed_openvino_f32"] = {"b32xs128": {"p50_ms": 9.0}}
    assert F.deployed_label(m) == "deployed (openvino_f32)"
    assert F.deployed_label({"export": {"deployed": {}}}) == "deployed"  # no label recorded
