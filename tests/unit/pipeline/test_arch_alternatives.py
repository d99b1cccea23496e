"""A pass that refuses the model's architecture names the pipeline that does the same job on it, where one exists:
ZipLM refuses DistilBERT, and a DistilBERT user asking for ZipLM is told +pipeline=layer_drop_obert_int8, not only
"use a bert or roberta model" (another model, not another command)."""

from __future__ import annotations

import pytest

from compresslab.config import compose
from compresslab.models.tiny import tiny_model
from compresslab.pipeline.plan import Step, pass_registry_name
from compresslab.pipeline.state import ARCH_ALTERNATIVES, check_steps_model
from compresslab.registry import get_pass
from compresslab.types import capability


def test_ziplm_refusing_distilbert_names_layer_drop_obert_int8():
    model = tiny_model("distilbert")
    with pytest.raises(ValueError) as e:
        check_steps_model([Step(1, "ziplm", get_pass("ziplm")())], model)
    msg = str(e.value)
    assert msg.startswith("step 'ziplm': ziplm supports bert, roberta models only, and this one is distilbert")
    assert "for a distilbert model: +pipeline=layer_drop_obert_int8" in msg


@pytest.mark.parametrize("refused", sorted(ARCH_ALTERNATIVES))
def test_every_named_alternative_is_a_pipeline_whose_passes_all_run_on_that_architecture(refused):
    name, arch = refused
    pipeline = ARCH_ALTERNATIVES[refused].split()[0].removeprefix("+pipeline=")
    cfg = compose([f"+pipeline={pipeline}"])
    passes = [pass_registry_name(str(cfg.pipeline.passes[s]._target_), s) for s in cfg.pipeline.steps]
    assert name not in passes  # the alternative does not run the refusing pass again
    for p in passes:
        allowed = capability(get_pass(p), "model_types")
        assert not allowed or arch in allowed, f"{pipeline}: {p} refuses {arch} too"
