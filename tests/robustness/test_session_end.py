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
