"""compresslab.bench.external: a tool in its own venv. Each failure keeps its stage and the tool's own words
(install, import, runtime, timeout); a ready venv is reused, a half-made one rebuilt; requirements must be
pinned; torch is pinned to our CPU build. The worker protocol runs on our own interpreter (fast); one
test makes a real venv without requirements (``slow``: seconds, once per cache)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from compresslab.bench import external as X

WORKER = """
import json, sys
spec = json.load(open(sys.argv[1]))
if spec.get("fail"):
    print("worker going down", file=sys.stderr)
    raise ValueError("the tool said: " + spec["fail"])
if spec.get("silent"):
    sys.exit(0)
json.dump({"echo": spec["x"], "saw_work": spec["work"]}, open(spec["out"], "w"))
"""


@pytest.fixture()
def worker(tmp_path: Path) -> Path:
    p = tmp_path / "worker.py"
    p.write_text(WORKER)
    return p


def test_worker_json_in_and_out(worker, tmp_path) -> None:
    r = X.run_worker(sys.executable, worker, {"x": [1, 2]}, work=tmp_path / "w")
    assert r.out == {"echo": [1, 2], "saw_work": str(tmp_path / "w")}
    assert json.loads((tmp_path / "w" / "spec.json").read_text())["out"] == str(tmp_path / "w" / "out.json")


def test_runtime_failure_carries_the_workers_exact_error(worker, tmp_path) -> None:
    with pytest.raises(X.ExternalError) as e:
        X.run_worker(sys.executable, worker, {"fail": "no int8 kernels (42)"}, work=tmp_path / "w")
    assert e.value.stage == "runtime" and str(e.value).startswith("runtime failure: ")
    assert "ValueError: the tool said: no int8 kernels (42)" in str(e.value) and "worker going down" in str(e.value)


def test_a_worker_that_writes_nothing_is_a_failure(worker, tmp_path) -> None:
    with pytest.raises(X.ExternalError, match="wrote no out.json"):
        X.run_worker(sys.executable, worker, {"silent": True}, work=tmp_path / "w")


def test_timeout_is_its_own_stage(tmp_path) -> None:
    slow = tmp_path / "slow.py"
    slow.write_text("import time; time.sleep(30)")
    with pytest.raises(X.ExternalError) as e:
        X.run_worker(sys.executable, slow, {}, work=tmp_path / "w", timeout=0.5)
    assert e.value.stage == "timeout"


def test_import_failure_names_the_module(tmp_path) -> None:
    with pytest.raises(X.ExternalError) as e:
        X.check_imports(Path(sys.executable), ["json", "no_such_tool_xyz"], log_file=tmp_path / "log")
    assert e.value.stage == "import" and "No module named 'no_such_tool_xyz'" in str(e.value)
    assert "json" in X.check_imports(Path(sys.executable), ["json"])


def test_specs_refuse_loose_pins_and_hash_what_matters() -> None:
    with pytest.raises(ValueError, match="must be pinned"):
        X.VenvSpec("t", ("torchao",))
    with pytest.raises(ValueError, match="venv name"):
        X.VenvSpec("a b", ())
    a = X.VenvSpec("t", ("pkg==1.0",), torch=True)
    assert a.key() != X.VenvSpec("t", ("pkg==1.1",), torch=True).key()
    assert a.key() != X.VenvSpec("t", ("pkg==1.0",)).key()  # the torch pin is part of what is installed
    assert a.constraints() == [f"torch=={X.our_torch_version()}"]  # our CPU build, local label included


def test_install_failure_keeps_pips_words_and_the_next_call_starts_over(tmp_path, monkeypatch) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd, *, stage, timeout, log_file, env=None, capture=False):
        calls.append(list(cmd))
        if cmd[1:3] == ["-m", "venv"]:
            (Path(cmd[3]) / "bin").mkdir(parents=True)
            (Path(cmd[3]) / "bin" / "python").write_text("")
            return None
        raise X.ExternalError(stage, "`pip install` exited 1: ERROR: No matching distribution found for pkg==9.9")

    monkeypatch.setattr(X, "_run", fake_run)
    spec = X.VenvSpec("t", ("pkg==9.9",))
    with pytest.raises(X.ExternalError) as e:
        X.ensure_venv(spec, tmp_path)
    assert e.value.stage == "install" and "No matching distribution found for pkg==9.9" in str(e.value)
    d = X.venv_dir(spec, tmp_path)
    assert d.exists() and not (d / X.READY).exists()  # half made: never taken as ready
    calls.clear()
    with pytest.raises(X.ExternalError):
        X.ensure_venv(spec, tmp_path)
    assert calls[0][1:3] == ["-m", "venv"]  # rebuilt from scratch


def test_ready_venv_is_reused_without_running_anything(tmp_path, monkeypatch) -> None:
    spec = X.VenvSpec("t", ("pkg==1.0",))
    d = X.venv_dir(spec, tmp_path)
    d.mkdir(parents=True)
    (d / X.READY).write_text("{}")
    monkeypatch.setattr(X, "_run", lambda *a, **k: pytest.fail("a ready venv must not be rebuilt"))
    assert X.ensure_venv(spec, tmp_path) == d / "bin" / "python"


@pytest.mark.slow
def test_a_real_venv_is_made_once_then_reused(tmp_path, worker) -> None:
    spec = X.VenvSpec("trivial", (), imports=("json",))
    py = X.ensure_venv(spec, tmp_path)
    ready = json.loads((X.venv_dir(spec, tmp_path) / X.READY).read_text())
    assert "json" in ready["imports"] and py.is_file()
    assert X.run_worker(py, worker, {"x": "hi"}, work=tmp_path / "w").out["echo"] == "hi"
    mtime = (X.venv_dir(spec, tmp_path) / X.READY).stat().st_mtime
    assert X.ensure_venv(spec, tmp_path) == py
    assert (X.venv_dir(spec, tmp_path) / X.READY).stat().st_mtime == mtime
