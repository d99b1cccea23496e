"""Where a suite results file's speed figures come from, told plainly (trial 44), on fake cells (no model, no
training, a fake timing phase that opens the phase's real timing window):

* every timing status renders as a clean sentence in REPORT.md: timed (when, git sha); skipped by --no-timing;
  refused because the machine was busy (with the check's reasons); timings kept from an earlier phase (when,
  git sha) for every scored cell, for some (naming the others), or for none. ``--no-timing`` once read "Not
  timed in this run (skipped (--no-timing): )";
* a build's own speed checks (ZipLM's latency table while it trains: a timing window closed while the cells were
  BUILT) are filed as the builds', never as the timing phase's: a busy one neither voids the verdicts nor reads
  as a void timing in the report, which says which windows are the phase's and which the builds'.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from compresslab.testing import FakeCpu, tiny_task

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
suite = importlib.import_module("benchmarks.suite")
suite_plan = importlib.import_module("benchmarks.suite_plan")
suite_timing = importlib.import_module("benchmarks.suite_timing")
phase = importlib.import_module("benchmarks.suite_phase")
peers = importlib.import_module("benchmarks.peers")
R = importlib.import_module("benchmarks.suite_report")

TASK = "tiny"
GARBLED = re.compile(r"\(\s*\)|:\s*\)|\(\s*:|\.\.|\s[.,;:]")  # "()", ": )", "(:", "..", " ." and the like


# ----------------------------------------------------------------------------------------------- rendering
def _para(timing: dict[str, Any], systems: dict[str, Any] | None = None, **meta: Any) -> Any:
    sysd = systems if systems is not None else {"a": {"score": 0.9}, "b": {"score": 0.8}}
    return R.timing_para(TASK, {"timing": timing, **meta}, sysd)


PHASE = {"status": "timed", "at": "2026-12-06T22:58:52Z", "git_sha": "8c26f07abcdef1234", "windows": ["w1"]}


@pytest.mark.parametrize("timing, sysd, want, kind", [
    (PHASE | {"timed": ["a", "b"]}, None,
     "Timed in this run (2026-12-06T22:58:52Z, git 8c26f07abcde): 2 cells in one timing phase.", "text"),
    ({"status": "skipped", "reason": "--no-timing", "kept_from_earlier_run": []}, None,
     "Not timed in this run: --no-timing was given. No speed figures: no cell has a timing from an earlier phase "
     "(a timed run on a quiet machine measures them).", "warn"),
    ({"status": "skipped (--no-timing)", "kept_from_earlier_run": []}, None,  # files before 2026-12-07
     "Not timed in this run: --no-timing was given. No speed figures", "warn"),
    ({"status": "refused", "reason": "suite tiny: timing: not timing, the machine is not quiet: other processes used "
                                     "1.00 CPU s per s (threshold 0.2)"}, None,
     "Not timed in this run: the machine was busy, so the timing phase was refused. The check said: suite tiny: "
     "timing: not timing, the machine is not quiet: other processes used 1.00 CPU s per s (threshold 0.2). No speed",
     "warn"),
    ({"status": "skipped", "reason": "--no-timing", "kept_from_earlier_run": ["a", "b"], "earlier_phase": PHASE}, None,
     "Not timed in this run: --no-timing was given. Every speed figure is kept from the earlier timing phase "
     "(2026-12-06T22:58:52Z, git 8c26f07abcde), whose deployed files are unchanged: a, b.", "warn"),
    ({"status": "refused", "reason": "busy", "kept_from_earlier_run": ["a"], "earlier_phase": PHASE},
     {"a": {"score": 0.9}, "b": {"score": 0.8}, "broken": {"score": None}},
     "The check said: busy. Partly kept: the speed figures of 1 of 2 scored cells come from the earlier timing phase "
     "(2026-12-06T22:58:52Z, git 8c26f07abcde), whose deployed files are unchanged: a. Not timed: b (new or rebuilt "
     "since).", "warn"),
    ({"status": "skipped", "reason": "--no-timing", "kept_from_earlier_run": ["a", "b"],
      "earlier_phase": {"status": "timed"}}, None,  # an earlier phase that recorded neither
     "kept from the earlier timing phase (time not recorded, git sha not recorded)", "warn"),
    ({"status": "odd"}, None, "Not timed in this run (timing status 'odd'). No speed figures", "warn"),
    ({}, None, "Not timed in this run (timing status 'not recorded'). No speed figures", "warn"),
])
def test_every_timing_status_renders_as_a_clean_sentence(timing, sysd, want, kind) -> None:
    p = _para(timing, sysd)
    assert want in p.text and p.kind == kind
    assert not GARBLED.search(p.text), p.text
    assert p.text.endswith(".")


def test_a_file_that_did_not_record_its_phase_takes_the_time_from_the_phase_window_and_the_sha_from_itself() -> None:
    window = {"id": "x", "what": phase.phase_what(TASK), "busy": False, "closed_at": "2026-12-05T03:08:25Z"}
    load = {"timings": [window]}
    timed = _para({"status": "timed", "timed": ["a"]}, git_sha="05bb26f82d41ffff", machine_load=load)
    assert timed.text == "Timed in this run (2026-12-05T03:08:25Z, git 05bb26f82d41): 1 cell in one timing phase."
    kept = _para({"status": "skipped (--no-timing)", "kept_from_earlier_run": ["a", "b"],
                  "earlier_phase": {"status": "timed"}}, git_sha="of-the-rewrite", machine_load=load)
    assert "earlier timing phase (2026-12-05T03:08:25Z, git sha not recorded)" in kept.text  # not the rewrite's sha


def test_a_file_written_before_the_split_reads_its_build_window_as_a_builds() -> None:
    """The trial's file: --no-timing kept the earlier phase's figures, and the ZipLM build's busy latency table sat
    beside the phase window in ``timings``; it read as "Timed on a busy machine, speed figures void"."""
    phase_window = {"id": "p", "what": phase.phase_what(TASK), "busy": False, "other_cpu_before": 0.0,
                    "max_other_cpu_during": 0.008, "closed_at": "2026-12-06T22:58:52Z"}
    build = {"id": "b", "what": "latency", "busy": True, "reasons": ["other processes used 1.00 CPU s per s"]}
    meta = {"timing": {"status": "skipped (--no-timing)", "kept_from_earlier_run": ["a", "b"],
                       "earlier_phase": {"status": "timed", "timed": ["a", "b"]}},
            "machine_load": {"timings": [phase_window, build], "runs": {}}}
    assert phase.busy_reasons(meta, TASK) == []  # what the suite voids the verdicts by
    text = " ".join(str(getattr(b, "text", "")) + " ".join(getattr(b, "items", []) or [])
                    for b in R.load_blocks(TASK, meta))
    assert "speed figures void" not in text
    assert (f"timing phase (the earlier one the kept figures come from): {phase.phase_what(TASK)}: quiet (other "
            "processes 0.0 CPU s per s before, at most 0.008 during)") in text
    assert "not the timing phase's, void of no figure here" in text and "latency: BUSY (other processes" in text
    meta["machine_load"]["timings"] = [phase_window | {"busy": True, "reasons": ["x"]}, build]
    assert phase.busy_reasons(meta, TASK) == [f"{phase.phase_what(TASK)}: x"]  # the phase's own busy window voids


# ----------------------------------------------------------------------------------------------- one task, faked
class Peer:
    """A peer whose build is free (a small file, scored by the fake scorer). ``check``: the other processes' CPU
    use of a timing window its build opens, as ZipLM's latency table does while it trains (None: no window)."""

    tool = "a fake tool"

    def __init__(self, name: str, check: float | None = None) -> None:
        self.name, self.check = name, check

    def settings(self) -> dict[str, Any]:
        return {"v": 1}

    def build(self, inputs: Any) -> Any:
        from benchmarks.artifacts import Artifact
        from compresslab.bench.machine_load import timing_window

        if self.check is not None:
            with timing_window(f"{self.name}: a build's latency table", reader=FakeCpu(other=self.check), probe_s=0.0):
                pass
        f = inputs.work_dir / "model.onnx"
        f.write_bytes(self.name.encode())
        return Artifact(f, "ort", "fp32")


