"""benchmarks/compound.py's derive() (issue 13) on hand-made cells: best_dense is the fastest dense cell at
b32 whatever its backend, a pipeline's entry is its fastest cell within 1 pt of the teacher, ``best`` the
fastest such entry, and every speedup is recomputed from the cells' medians (failed cells never win)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compound():
    from compresslab.testing import import_benchmark

    return import_benchmark("compound", ROOT)


def cell(backend: str, acc: float, b32: float, b1: float, **extra) -> dict:
    return {"backend": backend, "acc": acc, "agreement": 0.9, "b32_ms": b32, "b1_ms": b1, "file": f"f/{backend}",
            "real_len_sent_per_s": 1000.0 / b32, "size_bytes": 100, **extra}


def cells() -> dict:
    return {
        "dense": {"ort_fp32": cell("ort", 0.90, 100.0, 10.0),
                  "torch_fp32": cell("torch", 0.90, 150.0, 12.0),
                  "openvino_bf16": cell("openvino", 0.90, 25.0, 4.0),  # the fastest dense: best_dense
                  "openvino_f32": cell("openvino", 0.90, 60.0, 6.0),
                  "deepsparse_fp32": {"backend": "deepsparse", "error": "RuntimeError: refuses this CPU"}},
        # fastest cell 0.885 (1.5 pt down): not eligible; 0.891 (0.9 pt down) at 10 ms is the entry
        "a": {"ort_int8": cell("ort", 0.895, 40.0, 5.0),
              "openvino_int8": cell("openvino", 0.891, 10.0, 2.0),
              "openvino_int8_sparse50": cell("openvino", 0.885, 5.0, 1.0, sparse_weights_decompression_rate=0.5)},
        # faster than a's entry but 2 pt down everywhere: never best
        "b": {"ort_int8": cell("ort", 0.88, 4.0, 1.0)},
        "c": {"ort_int8": cell("ort", 0.90, 20.0, 2.5),
              "deepsparse_int8": {"backend": "deepsparse", "error": "deepsparse worker failed with exit code 1"}},
    }


def test_best_dense_is_the_fastest_dense_cell_at_b32(compound):
    d = compound.derive(cells())
    assert d["best_dense"]["cell"] == "dense.openvino_bf16" and d["best_dense"]["b32_ms"] == 25.0


def test_pipeline_entry_and_best_respect_the_1pt_rule(compound):
    d = compound.derive(cells())
    assert d["models"]["a"]["cell"] == "openvino_int8" and d["models"]["a"]["within_1pt"]
    assert not d["models"]["b"]["within_1pt"]  # reported (its most accurate cell), flagged
    assert d["best"]["pipeline"] == "a" and d["best"]["cell"] == "openvino_int8"
    assert d["best"]["backend"] == "openvino" and d["best"]["acc"] == 0.891


def test_speedups_are_recomputed_from_the_cells(compound):
    d = compound.derive(cells())
    a = d["models"]["a"]
    assert math.isclose(a["speedup_b32_vs_ort_fp32"], 100.0 / 10.0)
    assert math.isclose(a["speedup_b32_vs_best_dense"], 25.0 / 10.0)
    assert math.isclose(a["speedup_b1_vs_ort_fp32"], 10.0 / 2.0)
    assert math.isclose(d["best"]["speedup_b32_vs_best_dense"], 2.5)
    assert math.isclose(a["cells"]["openvino_int8_sparse50"]["speedup_b32_vs_ort_fp32"], 20.0)
    assert set(compound.MODEL_KEYS) <= set(a)
    c = d["models"]["c"]
    assert c["cell"] == "ort_int8" and math.isclose(c["speedup_b32_vs_ort_fp32"], 5.0)
    assert "error" in c["cells"]["deepsparse_int8"]  # a failed cell is kept with its error, never picked


def test_rederive_from_the_stored_layout_is_the_same(compound):
    first = compound.derive(cells())
    again = compound.derive(compound.cells_of(first))
    assert again["best"] == first["best"] and again["best_dense"]["cell"] == first["best_dense"]["cell"]
    for p in ("a", "b", "c"):
        assert again["models"][p]["b32_ms"] == first["models"][p]["b32_ms"]
        assert math.isclose(again["models"][p]["speedup_b32_vs_ort_fp32"], first["models"][p]["speedup_b32_vs_ort_fp32"])


def test_nothing_within_1pt_means_no_best(compound):
    cs = cells()
    del cs["a"], cs["c"]
    assert compound.derive(cs)["best"] is None


def test_pass_overrides_reach_only_pipelines_with_that_pass(compound):
    """One --override list serves every pipeline: a setting of a pass a pipeline lacks would be refused."""
    import argparse

    from compresslab.config import compose

    a = argparse.Namespace(budget="smoke", steps=4, grads=8, events=2,
                           override=["debug=smoke", "pipeline.passes.ziplm.batch=2"])
    qat = compound._overrides(a, "obert_qat_int8")
    assert "pipeline.passes.ziplm.batch=2" not in qat and "pipeline.passes.obert.num_events=2" in qat
    zi = compound._overrides(a, "ziplm_int8")
    assert "pipeline.passes.ziplm.batch=2" in zi and not any(o.startswith("pipeline.passes.obert.") for o in zi)
    for p in ("obert_qat_int8", "ziplm_int8", "ziplm_obert_qat_int8"):
        cfg = compose([f"+pipeline={p}", *compound._overrides(a, p)])
        assert cfg.budget.recovery_steps == 4
    # the speed-first ZipLM point recovers 5x longer, at any --steps
    cfg = compose(["+pipeline=ziplm_strong_int8", *compound._overrides(a, "ziplm_strong_int8")])
    assert cfg.budget.recovery_steps == 20 and cfg.pipeline.passes.ziplm.recovery.steps == 20


def test_backends_runs_are_reused_only_at_the_same_budget(compound):
    import argparse

    theirs = {"overrides": ["budget=bench", "deploy=auto", "bench=off", "run.threads=2", "budget.recovery_steps=400",
                            "budget.fisher_grads=128", "budget.prune_events=4"]}
    a = argparse.Namespace(budget="bench", steps=400, grads=128, events=4, override=[])
    assert compound._same_budget(a, theirs)
    assert not compound._same_budget(argparse.Namespace(**{**vars(a), "steps": 2000}), theirs)
    assert not compound._same_budget(argparse.Namespace(**{**vars(a), "override": ["debug=smoke"]}), theirs)


def test_a_peers_ir_of_our_model_is_never_our_headline(compound):
    c = cells()
    c["a"]["openvino_nncf_int8"] = cell("openvino", 0.899, 3.0, 0.5, method="peer")  # faster and within 1 pt
    d = compound.derive(c)
    assert d["models"]["a"]["cell"] == "openvino_int8" and d["models"]["a"]["method"] == "compresslab"
    assert d["best"]["cell"] == "openvino_int8" and d["best"]["method"] == "compresslab"
    assert d["best_any_method"]["cell"] == "openvino_nncf_int8" and d["best_any_method"]["method"] == "peer"
    assert math.isclose(d["best_any_method"]["speedup_b32_vs_ort_fp32"], 100.0 / 3.0)


def test_nncf_int8_of_the_teacher_is_a_dense_cell(compound):
    """The int8 run's model is the teacher: NNCF's IR of it is a dense baseline (it can be best_dense), the
    rest of that run stays a model of its own."""
    cs = cells()
    cs["int8"] = {"ort_int8": cell("ort", 0.895, 50.0, 5.0),
                  "openvino_nncf_int8": cell("openvino", 0.90, 12.0, 2.0, method="peer")}
    compound.dense_from_int8(cs)
    assert "openvino_nncf_int8" in cs["dense"] and set(cs["int8"]) == {"ort_int8"}
    # the int8 run's ORT file is ours (block-wise embeddings): never copied into dense as the peer's baseline
    assert "ort_int8" not in cs["dense"]
    assert "method" not in cs["int8"]["ort_int8"] or cs["int8"]["ort_int8"]["method"] != "peer"
    d = compound.derive(cs)
    assert d["best_dense"]["cell"] == "dense.openvino_nncf_int8"
    assert math.isclose(d["models"]["a"]["speedup_b32_vs_best_dense"], 12.0 / 10.0)
    # the AMX sparse-decompression twins of that IR are dense baselines too
    cs2 = cells()
    cs2["int8"] = {"ort_int8": cell("ort", 0.895, 50.0, 5.0),
                   "openvino_nncf_int8": cell("openvino", 0.90, 12.0, 2.0, method="peer"),
                   "openvino_nncf_int8_sparse50": cell("openvino", 0.90, 11.0, 2.0, method="peer")}
    compound.dense_from_int8(cs2)
    assert set(cs2["int8"]) == {"ort_int8"} and "openvino_nncf_int8_sparse50" in cs2["dense"]
    # an int8 run without an NNCF IR: the dense cell says why, and best_dense falls back visibly
    cs3 = cells()
    cs3["int8"] = {"ort_int8": cell("ort", 0.895, 50.0, 5.0)}
    compound.dense_from_int8(cs3)
    assert "no NNCF IR" in cs3["dense"]["openvino_nncf_int8"]["error"]
    assert compound.derive(cs3)["best_dense"]["cell"] == "dense.openvino_bf16"
    # where ORT's int8 of the teacher (build_cells' dense.ort_int8) is the fastest dense runtime (AVX2), it is
    # best_dense; the int8 model's own ORT cell is measured against it
    cs4 = cells()
    cs4["dense"]["ort_int8"] = cell("ort", 0.895, 20.0, 5.0, method="peer")
    cs4["int8"] = {"ort_int8": cell("ort", 0.897, 21.0, 5.0),
                   "openvino_nncf_int8": cell("openvino", 0.90, 30.0, 2.0, method="peer")}
    compound.dense_from_int8(cs4)
    d4 = compound.derive(cs4)
    assert d4["best_dense"]["cell"] == "dense.ort_int8" and d4["best_dense"]["b32_ms"] == 20.0
    assert math.isclose(d4["models"]["int8"]["speedup_b32_vs_best_dense"], 20.0 / 21.0)


def test_the_dense_ort_int8_cell_is_orts_one_call_int8_of_the_teacher(compound, tiny_onnx, tiny_model, tmp_path):
    """Not the int8 pipeline's file, whose word table is block-wise (ours): one call of ORT's quantizer on the
    teacher's fused export, ORT's own per-tensor embedding table included."""
    import json
    import shutil

    import onnx

    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    shutil.copy(tiny_onnx, run / "export" / "model.onnx")
    tiny_model.config.to_json_file(run / "export" / "config.json")
    (run / "manifest.json").write_text(json.dumps({"export": {"fp32": {"path": "export/model.onnx"}}}))
    c = compound.teacher_ort_int8(run)
    assert c["method"] == "peer" and c["kind"] == "ort" and c["path"] == run / "bench" / "teacher_int8" / "model.onnx"
    ops = {n.op_type for n in onnx.load(str(c["path"])).graph.node}
    assert "QEmbedLayerNormalization" in ops  # ORT's one scale per table: not our block-wise lookup


def test_runs_from_different_teachers_are_refused(compound):
    def manifest(key):
        return {"steps": [{"name": "finetune", "result": {"metrics": {"cache_key": key}}}]}

    assert compound.teacher_key(manifest("k1")) == "k1" and compound.teacher_key({"steps": []}) is None
    compound.one_teacher({"a": compound.teacher_key(manifest("k1")), "b": compound.teacher_key(manifest("k1"))})
    compound.one_teacher({"a": None})  # one run: nothing to mix
    with pytest.raises(ValueError, match="different teachers"):
        compound.one_teacher({"a": "k1", "b": "k2"})
    with pytest.raises(ValueError, match="cannot tell"):  # a run whose teacher is not recorded is not waved through
        compound.one_teacher({"a": "k1", "b": compound.teacher_key({"steps": [{"result": {}}]})})


def test_paired_speedups_come_from_the_rounds(compound):
    """Round times kept: the paired figure is the median of per-round ratios, beside the ratio of medians."""
    cs = cells()
    # the base is fast, slow, fast, slow, slow; the model fast in the first three rounds: the ratio of the
    # lists' medians (30 / 8 = 3.75, 120 / 8 = 15) mixes states, the paired median does not
    cs["dense"]["openvino_bf16"]["b32_times_ms"] = [25.0, 30.0, 25.0, 30.0, 30.0]
    cs["dense"]["ort_fp32"]["b32_times_ms"] = [100.0, 120.0, 100.0, 120.0, 120.0]
    cs["a"]["openvino_int8"]["b32_times_ms"] = [8.0, 8.0, 8.0, 12.0, 12.0]
    d = compound.derive(cs)
    a = d["models"]["a"]
    assert math.isclose(a["speedup_b32_vs_best_dense_paired"], 3.125)  # per round 3.125, 3.75, 3.125, 2.5, 2.5
    assert math.isclose(a["speedup_b32_vs_ort_fp32_paired"], 12.5)  # per round 12.5, 15, 12.5, 10, 10
    assert math.isclose(d["best"]["speedup_b32_vs_best_dense_paired"], 3.125)
    assert d["models"]["c"]["speedup_b32_vs_best_dense_paired"] is None  # no rounds kept: not invented
    cs["c"]["ort_int8"]["b32_times_ms"] = [20.0, 20.0]  # not the same rounds as the base's five
    with pytest.raises(ValueError, match="equal"):
        compound.derive(cs)


def test_a_label_with_a_dot_keeps_its_cells_apart(compound):
    """``--label ziplm_strong_int8@3.4x`` (the docstring's own example) once crashed measure at the split."""
    assert compound.split_key(compound.cell_key("ziplm_strong_int8@3.4x", "ort_int8")) == ("ziplm_strong_int8@3.4x",
                                                                                           "ort_int8")
    assert compound.split_key(compound.cell_key("dense", "openvino_nncf_int8_sparse50")) == ("dense",
                                                                                             "openvino_nncf_int8_sparse50")
    with pytest.raises(ValueError, match="has a dot"):
        compound.cell_key("int8", "ort.int8")
