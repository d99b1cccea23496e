"""A search never chooses a deployed model that predicts one class on validation while another candidate finished:
such a candidate is excluded like one over the drop budget (not chosen, not on the front, listed in search.json's
``excluded`` with why). When every finished candidate is one, the search returns the closest, said plainly (exit 6).
One class is judged on the candidate's VALIDATION predictions (its run's eval=validation record), never on dev
(MEASURE.md); against a teacher at chance, the weak-teacher verdict (exit 5) stands alone, as before.
Candidates come from fabricated run manifests read by the search's own reader (no model runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compresslab.manifest import atomic_write_json, read_json
from compresslab.search import driver
from compresslab.search.driver import SEARCH_FILE, Search, _outcome
from compresslab.search.objective import Outcome, SearchSettings, read_run
from compresslab.search.plan import SearchPlan
from compresslab.search.space import Candidate, parse_space

PIPELINES = ["int8", "obert_int8", "ziplm_2x"]
SPACE = {"int8": {"pipeline": "int8", "methods": ["int8"], "cost": 1},
         "obert_int8": {"pipeline": "obert_int8", "methods": ["obert", "int8"], "cost": 1},
         "ziplm": {"pipeline": "ziplm_2x", "methods": ["ziplm"], "cost": 1}}
# max_drop 2 - margin 0.5: a candidate is selectable up to a 1.5 pt validation drop
SETTINGS = {"max_drop": 2.0, "margin": 0.5}


def manifest(deployed: float, classes: int, speedup: float, *, teacher: float = 0.91, share: float = 0.9,
             teacher_classes: int = 2, n: int = 10000, split: str = "validation") -> dict[str, Any]:
    """A finished run's records as the search reads them: scored on ``split`` (an imbalanced one: ``share`` of the
    examples are of one class, so a constant model scores ``share``)."""
    return {"status": "finished",
            "eval": {"split": split, "primary_metric": "accuracy", "n": n, "majority_share": share,
                     "deployed_path": "export/model.onnx",
                     "models": {"teacher_torch": {"score": teacher, "accuracy": teacher,
                                                  "predicted_classes": teacher_classes},
                                "deployed": {"score": deployed, "accuracy": deployed, "predicted_classes": classes,
                                             "agreement": 0.95}}},
            "bench": {"speedups_best_dense": {"deployed": {"b32xs128": speedup}}},
            "size": {"deployed": {"total": 100}}}


CONSTANT = manifest(0.90, 1, 3.0)  # one class: 1.0 pt below the teacher (within budget), the fastest
GOOD = manifest(0.905, 2, 2.0)  # 0.5 pt, slower
OVER = manifest(0.88, 2, 4.0)  # 3.0 pt: over the budget


class Runs:
    """Each candidate is "run" by writing ``table[name]`` as its run dir's manifest (with a deployed file, for
    best/) and reading it back with :func:`read_run`, as ``driver.run_candidate`` does."""

    def __init__(self, root: Path, table: dict[str, dict[str, Any]]) -> None:
        self.root, self.table, self.t = root, table, 0.0

    def clock(self) -> float:
        return self.t

    def __call__(self, c: Candidate) -> Outcome:
        self.t += 10.0
        run_dir = self.root / "runs" / c.name
        (run_dir / "export").mkdir(parents=True, exist_ok=True)
        (run_dir / "export" / "model.onnx").write_bytes(c.name.encode())
        atomic_write_json(run_dir / "manifest.json", self.table[c.name])
        return _outcome(c, "ok", run_dir=str(run_dir), ran_s=10.0, **read_run(self.table[c.name], None))


def _plan(tmp_path: Path, table: dict[str, Any]) -> SearchPlan:
    return SearchPlan(SearchSettings(unit_s=10.0, **SETTINGS), parse_space({k: SPACE[k] for k in table}, PIPELINES),
                      [], tmp_path / "search")


def _main(monkeypatch, tmp_path: Path, table: dict[str, Any], dev: dict | None = None) -> tuple[int, dict]:
    """The CLI's search on ``table``: (exit status, search.json)."""
    runs = Runs(tmp_path, table)
    monkeypatch.setattr(driver, "plan_search", lambda cfg, overrides: _plan(tmp_path, table))
    monkeypatch.setattr(driver, "run_search", lambda p: Search(p, runner=runs, dev_scorer=lambda d: dict(dev or {}),
                                                                 clock=runs.clock).run())
    try:
        driver.main(None, [], lambda *a: None)
        code = 0
    except SystemExit as e:
        code = int(e.code)
    return code, read_json(tmp_path / "search" / SEARCH_FILE)


def _choice(tmp_path: Path) -> dict:
    return read_json(tmp_path / "search" / "best" / "choice.json")