@pytest.fixture
def task(tmp_path, monkeypatch):
    """A fake teacher (no model) on an SST-2-shaped task, a scorer that predicts the labels, a timing phase that
    opens the phase's real window (quiet or busy: ``state.phase_cpu``; ``state.refuse``: refused) and gives fixed
    figures, and fixed verdicts (what voiding them would change is then seen)."""
    from compresslab.bench.machine_load import timing_window
    from compresslab.runlock import MachineBusyError

    data = tiny_task()
    labels = np.array([e.label for e in data.dev])
    teacher = suite.Teacher(SimpleNamespace(task=data, tokenizer=None, max_length=16), "0" * 64, tmp_path / "t",
                            labels, 0.9, [])
    state = SimpleNamespace(phase_cpu=0.0, refuse=False)

    def time_cells(cells, teacher, p, *, quiet=None):
        if state.refuse:
            raise MachineBusyError("suite tiny: timing: not timing, the machine is not quiet: other processes used "
                                   "1.00 CPU s per s (threshold 0.2)")
        with timing_window(phase.phase_what(p.task), reader=FakeCpu(other=state.phase_cpu), probe_s=0.0):
            figures = {n: {"latency_ms_b1": 1.0, "latency_ms_b32": 10.0, "throughput_real": 5.0,
                           "timing": suite_timing.INTERLEAVED}
                       for n, c in cells.items() if c.get("status") == "finished"}
        return {"results": figures, "meta": {"timed": list(figures)}}

    monkeypatch.setattr(suite, "prepare_teacher", lambda p, work: teacher)
    monkeypatch.setattr(suite, "_score", lambda a, record, threads: SimpleNamespace(metrics={"score": 0.9},
                                                                                    predictions=labels))
    monkeypatch.setattr(suite_timing, "time_cells", time_cells)
    monkeypatch.setattr(suite, "_verdicts", lambda *a, **k: {"p": {"status": "peer wins", "beaten_by": [], "why": "w"}})
    for name, check in (("quiet_peer", None), ("built_busy", 1.0)):
        monkeypatch.setitem(peers.PEERS, name, Peer(name, check))

    def run(cells: tuple[str, ...], timing: bool, overrides: tuple[str, ...] = ()) -> tuple[int, dict[str, Any], str]:
        p = suite_plan.TaskPlan(TASK, "smoke", overrides, (), cells, 1, 4, {}, None, None, False,
                                config_peers=("quiet_peer", "built_busy"))
        code = suite.run_task(p, work=tmp_path / "work", results_dir=tmp_path / "res", timing=timing)
        md = R.write_report(tmp_path / "res", tmp_path / "REPORT.md")["md"].read_text()
        return code, json.loads((tmp_path / "res" / f"suite_{TASK}.json").read_text()), md

    return SimpleNamespace(run=run, state=state)


