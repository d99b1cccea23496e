"""Which code made a run (a trial: ``git_sha`` was taken once, when the run was created, with no flag for edited
files; a run resumed after a new commit ran deploy, eval and bench on other code while the report showed the
first sha). Each process that works on a run records a session (started or resumed, its git sha, whether the
package's files had uncommitted changes, compresslab's version, the steps and stages it ran), and the report
says when a run was made by more than one code version."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from compresslab import provenance
from compresslab.manifest import RunManifest, StepRecord
from compresslab.report.render import to_markdown
from compresslab.report.sections import build_document

FIXTURE = Path(__file__).with_name("manifest_full.json")
OLD = {"git_sha": "2df9ab10e24dac153ae8d2e79217002f3f62275e", "git_dirty": False, "compresslab_version": "0.1.0"}
NEW = {"git_sha": "4c69d55aa1b2c3d4e5f60718293a4b5c6d7e8f90", "git_dirty": False, "compresslab_version": "0.1.0"}


@pytest.fixture
def code(monkeypatch: pytest.MonkeyPatch):
    """``code(version)``: this process runs ``version`` from now on (as if it were another process, with another
    pid when ``new_process``)."""
    pids = iter(range(10_000, 10_100))
    monkeypatch.setattr("compresslab.manifest.edited_since", lambda t0: [])  # these fake starts are in 1970

    def set_code(version: dict, new_process: bool = False) -> None:
        monkeypatch.setattr(provenance, "_CODE_VERSION", dict(version))
        if new_process:
            pid = next(pids)
            monkeypatch.setattr("compresslab.manifest.os.getpid", lambda: pid)
            monkeypatch.setattr("compresslab.manifest.process_record",
                                lambda: {"pid": pid, "host": "h", "pid_started": float(pid)})

    return set_code


def _work(m: RunManifest, step: str, *stages: str) -> None:
    m.mark_running()
    m.set_step(StepRecord(index=len(m.steps), name=step, stage="torch", dir=f"steps/0{len(m.steps)}_{step}"))
    for s in stages:
        m.at_stage(s, after_steps=True)
    m.at_stage("the restore of finished step x")  # runs nothing: not noted
    m.save()


def test_each_process_records_its_code_and_what_it_ran(tmp_path, code):
    code(OLD, new_process=True)
    m = RunManifest.create(tmp_path, pipeline="int8")
    assert (m.data["git_sha"], m.data["git_dirty"]) == (OLD["git_sha"], False)  # the creating process's
    _work(m, "finetune")
    m.mark_running()  # the same process again (a resume in-process): the same session
    code(NEW, new_process=True)
    again = RunManifest.load(tmp_path)
    _work(again, "int8", "deploy", "eval", "bench")
    sessions = json.loads((tmp_path / "manifest.json").read_text())["sessions"]
    assert [(s["git_sha"], s["resumed"], s["ran"]) for s in sessions] == [
        (OLD["git_sha"], False, ["step finetune"]),
        (NEW["git_sha"], True, ["step int8", "deploy", "eval", "bench"])]
    assert all(s["compresslab_version"] == "0.1.0" and "started" in s and "pid" in s for s in sessions)
    assert again.data["git_sha"] == OLD["git_sha"]  # the top-level sha stays the creator's: sessions say the rest


def _report(m: dict) -> str:
    return to_markdown(build_document(m, set(), {}, "outputs/int8/abc"))


def test_the_report_says_when_a_run_was_made_by_more_than_one_code_version(tmp_path, code):
    base = json.loads(FIXTURE.read_text())
    one = {**base, "sessions": [{**OLD, "started": "05:44", "resumed": False, "ran": ["step finetune"]},
                                {**OLD, "started": "05:50", "resumed": True, "ran": ["bench"]}]}
    text = _report(one)
    assert "more than one code version" not in text
    two = {**base, "sessions": [{**OLD, "started": "05:44", "resumed": False, "ran": ["step finetune", "step int8"]},
                                {**NEW, "started": "05:54", "resumed": True, "ran": ["deploy", "eval", "bench"]}]}
    text = _report(two)
    banner = next(line for line in text.splitlines() if "more than one code version" in line)
    assert "created 05:44 on 2df9ab10e24d, compresslab 0.1.0: step finetune, step int8" in banner
    assert "resumed 05:54 on 4c69d55aa1b2, compresslab 0.1.0: deploy, eval, bench" in banner
    assert text.index("more than one code version") < text.index("## Summary")  # at the top, not only in a table
    assert "Sessions: the processes that worked on this run" in text


def test_uncommitted_changes_are_flagged_and_two_dirty_sessions_are_two_versions():
    base = json.loads(FIXTURE.read_text())
    dirty = {**OLD, "git_dirty": True}
    m = {**base, **dirty, "sessions": [{**dirty, "started": "1", "resumed": False, "ran": ["step int8"]},
                                       {**dirty, "started": "2", "resumed": True, "ran": ["bench"]}]}
    text = _report(m)
    assert f"{OLD['git_sha']} (uncommitted changes in compresslab/)" in text
    assert "more than one code version" in text  # one commit, two edits that may differ


def test_git_dirty_reads_the_checkout(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    subprocess.run([*git, "-C", str(tmp_path), "add", "."], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "c"], check=True)
    assert provenance.git_dirty(tmp_path) is False and provenance.git_sha(tmp_path)
    (tmp_path / "scratch.txt").write_text("untracked files are not the code\n")
    assert provenance.git_dirty(tmp_path) is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_dirty(tmp_path) is True
    assert provenance.git_dirty(tmp_path / "nowhere") is None and provenance.git_sha(tmp_path / "nowhere") is None


def test_code_files_edited_while_a_run_runs_are_recorded_and_reported(tmp_path, code, monkeypatch):
    """A run started on one commit; while it trained, the checkout's pipeline/deepsparse.py was edited and
    committed; its bench stage imported that module only then, so the bench ran the new code while git_sha named
    the old. The first step or stage that finds code files newer than its process says so."""
    code(OLD, new_process=True)
    edited: list[str] = []
    monkeypatch.setattr("compresslab.manifest.edited_since", lambda t0: list(edited))
    m = RunManifest.create(tmp_path, pipeline="int8")
    _work(m, "finetune", "export")
    assert "code_changed" not in m.data["sessions"][-1]
    edited[:] = [f"f{i}.py" for i in range(12)]
    m.at_stage("bench", after_steps=True)
    edited[:] = ["later.py"]  # the first notice stays: what ran from there on may be edited
    m.at_stage("report", after_steps=True)
    m.save()
    c = RunManifest.load(tmp_path).data["sessions"][-1]["code_changed"]
    assert c == {"noticed_at": "bench", "files": [f"f{i}.py" for i in range(10)], "n_files": 12}
    md = _report(RunManifest.load(tmp_path).data)
    assert "The code changed while this run ran" in md and "12 code file(s) edited" in md
    assert "first noticed at bench" in md and "f0.py, f1.py, f2.py, ..." in md


def test_edited_since_lists_code_files_newer_than_a_time(tmp_path):
    import os

    for rel in ("a.py", "sub/b.py", "conf/pass/x.yaml", "notes.txt", "sub/c.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
        os.utime(tmp_path / rel, (1000.0, 1000.0))
    assert provenance.edited_since(2000.0, tmp_path) == []
    for rel in ("sub/b.py", "conf/pass/x.yaml", "notes.txt", "sub/c.yaml"):
        os.utime(tmp_path / rel, (3000.0, 3000.0))
    # code: .py anywhere, .yaml under conf/ (the configs runs compose); not other files
    assert provenance.edited_since(2000.0, tmp_path) == ["conf/pass/x.yaml", "sub/b.py"]
