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