def _load(data: dict[str, Any]) -> dict[str, Any]:
    return data["meta"]["machine_load"]


def test_a_busy_build_window_is_the_builds_not_a_void_timing(task) -> None:
    """The trial: --no-timing after a cell whose build timed on a busy machine read "Timed on a busy machine, speed
    figures void" and every verdict undecided. Now the window is the builds', the kept phase's stay the timings."""
    code, first, _ = task.run(("quiet_peer",), timing=True)  # the phase: quiet
    (window,) = _load(first)["timings"]
    assert code == 0 and window["what"] == phase.phase_what(TASK) and not window["busy"]
    assert first["meta"]["timing"]["windows"] == [window["id"]] and first["meta"]["timing"]["git_sha"]
    code, data, md = task.run(("built_busy",), timing=False)  # builds the other cell, its own check busy
    load = _load(data)
    assert code == 0 and [t["id"] for t in load["timings"]] == [window["id"]]  # the kept phase's, no build window
    builds = load["runs"][phase.BUILDS]
    assert builds["busy"] and "built_busy: a build's latency table" in " ".join(builds["reasons"])
    assert data["verdicts"]["p"]["status"] == "peer wins"  # not voided by a build
    assert "speed figures void" not in md
    assert f"timing phase (the earlier one the kept figures come from): {phase.phase_what(TASK)}: quiet" in md
    assert "the cell builds' own speed checks (a ZipLM latency table while it trained, ...): BUSY" in md
    assert "no speed figure above comes from it" in md
    t = data["meta"]["timing"]
    assert t["status"] == "skipped" and t["kept_from_earlier_run"] == ["quiet_peer"]
    assert t["earlier_phase"]["windows"] == [window["id"]] and t["earlier_phase"]["at"] == first["meta"]["timing"]["at"]
    assert "Partly kept: the speed figures of 1 of 2 scored cells" in md and "Not timed: built_busy (new" in md
    # timed afterwards (quiet): the busy build stays the builds', the verdicts stand
    code, timed, md = task.run(("quiet_peer", "built_busy"), timing=True)
    assert code == 0 and timed["verdicts"]["p"]["status"] == "peer wins" and "speed figures void" not in md
    assert [t["what"] for t in _load(timed)["timings"]] == [phase.phase_what(TASK)]


