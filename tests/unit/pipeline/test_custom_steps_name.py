"""A ``pipeline.steps=[...]`` override is named as what it is, not as the shipped pipeline it started from (trial 47,
finding 9: ``[finetune,layer_drop,obert,int8]`` on layer_drop_ziplm_obert_int8 filed its run dir and titled its report
"layer_drop_ziplm_obert_int8"): the run dir, the manifest's ``pipeline`` (which compare reads) and the report's title
all carry ``<name>+custom``, the title with the steps that ran."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from compresslab.config import CUSTOM_STEPS, available_pipelines, compose, run_pipeline_name, shipped_steps
from compresslab.pipeline import config_hash, resolve_run_dir
from compresslab.report.render import to_markdown
from compresslab.report.sections import build_document

RUNS = Path(__file__).parents[1] / "report" / "runs"


@pytest.mark.parametrize("pipeline", available_pipelines())
def test_every_shipped_pipeline_keeps_its_name_with_its_own_steps(pipeline):
    assert run_pipeline_name(compose([f"+pipeline={pipeline}"])) == pipeline


def test_overridden_steps_mark_the_run_dir_and_the_name(tmp_path):
    base = ["+pipeline=layer_drop_ziplm_obert_int8", f"paths.output_dir={tmp_path}"]
    cfg = compose([*base, "pipeline.steps=[finetune,layer_drop,obert,int8]"])
    assert run_pipeline_name(cfg) == "layer_drop_ziplm_obert_int8" + CUSTOM_STEPS
    assert resolve_run_dir(cfg) == tmp_path / f"layer_drop_ziplm_obert_int8{CUSTOM_STEPS}" / config_hash(cfg)
    # the same steps in another order are another pipeline too
    assert shipped_steps("obert_int8") == ["finetune", "obert", "int8"]
    assert run_pipeline_name(compose(["+pipeline=obert_int8", "pipeline.steps=[obert,finetune,int8]"])).endswith(
        CUSTOM_STEPS)


def test_a_name_of_ones_own_is_kept():
    cfg = compose(["+pipeline=obert_int8", "pipeline.steps=[finetune,int8]", "pipeline.name=mine"])
    assert run_pipeline_name(cfg) == "mine"


def test_the_report_title_names_the_steps_that_ran():
    m = copy.deepcopy(json.loads((RUNS / "int8_smoke.json").read_text()))
    m["pipeline"] = "layer_drop_ziplm_obert_int8" + CUSTOM_STEPS
    m.setdefault("config", {}).setdefault("pipeline", {})["steps"] = ["finetune", "layer_drop", "obert", "int8"]
    title = to_markdown(build_document(m, set(), {}, "outputs/x/y")).splitlines()[0]
    assert title.startswith("# compresslab: layer_drop_ziplm_obert_int8+custom (steps: finetune, layer_drop, obert, "
                            "int8) on ")
