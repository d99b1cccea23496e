"""What a first use of hawq + ort_matmul_nbits hit: passes missing from ``compresslab.passes``, settings
refused only after the Hessian or the training, an nbits step that cannot deploy what came before it,
and a report that hid the n-bit sizes and called the deployed n-bit graph fp32."""

from __future__ import annotations

import importlib

import pytest

import compresslab
from compresslab.models.tiny import tiny_model
from compresslab.passes.hawq import Hawq
from compresslab.pipeline.plan import PipelineError


def test_every_registered_pass_is_a_class_of_compresslab_passes():
    import compresslab.passes as P
    from compresslab.registry import available_passes, get_pass

    exported = {getattr(P, n) for n in P.__all__}
    for name in available_passes():
        cls = get_pass(name)
        assert cls in exported, f"{name}: {cls.__name__} is not importable from compresslab.passes"
        assert getattr(P, cls.__name__) is cls


@pytest.mark.parametrize("kw,match", [
    ({"avg_bits": float("nan")}, "avg_bits"),
    ({"avg_bits": float("inf")}, "avg_bits"),
    ({"allocate": "random", "choices": [2, 3], "avg_bits": 4.0}, "largest achievable average 3"),
])
def test_budgets_no_allocation_meets_fail_at_construction(kw, match):
    with pytest.raises(ValueError, match=match):
        Hawq(**kw)


@pytest.mark.parametrize("passes,match", [
    (["ort_matmul_nbits"], "no earlier step"),
    (["finetune", "ort_int8_dynamic", "ort_matmul_nbits"], "no earlier step"),
    ([{"name": "hawq", "bits": 4}, "ort_int8_dynamic", "ort_matmul_nbits"], "first ONNX step"),
    ([{"name": "hawq", "bits": 4, "block_size": 12}, "ort_matmul_nbits"], "block_size=12"),
    ([{"name": "hawq", "bits": 4, "block_size": 48}, "ort_matmul_nbits"], None),  # deploys as blocks of 16
    ([{"name": "hawq", "bits": 4, "block_size": 12, "group": "row"}, "ort_matmul_nbits"], None),
])
def test_nbits_step_is_checked_against_the_steps_before_it_at_plan_time(passes, match):
    from compresslab.api import build_steps

    if match is None:
        build_steps(passes)
        return
    with pytest.raises(PipelineError, match=match):
        build_steps(passes)


def _pairs(n, seed):
    from compresslab.testing import tiny_sentiment

    return [(e.text_a, ["neg", "pos"][e.label]) for e in tiny_sentiment(n, seed)]


@pytest.mark.parametrize("kw,match", [
    ({"bits": 4, "block_size": 24}, "block_size=24 does not divide"),  # tiny hidden size 32
    ({"bits": 4, "targets": ["qurey"]}, "qurey"),
])
def test_model_dependent_settings_fail_before_any_step_with_nothing_written(tiny_tok, tmp_path, monkeypatch, kw,
                                                                           match):
    import compresslab.passes.finetune as ft

    monkeypatch.setattr(ft.Finetune, "apply", lambda *a, **k: pytest.fail("a step ran before the check"))
    monkeypatch.setattr(Hawq, "apply", lambda *a, **k: pytest.fail("a step ran before the check"))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        compresslab.compress(tiny_model(), tiny_tok, [{"name": "finetune", "preset": "smoke"}, {"name": "hawq", **kw}],
                             data=_pairs(32, 0), output_dir=out, max_length=32, batch_size=8, progress=False)
    assert not out.exists()


def test_cli_driver_checks_the_model_before_writing_the_run_dir():
    import inspect

    from compresslab.pipeline import driver

    # run() takes the run dir's lock, then _run_in() does the work: the model check comes before the manifest
    assert "_run_in(" in inspect.getsource(driver.run)
    src = inspect.getsource(driver._run_in)
    assert src.index("check_with_model(") < src.index("_start(")


def test_hawq_records_the_packed_and_dense_sizes(tiny_ctx):
    model = tiny_model()
    res = Hawq(bits=4, block_size=16).apply(model, tiny_ctx())
    size = res.metrics["size"]
    assert set(size) == {"fp32", "packed_nbits"}
    assert size["packed_nbits"]["encoder"] < size["fp32"]["encoder"] / 4
    assert size["packed_nbits"]["total"] < size["fp32"]["total"]


def test_report_size_ratios_use_the_fp32_export_when_no_pass_measured_fp32():
    from compresslab.report.sizes import size_section

    m = {"size": {"ort_fp32": {"encoder": 400, "total": 1000}, "deployed": {"encoder": 50, "total": 500}}}
    table = size_section(m)[1]
    rows = {r[0]: r for r in table.rows}
    assert rows["deployed"][3] != "—" and rows["deployed"][4] != "—"
    assert "8" in rows["deployed"][3] and "2" in rows["deployed"][4]


def test_a_matmul_nbits_graph_is_not_labelled_fp32(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    deploy = importlib.import_module("compresslab.pipeline.deploy")
    b = numpy_helper.from_array(np.zeros((4, 1, 8), np.uint8), "B")
    s = numpy_helper.from_array(np.ones(4, np.float32), "S")
    node = helper.make_node("MatMulNBits", ["X", "B", "S"], ["Y"], domain="com.microsoft", K=16, N=4, bits=4,
                            block_size=16)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])], [b, s])
    path = tmp_path / "m.onnx"
    ops = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(g, opset_imports=ops),
              str(path))
    assert deploy._precision_of(path) == "nbits"


def test_report_shows_bits_per_layer_and_the_nbits_parity():
    import json

    from compresslab.report.render import to_markdown
    from compresslab.report.sections import build_document

    hawq = {"avg_bits": 2.5, "group": "block", "block_size": 64,
            "bits_per_layer": {"layer.0": [3, 3], "layer.1": [2, 32]},
            "allocation": {"method": "rank", "budget_avg_bits": 2.5}, "sensitivity": {"method": "eigen"},
            "qat": {"steps": 4}, "embedding": {"bert.embeddings.word_embeddings": {"bits": 8}}}
    nbits = {"n_matmul_nbits": 4, "n_gather_block_quantized": 1, "accuracy_level": 0,
             "deployed_bits_histogram": {"2": 1, "4": 2}, "parity": {"max_abs_diff": 4.5e-08, "atol": 0.001}}
    m = {"steps": [{"index": 0, "name": "hawq", "result": {"metrics": hawq}},
                   {"index": 1, "name": "nbits", "result": {"metrics": nbits}}]}
    md = to_markdown(build_document(json.loads(json.dumps(m)), set(), {}, "."))
    assert "## Quantization" in md
    assert "| layer.1 | 2 32 |" in md and "2.5" in md and "rank" in md
    assert "4.5e-08" in md and "8 bits" in md
