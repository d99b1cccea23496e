"""``benchmarks/search.py`` (issue 14's search_<task>.json), with the search itself faked: its candidates
train on the suite's budgets (read from benchmarks/suite.yaml, not a second copy), a --results path is the
caller's (relative to where the command ran), and a bad setting is one line and exit 2."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
script = importlib.import_module("benchmarks.search")
suite_plan = importlib.import_module("benchmarks.suite_plan")


def test_budgets_are_the_suites() -> None:
    cfg = suite_plan.load_config(suite_plan.CONFIG)
    got = script.budgets()
    assert set(got) == set(cfg["budgets"])
    for name in cfg["budgets"]:  # what every suite pipeline gets, less the task's own overrides
        task_over = cfg["tasks"]["sst2"]["overrides"]
        want = [o for o in suite_plan.plan(cfg, "sst2", name, None).overrides
                if o not in task_over and not o.startswith("run.threads=")]
        if not cfg["budgets"][name].get("teacher"):  # the suite names the task's teacher preset then
            want = [o for o in want if not o.startswith("budget.teacher=")]
        assert got[name] == want, name


def test_results_path_is_relative_to_the_callers_directory(tmp_path, monkeypatch) -> None:
    from compresslab.search import driver

    seen = {}

    def fake(overrides, **settings):
        seen["overrides"], seen["settings"] = list(overrides), settings
        return {"status": "finished", "message": "chose nothing", "candidates": []}

    monkeypatch.setattr(driver, "search", fake)
    monkeypatch.chdir(tmp_path)
    script.main(["--task", "sst2", "--budget", "smoke", "--results", "mine.json", "--budget-s", "5"])
    assert (tmp_path / "mine.json").is_file() and not (REPO / "mine.json").exists()
    assert seen["overrides"][:1] == ["task=sst2"] and "debug=smoke" in seen["overrides"]
    assert seen["settings"]["time_budget_s"] == 5.0


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys) -> None:
    from compresslab.search import driver
    from compresslab.validate import SettingsError

    def fake(overrides, **settings):
        raise SettingsError("search.max_drop must be a finite number > 0, got -1.0")

    monkeypatch.setattr(driver, "search", fake)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        script.main(["--max-drop", "-1", "--results", "x.json"])
    assert e.value.code == 2 and "search: error: search.max_drop" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
