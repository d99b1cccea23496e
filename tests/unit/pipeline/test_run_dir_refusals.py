"""Taking a run dir that holds something else: the refusal says what differs and the way out, and
``run.overwrite=true`` is that way out for any compresslab run (moved aside), never for a dir that is not ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from compresslab.config import compose
from compresslab.dirlock import LOCK_NAME
from compresslab.pipeline import RunDirConflictError, config_hash, prepare_run_dir


def _cfg(run_dir: Path, *extra: str):
    return compose(["+pipeline=obert_int8", "debug=smoke", f"run.dir={run_dir}", *extra])


def _recorded(run_dir: Path, cfg) -> None:
    """A run dir whose manifest recorded ``cfg`` (what the driver writes: its hash and its resolved config)."""
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps(
        {"config_hash": config_hash(cfg), "status": "stopped", "config": OmegaConf.to_container(cfg, resolve=True)}))


@pytest.mark.parametrize("old,new,named", [
    ("pipeline.passes.obert.sparsity=0.8", "pipeline.passes.obert.sparsity=0.7",
     "pipeline.passes.obert.sparsity: 0.8 -> 0.7"),
    ("bench.enabled=true", "bench.enabled=false", "bench.enabled: true -> false"),
    ("seed=7", "seed=42", "seed: 7 -> 42"),
])
def test_another_configs_run_names_the_settings_that_differ(tmp_path, old, new, named):
    d = tmp_path / "run"
    _recorded(d, _cfg(d, old))
    with pytest.raises(RunDirConflictError) as e:
        prepare_run_dir(d, _cfg(d, new))
    msg = str(e.value)
    assert "belongs to another config; settings that differ (recorded -> given now)" in msg and named in msg
    assert "run.overwrite=true" in msg and "run.dir=<another dir>" in msg
    assert msg.count("\n  ") == 1  # only what differs; run.* (control keys) is not the run's identity


def test_overwrite_moves_another_configs_run_aside(tmp_path):
    d = tmp_path / "run"
    _recorded(d, _cfg(d, "seed=7"))
    assert prepare_run_dir(d, _cfg(d, "run.overwrite=true")) is None
    (aside,) = tmp_path.glob("run.replaced-*")
    assert (aside / "manifest.json").is_file() and not any(d.iterdir())


def test_a_manifest_without_a_recorded_config_still_names_the_hashes(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"config_hash": "abc", "status": "stopped"}))
    with pytest.raises(RunDirConflictError, match=r"another config \(hash abc != \w+\).*run\.overwrite=true"):
        prepare_run_dir(d, _cfg(d))


def _steps_without_manifest(d: Path) -> None:
    """A run dir whose manifest.json was deleted: compresslab's steps (with pass.json) and export are there."""
    for i, name in enumerate(["finetune", "obert"]):
        step = d / "steps" / f"{i:02d}_{name}"
        step.mkdir(parents=True)
        (step / "pass.json").write_text(json.dumps({"step": name, "index": i, "pass": {"name": name}}))
        (step / "model.safetensors").write_bytes(b"x")
    (d / "export").mkdir()
    (d / ".hydra").mkdir()
    (d / LOCK_NAME).write_text("")


def test_a_run_without_its_manifest_is_refused_naming_overwrite_which_moves_it_aside(tmp_path):
    d = tmp_path / "run"
    _steps_without_manifest(d)
    with pytest.raises(RunDirConflictError) as e:
        prepare_run_dir(d, _cfg(d))
    msg = str(e.value)
    assert "steps/00_finetune/pass.json" in msg and "no manifest.json" in msg
    assert "run.overwrite=true" in msg and "run.dir=<another dir>" in msg
    assert (d / "steps" / "01_obert" / "pass.json").is_file()  # refused: nothing moved
    assert prepare_run_dir(d, _cfg(d, "run.overwrite=true")) is None
    assert sorted(p.name for p in d.iterdir()) == [LOCK_NAME]  # the lock stays: this process holds the dir
    (aside,) = tmp_path.glob("run.replaced-*")
    assert (aside / "steps" / "01_obert" / "pass.json").is_file()


@pytest.mark.parametrize("foreign", ["notes.txt", "steps/README"])
def test_overwrite_never_moves_a_dir_that_is_not_only_a_run(tmp_path, foreign):
    d = tmp_path / "run"
    _steps_without_manifest(d)
    (d / foreign).write_text("mine")
    if foreign.startswith("steps/"):  # steps/ is compresslab's name, but nothing in it says it is a run's step
        for step in (d / "steps").iterdir():
            if step.is_dir():
                (step / "pass.json").unlink()
    for extra in ([], ["run.overwrite=true"]):
        with pytest.raises(RunDirConflictError, match="is not a compresslab run.*run.dir=<another dir>"):
            prepare_run_dir(d, _cfg(d, *extra))
    assert (d / foreign).read_text() == "mine" and not list(tmp_path.glob("run.replaced-*"))


