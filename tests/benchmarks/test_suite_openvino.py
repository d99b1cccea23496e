"""benchmarks/suite_openvino.py (issue 14): which file a pipeline's OpenVINO cell runs (never ORT's fused
com.microsoft graph, never its MatMulInteger form; a MatMulNBits model refused with the reason), and which
runtime is faster per pipeline. Graphs are hand-made one-node ONNX files: only their op types matter here."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
OV = importlib.import_module("benchmarks.suite_openvino")


def _graph(path: Path, op: str, domain: str = "") -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets), str(path))
    return path


def _cell(file: Path, **kw) -> dict:
    return {"status": "finished", "artifact": {"file": str(file), "backend": "ort", "precision": "fp32"},
            "run_dir": str(file.parent), **kw}


def test_a_file_openvino_reads_is_run_as_is(tmp_path) -> None:
    f = _graph(tmp_path / "model.onnx", "Relu")
    a = OV.openvino_artifact(_cell(f), tmp_path / "w", [])
    assert a.file == f and a.backend == "openvino" and a.info["source"] == "the deployed file"


def test_a_fused_file_runs_as_its_plain_twin(tmp_path) -> None:
    fused = _graph(tmp_path / "model.onnx", "SkipLayerNormalization", "com.microsoft")
    plain = _graph(tmp_path / "model_unfused.onnx", "Relu")
    a = OV.openvino_artifact(_cell(fused), tmp_path / "w", [])
    assert a.file == plain and "plain twin" in a.info["source"]


def test_a_4bit_matmulnbits_file_is_refused_with_the_reason(tmp_path) -> None:
    f = _graph(tmp_path / "model.onnx", "MatMulNBits", "com.microsoft")
    with pytest.raises(ValueError, match=r"OpenVINO cannot read model.onnx \(ops com.microsoft.MatMulNBits\)"):
        OV.openvino_artifact(_cell(f), tmp_path / "w", [])


def test_a_failed_pipeline_gives_no_openvino_cell(tmp_path) -> None:
    with pytest.raises(ValueError, match="did not finish: boom"):
        OV.openvino_artifact({"status": "failed", "error": "boom"}, tmp_path, [])


def test_faster_runtime_per_pipeline() -> None:
    sysd = {"int8": {"latency_ms_b32": 100.0, "score": 0.9}, "int8_openvino": {"latency_ms_b32": 40.0, "score": 0.89},
            "hawq": {"latency_ms_b32": 50.0}, "hawq_openvino": {"latency_ms_b32": None, "error": "ValueError: no"}}
    r = OV.faster_runtime(sysd, ["int8", "hawq"])
    assert r["int8"]["faster"] == "openvino" and r["int8"]["ratio"] == 2.5
    assert r["hawq"]["faster"] is None and "hawq_openvino: ValueError: no" in r["hawq"]["why"]


@pytest.mark.parametrize("cell,pipeline", [("ziplm_int8_openvino", "ziplm_int8"),
                                           ("ziplm_int8_openvino_nncf", "ziplm_int8"),
                                           ("ziplm_int8", None), ("_openvino", None), ("nncf_ptq_int8", None)])
def test_pipeline_of_an_openvino_cell(cell, pipeline) -> None:
    assert OV.pipeline_of(cell) == pipeline


def test_nncf_beside_a_pipeline_that_does_not_deploy_int8_is_refused(tmp_path) -> None:
    f = _graph(tmp_path / "model.onnx", "Relu")
    with pytest.raises(ValueError, match="deploys fp32, not int8"):
        OV.nncf_artifact(_cell(f), tmp_path / "w", [])
    with pytest.raises(ValueError, match="did not finish: boom"):
        OV.nncf_artifact({"status": "failed", "error": "boom"}, tmp_path, [])


def test_nncf_cell_is_planned_for_our_int8_pipelines_only_and_the_recipe_keys_the_twin() -> None:
    plan_mod = importlib.import_module("benchmarks.suite_plan")
    cfg = plan_mod.load_config(REPO / "benchmarks" / "suite.yaml")
    p = plan_mod.plan(cfg, "mrpc", "bench", None)
    from compresslab.pipeline.settings import DEFAULT_SMOOTH_GRID

    assert p.openvino_keep_fp32 == () and p.openvino_smooth_alpha == DEFAULT_SMOOTH_GRID
    specs = {n: (m, s) for n, m, s in plan_mod.cell_specs(p, teacher_sha="x", dev=[], max_length=128)}
    # int8's torch model is the teacher (its block-wise embeddings are an ORT-file rewrite): NNCF on it is the
    # nncf_ptq_int8 peer already, and its OpenVINO twin is ours only when our recipe changes it (method_of)
    assert "int8_openvino_nncf" not in specs
    assert specs["int8"][0] == "compresslab" and specs["int8_openvino"][0] == "peer"
    # the run's config identity keys every pipeline cell: a changed pass default builds it anew
    from compresslab.config import compose
    from compresslab.pipeline.plan import config_hash

    assert specs["int8"][1]["config_hash"] == config_hash(compose(specs["int8"][1]["args"]))
    assert specs["int8_openvino"][1]["config_hash"] == specs["int8"][1]["config_hash"]
    assert specs["ziplm_int8_openvino_nncf"][1]["config_hash"] == specs["ziplm_int8"][1]["config_hash"]
    # ours by issue 14's rule (our pass changed the model before NNCF saw it), as ziplm_int8 itself
    assert specs["ziplm_int8_openvino_nncf"][0] == specs["ziplm_int8"][0] == "compresslab"
    assert specs["ziplm_int8_openvino_nncf"][1]["int8"] == "nncf"
    twin = specs["ziplm_int8_openvino"][1]  # what its cell key hashes: a changed grid or recipe builds it anew
    assert twin["keep_fp32"] == [] and twin["smooth_alpha"] == list(DEFAULT_SMOOTH_GRID) and twin["recipe"] == OV.RECIPE
    assert "keep_fp32" not in specs["ziplm_int8_openvino_nncf"][1]
    store = importlib.import_module("benchmarks.store")
    assert store.cell_key(twin) != store.cell_key({**twin, "recipe": "older"})
    assert store.cell_key(twin) != store.cell_key({**twin, "smooth_alpha": [0.8]})
    assert store.cell_key(twin) != store.cell_key({**twin, "validation": "another carve"})
    # every pipeline whose torch model is the teacher would give int8's IR: one twin, the first in suite order
    assert specs["int8_outlier_split"][0] == "compresslab" and "int8_outlier_split_openvino" not in specs
    assert "int8_outlier_split_openvino_nncf" not in specs
    # --cells names a twin by its pipeline: both twins come with it
    q = plan_mod.plan(cfg, "mrpc", "bench", ["ziplm_int8_openvino_nncf"])
    assert q.pipelines == ("ziplm_int8",) and q.peers == ()


@pytest.mark.parametrize("cell,why", [("int8_openvino_nncf", "nncf_ptq_int8 peer"),
                                      ("ziplm_int8_openvino", "backends do not include openvino"),
                                      ("int8_outlier_split_openvino", "same IR as int8_openvino")])
def test_an_asked_openvino_cell_the_plan_never_builds_is_refused(cell, why) -> None:
    plan_mod = importlib.import_module("benchmarks.suite_plan")
    cfg = plan_mod.load_config(REPO / "benchmarks" / "suite.yaml")
    if cell == "ziplm_int8_openvino":
        cfg["backends"] = ["ort"]
    with pytest.raises(plan_mod.SuiteError, match=f"no such cell: {cell}: .*{why}"):
        plan_mod.plan(cfg, "mrpc", "bench", [cell])
    specs = plan_mod.cell_specs(plan_mod.plan(cfg, "mrpc", "bench", None), teacher_sha="x", dev=[], max_length=128)
    assert cell not in {n for n, _, _ in specs}  # the refusal and the plan agree


def test_skip_nncf_beside_a_finished_pipeline_that_is_not_int8() -> None:
    applies = importlib.import_module("benchmarks.suite_applies")
    spec = {"kind": "pipeline_openvino", "int8": "nncf", "of": "hawq_w4"}
    built = {"hawq_w4": {"status": "finished", "artifact": {"precision": "nbits"}}}
    assert "deploys nbits, not int8" in applies.skip_reason(spec, None, built)
    built["hawq_w4"]["artifact"]["precision"] = "int8"
    assert applies.skip_reason(spec, None, built) is None


def test_skip_nncf_beside_a_pipeline_whose_model_is_already_int8(tmp_path) -> None:
    """An int8_qat run exports its QDQ graph as its model: there is no fp32 model for NNCF's PTQ (session 43 built
    NNCF on that QDQ graph and called it NNCF's int8 of our model). Skipped with the reason; an fp32 export is not."""
    import json

    import onnx
    from onnx import TensorProto, helper

    applies = importlib.import_module("benchmarks.suite_applies")

    def run(nodes: list) -> dict:
        d = tmp_path / f"run{len(nodes)}"
        (d / "export").mkdir(parents=True)
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
                               helper.make_tensor("z", TensorProto.UINT8, [], [128])])
        onnx.save(helper.make_model(g), str(d / "export" / "model.onnx"))
        (d / "manifest.json").write_text(json.dumps({"export": {"fp32": {"path": "export/model.onnx"}}}))
        return {"status": "finished", "artifact": {"precision": "int8"}, "run_dir": str(d)}

    spec = {"kind": "pipeline_openvino", "int8": "nncf", "of": "qat"}
    qdq = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    why = applies.skip_reason(spec, None, {"qat": run(qdq)})
    assert why and "already int8 (2 Quantize/DequantizeLinear" in why and "NNCF's PTQ takes an fp32 model" in why
    assert applies.skip_reason(spec, None, {"qat": run([helper.make_node("Identity", ["x"], ["y"])])}) is None


