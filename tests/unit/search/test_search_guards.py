"""The search's guards (no model runs): a candidate's config error says how to set a pass setting in a
search, a damaged ``search.json`` is named before any candidate runs, and a second process on the same
search is refused while the first holds its directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from compresslab.dirlock import DirectoryBusyError, exclusive
from compresslab.search.driver import SEARCH_FILE, Search
from compresslab.search.objective import SearchSettings
from compresslab.search.plan import SearchPlan, candidate_error
from compresslab.search.space import Candidate, parse_space
from compresslab.validate import SettingsError

SPACE = {"int8": {"pipeline": "int8", "methods": ["int8"], "cost": 1}}


def _plan(tmp_path: Path) -> SearchPlan:
    return SearchPlan(SearchSettings(unit_s=1.0), parse_space(SPACE, ["int8"]), [], tmp_path / "search")


def _never(c: Candidate):
    pytest.fail(f"ran {c.name}")


@pytest.mark.parametrize("msg, form", [
    ("pipeline.passes.ziplm.seq=128 exceeds the model's position table; set pipeline.passes.ziplm.seq<=72",
     "+search.passes.ziplm.seq=VALUE"),
    ("obert: set pipeline.passes.obert.grad_batch_size lower", "+search.passes.obert.grad_batch_size=VALUE"),
])
def test_a_candidate_error_names_the_search_way_to_set_a_pass(msg, form) -> None:
    c = Candidate("z[ziplm.speedup=1.5]", "ziplm", "ziplm_2x", ("pipeline.passes.ziplm.speedup=1.5",), ("ziplm",), 3.0)
    e = candidate_error(c, ValueError(msg))
    assert isinstance(e, SettingsError) and "search.space.ziplm" in str(e) and form in str(e)
    assert "+search.passes" not in str(candidate_error(c, ValueError("train split too small")))


@pytest.mark.parametrize("text", ["{\"candidates\": [", "[]", "{\"candidates\": [{\"no_name\": 1}]}"])
def test_a_damaged_search_record_is_named_before_any_candidate(tmp_path, text) -> None:
    plan = _plan(tmp_path)
    plan.search_dir.mkdir(parents=True)
    (plan.search_dir / SEARCH_FILE).write_text(text)
    with pytest.raises(SettingsError, match=r"search\.json cannot be read as a search record.*delete it"):
        Search(plan, runner=_never, dev_scorer=lambda d: {}).run()


def test_a_second_process_on_the_same_search_is_refused(tmp_path) -> None:
    plan = _plan(tmp_path)
    with exclusive(plan.search_dir, "a test holder"):
        with pytest.raises(DirectoryBusyError, match=r"the search is already running in .*search \(pid \d+"):
            Search(plan, runner=_never, dev_scorer=lambda d: {}).run()
    assert not (plan.search_dir / SEARCH_FILE).exists()  # the refused one wrote nothing


def test_cli_prints_a_busy_search_as_one_line(tmp_path, capsys) -> None:
    from compresslab import cli

    assert DirectoryBusyError in cli.bad_input_errors()
    with pytest.raises(SystemExit) as e:
        cli.fail(DirectoryBusyError("the search is already running in /x (pid 1: ...)"))
    assert e.value.code == cli.EXIT_BAD_INPUT and "already running" in capsys.readouterr().err
