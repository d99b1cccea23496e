"""The accuracy-aware search's rules on fake candidate results (no model runs): selection on
validation within max_drop less the margin, the closest when nothing meets, resume, failed
candidates, the time budget, stop-on-miss, seeding, and what search.json records. Bad input is in
``test_search_bad_input.py``; ``compresslab.search.run`` and the CLI's exit status in ``test_search_entry.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compresslab.manifest import read_json
from compresslab.search.driver import SEARCH_FILE, Search, estimate_s
from compresslab.search.plan import SearchPlan
from compresslab.search.objective import Outcome, SearchSettings, pareto_front, select
from compresslab.search.space import Candidate, expand, parse_space
from compresslab.validate import SettingsError

PIPELINES = ["int8", "hawq_int8", "ziplm_2x", "hawq_w4", "obert_int8", "ziplm_int8"]
TEACHER = 0.90


def _o(name: str, drop_pt: float, speedup: float, size: int = 1000, single: bool = True, **kw: Any) -> Outcome:
    return Outcome(name=name, entry=name, pipeline="int8", overrides=[], methods=["m"] if single else ["a", "b"],
                   status="ok", val_score=TEACHER - drop_pt / 100, teacher_val=TEACHER, drop_pt=drop_pt,
                   speedup=speedup, size_bytes=size, **kw)


# ---------------------------------------------------------------------------------------------- selection


def test_selection_picks_fastest_within_max_drop_less_margin():
    s = SearchSettings(max_drop=1.0, margin=0.5)
    outs = [_o("slow_ok", 0.2, 1.5), _o("fast_ok", 0.5, 2.0), _o("in_margin", 0.8, 3.0), _o("lossy", 2.0, 5.0)]
    sel = select(outs, s)
    # lossy is fastest but 2 pt down; in_margin is within max_drop on validation but not within max_drop - margin
    assert sel.chosen.name == "fast_ok" and sel.met
    assert select(outs, SearchSettings(max_drop=1.0, margin=0.0)).chosen.name == "in_margin"


def test_selection_by_size_picks_smallest_and_dev_is_never_read():
    s = SearchSettings(objective="size", max_drop=1.0, margin=0.5)
    outs = [_o("big", 0.1, 3.0, size=4000, dev={"dev_score": 0.99}), _o("small", 0.3, 1.0, size=1000),
            _o("tiny_lossy", 1.5, 1.0, size=10)]
    assert select(outs, s).chosen.name == "small"


def test_margin_boundary():
    s = SearchSettings(max_drop=1.0, margin=0.5)
    assert select([_o("at", 0.5, 2.0), _o("past", 0.51, 9.0)], s).chosen.name == "at"
    with pytest.raises(SettingsError, match="margin"):
        SearchSettings(max_drop=1.0, margin=1.0)


def test_nothing_meets_returns_closest_with_flag():
    s = SearchSettings(max_drop=1.0, margin=0.5)
    sel = select([_o("far", 3.0, 4.0), _o("closest", 0.9, 1.2), _o("mid", 1.5, 2.0)], s)
    assert sel.chosen.name == "closest" and not sel.met
    assert "NO candidate met" in sel.message and "closest" in sel.message


def test_best_single_and_pareto_front():
    s = SearchSettings(max_drop=1.0, margin=0.5)
    outs = [_o("int8", 0.1, 1.5), _o("zip", 0.4, 2.0), _o("combo", 0.3, 2.5, single=False),
            _o("dominated", 0.45, 1.4)]
    sel = select(outs, s)
    assert sel.chosen.name == "combo" and sel.best_single.name == "zip"
    assert [o.name for o in pareto_front(outs, s.objective)] == ["combo", "int8"]


# ---------------------------------------------------------------------------------------------- driver


class Fake:
    """A runner: each candidate takes ``unit_s`` x its cost on a fake clock and gives the figures of
    ``table[name]`` (drop in points, speedup), or raises them when they are an exception."""

    def __init__(self, table: dict[str, Any], unit_s: float = 10.0, teacher_s: float = 0.0) -> None:
        self.table, self.unit_s, self.teacher_s = table, unit_s, teacher_s
        self.t = 0.0
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.t

    def __call__(self, c: Candidate) -> Outcome:
        self.calls.append(c.name)
        took = c.cost * self.unit_s + (self.teacher_s if len(self.calls) == 1 else 0.0)
        self.t += took
        got = self.table[c.name]
        if isinstance(got, BaseException):
            raise got
        drop, speed = got
        return Outcome(name=c.name, entry=c.entry, pipeline=c.pipeline, overrides=list(c.overrides),
                       methods=list(c.methods), status="ok", val_score=TEACHER - drop / 100, teacher_val=TEACHER,
                       drop_pt=drop, speedup=speed, size_bytes=100, ran_s=took,
                       teacher_s=self.teacher_s if len(self.calls) == 1 else 0.0, extra={"cost": c.cost})


SPACE = {
    "int8": {"pipeline": "int8", "methods": ["int8"], "cost": 1},
    "guided": {"pipeline": "hawq_int8", "methods": ["guided_int8"], "cost": 2},
    "ziplm": {"pipeline": "ziplm_2x", "methods": ["ziplm"], "cost": 3, "key": "pipeline.passes.ziplm.speedup",
              "values": [1.5, 2.0, 3.0]},
    "ziplm_int8": {"pipeline": "ziplm_int8", "methods": ["ziplm", "int8"], "cost": 3,
                   "seeds": [{"key": "pipeline.passes.ziplm.speedup", "from": "ziplm"}]},
}
Z = "ziplm[ziplm.speedup={}]"
ZI = "ziplm_int8[ziplm.speedup={}]"
GOOD = {"int8": (0.2, 1.5), "guided": (0.1, 1.4), Z.format(1.5): (0.3, 1.5), Z.format(2.0): (0.4, 2.0),
        Z.format(3.0): (1.2, 3.0), ZI.format(2.0): (0.45, 2.8), ZI.format(1.5): (0.4, 2.2)}


def _plan(tmp_path: Path, space: dict = SPACE, **settings: Any) -> SearchPlan:
    settings.setdefault("unit_s", 10.0)
    return SearchPlan(SearchSettings(**settings), parse_space(space, PIPELINES), [], tmp_path / "search")


def _search(plan: SearchPlan, fake: Fake) -> dict:
    return Search(plan, runner=fake, dev_scorer=lambda run_dir: {}, clock=fake.clock).run()


def test_driver_order_stop_on_miss_and_seeding(tmp_path):
    fake = Fake(GOOD)
    data = _search(_plan(tmp_path), fake)
    # ziplm 3.0 misses (1.2 > max_drop 1.0): ziplm_int8 is seeded with the passing targets, best speedup first
    assert fake.calls == ["int8", "guided", Z.format(1.5), Z.format(2.0), Z.format(3.0), ZI.format(2.0),
                          ZI.format(1.5)]
    assert data["status"] == "finished" and data["met"]
    assert data["chosen"]["name"] == ZI.format(2.0) and data["best_single"]["name"] == Z.format(2.0)
    saved = read_json(tmp_path / "search" / SEARCH_FILE)
    assert saved["chosen"]["name"] == ZI.format(2.0) and len(saved["candidates"]) == 7


def test_stop_on_miss_skips_harsher_values(tmp_path):
    table = {**GOOD, Z.format(1.5): (1.3, 1.5)}  # the mildest target already loses more than max_drop
    fake = Fake(table)
    data = _search(_plan(tmp_path), fake)
    assert Z.format(2.0) not in fake.calls and Z.format(3.0) not in fake.calls
    skipped = {c["name"]: c["reason"] for c in data["candidates"] if c["status"] == "skipped"}
    assert "already lost more than max_drop (1 pt)" in skipped[Z.format(2.0)]
    assert "no candidate of 'ziplm' came within max_drop" in skipped["ziplm_int8"]  # nothing to seed with


def test_a_noise_level_miss_is_not_chosen_but_does_not_stop_the_sweep(tmp_path):
    """A drop between max_drop - margin (0.5) and max_drop (1.0) is not selectable, but on ~1,000 validation
    examples it is within noise: the harsher values still run and compositions may be seeded with it."""
    table = {**GOOD, Z.format(1.5): (0.8, 1.5), Z.format(2.0): (0.95, 2.0)}
    fake = Fake(table)
    data = _search(_plan(tmp_path), fake)
    assert fake.calls == ["int8", "guided", Z.format(1.5), Z.format(2.0), Z.format(3.0), ZI.format(2.0),
                          ZI.format(1.5)]
    assert data["chosen"]["name"] == ZI.format(2.0)  # 0.45 pt: selectable
    # neither single ZipLM is selectable (0.8 and 0.95 > 0.5): the best single is int8 (0.2 pt, 1.5x; guided 1.4x)
    assert data["best_single"]["name"] == "int8"
    front_or_chosen = {data["chosen"]["name"], *(f["name"] for f in data["front"])}
    assert not front_or_chosen & {Z.format(1.5), Z.format(2.0)}


def test_nothing_meets_through_the_driver(tmp_path):
    table = {"int8": (2.0, 1.5), "guided": (1.2, 1.4), Z.format(1.5): (3.0, 1.5)}
    data = _search(_plan(tmp_path), Fake(table))
    assert not data["met"] and data["chosen"]["name"] == "guided"
    assert "NO candidate met" in data["message"]


def test_failed_candidate_recorded_and_search_goes_on(tmp_path):
    table = {**GOOD, "guided": RuntimeError("guided int8 exploded")}
    fake = Fake(table)
    data = _search(_plan(tmp_path), fake)
    failed = [c for c in data["candidates"] if c["status"] == "failed"]
    assert [c["name"] for c in failed] == ["guided"] and "RuntimeError: guided int8 exploded" in failed[0]["error"]
    assert fake.calls[-1] == ZI.format(1.5) and data["chosen"]["name"] == ZI.format(2.0)
    # resumed: the failure is not retried unless asked
    again = Fake(table)
    _search(_plan(tmp_path), again)
    assert again.calls == []
    retry = Fake(GOOD)
    _search(_plan(tmp_path, retry_failed=True), retry)
    assert retry.calls == ["guided"]


def test_resume_skips_finished_candidates(tmp_path):
    table = {**GOOD, Z.format(1.5): KeyboardInterrupt()}
    first = Fake(table)
    with pytest.raises(KeyboardInterrupt):
        _search(_plan(tmp_path), first)
    saved = read_json(tmp_path / "search" / SEARCH_FILE)
    assert saved["status"] == "interrupted" and [c["name"] for c in saved["candidates"]] == ["int8", "guided"]
    second = Fake(GOOD)
    data = _search(_plan(tmp_path), second)
    assert second.calls[0] == Z.format(1.5) and "int8" not in second.calls and "guided" not in second.calls
    assert data["status"] == "finished" and data["chosen"]["name"] == ZI.format(2.0)
    assert data["spent_s"] == pytest.approx(first.t + second.t)  # the interrupted invocation's time counts


def test_time_budget_stops_launching(tmp_path):
    # int8 (cost 1) takes 100 s; the estimate learns 100 s per unit (the prior said 10), so guided (cost 2,
    # 200 s) does not fit in the 150 s left and is not started; nothing later fits either
    fake = Fake(GOOD, unit_s=100.0)
    data = _search(_plan(tmp_path, time_budget_s=250.0), fake)
    assert fake.calls == ["int8"]
    assert data["status"] == "budget_spent" and "time budget" in data["message"]
    reasons = {c["name"]: c["reason"] for c in data["candidates"] if c["status"] == "skipped"}
    assert reasons["guided"].startswith("time budget: estimated 200 s, 150 s left")
    assert data["chosen"]["name"] == "int8"


def test_estimate_leaves_out_the_teacher():
    c = Candidate("x", "x", "int8", (), ("int8",), 2.0)
    ran = [Outcome(name="a", entry="a", pipeline="int8", overrides=[], methods=["int8"], status="ok", ran_s=1100.0,
                   teacher_s=1000.0, extra={"cost": 1.0})]
    assert estimate_s(c, ran, 5.0) == pytest.approx(200.0)
    assert estimate_s(c, [], 5.0) == pytest.approx(10.0)


def test_budget_first_candidate_by_prior(tmp_path):
    fake = Fake(GOOD)
    data = _search(_plan(tmp_path, time_budget_s=5.0, unit_s=10.0), fake)  # int8's prior estimate: 10 s > 5 s
    assert fake.calls == [] and data["chosen"] is None and data["status"] == "budget_spent"


def test_expand_seeds_best_first_and_limited():
    e = parse_space(SPACE, PIPELINES)[3]
    mk = lambda v: Candidate(Z.format(v), "ziplm", "ziplm_2x", (f"pipeline.passes.ziplm.speedup={v}",), ("ziplm",), 3)
    cands, why = expand(e, {"ziplm": [mk(2.0), mk(1.5), mk(1.2)]}, per_seed=2)
    assert why is None and [c.name for c in cands] == [ZI.format(2.0), ZI.format(1.5)]


def test_read_run_names_the_shape_of_the_speedup_and_whether_its_timing_was_busy():
    """A trial's search.json gave speedup_vs_best_dense 0.8957 with objective_shape null (the value was b4xs32; the
    same run gave 2.03x at b1xs32), and no word of the MACHINE BUSY both candidate runs logged."""
    from compresslab.search.objective import read_run

    m = {"eval": {"split": "validation", "models": {"deployed": {"score": 0.8}, "teacher_torch": {"score": 0.81}}},
         "bench": {"speedups_best_dense": {"deployed": {"b1xs32": 2.03, "b4xs32": 0.8957}},
                   "machine_load": {"busy": True, "reasons": ["other processes used 1.8 CPU s per s"]}},
         "size": {"deployed": {"total": 10}}}
    got = read_run(m, None)
    assert (got["speedup"], got["speedup_shape"], got["timing_busy"]) == (0.8957, "b4xs32", True)
    got = read_run(m, (1, 32))
    assert (got["speedup"], got["speedup_shape"]) == (2.03, "b1xs32")
    quiet = read_run({**m, "bench": {**m["bench"], "machine_load": {"busy": False}}}, None)
    assert quiet["timing_busy"] is False
    none = read_run({k: v for k, v in m.items() if k != "bench"}, None)
    assert (none["speedup"], none["speedup_shape"], none["timing_busy"]) == (None, None, None)


def test_search_json_records_the_objective_shape_the_busy_timings_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSLAB_DATA", "/data/glue root")
    fake = Fake(GOOD)

    def runner(c: Candidate) -> Outcome:
        o = fake(c)
        o.speedup_shape, o.timing_busy = "b4xs32", c.name == ZI.format(2.0)
        return o

    plan = _plan(tmp_path)
    plan.command = ["+search=auto", "debug=smoke"]
    data = Search(plan, runner=runner, dev_scorer=lambda run_dir: {}, clock=fake.clock).run()
    saved = read_json(tmp_path / "search" / SEARCH_FILE)
    assert saved == data
    assert data["objective_shape"] == "b4xs32" and "largest batch" in data["objective_shape_from"]
    assert data["chosen"]["speedup_shape"] == "b4xs32" and data["chosen"]["timing_busy"] is True
    assert data["timing_busy"] == [ZI.format(2.0)] and "MACHINE BUSY" in data["message"]
    assert {c["name"]: c["timing_busy"] for c in data["candidates"] if c["status"] == "ok"}["int8"] is False
    # the command that resumes the search sets what its configs read from the environment
    assert data["environment"] == {"COMPRESSLAB_DATA": "/data/glue root"}
    assert data["shell_command"] == "COMPRESSLAB_DATA='/data/glue root' python -m compresslab +search=auto debug=smoke"
    fixed = _plan(tmp_path / "fixed", latency_shape=[1, 32])
    data = Search(fixed, runner=runner, dev_scorer=lambda run_dir: {}, clock=fake.clock).run()
    assert (data["objective_shape"], data["objective_shape_from"]) == ("b1xs32", "search.latency_shape")