@pytest.mark.parametrize("steps, quantizer", [
    (["pipeline.steps=[finetune,hawq,int8]", "+pass@pipeline.passes.hawq=hawq"], "hawq (hawq)"),
    (["pipeline.steps=[finetune,bibert,int8]", "+pass@pipeline.passes.bibert=bibert"], "bibert (bibert)"),
    (["pipeline.steps=[finetune,int8_qat]", "+pass@pipeline.passes.int8_qat=int8_qat"], "int8_qat (int8_qat)"),
    ([], None),  # int8 on the teacher: a float model
])
def test_skip_nncf_beside_a_pipeline_a_torch_pass_quantized(steps, quantizer) -> None:
    """Not only a QDQ export (int8_qat): hawq's n-bit and bibert's binary weights export as a float graph on a grid,
    which NNCF's PTQ would quantize again. The pipeline's steps say so, before the export is read."""
    applies = importlib.import_module("benchmarks.suite_applies")
    spec = {"kind": "pipeline_openvino", "int8": "nncf", "of": "p", "args": ["+pipeline=int8", *steps]}
    why = applies.skip_reason(spec, None, {"p": {"status": "finished", "artifact": {"precision": "int8"}}})
    if quantizer is None:
        assert why is None
    else:
        assert why == (f"its pipeline p's model is quantized already (step {quantizer} quantized the torch model "
                       "itself): NNCF's PTQ takes an fp32 model")


