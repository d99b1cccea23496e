"""The peer suite's guards (issue 14), without a model: whose system a pipeline cell is (the issue's
``method: "peer"`` rule), an empty ``--cells`` refused, a damaged cell record or results file, and two
suite processes on the same task."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is run as a package from the repo root
    sys.path.insert(0, str(REPO))
suite = importlib.import_module("benchmarks.suite")
suite_plan = importlib.import_module("benchmarks.suite_plan")
suite_method = importlib.import_module("benchmarks.suite_method")
store_mod = importlib.import_module("benchmarks.store")


@pytest.mark.parametrize("args, method", [
    # the teacher through one call of ORT's quantize_dynamic: a peer's tool on our model
    (["+pipeline=int8", "pipeline.passes.int8.embeddings=per_tensor"], "peer"),
    (["+pipeline=int8"], "compresslab"),  # its default word table is our block-wise rewrite
    (["+pipeline=int8", "pipeline.passes.int8.embeddings=fp32"], "peer"),  # ORT's nodes_to_exclude
    (["+pipeline=int8", "pipeline.passes.int8.embeddings=per_tensor", "pipeline.passes.int8.outliers=split"],
     "compresslab"),  # our outlier split
    (["+pipeline=int8", "pipeline.passes.int8.embeddings=per_tensor", "pipeline.passes.int8.activations=per_token"],
     "compresslab"),  # our per-token scales
    (["+pipeline=qdq_int8"], "peer"),  # ORT's static quantizer on the teacher
    (["+pipeline=int8", "pipeline.passes.int8.fp32_fallback=guided"], "compresslab"),  # our choice of fallbacks
    (["+pipeline=hawq_int8"], "compresslab"),
    (["+pipeline=ziplm_int8"], "compresslab"),  # ZipLM changed the model before ORT saw it
    (["+pipeline=obert_int8"], "compresslab"),
    (["+pipeline=hawq_w4"], "compresslab"),  # HAWQ's n-bit weights, then MatMulNBits packs them
    (["+pipeline=ziplm_2x"], "compresslab"),
])
def test_a_pipeline_is_ours_only_when_our_pass_changed_the_model(args, method) -> None:
    assert suite_method.pipeline_method(args) == method


@pytest.mark.parametrize("args, method", [
    (["+pipeline=int8"], "peer"),  # an ORT-file rewrite: the torch model OpenVINO and NNCF see is the teacher
    (["+pipeline=int8", "pipeline.passes.int8.fp32_fallback=guided"], "peer"),
    (["+pipeline=ziplm_int8"], "compresslab"),
    (["+pipeline=hawq_w4"], "compresslab"),
])
def test_whose_torch_model_a_pipeline_leaves_is_told_apart_from_whose_ort_file(args, method) -> None:
    assert suite_method.pipeline_model_method(args) == method


@pytest.mark.parametrize("overrides, own", [
    ([], ["int8.embeddings=blockwise"]),
    (["pipeline.passes.int8.embeddings=per_tensor"], []),
    (["pipeline.passes.int8.embeddings=fp32"], []),  # ORT's nodes_to_exclude: its own option
    (["pipeline.passes.int8.op_types=[MatMul]"], []),  # the tables stay fp32 whatever embeddings says
    (["pipeline.passes.int8.embeddings=per_tensor", "pipeline.passes.int8.outliers=split",
      "pipeline.passes.int8.fp32_fallback=guided"], ["int8.fp32_fallback=guided", "int8.outliers=split"]),
])
def test_own_settings_are_the_ones_applied(overrides, own) -> None:
    from compresslab.config import compose

    assert suite_method.own_settings(compose(["+pipeline=int8", *overrides]).pipeline) == own


def test_every_suite_pipeline_gets_a_method() -> None:
    cfg = suite_plan.load_config(suite_plan.CONFIG)
    got = {p: suite_method.pipeline_method(suite_plan.pipeline_overrides(p, [])) for p in cfg["pipelines"]}
    assert got["int8"] == "compresslab" and all(m in ("peer", "compresslab") for m in got.values())


def _cfg() -> dict:
    return {"threads": 1, "pipelines": ["int8"], "peers": ["dense_ort_fp32"], "timing": {},
            "budgets": {"smoke": {"overrides": []}}, "tasks": {"tiny": {"overrides": []}}}


@pytest.mark.parametrize("extra, match", [
    ({"ziplm_int8": ["budget.recovery_steps=2000"]}, r"pipeline\(s\) \['ziplm_int8'\] the suite config does not run"),
    ({"int8": "budget.recovery_steps=2000"}, "a list of key=value overrides"),
    ({"int8": ["budget.recovery_steps"]}, "a list of key=value overrides"),
])
def test_a_pipeline_override_for_no_pipeline_or_not_a_list_is_refused(extra, match) -> None:
    with pytest.raises(suite_plan.SuiteError, match=match):
        suite_plan.plan({**_cfg(), "pipeline_overrides": extra}, "tiny", "smoke", None)


def test_a_pipeline_override_comes_last_and_only_in_its_own_pipeline() -> None:
    cfg = {**_cfg(), "pipelines": ["int8", "ziplm_int8"],
           "budgets": {"smoke": {"overrides": ["budget=bench", "budget.recovery_steps=400"]}},
           "pipeline_overrides": {"ziplm_int8": ["budget.recovery_steps=2000"]}}
    p = suite_plan.plan(cfg, "tiny", "smoke", None)
    assert p.overrides.count("budget.recovery_steps=400") == 1  # shared by every cell's cache key, unchanged
    zl, i8 = p.args("ziplm_int8"), p.args("int8")
    assert zl.index("budget.recovery_steps=2000") > zl.index("budget.recovery_steps=400")
    assert "budget.recovery_steps=2000" not in i8
    from compresslab.config import compose

    assert compose(zl).pipeline.passes.ziplm.recovery.steps == 2000  # the last one wins, as the runs read it
    assert "  ziplm_int8 (then budget.recovery_steps=2000)\n" in suite_plan.list_suite(cfg)


def test_a_task_pipeline_override_applies_to_that_task_only_and_after_the_global_one() -> None:
    cfg = {**_cfg(), "pipelines": ["int8", "ziplm_int8"],
           "tasks": {"tiny": {"overrides": [], "pipeline_overrides": {"ziplm_int8": ["budget.recovery_steps=300"]}},
                     "other": {"overrides": []}},
           "pipeline_overrides": {"ziplm_int8": ["budget.recovery_steps=2000"]}}
    tiny, other = suite_plan.plan(cfg, "tiny", "smoke", None), suite_plan.plan(cfg, "other", "smoke", None)
    zl = tiny.args("ziplm_int8")
    assert zl.index("budget.recovery_steps=300") > zl.index("budget.recovery_steps=2000")
    assert "budget.recovery_steps=300" not in other.args("ziplm_int8") + tiny.args("int8")
    from compresslab.config import compose

    assert compose(zl).pipeline.passes.ziplm.recovery.steps == 300
    assert "    ziplm_int8 on tiny (then budget.recovery_steps=300)\n" in suite_plan.list_suite(cfg)


@pytest.mark.parametrize("extra, match", [
    ({"ziplm_int8": ["budget.recovery_steps=2000"]}, r"tasks\.tiny\.pipeline_overrides names pipeline\(s\)"),
    ({"int8": "budget.recovery_steps=2000"}, "tasks.tiny.pipeline_overrides must map"),
])
def test_a_task_pipeline_override_for_no_pipeline_or_not_a_list_is_refused(extra, match) -> None:
    cfg = {**_cfg(), "tasks": {"tiny": {"overrides": [], "pipeline_overrides": extra}}}
    with pytest.raises(suite_plan.SuiteError, match=match):
        suite_plan.plan(cfg, "tiny", "smoke", None)


@pytest.mark.parametrize("cells", [[], ["int8"]])
def test_an_empty_cell_list_is_refused_not_read_as_every_cell(cells) -> None:
    if cells:
        assert suite_plan.plan(_cfg(), "tiny", "smoke", cells).pipelines == ("int8",)
        return
    with pytest.raises(suite_plan.SuiteError, match="--cells names no cell"):
        suite_plan.plan(_cfg(), "tiny", "smoke", cells)


@pytest.mark.parametrize("value", [",", "", " , "])
def test_cli_empty_cells_exit_2_before_any_work(value, monkeypatch, capsys) -> None:
    monkeypatch.setattr(suite, "run_task", lambda *a, **k: pytest.fail("ran a task"))
    assert suite.main(["--task", "sst2", "--cells", value]) == 2
    assert "--cells names no cell" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", "missing preds"])
def test_a_damaged_cell_record_is_built_again(tmp_path, damage) -> None:
    store = store_mod.CellStore(tmp_path / "cells")
    store.begin("c", "k")
    store.finish("c", "k", {"name": "c", "score": 0.5}, np.zeros(3))
    assert store.finished("c", "k")["score"] == 0.5
    if damage == "missing preds":
        (store.dir("c", "k") / "preds.npy").unlink()
    else:
        (store.dir("c", "k") / "cell.json").write_text(damage)
    assert store.finished("c", "k") is None  # rebuilt next run, no crash


def test_a_damaged_results_file_is_named_before_any_work(tmp_path, monkeypatch) -> None:
    (tmp_path / "suite_tiny.json").write_text('{"systems": {')
    monkeypatch.setattr(suite, "prepare_teacher", lambda *a, **k: pytest.fail("worked on a damaged file"))
    p = suite_plan.plan(_cfg(), "tiny", "smoke", None)
    with pytest.raises(suite_plan.SuiteError, match=r"suite_tiny\.json is not a readable suite results file"):
        suite.run_task(p, work=tmp_path / "work", results_dir=tmp_path, timing=False)


def test_a_second_suite_process_on_the_same_task_is_refused(tmp_path, monkeypatch, capsys) -> None:
    from compresslab.dirlock import DirectoryBusyError, exclusive

    monkeypatch.setattr(suite, "prepare_teacher", lambda *a, **k: pytest.fail("built beside another run"))
    p = suite_plan.plan(_cfg(), "tiny", "smoke", None)
    with exclusive(tmp_path / "work" / "tiny" / "smoke", "a test holder"):
        with pytest.raises(DirectoryBusyError, match=r"task tiny \(budget smoke\) is already running.*pid"):
            suite.run_task(p, work=tmp_path / "work", results_dir=tmp_path, timing=False)
    # another budget is another work dir: not refused (it gets as far as the teacher)
    with exclusive(tmp_path / "work" / "tiny" / "bench", "a test holder"):
        with pytest.raises(pytest.fail.Exception, match="built beside"):
            suite.run_task(p, work=tmp_path / "work", results_dir=tmp_path, timing=False)


@pytest.mark.parametrize("extra", [["budget.teacher=nope"], ["budget.teacher=bench", "budget.teacher=nope"]])
def test_an_unknown_teacher_preset_is_refused_in_the_plan_before_a_teacher_trains(extra) -> None:
    from benchmarks import suite_plan

    cfg = suite_plan.load_config(suite_plan.CONFIG)
    with pytest.raises(suite_plan.SuiteError, match="'nope'.*allowed: quick, bench, bench_small, smoke"):
        suite_plan.plan(cfg, "mrpc", "bench", None, extra)
    assert suite_plan.plan(cfg, "mrpc", "bench", None, ["budget.teacher=bench"]).task == "mrpc"


@pytest.mark.parametrize("cpu_s, budget, over", [(7200.0, 1.0, True), (1800.0, 1.0, None), (7200.0, None, None)])
def test_teacher_build_is_flagged_over_its_cpu_budget(tmp_path, cpu_s, budget, over) -> None:
    import json

    (tmp_path / "teacher.json").write_text(json.dumps({"prepare_s": 4000.0, "cpu_s": cpu_s, "score": 0.9}))
    t = suite.Teacher(None, "0" * 64, tmp_path, np.zeros(2), 0.9, [])
    rec = t.build_record(budget)
    assert rec["cpu_s"] == cpu_s and rec["prepare_s"] == 4000.0 and rec["over_budget"] is over
    assert suite.Teacher(None, "0", tmp_path / "none", np.zeros(2), 0.9, []).build_record(1.0)["cpu_s"] is None


def _yaml(tmp_path: Path, **extra) -> Path:
    import yaml

    p = tmp_path / "suite.yaml"
    p.write_text(yaml.safe_dump({**_cfg(), **extra}))
    return p


@pytest.mark.parametrize("extra, match", [
    ({"openvino_smoth_alpha": [0.5]}, r"unknown key 'openvino_smoth_alpha' \(did you mean 'openvino_smooth_alpha'\?\)"),
    ({"backends": "ort"}, r"backends must be a list of runtimes"),
    ({"openvino_keep_fp32": "ffn_out"}, r"openvino_keep_fp32 must be a list of patterns"),
    ({"openvino_keep_fp32": ["ffn_out", 42]}, r"non-empty strings"),
    ({"openvino_keep_fp32": ["re:(("]}, r"openvino_keep_fp32: bad regex"),
    ({"openvino_smooth_alpha": [0.0, 0.5]}, r"^openvino_smooth_alpha: each entry is a SmoothQuant strength in \(0, 1\]"),
])
def test_a_malformed_suite_config_is_refused_when_read(tmp_path, extra, match) -> None:
    """A typo'd key would leave its default in force; a string where a list belongs would be split into
    characters; a bad pattern would only fail after every pipeline was built: all refused up front."""
    with pytest.raises(suite_plan.SuiteError, match=match):
        suite_plan.load_config(_yaml(tmp_path, **extra))


def test_keep_fp32_and_a_null_grid_are_read_and_listed(tmp_path) -> None:
    cfg = suite_plan.load_config(_yaml(tmp_path, openvino_keep_fp32=["ffn_out", "re:.*query"],
                                       openvino_smooth_alpha=None))
    assert suite_plan.keep_fp32(cfg) == ("ffn_out", "re:.*query") and suite_plan.smooth_grid(cfg) == (None,)
    assert suite_plan.keep_fp32({"openvino_keep_fp32": []}) == () == suite_plan.keep_fp32({})
    text = suite_plan.list_suite(cfg)
    assert "keeping ['ffn_out', 're:.*query'] fp32, no SmoothQuant" in text


@pytest.mark.parametrize("backends", [["ort", "openvino"], ["ort"]])
def test_the_unknown_cell_error_lists_every_cell_of_the_task_and_each_is_accepted(backends) -> None:
    """Trial 44: ``--cells nosuch`` listed the pipelines and peers only; the ``<pipeline>_openvino`` and
    ``<pipeline>_openvino_nncf`` cells the suite also builds could not be found from it. Every cell the task builds
    is listed, grouped, and every listed name is accepted by --cells and builds that cell."""
    cfg = {**suite_plan.load_config(suite_plan.CONFIG), "backends": backends}
    with pytest.raises(suite_plan.SuiteError) as e:
        suite_plan.plan(cfg, "sst2", "bench", ["nosuch"])
    msg = str(e.value)
    whole = suite_plan.plan(cfg, "sst2", "bench", None)
    groups = suite_plan.cell_names(whole)
    listed = [n for names in groups.values() for n in names]

    def built(p: suite_plan.TaskPlan) -> set[str]:
        return {n for n, _, _ in suite_plan.cell_specs(p, teacher_sha="x", dev=[], max_length=128)}

    assert sorted(listed) == sorted(built(whole))  # every cell of the task, and nothing else
    assert msg.startswith("unknown cell(s) ['nosuch']; the cells of task sst2: pipelines (ours): int8, ")
    for group, names in groups.items():
        assert (f"{group}: {', '.join(names)}" in msg) == bool(names)
    assert ("ziplm_int8_openvino_nncf" in listed and "int8_openvino" in listed) == ("openvino" in backends)
    for name in listed:
        assert name in built(suite_plan.plan(cfg, "sst2", "bench", [name])), name


@pytest.mark.parametrize("cells, hint", [
    (["int8_openvno"], "(did you mean 'int8_openvino'?)"),
    (["ziplm_int8_openvino_ncf"], "(did you mean 'ziplm_int8_openvino_nncf'?)"),
    (["nncf_ptq"], "(did you mean 'nncf_ptq_int8'?)"),
    (["int8_openvno", "dense_ort_fp3"], "(did you mean 'int8_openvino' for 'int8_openvno', 'dense_ort_fp32' for "
                                        "'dense_ort_fp3'?)"),
    (["qqqqqqq"], None),
])
def test_an_unknown_cell_gets_the_nearest_cell_name(cells, hint) -> None:
    cfg = suite_plan.load_config(suite_plan.CONFIG)
    with pytest.raises(suite_plan.SuiteError, match=r"unknown cell\(s\)") as e:
        suite_plan.plan(cfg, "sst2", "bench", cells)
    assert (hint in str(e.value)) if hint else "did you mean" not in str(e.value)
    assert "their OpenVINO cells: int8_openvino, " in str(e.value)


def test_an_empty_cell_list_and_a_cell_the_plan_never_builds_list_the_tasks_cells() -> None:
    cfg = suite_plan.load_config(suite_plan.CONFIG)
    for cells, head in (([], "--cells names no cell"), (["int8_openvino_nncf"], "no such cell: int8_openvino_nncf")):
        with pytest.raises(suite_plan.SuiteError) as e:
            suite_plan.plan(cfg, "sst2", "bench", cells)
        assert str(e.value).startswith(head) and "NNCF's int8 of their models: ziplm_int8_openvino_nncf" in str(e.value)
