"""How each session of a run ended (trial 47b, B7): after a Ctrl-C'd run and its rerun, the report's sessions table
said "created" and the steps done, but not that the first process was interrupted, nor where; the manifest's
``sessions`` had no end either. Every way a process stops working on a run (finished, stopped by run.stop_after,
interrupted by SIGINT or SIGTERM, failed) is now kept in its session record (``ended``) and shown in the table.
Tiny runs from ``_runs.py``."""

from __future__ import annotations

import pytest

from _runs import make_inputs, run_cfg
from compresslab.failure import Terminated
from compresslab.manifest import read_json
from compresslab.pipeline import run
from compresslab.report.provenance import sessions_table


def _raise(exc: BaseException):
    def boom(*a, **k):
        raise exc

    return boom


@pytest.mark.parametrize("exc, status, cause", [
    (KeyboardInterrupt(), "interrupted", "Interrupted by Ctrl-C (SIGINT) in step finetune"),
    (Terminated("stopped by signal 15 (SIGTERM)"), "interrupted", "Interrupted by SIGTERM"),
    (RuntimeError("disk full (simulated)"), "failed", "Error in step finetune: RuntimeError: disk full (simulated)")])
def test_a_stopped_session_records_how_and_where(tmp_path, monkeypatch, exc, status, cause):
    import compresslab.pipeline.steps as steps

    monkeypatch.setattr(steps, "run_torch_pass", _raise(exc))
    with pytest.raises(type(exc)):
        run(run_cfg(make_inputs(tmp_path / "in"), tmp_path / "out", f"run.dir={tmp_path / 'run'}"))
    m = read_json(tmp_path / "run" / "manifest.json")
    (s,) = m["sessions"]
    assert s["ended"]["status"] == status == m["status"] and "at" in s["ended"]
    assert s["ended"]["cause"].startswith(cause) and "in step finetune" in s["ended"]["cause"]
    assert m["error"]["summary"].startswith(s["ended"]["cause"] + ". ")  # the same words as the run's sentence