def test_where_the_data_was_found_is_not_the_runs_identity(tmp_path, monkeypatch):
    """A trial: a run made with $COMPRESSLAB_DATA set was refused by the report's own rerun command in a new shell
    ("belongs to another config ... data.root: "/work/shared/data" -> null"). The data's content is the identity (by
    sha256, pipeline/identity.py); the same data found elsewhere is the same run."""
    from compresslab.pipeline import plan

    d = tmp_path / "run"
    monkeypatch.setenv("COMPRESSLAB_DATA", "/work/shared/data")
    from_env = _cfg(d)
    assert from_env.data.root == "/work/shared/data"
    monkeypatch.delenv("COMPRESSLAB_DATA")
    for other in (_cfg(d), _cfg(d, "data.root=/elsewhere/data")):
        assert config_hash(other) == config_hash(from_env)
    _recorded(d, from_env)
    assert prepare_run_dir(d, _cfg(d)) is not None  # resumed, not refused
    assert config_hash(_cfg(d, "data.root=/x")) == config_hash(compose(["+pipeline=obert_int8", "debug=smoke"]))

    # a run recorded before the rule (its hash took data.root in) is found again from its recorded config
    old = tmp_path / "old"
    rule = plan._LOCATION_KEYS
    monkeypatch.setattr(plan, "_LOCATION_KEYS", ())
    old_cfg = _cfg(old, "data.root=/old/place")
    _recorded(old, old_cfg)
    monkeypatch.setattr(plan, "_LOCATION_KEYS", rule)
    assert json.loads((old / "manifest.json").read_text())["config_hash"] != config_hash(old_cfg)
    assert prepare_run_dir(old, _cfg(old, "data.root=/new/place")) is not None
    with pytest.raises(RunDirConflictError, match="seed: 42 -> 7"):  # another setting is still another run
        prepare_run_dir(old, _cfg(old, "data.root=/new/place", "seed=7"))


def test_the_rerun_command_sets_what_the_config_read_from_the_environment(monkeypatch):
    from compresslab.config import config_env_vars, config_environment
    from compresslab.pipeline.driver import rerun_command

    assert {"COMPRESSLAB_DATA", "COMPRESSLAB_CACHE"} <= set(config_env_vars())  # every ${oc.env:...} in conf/
    monkeypatch.delenv("COMPRESSLAB_CACHE", raising=False)
    monkeypatch.setenv("COMPRESSLAB_DATA", "/data/my glue")
    env = config_environment()
    assert env == {"COMPRESSLAB_DATA": "/data/my glue"}
    assert rerun_command(["+pipeline=int8", "run.dir=a b"], env) == \
        "COMPRESSLAB_DATA='/data/my glue' python -m compresslab +pipeline=int8 'run.dir=a b'"
    assert rerun_command(["+pipeline=int8"]) == "python -m compresslab +pipeline=int8"


def test_the_rerun_command_names_the_deepsparse_interpreter_the_run_read(monkeypatch):
    """Session 46's trial: a run benched on DeepSparse through $COMPRESSLAB_DEEPSPARSE_PYTHON recorded a rerun
    command without it, so the command ran another interpreter (or none)."""
    from compresslab.pipeline.driver import code_environment

    monkeypatch.setenv("COMPRESSLAB_DEEPSPARSE_PYTHON", "/venvs/ds/bin/python")
    on = {"bench": {"deepsparse": {"enabled": True, "python": None}}}
    assert code_environment(on) == {"COMPRESSLAB_DEEPSPARSE_PYTHON": "/venvs/ds/bin/python"}
    assert code_environment({"bench": {"deepsparse": {"enabled": "auto", "python": None}}}) == \
        {"COMPRESSLAB_DEEPSPARSE_PYTHON": "/venvs/ds/bin/python"}
    assert code_environment({"bench": {"deepsparse": {"enabled": False, "python": None}}}) == {}  # not read
    assert code_environment({"bench": {"deepsparse": {"enabled": True, "python": "/x/python"}}}) == {}  # setting wins
    assert code_environment({}) == {}
    monkeypatch.delenv("COMPRESSLAB_DEEPSPARSE_PYTHON")
    assert code_environment(on) == {}


# Every COMPRESSLAB_* variable the package reads, and where a run's rerun command gets it from. A new variable
# fails this test until it is placed: read by the config (config_env_vars), chosen by the code and recorded
# (code_environment), or operational with the reason it stays out of the command.
ENVIRONMENT_VARIABLES = {
    "COMPRESSLAB_DATA": "config",
    "COMPRESSLAB_CACHE": "config",
    "COMPRESSLAB_DEEPSPARSE_PYTHON": "code_environment",
    "COMPRESSLAB_LOCK_DIR": "operational: where the run-lock files live, not what runs",
    "COMPRESSLAB_LOCK_WAIT_S": "operational: how long to wait for the lock",
    "COMPRESSLAB_TIME_BUSY": "recorded in machine_load; a rerun must not repeat a busy timing",
    "COMPRESSLAB_VENV_CACHE": "operational: where the peers' venvs are cached (keyed by their pins)",
}


def test_every_environment_variable_the_package_reads_is_placed():
    import re
    from pathlib import Path

    import compresslab
    from compresslab.config import config_env_vars

    root = Path(compresslab.__file__).parent
    read = {m for p in root.rglob("*.py") for m in re.findall(r"[\"'](COMPRESSLAB_[A-Z0-9_]+)[\"']", p.read_text())}
    read |= set(config_env_vars())
    assert read == set(ENVIRONMENT_VARIABLES), "place each new variable in ENVIRONMENT_VARIABLES (see its comment)"
    assert {k for k, v in ENVIRONMENT_VARIABLES.items() if v == "config"} <= set(config_env_vars())
