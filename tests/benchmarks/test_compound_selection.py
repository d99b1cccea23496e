"""benchmarks/compound.py (issue 13) picks what stands for a pipeline the way MEASURE.md allows: on the validation
split (dev is the test set), among the pipeline's own final files timed in the same process as its baselines;
a DeepSparse worker's cell is never compared with a baseline timed in another process; a best_dense that
lacks a baseline says so; and a runs file that cannot be measured is refused before any scoring or timing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compound():
    from compresslab.testing import import_benchmark

    return import_benchmark("compound", ROOT)


def cell(backend: str, acc: float, b32: float, val: float | None = None, **extra) -> dict:
    return {"backend": backend, "acc": acc, "agreement": 0.9, "b32_ms": b32, "b1_ms": b32 / 10, "file": f"f/{backend}",
            "real_len_sent_per_s": 1000.0 / b32, "size_bytes": 100, **({"val_acc": val} if val is not None else {}),
            **extra}


def cells(teacher_val: float | None = 0.93) -> dict:
    return {"dense": {"ort_fp32": cell("ort", 0.90, 100.0), "ort_int8": cell("ort", 0.895, 60.0, method="peer"),
                      "openvino_f32": cell("openvino", 0.90, 80.0),
                      "openvino_nncf_int8": cell("openvino", 0.90, 50.0, method="peer"),
                      "torch_fp32": cell("torch", 0.90, 150.0, teacher_val)}}


def test_the_pipelines_cell_is_picked_on_validation_not_dev(compound):
    """The faster cell is within 1 pt on dev but 2 pt down on validation: the slower one stands for the pipeline
    (picking on dev, the test set, would be a max over cells there), and within_1pt is then its dev score."""
    cs = cells()
    cs["a"] = {"ort_int8": cell("ort", 0.885, 40.0, val=0.925), "openvino_int8": cell("openvino", 0.895, 20.0, val=0.91)}
    a = compound.derive(cs)["models"]["a"]
    assert (a["cell"], a["selected_on"], a["val_acc"], a["candidates"]) == ("ort_int8", "validation", 0.925, 2)
    assert not a["within_1pt"]  # its dev score is 1.5 pt down: reported, and never best
    assert compound.derive(cs)["best"] is None
    # nothing within 1 pt on validation: the most accurate there, not the fastest
    cs["a"]["ort_int8"]["val_acc"] = 0.90
    assert compound.derive(cs)["models"]["a"]["cell"] == "openvino_int8"
    # equally accurate on validation and neither within 1 pt: the faster, whatever order the cells are listed in
    cs["a"]["ort_int8"]["val_acc"] = cs["a"]["openvino_int8"]["val_acc"] = 0.90
    assert compound.derive(cs)["models"]["a"]["cell"] == "openvino_int8"
    cs["a"] = dict(reversed(list(cs["a"].items())))
    assert compound.derive(cs)["models"]["a"]["cell"] == "openvino_int8"
    # a file measured before validation scores were kept: the old rule on dev, and the entry says so
    old = cells(teacher_val=None)
    old["a"] = {"ort_int8": cell("ort", 0.885, 40.0), "openvino_int8": cell("openvino", 0.895, 20.0)}
    a = compound.derive(old)["models"]["a"]
    assert (a["cell"], a["selected_on"], a["within_1pt"]) == ("openvino_int8", "dev", True)


def test_a_file_before_the_last_step_never_stands_for_the_pipeline(compound):
    """DeepSparse's fp32 export of a dynamic-int8 pipeline is the model before its int8 step."""
    cs = cells()
    cs["a"] = {"ort_int8": cell("ort", 0.88, 40.0, val=0.90),
               "openvino_fp32_before_int8": cell("openvino", 0.90, 10.0, val=0.93, final_model=False)}
    d = compound.derive(cs)
    assert d["models"]["a"]["cell"] == "ort_int8" and d["best"] is None