def test_a_busy_timing_phase_voids_the_verdicts_also_when_its_figures_are_kept(task) -> None:
    task.state.phase_cpu = 1.0
    code, data, md = task.run(("quiet_peer",), timing=True)
    assert data["verdicts"]["p"]["status"] == "undecided" and "Timed on a busy machine, speed figures void" in md
    assert f"timing phase (this run's): {phase.phase_what(TASK)}: BUSY" in md
    code, kept, md = task.run(("quiet_peer",), timing=False)
    assert kept["verdicts"]["p"]["status"] == "undecided" and "speed figures void" in md  # the kept figures' phase


def test_a_refused_phase_keeps_the_earlier_phase_and_says_why(task) -> None:
    task.run(("quiet_peer",), timing=True)
    task.state.refuse = True
    code, data, md = task.run(("quiet_peer",), timing=True)
    assert code == suite.EXIT_TIMING_REFUSED and data["meta"]["timing"]["status"] == "refused"
    assert ("Not timed in this run: the machine was busy, so the timing phase was refused. The check said: suite "
            "tiny: timing: not timing, the machine is not quiet") in md
    assert "Every speed figure is kept from the earlier timing phase (20" in md
    assert len(_load(data)["timings"]) == 1 and data["verdicts"]["p"]["status"] == "peer wins"


def test_no_kept_figures_leave_no_timing_window(task) -> None:
    """A busy phase's window voids its figures; once no cell keeps them (every cell built anew under other
    settings), it describes nothing in the file and leaves its timings: no void banner, no voided verdict."""
    task.state.phase_cpu = 1.0
    task.run(("quiet_peer",), timing=True)
    code, data, md = task.run(("quiet_peer",), timing=False, overrides=("budget.recovery_steps=1",))
    assert data["meta"]["timing"]["kept_from_earlier_run"] == [] and "earlier_phase" not in data["meta"]["timing"]
    assert _load(data)["timings"] == [] and data["verdicts"]["p"]["status"] == "peer wins"
    assert "speed figures void" not in md and "timing phase: none (no speed figures)" in md
    assert "No speed figures: no cell has a timing from an earlier phase" in md
