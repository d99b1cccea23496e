"""``RunSettings``' run-engine blocks (``run``, ``model``, ``task``, ``data``): the YAML is their one source of
defaults, a bad value fails in preflight naming its key, and the driver and plan read them, not the raw config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from compresslab.config import compose
from compresslab.pipeline import SettingsError, config_hash, prepare_run_dir, resolve_run_dir, run
from compresslab.pipeline.preflight import preflight
from compresslab.pipeline.schema import config_schema
from compresslab.pipeline.settings import (DataSettings, ModelSettings, RunControl, RunSettings, TaskSettings,
                                           default_settings)

BLOCKS = [(RunControl, "run"), (ModelSettings, "model"), (TaskSettings, "task"), (DataSettings, "data")]
# the keys of a section that RunSettings holds at its top level instead (every stage reads them)
TOP_LEVEL = {"run": {"threads"}, "task": {"max_length"}}


def _defaults(cls: type) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


@pytest.mark.parametrize("cls, section", BLOCKS)
def test_dataclass_defaults_are_the_yamls(monkeypatch, cls, section):
    """A default here is only for a key a config lacks (an old manifest's, the API's): it must be the value
    conf/compress.yaml and its default group options give, or a run would change with where it came from."""
    monkeypatch.delenv("COMPRESSLAB_DATA", raising=False)  # data.root: ${oc.env:COMPRESSLAB_DATA,null}
    composed = OmegaConf.to_container(compose(["+pipeline=int8"])[section], resolve=True)
    defaults = _defaults(cls)
    assert defaults, f"{cls.__name__} has no defaults to compare"
    assert defaults == {k: composed.get(k) for k in defaults}  # a key the option lacks (task.generic): None


def test_composed_defaults_type_to_the_dataclass_defaults(monkeypatch):
    monkeypatch.delenv("COMPRESSLAB_DATA", raising=False)
    s = RunSettings.from_config(compose(["+pipeline=int8"]))
    assert s.run == RunControl() and s.data == DataSettings() and s.output_dir == Path("outputs")
    assert s.model == ModelSettings(source="embedded", name="all-MiniLM-L6-v2")
    assert s.task == TaskSettings(name="sst2") and (s.max_length, s.threads) == (128, None)
    # the in-process API builds its settings without a config: compress.yaml's run block, no model/task/data
    export, eval_, bench = default_settings()
    api = RunSettings(seed=1, max_length=8, batch_size=2, cache_dir=Path("c"), threads=None, device="cpu",
                      report=False, export=export, eval=eval_, bench=bench)
    assert api.run == RunControl() and (api.model, api.task, api.data, api.output_dir) == (None, None, None, None)


@pytest.mark.parametrize("cls, section", BLOCKS)
def test_fields_are_the_schemas_keys(cls, section):
    """Every key the shipped YAML gives the section is typed (a key added there fails here until it is)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    assert fields | TOP_LEVEL.get(section, set()) == set(config_schema()[section])


def test_values_are_typed(tmp_path):
    s = RunSettings.from_config(compose([
        "+pipeline=int8", "task=generic", "task.generic.train=a.csv", "task.generic.dev=b.csv", "task.val_size=7",
        "task.val_carve=grouped", f"data.root={tmp_path}", f"run.dir={tmp_path}/r", "run.keep=all",
        "run.stop_after=0", "run.overwrite=true", "run.threads=2", "model.finetuned=true"]))
    assert s.run == RunControl(dir=tmp_path / "r", overwrite=True, keep="all", stop_after=0) and s.threads == 2
    assert isinstance(s.run.dir, Path) and s.model is not None and s.model.finetuned is True
    assert s.task is not None and (s.task.name, s.task.val_size, s.task.val_carve) == ("generic", 7, "grouped")
    assert s.task.generic is not None and (s.task.generic["train"], s.task.generic["name"]) == ("a.csv", "generic")
    assert s.data == DataSettings(root=str(tmp_path))
    # the engine's reading of a null val_carve: random (data.carve.check_carve), as load_task read it
    assert TaskSettings(name="sst2", val_carve=None).val_carve == "random"  # type: ignore[arg-type]


BAD = [
    ("run.keep=bogus", r"^run\.keep='bogus'; allowed: minimal, all"),
    ("model.finetuned=maybe", r"^model\.finetuned must be true or false"),
    ("model.finetuned=null", r"^model\.finetuned=None: use true .* or false"),
    ("task.val_carve=sideways", r"val_carve='sideways': use one of random, grouped \(task\.val_carve"),
    ("task.val_size=-1", r"^task\.val_size must be a non-negative integer"),
    ("run.dir=5", r"^run\.dir must be a non-empty string"),
]


@pytest.mark.parametrize("override, match", BAD)
def test_bad_value_fails_in_preflight(tmp_path, monkeypatch, override, match):
    """Refused by preflight, with the key's name: before the state is prepared (no model, no data read)."""
    import compresslab.pipeline.state as state

    cfg = compose(["+pipeline=int8", f"paths.output_dir={tmp_path}/out", override])
    with pytest.raises(SettingsError, match=match):
        preflight(cfg)

    def prepared(*a, **k):
        raise AssertionError("RunState.prepare was reached: the bad value was not refused in preflight")

    monkeypatch.setattr(state.RunState, "prepare", prepared)
    with pytest.raises(SettingsError, match=match):
        run(cfg)
    assert not (tmp_path / "out").exists()


def test_run_dir_reads_the_settings(tmp_path):
    cfg = compose(["+pipeline=int8", f"paths.output_dir={tmp_path}/out"])
    s = RunSettings.from_config(cfg)
    assert resolve_run_dir(cfg) == resolve_run_dir(cfg, s) == tmp_path / "out" / "int8" / config_hash(cfg)
    moved = dataclasses.replace(s, run=RunControl(dir=tmp_path / "elsewhere"))
    assert resolve_run_dir(cfg, moved) == tmp_path / "elsewhere"
    assert resolve_run_dir(compose(["+pipeline=int8", f"run.dir={tmp_path}/d"])) == tmp_path / "d"


def test_overwrite_reads_the_settings(tmp_path):
    cfg = compose(["+pipeline=int8", f"paths.output_dir={tmp_path}/out"])
    d = tmp_path / "run"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"config_hash": config_hash(cfg), "status": "finished"}))
    s = RunSettings.from_config(cfg)
    assert prepare_run_dir(d, cfg, s) is not None  # run.overwrite=false: resumed (found finished)
    assert prepare_run_dir(d, cfg, dataclasses.replace(s, run=RunControl(overwrite=True))) is None
    assert not (d / "manifest.json").exists()
    assert [p.name.startswith("run.replaced-") for p in tmp_path.iterdir() if p.name != "run"] == [True]