def test_deepsparse_worker_cells_are_never_compared_across_processes(compound):
    cs = cells()
    ds = dict(timed_in="deepsparse_worker", ort_fp32_b32_ms_same_process=300.0)
    cs["dense"]["deepsparse_fp32"] = cell("deepsparse", 0.90, 1.0, **ds)  # "fastest" dense: another process
    cs["a"] = {"ort_int8": cell("ort", 0.899, 40.0, val=0.93), "deepsparse_int8": cell("deepsparse", 0.90, 5.0, **ds)}
    d = compound.derive(cs)
    assert d["best_dense"]["cell"] == "dense.openvino_nncf_int8"
    assert d["models"]["a"]["cell"] == "ort_int8" and d["best"]["cell"] == "ort_int8"
    w = d["models"]["a"]["cells"]["deepsparse_int8"]
    assert math.isclose(w["speedup_b32_vs_ort_fp32_in_worker"], 60.0)  # against the worker's own ort_fp32
    assert "speedup_b32_vs_best_dense" not in w and "speedup_b32_vs_ort_fp32" not in w
    assert d["best_any_method"]["cell"] == "ort_int8"
    # files measured before timed_in existed: a DeepSparse cell is the worker's by its backend
    cs["a"]["deepsparse_int8"] = cell("deepsparse", 0.90, 5.0)
    assert compound.derive(cs)["best"]["cell"] == "ort_int8"


def test_best_dense_names_the_baselines_it_lacks(compound):
    cs = cells()
    assert compound.derive(cs)["best_dense"]["missing"] == {}
    del cs["dense"]["ort_int8"]
    cs["dense"]["openvino_nncf_int8"] = {"backend": "openvino", "error": "nncf failed"}
    d = compound.derive(cs)
    assert d["best_dense"]["cell"] == "dense.openvino_f32"
    assert d["best_dense"]["missing"] == {"ort_int8": "not in the file", "openvino_nncf_int8": "nncf failed"}
    # a runs file without the int8 run: NNCF's IR of the teacher is an error cell, not silently absent
    cs2 = cells()
    del cs2["dense"]["openvino_nncf_int8"]
    compound.dense_from_int8(cs2)
    assert "not listed" in cs2["dense"]["openvino_nncf_int8"]["error"]
    assert "openvino_nncf_int8" in compound.derive(cs2)["best_dense"]["missing"]


def _run(tmp_path: Path, name: str, status: str = "finished", finetune: bool = True) -> dict:
    d = tmp_path / "outputs" / name
    d.mkdir(parents=True)
    steps = [{"name": "finetune", "result": {}}] if finetune else [{"name": "int8", "result": {}}]
    (d / "manifest.json").write_text(json.dumps({"status": status, "steps": steps}))
    return {"run_dir": str(d)}


def test_a_runs_file_that_cannot_be_measured_is_refused_before_any_work(compound, tmp_path):
    with pytest.raises(SystemExit, match="lists no runs"):
        compound.check_runs({}, "r.json")
    good = _run(tmp_path, "good")
    runs = {"good": good, "gone": {"run_dir": str(tmp_path / "outputs" / "gone")},
            "half": _run(tmp_path, "half", status="running"), "odd": _run(tmp_path, "odd", finetune=False)}
    with pytest.raises(SystemExit) as e:
        compound.check_runs(runs, "r.json")
    msg = str(e.value)
    assert "r.json" in msg and "gone: no readable manifest" in msg and "half:" in msg and "'running'" in msg
    assert "odd:" in msg and "no finetune step" in msg and "good:" not in msg  # every bad entry, named at once
    assert set(compound.check_runs({"good": good}, "r.json")) == {"good"}


def test_the_fp32_export_is_marked_before_the_last_step_only_when_a_step_came_after_it(compound, tmp_path):
    """DeepSparse runs a dynamic-int8 pipeline's fp32 export: the model before its int8 step (never the entry);
    a pipeline with no ONNX step ends in that export, and a QAT pipeline's QDQ export is its final file."""
    def manifest(last_onnx: str | None, qdq: bool = False) -> dict:
        result = {"onnx_path": last_onnx} if last_onnx else {}
        return {"steps": [{"name": "finetune", "result": {}}, {"name": "last", "result": result}],
                "export": {"fp32": {"path": "export/model.onnx", **({"qdq": True} if qdq else {})},
                           "openvino": {"candidates": {}}}}

    dyn = compound.model_cells(tmp_path, manifest("steps/02_int8/model.onnx"), set())
    assert dyn["deepsparse_fp32"]["final_model"] is False and "ort_int8" in dyn
    ends_in_export = compound.model_cells(tmp_path, manifest(None), set())
    assert "final_model" not in ends_in_export["deepsparse_fp32"]
    qat = compound.model_cells(tmp_path, manifest(None, qdq=True), set())
    assert "final_model" not in qat["deepsparse_int8"]
    assert set(qat) == {"ort_int8", "deepsparse_int8", "deepsparse_int8_matmulinteger"}
    # no QDQ file there to convert: the integer-form cell is an error with the reason, never a file that runs
    assert qat["deepsparse_int8_matmulinteger"]["path"] is None
    assert "no MatMulInteger form of" in qat["deepsparse_int8_matmulinteger"]["error"]