def test_a_one_class_candidate_that_would_win_is_excluded_and_the_next_is_chosen(monkeypatch, tmp_path, capsys):
    code, data = _main(monkeypatch, tmp_path, {"int8": CONSTANT, "obert_int8": GOOD, "ziplm": OVER})
    assert code == 0 and data["met"] and data["chosen"]["name"] == "obert_int8" and data["one_class"] is None
    assert _choice(tmp_path)["name"] == "obert_int8" and "one_class" not in _choice(tmp_path)
    assert (tmp_path / "search" / "best" / "model.onnx").read_bytes() == b"obert_int8"
    assert "int8" not in [o["name"] for o in data["front"]]  # the fastest, yet no trade-off: it predicts nothing
    why = {e["name"]: e["reason"] for e in data["excluded"]}
    assert set(why) == {"int8", "ziplm"}  # listed with the over-budget one, each with its reason
    assert why["int8"].startswith("predicts one class on validation: the deployed model predicts the same class")
    assert why["ziplm"].startswith("validation drop 3.00 pt > 1.50 pt")
    assert "1 candidate(s) excluded for predicting one class on validation: int8" in data["message"]
    assert "best model:" in capsys.readouterr().out


def test_one_class_within_budget_and_the_rest_over_returns_the_closest_that_is_not_constant(monkeypatch, tmp_path):
    code, data = _main(monkeypatch, tmp_path, {"int8": CONSTANT, "ziplm": OVER})
    assert code == driver.EXIT_NOT_MET == 4 and not data["met"] and data["chosen"]["name"] == "ziplm"
    assert data["message"].startswith("NO candidate met the drop budget: every validation drop exceeds 1.50 pt "
                                      "(max_drop 2.0 - margin 0.5) or the model predicts one class; returning the "
                                      "closest, ziplm, at 3.00 pt")


def test_every_candidate_one_class_returns_the_closest_said_plainly_exit_6(monkeypatch, tmp_path, capsys):
    # obert_int8 predicts the minority class everywhere (10%): faster, 81 pt off; int8, at 1.0 pt, is the closest
    table = {"int8": CONSTANT, "obert_int8": manifest(0.10, 1, 4.0)}
    code, data = _main(monkeypatch, tmp_path, table)
    assert code == driver.EXIT_ONE_CLASS == 6 and not data["met"] and data["chosen"]["name"] == "int8"
    assert data["one_class"] and _choice(tmp_path)["one_class"] == data["one_class"] and not _choice(tmp_path)["met"]
    assert data["message"].startswith(f"THE CHOSEN MODEL PREDICTS ONE CLASS ({data['one_class']})")
    assert "NO candidate met the drop budget: every finished candidate predicts one class on validation (int8, " \
           "obert_int8); returning the closest, int8, at 1.00 pt" in data["message"]
    assert {e["name"] for e in data["excluded"]} == {"int8", "obert_int8"} and data["front"] == []
    assert "closest model, predicting one class for every validation example" in capsys.readouterr().out


def test_one_class_is_judged_on_validation_predictions_never_on_dev(monkeypatch, tmp_path):
    # dev says the chosen model predicts one class: reported (its dev record), never selected on: the choice stands
    dev = {"dev_score": 0.9, "dev_drop_pt": 1.0, "predicted_classes": 1}
    code, data = _main(monkeypatch, tmp_path, {"obert_int8": GOOD}, dev=dev)
    assert code == 0 and data["met"] and data["chosen"]["name"] == "obert_int8" and data["excluded"] == []
    # one class on validation excludes, whatever dev would say (no dev score is taken before the choice)
    code, data = _main(monkeypatch, tmp_path / "v", {"int8": CONSTANT, "obert_int8": GOOD})
    assert data["chosen"]["name"] == "obert_int8"
    # a run scored on dev is not read at all: its one class (or its score) cannot reach the selection
    with pytest.raises(ValueError, match="not on the validation split"):
        read_run(manifest(0.90, 1, 3.0, split="dev"), None)


def test_a_teacher_at_chance_keeps_its_own_verdict_exit_5(monkeypatch, tmp_path):
    # the teacher itself is no better than chance (51% vs a 50% share on 1,000): the deployed model's one class is
    # not what to act on, so the candidate is not excluded and the weak-teacher verdict comes first, alone
    weak = manifest(0.50, 1, 3.0, teacher=0.51, share=0.5, n=1000)
    code, data = _main(monkeypatch, tmp_path, {"int8": weak})
    assert code == driver.EXIT_WEAK_TEACHER == 5 and data["met"] and data["weak_teacher"]
    assert data["message"].startswith("TEACHER NO BETTER THAN CHANCE") and "ONE CLASS" not in data["message"]
    assert data["excluded"] == []
