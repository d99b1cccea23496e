"""What a pass declares decides what the run does, not step names: a renamed finetune step still
makes the teacher on a fresh run and on resume; every step dir says how it was made (pass.json). A tiny
random BERT on a tiny task: what is checked is which pass ran, not how well."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import open_dict
from safetensors.torch import load_file

from compresslab.config import compose
from compresslab.manifest import RunManifest, read_json
from compresslab.pipeline import run
from compresslab.registry import pass_from_dict, pass_to_dict
from compresslab.testing import tiny_generic_run

pytestmark = pytest.mark.integration


def _renamed(tmp_path: Path, out: str, *extra: str):
    tiny = [o for o in tiny_generic_run(tmp_path) if not o.startswith(("paths.output_dir=", "pipeline.passes.obert"))]
    cfg = compose(["+pipeline=int8", *tiny, "run.threads=1", "bench.enabled=false",
                   f"paths.output_dir={tmp_path}/{out}", *extra])
    with open_dict(cfg):  # the finetune pass under another step name
        cfg.pipeline.passes["teach"] = cfg.pipeline.passes.pop("finetune")
        cfg.pipeline.steps = ["teach", "int8"]
    return cfg


def test_renamed_teacher_step_resumes_with_the_right_teacher(tmp_path):
    full = run(_renamed(tmp_path, "full"))
    stopped = run(_renamed(tmp_path, "resumed", "run.stop_after=1"))
    assert read_json(stopped / "manifest.json")["status"] == "stopped"
    resumed = run(_renamed(tmp_path, "resumed"))
    # the teacher both runs used: the fine-tuned weights, identical (the pretrained source would differ)
    source = load_file(tmp_path / "model" / "model.safetensors")
    teachers = [load_file(d / "steps" / "00_teach" / "model.safetensors") for d in (full, resumed)]
    assert teachers[0].keys() == teachers[1].keys()
    assert all(teachers[0][k].equal(teachers[1][k]) for k in teachers[0])
    shared = [k for k in source if k in teachers[0] and source[k].shape == teachers[0][k].shape]
    assert shared and any(not source[k].equal(teachers[0][k]) for k in shared)
    a = read_json(full / "eval" / "metrics.json")["models"]
    b = read_json(resumed / "eval" / "metrics.json")["models"]
    # and it scores the same in both runs (the weights above rule out a fallback to the pretrained source)
    assert b["teacher_torch"]["score"] == pytest.approx(a["teacher_torch"]["score"])
    assert b["torch_final"]["agreement"] == 1.0  # int8 only touched the ONNX file: torch final == teacher

    for d in (full, resumed):  # every step dir says how it was made, and it rebuilds the same pass
        m = RunManifest.load(d)
        for rec in m.steps:
            pj = read_json(d / rec.dir / "pass.json")
            assert pj["step"] == rec.name and pj["pass"] == rec.pass_config
            assert pass_to_dict(pass_from_dict(pj["pass"])) == pj["pass"]
        assert read_json(d / "steps" / "00_teach" / "pass.json")["pass"]["name"] == "finetune"