def test_a_qat_export_gets_its_matmulinteger_twin_converted_once(compound, tmp_path, tiny_qdq_onnx):
    """DeepSparse runs a QDQ file in float (results/deepsparse_kernels.json): a QAT pipeline's cells add the same
    codes in SparseML's MatMulInteger form, converted from the deployed QDQ file into the run's export/deepsparse/
    (where the bench stage writes it), and reused when there."""
    import shutil

    import onnx

    (tmp_path / "export").mkdir()
    shutil.copy(tiny_qdq_onnx, tmp_path / "export" / "model.onnx")
    m = {"steps": [{"name": "finetune", "result": {}}, {"name": "int8_qat", "result": {}}],
         "export": {"fp32": {"path": "export/model.onnx", "qdq": True}, "openvino": {"candidates": {}}}}
    cell = compound.model_cells(tmp_path, m, set())["deepsparse_int8_matmulinteger"]
    dst = tmp_path / "export" / "deepsparse" / "model_int8_matmulinteger.onnx"
    assert cell["path"] == dst and "error" not in cell and cell["kind"] == "deepsparse"
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(dst)).graph.node}
    stamp = dst.stat().st_mtime_ns
    assert compound.model_cells(tmp_path, m, set())["deepsparse_int8_matmulinteger"]["path"] == dst
    assert dst.stat().st_mtime_ns == stamp  # taken, not rewritten


def test_bad_runs_entries_are_named_not_tracebacks(compound, tmp_path):
    good = _run(tmp_path, "good")
    with pytest.raises(SystemExit) as e:
        compound.check_runs({"good": good, "s": "outputs/int8/x", "n": {"wall_s": 1}}, "r.json")
    assert "s: 'outputs/int8/x' is not" in str(e.value) and "n: {'wall_s': 1} is not" in str(e.value)
    with pytest.raises(SystemExit, match="lists no runs"):
        compound.check_runs([], "r.json")


@pytest.mark.parametrize("script, what", [("compound", ["measure"]), ("compound_long", ["summarize"]),
                                          ("compound_seeds", ["summarize"])])
def test_a_relative_path_is_the_users_not_the_repos(script, what, tmp_path, monkeypatch):
    """The scripts chdir to the repo (the runs' own paths are repo-relative): a --results / --runs-file the user
    gives is resolved where they ran the command first, so it is neither missed nor written into the repo."""
    from compresslab.testing import import_benchmark

    mod = import_benchmark(script, ROOT)
    seen = {}
    entry = {"measure": "measure", "summarize": "summarize" if script == "compound_long" else "resummarize"}[what[0]]
    monkeypatch.setattr(mod, entry, lambda a: seen.update(vars(a)))
    monkeypatch.chdir(tmp_path)
    extra = ["--runs-file", "r.json"] if script == "compound" else []
    mod.main([*what, "--results", "sub/res.json", *extra])  # main chdirs to the repo; monkeypatch restores the cwd
    assert seen["results"] == str(tmp_path / "sub" / "res.json")
    if script == "compound":
        assert seen["runs_file"] == str(tmp_path / "r.json")


def test_derive_of_a_file_without_cells_says_so(compound, tmp_path):
    from _results import ResultsFile  # on sys.path beside compound while the benchmarks load

    with pytest.raises(SystemExit, match="no measured cells"):
        compound.rederive(ResultsFile(tmp_path / "none.json"))
