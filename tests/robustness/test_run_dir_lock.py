"""One process per run dir (compresslab/pipeline/lock.py): the same command started twice at once is refused
at once while the first holds the dir's lock, naming its pid and command; a dead process's lock (kill -9)
blocks nothing and its dir resumes. Lock holders are small children that load ``dirlock.py`` alone (no torch);
runs are the tiny ones of ``_runs.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from _runs import make_inputs, run_cfg, stopped_inputs, stopped_run
from compresslab import dirlock
from compresslab.dirlock import LOCK_NAME, DirectoryBusyError, exclusive
from compresslab.manifest import read_json
from compresslab.pipeline import prepare_run_dir, resolve_run_dir, run
from compresslab.pipeline.lock import locked_run_dir

# A child holding a dir's lock until killed: it loads dirlock.py by path (no compresslab package, no torch).
HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("dirlock", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
with m.exclusive(sys.argv[2], "a test run"):
    print("held", flush=True)
    time.sleep(300)
"""


def _hold(d: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, dirlock.__file__, str(d)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def _kill(p: subprocess.Popen) -> None:
    p.kill()
    p.wait()


def test_second_run_on_a_held_dir_is_refused_at_once(tmp_path, monkeypatch):
    root, d = stopped_inputs(tmp_path)
    before = (d / "manifest.json").read_bytes()
    import compresslab.pipeline.state as state

    def no_load(self):  # the refusal comes before any model is read
        raise AssertionError("the model was loaded before the lock was checked")

    monkeypatch.setattr(state.RunState, "load_initial", no_load)
    holder = _hold(d)
    try:
        with pytest.raises(DirectoryBusyError) as e:
            run(run_cfg(root, tmp_path / "out"))
    finally:
        _kill(holder)
    msg = str(e.value)
    assert f"pid {holder.pid}" in msg and "dirlock.py" in msg and str(d) in msg  # who, with its command, where
    assert "wait for it to end" in msg and "resumes" in msg and "run.dir=" in msg  # what to do
    assert (d / "manifest.json").read_bytes() == before


def test_a_fresh_dir_held_by_another_process_is_refused(tmp_path):
    """Two fresh starts: the manifest's own guard has nothing to read yet; the lock alone refuses."""
    root = make_inputs(tmp_path / "in")
    cfg = run_cfg(root, tmp_path / "out")
    d = resolve_run_dir(cfg)
    holder = _hold(d)
    try:
        with pytest.raises(DirectoryBusyError, match=rf"pid {holder.pid}"):
            run(cfg)
    finally:
        _kill(holder)
    assert sorted(p.name for p in d.iterdir()) == [LOCK_NAME]  # nothing of ours was written


def test_a_dead_holders_lock_is_ignored_and_the_run_resumes(tmp_path):
    root, d = stopped_inputs(tmp_path)
    holder = _hold(d)
    _kill(holder)  # what kill -9 leaves: the lock file, still naming its pid
    assert f"pid {holder.pid}" in (d / LOCK_NAME).read_text()
    assert stopped_run(root, tmp_path / "out") == d  # resumed (the same dir), stopped again before step 1
    assert run(run_cfg(root, tmp_path / "out")) == d
    m = read_json(d / "manifest.json")
    assert m["status"] == "finished" and len(m["invocations"]) == 3


def test_the_lock_is_released_when_the_run_ends(tmp_path):
    root, d = stopped_inputs(tmp_path)
    with exclusive(d, "a later run"):  # a second holder in this process: refused if the run still held it
        pass
    with pytest.raises(RuntimeError, match="boom"):
        with locked_run_dir(d):
            raise RuntimeError("boom")
    with exclusive(d, "a later run"):
        pass
    assert (d / "manifest.json").is_file()  # a failing body keeps the run's files


def test_a_refused_fresh_run_leaves_no_dir_behind(tmp_path):
    d = tmp_path / "out" / "int8" / "abc"
    with pytest.raises(ValueError, match="refused"):
        with locked_run_dir(d):
            assert (d / LOCK_NAME).is_file()
            raise ValueError("refused before anything was written")
    assert not (tmp_path / "out").exists()
    with locked_run_dir(d):
        (d / "manifest.json").write_text("{}")
    assert sorted(p.name for p in d.iterdir()) == [LOCK_NAME, "manifest.json"]


def test_the_lock_does_not_wrap_the_runs_own_busy_errors(tmp_path):
    """Only the lock's refusal gets the run.dir advice; a DirectoryBusyError from inside the run passes as is."""
    with pytest.raises(DirectoryBusyError) as e:
        with locked_run_dir(tmp_path / "r"):
            raise DirectoryBusyError("inner")
    assert str(e.value) == "inner"


def test_overwrite_keeps_the_dir_locked(tmp_path):
    """run.overwrite=true moves the old run's files aside, not the dir: the lock stays with this process."""
    root, d = stopped_inputs(tmp_path)
    with locked_run_dir(d):
        assert prepare_run_dir(d, run_cfg(root, tmp_path / "out", "run.overwrite=true")) is None
        assert sorted(p.name for p in d.iterdir()) == [LOCK_NAME]
        (backup,) = d.parent.glob(f"{d.name}.replaced-*")
        assert (backup / "manifest.json").is_file() and not (backup / LOCK_NAME).exists()
        with pytest.raises(DirectoryBusyError):
            with exclusive(d, "another run"):
                pass
    assert prepare_run_dir(d, run_cfg(root, tmp_path / "out")) is None  # the lock file alone is no foreign dir
