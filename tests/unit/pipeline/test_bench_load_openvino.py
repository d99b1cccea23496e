"""The bench's load probe on what deploy=openvino ships: a tiny int8 run whose deployed artifact is the OpenVINO IR
gets the IR's load time and peak RSS (``bench.load.deployed``, compiled as the bench's runner compiled it), beside
the dense teacher's ``openvino_<p>`` cell for the ratio, and the report's load table shows both."""

from __future__ import annotations

from pathlib import Path

import pytest

from compresslab.manifest import read_json
from compresslab.testing import tiny_generic_run


@pytest.fixture(scope="module")
def ov_bench_run(tmp_path_factory) -> Path:
    pytest.importorskip("openvino")
    from compresslab.config import compose
    from compresslab.pipeline import run

    root = tmp_path_factory.mktemp("ov_load")
    over = ["+pipeline=int8", *tiny_generic_run(root, "int8"), "deploy=openvino", "deploy.int8=ours",
            "bench=default", "bench.load_probe=true", "bench.backends=[ort,openvino]",
            "bench.openvino_precisions=[f32]", "bench.dense_int8=false", "bench.shapes=[[1,16]]", "bench.runs=2",
            "bench.warmup=1", "bench.min_time_s=0", "bench.real_length=false", "bench.gpu=off", "run.threads=1"]
    return run(compose(over), overrides=over)


def test_the_deployed_ir_gets_a_load_record_as_the_bench_compiled_it(ov_bench_run):
    m = read_json(ov_bench_run / "manifest.json")
    dep, b = m["export"]["deployed"], m["bench"]
    assert dep["runtime"] == "openvino" and b["files"]["deployed"] == dep["path"]
    load = b["load"]
    # every timed file once, named as the bench names its cells: the ORT files, the deployed IR, the dense OV cell
    assert set(load) == {"ort_fp32", "deployed_onnx_ort", "deployed", "openvino_f32"}
    rec = load["deployed"]
    assert rec["runtime"] == "openvino" and Path(rec["model"]) == (ov_bench_run / dep["path"]).resolve()
    assert rec["precision"] == b["runners"]["deployed"]["precision"]  # the precision the timed runner compiled as
    assert rec["threads"] == b["runners"]["deployed"]["threads"] == 1
    assert rec["bytes"] == m["size"]["deployed"]["total"]  # the IR's .xml + .bin
    for name in ("deployed", "openvino_f32"):
        r = load[name]
        assert r["load_s"] > 0 and r["first_run_ms"] > 0 and r["peak_rss_mb"] >= r["baseline_rss_mb"] > 1.0
    assert load["openvino_f32"]["runtime"] == "openvino" and load["ort_fp32"]["runtime"] == "ort"


def test_the_report_load_table_shows_the_deployed_ir(ov_bench_run):
    from compresslab.report.facts import cell_label
    from compresslab.testing import report_section

    m = read_json(ov_bench_run / "manifest.json")
    text = report_section(m, "Speed")
    assert "Load time and peak memory" in text, text
    load = text.split("Load time and peak memory", 1)[1]  # the load table, after the latency table
    caption, table = load.split("\n\n", 1)
    rows = {line.split("|")[1].strip(): line for line in table.split("\n\n")[0].splitlines()}
    assert m["export"]["deployed"]["path"] in rows[cell_label(m, "deployed")]
    assert "export/model_unfused.onnx" in rows["openvino_f32"]
    assert "OpenVINO CPU f32" in caption and "read + compile" in caption  # the runtime and precision it compiled as
