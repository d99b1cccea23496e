"""The search's entries (no model runs): ``compresslab.search.run`` composes the plan the CLI does (its
settings, each candidate's deploy and deploy.* settings, the n-bit entries an OpenVINO search leaves out), and the
CLI's exit status and last lines say whether a model met the budget."""

from __future__ import annotations

import pytest

from compresslab.search.objective import SearchSettings
from compresslab.search.space import Candidate
from compresslab.validate import SettingsError


def test_api_search_composes_the_same_plan(monkeypatch, tmp_path):
    import compresslab
    from compresslab.search import driver

    seen = {}
    monkeypatch.setattr(driver, "run_search", lambda plan, **kw: seen.setdefault("plan", plan) and {"ok": True})
    compresslab.search.run([f"paths.output_dir={tmp_path}", "+search.passes.obert.grad_batch_size=4"], max_drop=2.0,
                           objective="size", time_budget_s=100, latency_shape=[32, 128])
    plan = seen["plan"]
    assert plan.settings.max_drop == 2.0 and plan.settings.objective.value == "size"
    assert plan.settings.time_budget_s == 100 and plan.settings.latency_shape == (32, 128)
    assert "pipeline.passes.obert.grad_batch_size=4" in plan.base_overrides
    assert plan.search_dir.parent == tmp_path / "search"
    with pytest.raises(SettingsError, match="search.max_drop"):
        compresslab.search.run(max_drop=-1)


@pytest.mark.parametrize("overrides, settings, expected", [
    ([], {}, ["deploy=auto"]),                                   # the default: each candidate picks its runtime
    (["deploy=ort"], {}, ["deploy=ort"]),                         # the command's own deploy wins
    (["deploy.precision=f32"], {}, ["deploy.precision=f32", "deploy=auto"]),  # a deploy.* setting refines the search's
    ([], {"deploy": "openvino"}, ["deploy=openvino"]),
    ([], {"deploy": None}, ["deploy=auto"]),                      # null: by the objective (latency: auto)
    ([], {"objective": "size"}, ["deploy=ort"]),                  # size: ORT, where the n-bit files run
    ([], {"objective": "size", "deploy": "auto"}, ["deploy=auto"]),
])


def test_every_candidate_deploys_as_the_search_says(monkeypatch, tmp_path, overrides, settings, expected):
    import compresslab
    from compresslab.search import driver

    seen = {}
    monkeypatch.setattr(driver, "run_search", lambda plan, **kw: seen.setdefault("plan", plan) and {"ok": True})
    compresslab.search.run([f"paths.output_dir={tmp_path}", *overrides], **settings)
    plan = seen["plan"]
    assert [o for o in plan.base_overrides if o.startswith("deploy")] == expected
    int8 = Candidate("int8", "int8", "int8", (), ("int8",), 1.0)
    assert [o for o in plan.candidate_args(int8) if o.startswith("deploy")] == expected


def test_an_openvino_search_leaves_out_the_n_bit_entries_and_says_so(monkeypatch, tmp_path, caplog):
    """search.deploy=openvino: the n-bit entries (w4, mixed_precision) cannot deploy there (MatMulNBits), so they
    are left out with a warning rather than failing the plan or running as fp32 IRs; auto keeps them."""
    import logging

    import compresslab
    from compresslab.search import driver

    seen = {}
    monkeypatch.setattr(driver, "run_search", lambda plan, **kw: seen.update(plan=plan) or {"ok": True})
    with caplog.at_level(logging.WARNING):
        compresslab.search.run([f"paths.output_dir={tmp_path}"], deploy="openvino")
    names = [e.name for e in seen["plan"].entries]
    assert "w4" not in names and "mixed_precision" not in names and "int8" in names
    assert "write n-bit weights (MatMulNBits)" in caplog.text
    compresslab.search.run([f"paths.output_dir={tmp_path}"], deploy="auto")
    assert "w4" in [e.name for e in seen["plan"].entries]


