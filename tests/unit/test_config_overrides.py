"""compresslab.config.keep_pass_overrides: one command line for several pipelines keeps a pass setting only for
the pipelines having that step, whatever Hydra prefix the override carries (the benchmarks' and the search's
one copy)."""

from __future__ import annotations

import pytest

from compresslab.config import keep_pass_overrides, override_key, pass_step


@pytest.mark.parametrize("override, key", [
    ("pipeline.passes.ziplm.x=1", "pipeline.passes.ziplm.x"),
    ("+pipeline.passes.ziplm.x=1", "pipeline.passes.ziplm.x"),
    ("++pipeline.passes.ziplm.x=1", "pipeline.passes.ziplm.x"),
    ("~pipeline.passes.ziplm.x", "pipeline.passes.ziplm.x"),
    ("~pipeline.passes.ziplm.x=1", "pipeline.passes.ziplm.x"),
    ("seed=3", "seed"),
    ("+pass@pipeline.passes.l1=structured_l1", "pass@pipeline.passes.l1"),
    ("pipeline.passes.ziplm.path=a.b=c", "pipeline.passes.ziplm.path"),  # a value's "." and "=" are no key's
])
def test_override_key_strips_every_prefix(override, key):
    assert override_key(override) == key


@pytest.mark.parametrize("override, step", [
    ("pipeline.passes.ziplm.x=1", "ziplm"),
    ("+pipeline.passes.ziplm.x=1", "ziplm"),
    ("++pipeline.passes.ziplm.x=1", "ziplm"),
    ("~pipeline.passes.ziplm.x", "ziplm"),
    ("~pipeline.passes.ziplm", "ziplm"),  # the whole pass deleted: only where the pipeline has it
    ("pipeline.passes.ziplm.speedup=1.5", "ziplm"),
    ("pipeline.passes.ziplm.a.b=2", "ziplm"),
    ("pipeline.passes=null", None),
    ("pipeline.name=x", None),
    ("budget.recovery_steps=5", None),
    ("+pass@pipeline.passes.l1=structured_l1", None),  # a group choice adds a pass; it sets none
    ("passes.ziplm.x=1", None),
])
def test_pass_step(override, step):
    assert pass_step(override) == step


PASS_SETTINGS = ["pipeline.passes.ziplm.x=1", "+pipeline.passes.ziplm.y=2", "++pipeline.passes.ziplm.z=3",
                 "~pipeline.passes.ziplm.w", "~pipeline.passes.ziplm"]
OTHERS = ["budget=smoke", "seed=3", "+pass@pipeline.passes.l1=structured_l1", "pipeline.passes=null",
          "deploy=ort", "~bench"]


@pytest.mark.parametrize("setting", PASS_SETTINGS)
def test_a_pipeline_without_the_step_gets_none_of_its_settings(setting):
    assert keep_pass_overrides(["seed=3", setting, "budget=smoke"], ["obert", "finetune"]) == ["seed=3",
                                                                                              "budget=smoke"]


@pytest.mark.parametrize("setting", PASS_SETTINGS)
def test_a_pipeline_with_the_step_gets_its_settings_in_order(setting):
    assert keep_pass_overrides(["seed=3", setting, "budget=smoke"], ("finetune", "ziplm")) == ["seed=3", setting,
                                                                                              "budget=smoke"]


def test_other_overrides_are_untouched_whatever_the_steps():
    mixed = [*OTHERS, "pipeline.passes.obert.num_events=4", "pipeline.passes.ziplm.x=1"]
    assert keep_pass_overrides(mixed, ["obert"]) == [*OTHERS, "pipeline.passes.obert.num_events=4"]
    assert keep_pass_overrides(OTHERS, []) == OTHERS
    assert keep_pass_overrides([], ["obert"]) == []


def test_steps_may_be_any_iterable_read_once():
    assert keep_pass_overrides(["pipeline.passes.a.x=1", "pipeline.passes.b.x=1"], iter(["a", "b"])) == [
        "pipeline.passes.a.x=1", "pipeline.passes.b.x=1"]
