"""What the search's verdict says about the runs behind it (no model runs): a teacher no better than chance is
repeated in the final message, search.json, choice.json and the exit status (trial 47b, B2), and a composition's
skip reason tells "its parts ran and missed the bar" from "its parts never ran" (B3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compresslab.manifest import atomic_write_json, read_json
from compresslab.search import driver
from compresslab.search.driver import SEARCH_FILE, Search
from compresslab.search.objective import Outcome, SearchSettings, read_run, select
from compresslab.search.plan import SearchPlan
from compresslab.search.space import Candidate, SourceEnd, expand, parse_space

PIPELINES = ["int8", "ziplm_2x", "obert_int8", "ziplm_int8", "ziplm_obert_int8"]
ZIPLM = {"pipeline": "ziplm_2x", "methods": ["ziplm"], "cost": 3, "key": "pipeline.passes.ziplm.speedup",
         "values": [1.5, 2.0]}
OBERT = {"pipeline": "obert_int8", "methods": ["obert", "int8"], "cost": 1, "key": "pipeline.passes.obert.sparsity",
         "values": [0.5]}
SPACE = {"int8": {"pipeline": "int8", "methods": ["int8"], "cost": 1}, "ziplm": ZIPLM,
         "ziplm_int8": {"pipeline": "ziplm_int8", "methods": ["ziplm", "int8"], "cost": 3,
                        "seeds": [{"key": "pipeline.passes.ziplm.speedup", "from": "ziplm"}]}}
# trial 47b's teacher on 32 validation examples: 56.25%, where always answering the majority class scores 59.38%
CHANCE = "its accuracy 56.25% is at or below the share of the most frequent class (59.38%)"


class Runner:
    """Each candidate takes 10 s x its cost on a fake clock and ends as ``table[name]``: (drop in points, speedup),
    an exception to raise, or missing (then the test fails: it was not meant to run)."""

    def __init__(self, table: dict[str, Any], weak: str | None = None, run_dir: Path | None = None) -> None:
        self.table, self.weak, self.run_dir, self.t = table, weak, run_dir, 0.0

    def clock(self) -> float:
        return self.t

    def __call__(self, c: Candidate) -> Outcome:
        self.t += 10.0 * c.cost
        got = self.table.get(c.name) or pytest.fail(f"{c.name} ran")
        if isinstance(got, BaseException):
            raise got
        return Outcome(name=c.name, entry=c.entry, pipeline=c.pipeline, overrides=list(c.overrides),
                       methods=list(c.methods), status="ok", val_score=0.9 - got[0] / 100, teacher_val=0.9,
                       drop_pt=got[0], speedup=got[1], size_bytes=100, ran_s=10.0 * c.cost,
                       run_dir=str(self.run_dir) if self.run_dir else None, extra={"cost": c.cost},
                       **({"weak_teacher": self.weak} if self.weak else {}))


def _search(tmp_path: Path, runner: Runner, space: dict = SPACE, **settings: Any) -> dict:
    plan = SearchPlan(SearchSettings(unit_s=10.0, **settings), parse_space(space, PIPELINES), [], tmp_path / "search")
    return Search(plan, runner=runner, dev_scorer=lambda run_dir: {}, clock=runner.clock).run()


# ---------------------------------------------------------------------------------------------- B2: weak teacher

def _manifest(teacher: dict, deployed: dict, metric: str = "accuracy", **ev: Any) -> dict:
    return {"eval": {"split": "validation", "primary_metric": metric, "n": 32, **ev,
                     "models": {"teacher_torch": teacher, "deployed": deployed}}}


@pytest.mark.parametrize("manifest, says", [
    (_manifest({"score": 0.5625, "accuracy": 0.5625, "predicted_classes": 2}, {"score": 0.5625},
               majority_share=0.59375), "at or below the share of the most frequent class"),
    (_manifest({"score": 0.5, "accuracy": 0.5, "predicted_classes": 1}, {"score": 0.5}, majority_share=0.5),
     "predicts the same class for every example"),
    (_manifest({"score": -0.02, "pearson": -0.02}, {"score": -0.03}, metric="pearson"), "at or below 0"),
    # above the share but within 2 binomial standard errors of it on 32 examples (the bar: 50% + 17.68 pt)
    (_manifest({"score": 0.625, "accuracy": 0.625, "predicted_classes": 2}, {"score": 0.625}, majority_share=0.5),
     "is not distinguishable from the share of the most frequent class (50.00%)"),
    (_manifest({"score": 0.91, "accuracy": 0.91, "predicted_classes": 2}, {"score": 0.9}, majority_share=0.51),
     None),
])
def test_read_run_flags_a_teacher_no_better_than_chance_by_the_reports_rule(manifest, says):
    from compresslab.report.verdicts import majority_share, weak_teacher

    got = read_run(manifest, None)["weak_teacher"]
    if says is None:
        assert got is None
    else:
        assert says in got
        # one rule: the report's, on the same records (the Summary and the search cannot disagree)
        assert got == weak_teacher(manifest["eval"]["models"]["teacher_torch"], manifest["eval"]["primary_metric"],
                                   *majority_share(manifest), manifest["eval"].get("n"))


@pytest.mark.parametrize("drop, met", [(0.0, True), (2.0, False)])
def test_the_verdict_repeats_a_teacher_at_chance_whether_or_not_the_drop_met(drop, met):
    o = Outcome(name="int8", entry="int8", pipeline="int8", overrides=[], methods=["int8"], status="ok",
                val_score=0.56, teacher_val=0.5625, drop_pt=drop, speedup=1.1, weak_teacher=CHANCE)
    sel = select([o], SearchSettings())
    assert sel.met is met and sel.message.startswith(f"TEACHER NO BETTER THAN CHANCE on validation ({CHANCE})")
    assert ("chose int8" if met else "NO candidate met") in sel.message
    # the report's advice (verdicts.teacher_fix), with both CLI cases: the search does not know which one ran
    assert "budget=quick or budget=bench" in sel.message and "with model.finetuned=true" in sel.message
    o.weak_teacher = None
    assert "CHANCE" not in select([o], SearchSettings()).message


def test_search_json_and_choice_json_record_a_teacher_at_chance(tmp_path):
    # trial 47b: "teacher: no better than chance" was logged by the int8 run, then the search ended "chose int8:
    # validation drop 0.00 pt <= 0.50 pt" and neither choice.json nor search.json said a word about it
    run_dir = tmp_path / "run"
    (run_dir / "export").mkdir(parents=True)
    (run_dir / "export" / "model.onnx").write_bytes(b"onnx")
    atomic_write_json(run_dir / "manifest.json", {"eval": {"deployed_path": "export/model.onnx"}})
    data = _search(tmp_path, Runner({"int8": (0.0, 0.86)}, weak=CHANCE, run_dir=run_dir),
                   {"int8": SPACE["int8"]})
    assert data["met"] and data["weak_teacher"] == CHANCE and data["chosen"]["weak_teacher"] == CHANCE
    assert data["message"].startswith("TEACHER NO BETTER THAN CHANCE")
    assert read_json(tmp_path / "search" / SEARCH_FILE)["weak_teacher"] == CHANCE
    assert read_json(tmp_path / "search" / "best" / "choice.json")["weak_teacher"] == CHANCE
    usable = _search(tmp_path / "ok", Runner({"int8": (0.0, 0.86)}, run_dir=run_dir), {"int8": SPACE["int8"]})
    assert usable["weak_teacher"] is None and "CHANCE" not in usable["message"]
    assert "weak_teacher" not in read_json(tmp_path / "ok" / "search" / "best" / "choice.json")


@pytest.mark.parametrize("met", [True, False])
def test_a_search_against_a_teacher_at_chance_exits_5_not_0_or_4(monkeypatch, tmp_path, capsys, met):
    # exit 0 tells a script "a model within max_drop": a drop measured against chance is no such thing, and exit 4
    # ("none met, here is the closest") would send the user to a milder compression instead of a better teacher
    from types import SimpleNamespace

    plan = SimpleNamespace(threads=1, seed=0, search_dir=tmp_path, settings=SearchSettings(max_drop=1.0))
    monkeypatch.setattr(driver, "plan_search", lambda cfg, overrides: plan)
    monkeypatch.setattr(driver, "run_search", lambda p: {
        "message": "the message", "chosen": {"name": "int8"}, "met": met, "weak_teacher": CHANCE,
        "best": {"name": "int8", "met": met, "file": "best/model.onnx"}})
    with pytest.raises(SystemExit) as e:
        driver.main(None, [], lambda *a: None)
    assert e.value.code == driver.EXIT_WEAK_TEACHER == 5
    out = capsys.readouterr().out
    assert f"model chosen against a teacher no better than chance, its drop says nothing: {tmp_path}/best/model.onnx" \
        in out.splitlines()
    assert "best model:" not in out


# ------------------------------------------------------------------------------------- a one-class deployed model

ONE = "the deployed model predicts the same class for every example of validation (1000 examples), scoring 90.00%"


def test_read_run_names_a_one_class_deployed_model_by_the_reports_rule():
    from compresslab.report.verdicts import run_one_class

    m = _manifest({"score": 0.97, "accuracy": 0.97, "predicted_classes": 2},
                  {"score": 0.9, "accuracy": 0.9, "predicted_classes": 1}, majority_share=0.9, n=1000)
    got = read_run(m, None)
    assert got["one_class"] == run_one_class(m) == ONE and got["weak_teacher"] is None
    m["eval"]["models"]["deployed"]["predicted_classes"] = 2
    assert read_run(m, None)["one_class"] is None


def test_the_verdict_and_search_json_name_a_chosen_one_class_model(tmp_path):
    # an imbalanced split (90% one class): a constant model is within max_drop of a 97% teacher, and "chose int8:
    # validation drop ... <= ..." alone would ship it. Alone in the search, it is returned as the closest, not met
    # (tests/unit/search/test_search_one_class.py: never chosen while another finished)
    o = Outcome(name="int8", entry="int8", pipeline="int8", overrides=[], methods=["int8"], status="ok",
                val_score=0.9, teacher_val=0.97, drop_pt=0.5, speedup=1.1, one_class=ONE)
    sel = select([o], SearchSettings())
    assert not sel.met and sel.message.startswith(f"THE CHOSEN MODEL PREDICTS ONE CLASS ({ONE})")
    o.weak_teacher = CHANCE  # a teacher that predicts one class too: its warning comes first, alone
    assert "ONE CLASS" not in select([o], SearchSettings()).message

    class OneClass(Runner):
        def __call__(self, c: Candidate) -> Outcome:
            out = super().__call__(c)
            out.one_class = ONE
            return out

    data = _search(tmp_path, OneClass({"int8": (0.0, 0.86)}), {"int8": SPACE["int8"]})
    assert data["one_class"] == ONE and data["chosen"]["one_class"] == ONE
    assert read_json(tmp_path / "search" / SEARCH_FILE)["one_class"] == ONE


def test_a_search_that_chose_a_one_class_model_exits_6(monkeypatch, tmp_path, capsys):
    from types import SimpleNamespace

    plan = SimpleNamespace(threads=1, seed=0, search_dir=tmp_path, settings=SearchSettings(max_drop=1.0))
    monkeypatch.setattr(driver, "plan_search", lambda cfg, overrides: plan)
    monkeypatch.setattr(driver, "run_search", lambda p: {
        "message": "the message", "chosen": {"name": "int8"}, "met": False, "weak_teacher": None, "one_class": ONE,
        "best": {"name": "int8", "met": False, "file": "best/model.onnx"}})
    with pytest.raises(SystemExit) as e:
        driver.main(None, [], lambda *a: None)
    assert e.value.code == driver.EXIT_ONE_CLASS == 6
    out = capsys.readouterr().out
    assert "closest model, predicting one class for every validation example as every candidate did (a constant " \
           f"model, NOT within the drop budget): {tmp_path}/best/model.onnx" in out.splitlines()
    assert "best model:" not in out


# ---------------------------------------------------------------------------------------------- B3: skip reasons

def _reasons(data: dict) -> dict[str, str]:
    return {c["name"]: c["reason"] for c in data["candidates"] if c["status"] == "skipped"}


def test_a_composition_whose_parts_never_ran_says_so_not_that_they_missed(tmp_path):
    # trial 47b: every ziplm candidate got "not started (time budget ...)", yet ziplm_int8 was "skipped: no
    # candidate of 'ziplm' came within max_drop"
    data = _search(tmp_path, Runner({"int8": (0.2, 1.5)}), time_budget_s=30.0)
    why = _reasons(data)["ziplm_int8"]
    assert why.startswith("no ziplm candidate ran (time budget), so there is no value to seed 'ziplm_int8'")
    assert "came within max_drop" not in why


def test_a_composition_whose_parts_all_failed_says_so(tmp_path):
    table = {"int8": (0.2, 1.5), "ziplm[ziplm.speedup=1.5]": RuntimeError("boom"),
             "ziplm[ziplm.speedup=2.0]": RuntimeError("boom")}
    why = _reasons(_search(tmp_path, Runner(table)))["ziplm_int8"]
    assert why.startswith("no ziplm candidate finished (2 failed: their errors are in search.json)")


def test_a_composition_whose_parts_ran_and_missed_keeps_the_bar_wording(tmp_path):
    table = {"int8": (0.2, 1.5), "ziplm[ziplm.speedup=1.5]": (1.3, 1.5)}  # misses; 2.0 skipped by stop_on_miss
    why = _reasons(_search(tmp_path, Runner(table)))["ziplm_int8"]
    assert why.startswith("no candidate of 'ziplm' came within max_drop with pipeline.passes.ziplm.speedup set")


@pytest.mark.parametrize("end, says", [
    (None, "no candidate of 'obert_int8' came within max_drop"),  # nothing known: the bar wording, as before
    (SourceEnd(finished=1), "no candidate of 'obert_int8' came within max_drop with pipeline.passes.obert.sparsity "
                            "set, so"),
    (SourceEnd(finished=1, not_run=("time budget",) * 2), "came within max_drop with pipeline.passes.obert.sparsity "
                                                          "set (1 finished; 2 did not start: time budget)"),
    (SourceEnd(not_run=("time budget",)), "no obert_int8 candidate ran (time budget)"),
    (SourceEnd(failed=1, not_run=("time budget",)), "no obert_int8 candidate finished (1 failed: their errors are in "
                                                    "search.json; 1 did not start: time budget)"),
    (SourceEnd(not_run=("obert_int8 skipped: no sparsity",)), "no obert_int8 candidate ran (obert_int8 skipped: no "
                                                              "sparsity)"),
])
def test_every_seed_of_a_composition_says_whether_its_source_ran(end, says):
    # the second seed of ziplm_obert_int8: ziplm passed, obert_int8's candidates ended as ``end``
    space = parse_space({"ziplm": ZIPLM, "obert_int8": OBERT, "zo": {
        "pipeline": "ziplm_obert_int8", "methods": ["ziplm", "obert", "int8"],
        "seeds": [{"key": "pipeline.passes.ziplm.speedup", "from": "ziplm"},
                  {"key": "pipeline.passes.obert.sparsity", "from": "obert_int8"}]}}, PIPELINES)
    z = Candidate("z", "ziplm", "ziplm_2x", ("pipeline.passes.ziplm.speedup=1.5",), ("ziplm",), 1.0)
    ended = {"ziplm": SourceEnd(finished=1), **({"obert_int8": end} if end else {})}
    cands, why = expand(space[2], {"ziplm": [z]}, 2, ended)
    assert cands == [] and why is not None and says in why and why.endswith("so there is no value to seed 'zo' with")