@pytest.mark.parametrize("chosen,met,code,line", [
    (None, False, 3, None),
    ({"name": "int8"}, True, None, "best model: {dir}/best/model.onnx"),
    # a trial: no candidate met the budget, yet the search printed "best model: ..." and exited 0, so a CI job gating
    # on the status ships an out-of-budget model; met=false was only inside search.json
    ({"name": "int8"}, False, 4, "closest model, NOT within the drop budget (search.max_drop=1 pt): "
                                 "{dir}/best/model.onnx"),
])


def test_the_exit_status_and_the_last_lines_say_whether_a_model_met_the_budget(monkeypatch, tmp_path, capsys, chosen,
                                                                                met, code, line):
    # a new user's search spent its budget before any candidate finished and exited 0 (scripts read success)
    from types import SimpleNamespace

    from compresslab.search import driver

    plan = SimpleNamespace(threads=1, seed=0, search_dir=tmp_path, settings=SearchSettings(max_drop=1.0))
    best = {"name": "int8", "met": met, "file": "best/model.onnx"} if chosen else None
    monkeypatch.setattr(driver, "plan_search", lambda cfg, overrides: plan)
    monkeypatch.setattr(driver, "run_search", lambda p: {"message": "the message", "chosen": chosen, "met": met,
                                                         "best": best})
    if code is None:
        driver.main(None, [], lambda *a: None)
    else:
        with pytest.raises(SystemExit) as e:
            driver.main(None, [], lambda *a: None)
        assert e.value.code == code == (driver.EXIT_NO_MODEL if chosen is None else driver.EXIT_NOT_MET)
    out = capsys.readouterr().out
    assert "search: the message" in out
    if line is None:
        assert "model:" not in out
    else:
        assert line.format(dir=tmp_path) in out.splitlines()
        assert ("best model:" in out) == met


def test_an_openvino_int8_deploy_setting_reaches_the_candidates_that_read_it(monkeypatch, tmp_path):
    # a new user's deploy.smooth_alpha=0.8 refused the whole default search: its fp32 ZipLM candidate never reads it
    import compresslab
    from compresslab.search import driver

    seen = {}
    monkeypatch.setattr(driver, "run_search", lambda plan, **kw: seen.setdefault("plan", plan) and {"ok": True})
    compresslab.search.run([f"paths.output_dir={tmp_path}", "deploy.smooth_alpha=0.8"])
    plan = seen["plan"]
    int8 = Candidate("int8", "int8", "int8", (), ("int8",), 1.0)
    fp32 = Candidate("z", "ziplm", "ziplm_2x", (), ("ziplm",), 1.0)
    assert "deploy.smooth_alpha=0.8" in plan.candidate_args(int8)
    assert not [o for o in plan.candidate_args(fp32) if o.startswith("deploy.smooth_alpha")]
    # by preflight's rule (pipeline/deploy_reads.py), not a list of the search's own: int8 QAT leaves no fp32 model
    # for NNCF and a QDQ graph our recipe does not calibrate, so nothing of its run reads calibration_examples
    seen.clear()
    compresslab.search.run([f"paths.output_dir={tmp_path}", "deploy.calibration_examples=50"])
    qat = Candidate("q", "qat", "obert_qat_int8", (), ("obert",), 1.0)
    assert "deploy.calibration_examples=50" in seen["plan"].candidate_args(int8)
    assert not [o for o in seen["plan"].candidate_args(qat) if o.startswith("deploy.calibration_examples")]
    with pytest.raises(SettingsError, match=r"deploy.smooth_alpha: no candidate of this search would read it"
                                            r".*ziplm_2x: no step of this pipeline makes int8"):
        compresslab.search.run([f"paths.output_dir={tmp_path}", "deploy.smooth_alpha=0.8", "~search.space",
                                "+search.space.z={pipeline: ziplm_2x, methods: [ziplm], cost: 1}"])
