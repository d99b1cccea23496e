"""``outliers: split`` combinations that could not work, or whose split would be dropped, are refused by the
preflight (before any training), naming the settings to change. Found by a trial run: ``deploy=openvino`` deployed
an IR of the plain export (no split) without a word; both ``optimize`` off failed only after finetune and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compresslab.config import compose
from compresslab.models.tiny import tiny_model
from compresslab.pipeline.preflight import preflight
from compresslab.pipeline.settings import SettingsError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny")
    tiny_model("bert").config.save_pretrained(d)  # the preflight reads config.json alone
    assert json.loads((d / "config.json").read_text())["model_type"] == "bert"
    return d


def _cfg(model_dir: Path, tmp_path: Path, *overrides: str):
    return compose(["+pipeline=int8", "debug=smoke", "model=local", f"model.source={model_dir}", "task.max_length=32",
                    "bench.deepsparse.enabled=false", f"paths.output_dir={tmp_path / 'out'}",
                    f"paths.cache_dir={tmp_path / 'cache'}", "pipeline.passes.int8.outliers=split", *overrides])


@pytest.mark.parametrize("overrides,match", [
    (["export.optimize=false", "pipeline.passes.int8.optimize=false"], "leave it unfused"),
    (["deploy=openvino"], "deploy.runtime=openvino deploys an int8 IR made from the plain fp32 export"),
])
def test_refused_before_any_work(model_dir, tmp_path, overrides, match):
    with pytest.raises(SettingsError, match=match):
        preflight(_cfg(model_dir, tmp_path, *overrides))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.safetensors"))


@pytest.mark.parametrize("overrides", [[], ["export.optimize=false"], ["deploy=auto"],
                                       ["pipeline.passes.int8.outliers=none", "deploy=openvino"]])
def test_workable_combinations_pass(model_dir, tmp_path, overrides):
    steps = preflight(_cfg(model_dir, tmp_path, *overrides))
    assert [s.name for s in steps][-1] == "int8"