def _as_process(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """From now on the manifest sees this test as the ``n``-th process on the run (another start time, the same
    pid: a session is one per process, and a resume in the same process continues its session)."""
    import compresslab.manifest as manifest

    real = manifest.process_record()
    monkeypatch.setattr(manifest, "process_record", lambda: {**real, "pid_started": real["pid_started"] + n})


def test_interrupted_then_rerun_shows_each_end_in_the_sessions_table(tmp_path, monkeypatch):
    """The trial's case: Ctrl-C during eval (after every step), then the same command again, which finishes."""
    import compresslab.pipeline.evaluate as evaluate

    root, d = make_inputs(tmp_path / "in"), tmp_path / "run"
    _as_process(monkeypatch, 1)
    run(run_cfg(root, tmp_path / "out", f"run.dir={d}", "run.stop_after=0"))  # a session that stopped as asked
    real = evaluate.evaluate
    monkeypatch.setattr(evaluate, "evaluate", _raise(KeyboardInterrupt()))
    _as_process(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run(run_cfg(root, tmp_path / "out", f"run.dir={d}"))
    monkeypatch.setattr(evaluate, "evaluate", real)
    _as_process(monkeypatch, 3)
    run(run_cfg(root, tmp_path / "out", f"run.dir={d}"))
    m = read_json(d / "manifest.json")
    ended = [s.get("ended", {}) for s in m["sessions"]]
    assert [e.get("status") for e in ended] == ["stopped", "interrupted", "finished"] and m["status"] == "finished"
    assert ended[1]["cause"] == "Interrupted by Ctrl-C (SIGINT) during eval, after all steps had finished"
    assert "cause" not in ended[2]
    (table,) = sessions_table(m)
    assert table.headers[-1] == "ended" and len(table.rows) == 3
    assert [r[-1] for r in table.rows] == [f"stopped {ended[0]['at']}",
                                           f"interrupted {ended[1]['at']}: {ended[1]['cause']}",
                                           f"finished {ended[2]['at']}"]

def test_a_session_without_an_end_says_it_is_not_recorded():
    """A process killed outright (kill -9, out of memory) writes nothing, nor did sessions before this record."""
    m = {"sessions": [{"started": "1", "resumed": False, "ran": ["step finetune"]},
                      {"started": "2", "resumed": True, "ran": ["bench"], "ended": {"status": "finished", "at": "3"}}]}
    (table,) = sessions_table(m)
    assert table.rows[0][-1] == "not recorded (still running, killed outright, or an older manifest)"
    assert table.rows[1][-1] == "finished 3"


def _gone_pid() -> int:
    """The pid of a process that has ended (a reused pid is told apart by its start time, so still gone)."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_session_is_recorded_crashed_by_the_session_that_resumes(tmp_path, monkeypatch):
    """Trial 48, 4: after kill -9 and a rerun, the sessions table said "not recorded" for the killed process,
    though the resuming one saw its process gone. Now the resume ends that session as crashed, with what is
    known (when found, when it last wrote, the step it was in and the last one finished), in the manifest and the
    report; the killed process is fabricated (a manifest left running by a pid that is gone)."""
    from compresslab.manifest import atomic_write_json

    root, d = make_inputs(tmp_path / "in"), tmp_path / "run"
    _as_process(monkeypatch, 1)
    run(run_cfg(root, tmp_path / "out", f"run.dir={d}", "run.stop_after=1"))  # step 0 finished
    m = read_json(d / "manifest.json")
    dead = {**m["process"], "pid": _gone_pid(), "pid_started": 12345.0}
    m["sessions"][-1] = {**{k: v for k, v in m["sessions"][-1].items() if k != "ended"}, **dead}
    m["status"], m["process"] = "running", dead  # as kill -9 leaves it: still "running", nothing ended
    m["steps"].append({**m["steps"][0], "index": 1, "name": "int8", "status": "running", "dir": "steps/01_int8"})
    last_saved = m["updated"]
    atomic_write_json(d / "manifest.json", m)
    _as_process(monkeypatch, 2)
    run(run_cfg(root, tmp_path / "out", f"run.dir={d}"))
    m = read_json(d / "manifest.json")
    first, second = m["sessions"]
    e = first["ended"]
    assert e["status"] == "crashed" and e["last_saved"] == last_saved and e["found_at"] <= second["started"]
    assert e["cause"] == (f"process {dead['pid']} was gone (killed outright?) when the next session started, "
                          f"in step int8, after step {m['steps'][0]['name']} had finished")
    assert second["ended"]["status"] == "finished" == m["status"]
    (table,) = sessions_table(m)
    assert table.rows[0][-1].startswith(f"crashed (found {e['found_at']}, last wrote the manifest {last_saved}): "
                                        f"process {dead['pid']} was gone")
    assert "not recorded" not in table.rows[0][-1]
    from compresslab.report.compare import _runs_table, point  # --compare says the run was resumed after a crash

    p = point(d, m)
    assert p.status == "finished" and p.crashed_sessions == 1
    assert _runs_table([p]).rows[0][0].endswith(" (resumed after 1 crashed session)")


def test_a_killed_run_not_yet_resumed_reads_crashed_in_compare(tmp_path):
    """--compare read the raw status: a run killed outright stayed "running" there, while its report said crashed."""
    import json
    import platform
    from pathlib import Path

    from compresslab.report.compare import _runs_table, point

    fixture = Path(__file__).resolve().parents[1] / "unit" / "report" / "runs" / "int8_smoke.json"
    m = json.loads(fixture.read_text())
    m["status"], m["process"] = "running", {"pid": _gone_pid(), "host": platform.node(), "pid_started": 1.0}
    p = point(tmp_path / "int8" / "abc", m)
    assert p.status == "crashed" and _runs_table([p]).rows[0][0].endswith("(crashed)")


def test_a_live_or_unknown_process_is_never_called_crashed(tmp_path):
    """Only a process known gone is: one still running (here, this test's), or on another host, is left as is."""
    import platform

    from compresslab.manifest import RunManifest, process_record

    for proc in ({**process_record(), "pid_started": process_record()["pid_started"]},
                 {"pid": _gone_pid(), "host": platform.node() + "-elsewhere", "pid_started": 1.0}):
        m = RunManifest(tmp_path / "manifest.json", {"status": "running", "process": proc,
                                                      "sessions": [{"started": "1", **proc, "ran": []}]})
        assert m.end_gone_session() is None and "ended" not in m.data["sessions"][0]
