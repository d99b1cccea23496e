"""Config composition for every group, and bad input caught before any expensive work."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compresslab.config import compose, config_dir
from compresslab.pipeline import (
    PipelineError, RunDirConflictError, SettingsError, available_pipelines, build_steps, run)

CONF = Path(config_dir())
GROUPS = ["model", "data", "task", "budget", "export", "bench", "eval", "deploy", "debug"]


def _smoke(tmp_path, *extra):
    return compose(["+pipeline=int8", "debug=smoke", f"paths.output_dir={tmp_path}/out",
                    f"paths.cache_dir={tmp_path}/cache", *extra])


@pytest.mark.parametrize("pipeline", available_pipelines())
def test_every_pipeline_composes_and_builds(pipeline):
    cfg = compose([f"+pipeline={pipeline}", "debug=smoke"])
    steps = build_steps(cfg)
    assert [s.name for s in steps] == list(cfg.pipeline.steps)


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_group_option_composes(group, option):
    extra = ["model.source=/tmp/x"] if (group, option) == ("model", "local") else []
    cfg = compose(["+pipeline=int8", f"{group}={option}", *extra])
    assert cfg.pipeline.name == "int8"


def test_no_pipeline_lists_pipelines():
    out = subprocess.run([sys.executable, "-m", "compresslab"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "int8" in out.stderr and "+pipeline=" in out.stderr


def test_unknown_pipeline_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "compresslab", "+pipeline=nope"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "pipeline/nope" in out.stderr and "int8" in out.stderr


def test_help_works():
    out = subprocess.run([sys.executable, "-m", "compresslab", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "pipeline" in out.stdout


def _fails_fast(cfg, exc, match):
    t0 = time.perf_counter()
    with pytest.raises(exc, match=match):
        run(cfg)
    assert time.perf_counter() - t0 < 20  # nothing expensive ran


def test_unknown_pass_name(tmp_path):
    cfg = _smoke(tmp_path, "+pipeline.passes.bogus._target_=compresslab.passes.bogus.Bogus",
                 "pipeline.steps=[finetune,bogus]")
    _fails_fast(cfg, Exception, "bogus")


def test_step_without_pass_entry(tmp_path):
    _fails_fast(_smoke(tmp_path, "pipeline.steps=[finetune,nothing]"), PipelineError, "nothing")


def test_torch_pass_after_onnx_pass(tmp_path):
    cfg = compose(["+pipeline=magnitude_int8", "debug=smoke", "pipeline.steps=[finetune,int8,magnitude]"])
    _fails_fast(cfg, PipelineError, "TORCH pass after the ONNX pass")


def test_sparsity_out_of_range(tmp_path):
    cfg = compose(["+pipeline=magnitude_int8", "debug=smoke", "pipeline.passes.magnitude.sparsity=1.2"])
    _fails_fast(cfg, PipelineError, "sparsity")


def test_unknown_model_source(tmp_path):
    _fails_fast(_smoke(tmp_path, "model=local", "model.source=/nonexistent/model"), FileNotFoundError, r"/nonexistent/model does not exist")


def test_unsupported_architecture(tmp_path):
    d = tmp_path / "gpt2"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    _fails_fast(_smoke(tmp_path, "model=local", f"model.source={d}"), ValueError, "supported: bert, roberta, distilbert")


def test_unknown_task(tmp_path):
    _fails_fast(_smoke(tmp_path, "task.name=nope"), ValueError, "sst2")


def test_missing_data_dir(tmp_path):
    _fails_fast(_smoke(tmp_path, f"data.root={tmp_path}/nodata"), FileNotFoundError, "COMPRESSLAB_DATA")


def test_run_dir_of_another_config_is_refused(tmp_path, data_root):
    from compresslab.pipeline import config_hash, prepare_run_dir

    cfg = _smoke(tmp_path, f"data.root={data_root}", f"run.dir={tmp_path}/run")
    other = _smoke(tmp_path, f"data.root={data_root}", f"run.dir={tmp_path}/run", "seed=7")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"config_hash": config_hash(other), "status": "running"}))
    with pytest.raises(RunDirConflictError, match="another config"):
        prepare_run_dir(tmp_path / "run", cfg)
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / "precious.txt").write_text("x")
    with pytest.raises(RunDirConflictError, match="not a compresslab run"):
        prepare_run_dir(tmp_path / "run2", _smoke(tmp_path, f"run.dir={tmp_path}/run2"))
    assert (tmp_path / "run2" / "precious.txt").read_text() == "x"


def test_run_identity_ignores_control_keys():
    from compresslab.pipeline import config_hash

    a = compose(["+pipeline=int8", "run.stop_after=1", "paths.output_dir=/a"])
    b = compose(["+pipeline=int8"])
    c = compose(["+pipeline=int8", "seed=1"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


@pytest.mark.parametrize("override,exc,match", [
    ("bench.shapes=[[1]]", SettingsError, "batch, seq"),
    ("bench.gpu=maybe", SettingsError, "gpu"),
    ("+bench.typo=1", SettingsError, "unknown key.*typo"),
    ("bench.deepsparse.int8_formats=[int4]", SettingsError, "int8_formats"),
    ("bench.deepsparse.int8_formats=[]", SettingsError, "int8_formats is empty while int8 is true"),  # a trial ran it
    ("bench.deepsparse.int8_formats=[qdq,qdq]", SettingsError, "names a format twice"),
    ("eval.split=test", SettingsError, "split"),
    ("export.atol=0", SettingsError, "atol"),
    ("bench.denominator=foo", ValueError, "denominator"),
    ("bench.shapes=[]", ValueError, "shapes is empty"),
    ("seed=-1", ValueError, "seed"),
    ("run.threads=0", ValueError, "run.threads"),
    ("run.stop_after=-1", ValueError, "stop_after"),
    ("task.max_length=1000", ValueError, "max_position_embeddings"),
    ("device=tpu", ValueError, "device='tpu'"),
])
def test_bad_settings_fail_before_any_work(tmp_path, data_root, override, exc, match):
    _fails_fast(_smoke(tmp_path, f"data.root={data_root}", override), exc, match)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_eval_split_is_a_group_and_real(tmp_path):
    from compresslab.pipeline.settings import RunSettings

    assert RunSettings.from_config(_smoke(tmp_path, "eval=validation")).eval.split == "validation"
    assert RunSettings.from_config(_smoke(tmp_path)).eval.split == "dev"


def test_teacher_pass_must_come_first(tmp_path):
    cfg = _smoke(tmp_path, "pipeline.steps=[int8,finetune]")
    _fails_fast(cfg, PipelineError, "TORCH pass after the ONNX pass|teacher")
    cfg = compose(["+pipeline=magnitude_int8", "debug=smoke", "pipeline.steps=[magnitude,finetune,int8]"])
    _fails_fast(cfg, PipelineError, "teacher .* must be the first step")


def test_a_failing_run_is_recorded_as_failed_and_reported(tmp_path, data_root, monkeypatch):
    import compresslab.pipeline.steps as steps
    from compresslab.manifest import read_json
    from compresslab.report import build_report

    def boom(*a, **k):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(steps, "run_step", boom)
    cfg = _smoke(tmp_path, f"data.root={data_root}", f"run.dir={tmp_path}/run")
    with pytest.raises(RuntimeError, match="disk full"):
        run(cfg)
    m = read_json(tmp_path / "run" / "manifest.json")
    assert m["status"] == "failed" and m["error"]["type"] == "RuntimeError" and "disk full" in m["error"]["message"]
    build_report(tmp_path / "run")
    assert "disk full" in (tmp_path / "run" / "report.md").read_text()
