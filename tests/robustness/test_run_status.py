"""Issue #12: what a run's manifest says when it did not finish.

A run that raises says ``failed`` with the error, Ctrl-C and SIGTERM say ``interrupted``, a run
killed outright (kill -9, out of memory) reads as ``crashed`` and resumes; the same command started
twice at once is refused while the first runs. Tiny runs from ``_runs.py``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from _runs import make_inputs, run_cfg, stopped_inputs, stopped_run
from compresslab.manifest import RunManifest, live_status, process_record, read_json
from compresslab.pipeline import run


@pytest.mark.parametrize("exc,status", [(RuntimeError("disk full (simulated)"), "failed"),
                                        (KeyboardInterrupt(), "interrupted")])
@pytest.mark.case(name="a step raises (or Ctrl-C) mid-run", kind=1, bad_input=False,
                  expected="manifest status failed / interrupted with the error type and message, the step marked")
def test_crash_is_recorded(tmp_path, monkeypatch, observe, exc, status):
    import compresslab.pipeline.steps as steps

    real = steps.run_torch_pass

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(steps, "run_torch_pass", boom)
    root = make_inputs(tmp_path / "in")
    with pytest.raises(type(exc)):
        run(run_cfg(root, tmp_path / "out", f"run.dir={tmp_path / 'run'}"))
    m = read_json(tmp_path / "run" / "manifest.json")
    assert m["status"] == status and m["error"]["type"] == type(exc).__name__ and m["error"]["step"] == "finetune"
    assert [s["status"] for s in m["steps"]] == [status] and "process" in m
    assert str(exc) in m["error"]["message"]
    monkeypatch.setattr(steps, "run_torch_pass", real)
    observe(f"status {m['status']}, error {m['error']['type']}: {m['error']['message']!r}, step {m['error']['step']}")


def _dead_pid() -> dict:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    import psutil

    started = psutil.Process(p.pid).create_time()
    p.wait()
    return {"pid": p.pid, "host": process_record()["host"], "pid_started": started}


@pytest.mark.case(name="a run killed outright (kill -9, out of memory)", kind=1, bad_input=False,
                  expected="read as crashed (its process is gone); the same command resumes it with a warning")
def test_killed_run_reads_as_crashed_and_resumes(tmp_path, observe, caplog):
    root, d = stopped_inputs(tmp_path)
    m = RunManifest.load(d)
    m.data["status"], m.data["process"] = "running", _dead_pid()  # what kill -9 leaves behind
    m.save()
    assert live_status(m.data) == "crashed"
    with caplog.at_level("WARNING", logger="compresslab"):
        assert stopped_run(root, tmp_path / "out") == d
    assert "process is gone" in caplog.text
    observe(f"live_status=crashed; rerun resumed ({caplog.text.strip().splitlines()[-1][:160]})")


@pytest.mark.case(name="the same command started twice at once", kind=3,
                  expected="the second is refused while the first process runs (both would write one dir)")
def test_concurrent_run_is_refused(tmp_path, expect_clear):
    import psutil

    root, d = stopped_inputs(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        m = RunManifest.load(d)
        m.data["status"] = "running"
        m.data["process"] = {"pid": sleeper.pid, "host": process_record()["host"],
                             "pid_started": psutil.Process(sleeper.pid).create_time()}
        m.save()
        expect_clear(lambda: run(run_cfg(root, tmp_path / "out")), match=rf"being run now by process {sleeper.pid}")
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.case(name="SIGTERM mid-run (kill, a scheduler's time limit)", kind=1, bad_input=False,
                  expected="manifest status interrupted at the running step, as for Ctrl-C")
def test_sigterm_is_recorded_as_interrupted(tmp_path, monkeypatch, observe):
    import signal

    import compresslab.pipeline.steps as steps
    from compresslab.cli import Terminated, terminate_as_interrupt

    old = signal.getsignal(signal.SIGTERM)

    def killed(*a, **k):  # what the interpreter does when SIGTERM arrives: call the installed handler
        # (a real os.kill of the test process crashed the full suite once with SIGSEGV: never send it here)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)

    try:
        terminate_as_interrupt()
        monkeypatch.setattr(steps, "run_torch_pass", killed)
        root = make_inputs(tmp_path / "in")
        with pytest.raises(Terminated):
            run(run_cfg(root, tmp_path / "out", f"run.dir={tmp_path / 'run'}"))
    finally:
        signal.signal(signal.SIGTERM, old)
    m = read_json(tmp_path / "run" / "manifest.json")
    assert m["status"] == "interrupted" and m["error"]["step"] == "finetune"
    assert [s["status"] for s in m["steps"]] == ["interrupted"]
    observe(f"status {m['status']}, error {m['error']['type']}: {m['error']['message']!r}")


@pytest.mark.case(name="Ctrl-C in the CLI", kind=1, bad_input=False,
                  expected="one line saying the finished steps are kept and how to resume, exit 130, no traceback")
def test_cli_ctrl_c_prints_one_line(monkeypatch, capsys, observe):
    from compresslab import cli

    def interrupted(cfg, **kw):  # pipeline.run's signature: (cfg, overrides=...)
        raise KeyboardInterrupt

    monkeypatch.setattr("compresslab.pipeline.run", interrupted)
    monkeypatch.setattr(cli, "setup_process", lambda *a: 1)
    monkeypatch.setattr(cli, "terminate_as_interrupt", lambda: None)
    from compresslab.config import compose

    with pytest.raises(SystemExit) as e:
        cli._main(compose(["+pipeline=int8", "debug=smoke"]))
    err = capsys.readouterr().err
    assert e.value.code == 130 and "rerun the same command to resume" in err and "Traceback" not in err
    observe(err.strip())


def test_cli_sigterm_exits_143(monkeypatch, capsys):
    """SIGTERM (a kill, a scheduler's limit) exits 143 = 128 + 15, the shell's code for it; Ctrl-C stays 130."""
    from compresslab import cli

    def terminated(cfg, **kw):
        raise cli.Terminated("stopped by signal 15 (SIGTERM)")

    monkeypatch.setattr("compresslab.pipeline.run", terminated)
    monkeypatch.setattr(cli, "setup_process", lambda *a: 1)
    monkeypatch.setattr(cli, "terminate_as_interrupt", lambda: None)
    from compresslab.config import compose

    with pytest.raises(SystemExit) as e:
        cli._main(compose(["+pipeline=int8", "debug=smoke"]))
    assert e.value.code == 143 and "SIGTERM" in capsys.readouterr().err
