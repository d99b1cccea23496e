"""The search refuses bad input before any work (no model runs): its settings, its space, the overrides it
cannot take, and the same on the command line (exit 2 before the first candidate)."""

from __future__ import annotations

import math

import pytest

from compresslab.search.objective import SearchSettings
from compresslab.search.plan import SearchPlan, base_overrides, pass_overrides
from compresslab.search.space import Candidate, parse_space
from compresslab.validate import SettingsError

PIPELINES = ["int8", "hawq_int8", "ziplm_2x", "hawq_w4", "obert_int8", "ziplm_int8"]


@pytest.mark.parametrize("kw,match", [
    ({"objective": "fast"}, "search.objective='fast' is not valid; allowed: 'latency', 'size'"),
    ({"max_drop": 0}, "search.max_drop must be a finite number > 0"),
    ({"max_drop": -1.0}, "search.max_drop"),
    ({"max_drop": math.nan}, "search.max_drop"),
    ({"max_drop": math.inf}, "search.max_drop"),
    ({"time_budget_s": 0}, "search.time_budget_s must be a finite number > 0"),
    ({"time_budget_s": -5}, "search.time_budget_s"),
    ({"latency_shape": [32]}, "search.latency_shape"),
    ({"deploy": "fastest"}, "search.deploy='fastest' is not valid; allowed: auto, ort, openvino or null"),
])


def test_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace("[", r"\[")):
        SearchSettings(**kw)


@pytest.mark.parametrize("space,match", [
    ({}, "search.space is empty"),
    ({"x": {"pipeline": "nope", "methods": ["a"]}}, "is not a shipped pipeline"),
    ({"x": {"pipeline": "int8", "methods": ["a"], "costt": 1}}, "unknown key"),
    ({"x": {"pipeline": "int8", "methods": ["a"], "key": "pipeline.passes.int8.per_channel"}}, "go together"),
    ({"x": {"pipeline": "ziplm_int8", "methods": ["a"], "seeds": [{"key": "k.k", "from": "later"}]}},
     "must name an entry written before it"),
])


def test_bad_space(space, match):
    with pytest.raises(SettingsError, match=match):
        parse_space(space, PIPELINES)


@pytest.mark.parametrize("override,match", [
    ("+pipeline=int8", "chooses the pipelines itself"),
    ("eval=dev", "validation split"),
    ("eval.split=dev", "validation split"),
    ("run.dir=/tmp/x", "its own run"),
])


def test_bad_overrides(override, match):
    with pytest.raises(SettingsError, match=match):
        base_overrides(["task=sst2", override])


def test_base_overrides_drop_search_ones_and_pass_settings_reach_their_step_only(tmp_path):
    assert base_overrides(["+search=auto", "search.max_drop=2", "task=rte"]) == ["task=rte"]
    with pytest.raises(SettingsError, match=r"\+search.passes.<step>"):
        base_overrides(["pipeline.passes.obert.grad_batch_size=4"])
    got = pass_overrides({"obert": {"grad_batch_size": 4, "recovery": {"steps": 2}}})
    assert got == ["pipeline.passes.obert.grad_batch_size=4", "pipeline.passes.obert.recovery.steps=2"]
    plan = SearchPlan(SearchSettings(), [], ["task=rte", *got], tmp_path)
    int8 = Candidate("int8", "int8", "int8", (), ("int8",), 1.0)
    obert = Candidate("o", "o", "obert_int8", ("pipeline.passes.obert.sparsity=0.5",), ("obert", "int8"), 4.0)
    assert plan.candidate_args(int8) == ["+pipeline=int8", "task=rte", "eval=validation"]
    assert plan.candidate_args(obert) == ["+pipeline=obert_int8", "task=rte", *got,
                                          "pipeline.passes.obert.sparsity=0.5", "eval=validation"]


@pytest.mark.parametrize("overrides,match", [
    (["search.objective=fast"], "search.objective='fast' is not valid"),
    (["search.max_drop=0"], "search.max_drop must be a finite number > 0"),
    (["search.max_drop=nan"], "search.max_drop must be a finite number > 0"),
    (["search.time_budget_s=0"], "search.time_budget_s must be a finite number > 0"),
    (["search.space=null"], "search.space is empty"),
    (["~search.space"], "search.space is empty"),
    (["task=qnli"], "task 'qnli' has no train split to carve a validation split from"),
    (["task.val_size=0"], "leaves no validation split"),
    (["+pipeline=int8"], "chooses the pipelines itself"),
    # refused as a search's setting before Hydra composes it (not Hydra's "pipeline: no such setting")
    (["pipeline.passes.ziplm.seq=64"], "remove it. A pass setting for every candidate having that step is +search.passes"),
    (["pipeline.name=x"], "chooses the pipelines itself"),
    (["eval=dev"], "scores every candidate on the validation split"),
    # a pass setting no candidate would run with: a misspelt step, or a key the space sets per candidate
    (["+search.passes.obret.damp=1e-6"], "pass setting(s) of step 'obret' (pipeline.passes.obret.damp=1e-06): no "
                                          "pipeline of this search has that step"),
    (["+search.passes.obert.sparsity=0.95"], "search.space.obert_int8 sets pipeline.passes.obert.sparsity per candidate"),
])


def test_cli_refuses_bad_input_before_any_work(overrides, match, capsys, tmp_path, monkeypatch):
    from compresslab import cli
    from compresslab.search import driver

    monkeypatch.setattr(driver, "run_search", lambda *a, **k: pytest.fail("the search started"))
    with pytest.raises(SystemExit) as e:
        cli.check_command_line(["+search=auto", f"paths.output_dir={tmp_path}/out", *overrides])
    assert e.value.code == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("compresslab: error:") and match in err
    assert not (tmp_path / "out").exists()


def test_latency_objective_needs_the_bench(capsys):
    from compresslab import cli

    with pytest.raises(SystemExit):
        cli.check_command_line(["+search=auto", "bench.enabled=false"])
    assert "search.objective=latency reads each candidate's bench stage" in capsys.readouterr().err