def test_list_names_each_tasks_teacher_preset_and_the_openvino_cells() -> None:
    plan_mod = importlib.import_module("benchmarks.suite_plan")
    text = plan_mod.list_suite(plan_mod.load_config(REPO / "benchmarks" / "suite.yaml"))
    assert "  mrpc: bench_small, 1.0" in text and "  sst2: bench, 6.0" in text
    assert "<pipeline>_openvino_nncf" in text and "keeping nothing fp32, SmoothQuant grid [0.5, 0.7, 0.8, 0.9, 0.95]" in text


@pytest.mark.parametrize("raw,grid", [(None, (None,)), (0.8, (0.8,)), ([0.5, None, 1], (0.5, None, 1.0))])
def test_smooth_grid_reads_a_strength_null_or_a_list(raw, grid) -> None:
    plan_mod = importlib.import_module("benchmarks.suite_plan")
    assert plan_mod.smooth_grid({"openvino_smooth_alpha": raw}) == grid


@pytest.mark.parametrize("raw", [[], [0.5, 0.5], [1.5], [-0.1], [0.0], ["high"], [True]])
def test_a_bad_smooth_grid_is_refused_before_any_work(raw) -> None:
    plan_mod = importlib.import_module("benchmarks.suite_plan")
    with pytest.raises(plan_mod.SuiteError, match="openvino_smooth_alpha"):
        plan_mod.smooth_grid({"openvino_smooth_alpha": raw})


@pytest.mark.parametrize("validation,has", [(None, "none"), (SimpleNamespace(examples=[]), "an empty one")])
def test_a_grid_without_a_validation_split_is_refused(tmp_path, validation, has) -> None:
    f = _graph(tmp_path / "model.onnx", "MatMulInteger")  # ORT's dynamic int8: our recipe would run
    with pytest.raises(ValueError, match=f"needs the validation split to choose on, and the task has {has}"):
        OV.openvino_artifact(_cell(f), tmp_path / "w", [], smooth_alpha=[0.5, 0.8], validation=validation)


@pytest.mark.parametrize("quantization,planned,method", [
    ({"smoothquant": {"alpha": 0.8, "n_matmuls": 24}}, "peer", "compresslab"),  # our pass changed the weights
    ({"smoothquant": {"alpha": 0.8, "n_matmuls": 0}}, "peer", "peer"),  # SmoothQuant found nothing to scale
    ({"method": "ours"}, "peer", "peer"),  # no smoothing, nothing chosen: ORT's quantizer alone stays a peer's
    # ...but the recipe's own graph rewrites, when they applied, make it ours
    ({"method": "ours", "embeddings_int8": {"tables": ["w"], "rows": 64}}, "peer", "compresslab"),
    ({"method": "ours", "embeddings_int8": {"tables": []}}, "peer", "peer"),
    ({"method": "ours", "attention_scores": {"matmuls": 6, "pairs_moved_before_head_split": 12}}, "peer",
     "compresslab"),
    ({"method": "ours", "attention_scores": {"matmuls": 0}}, "peer", "peer"),
    ({"method": "ours", "float_residual_inputs": 3}, "peer", "compresslab"),
    ({"method": "ours", "float_residual_inputs": 0}, "peer", "peer"),
    ({"smooth_choice": {"alpha": None, "scored": True}}, "peer", "compresslab"),  # our search chose "none"
    ({"smooth_choice": {"alpha": 0.8, "scored": False}, "smoothquant": {"n_matmuls": 0}}, "peer", "peer"),
    ({}, "compresslab", "compresslab"),  # our pipeline's model: ours whatever ran after
])
def test_method_of_an_openvino_cell(quantization, planned, method) -> None:
    rec = {"artifact": {"info": {"quantization": quantization}}}
    assert OV.method_of(rec, planned) == method
