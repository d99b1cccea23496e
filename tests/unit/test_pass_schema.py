"""Pass dicts carry a schema version; manifests of the current schema load and rebuild every pass,
and schema-1 dicts (recovery fields flat on the pass, before the nested block) still load."""

from __future__ import annotations

import pytest

from compresslab.manifest import RunManifest, StepRecord
from compresslab.registry import PASS_SCHEMA, available_passes, build_pass, pass_from_dict, pass_to_dict

_BUILD = {"layer_drop": {"num_layers": 1}}


@pytest.mark.parametrize("name", available_passes())
def test_manifest_round_trip_rebuilds_every_pass(tmp_path, name):
    p = build_pass(name, **_BUILD.get(name, {}))
    m = RunManifest.create(tmp_path, pipeline="x", config_hash="h")
    m.set_step(StepRecord(index=0, name="s", stage=p.stage.value, dir="steps/00_s", pass_config=pass_to_dict(p)))
    m.save()
    rec = RunManifest.load(tmp_path).steps[0]
    assert rec.pass_config["schema"] == PASS_SCHEMA
    assert pass_from_dict(rec.pass_config) == p


def test_schema_1_flat_recovery_fields_are_migrated():
    old = {"name": "magnitude", "sparsity": 0.5, "mode": "oneshot", "steps": 7, "lr": 1e-4, "hardness": 0.5,
           "temperature": 3.0}
    p = pass_from_dict(old)
    assert (p.recovery.steps, p.recovery.lr, p.recovery.hardness, p.recovery.temperature) == (7, 1e-4, 0.5, 3.0)
    ld = pass_from_dict({"name": "layer_drop", "num_layers": 3, "recovery_steps": 5, "hidden_weight": 0.5})
    assert (ld.recovery.steps, ld.recovery.hidden_weight) == (5, 0.5)
    ft = pass_from_dict({"name": "finetune", "steps": 10, "lr": 1e-4})  # finetune's own steps/lr stay its own
    assert (ft.steps, ft.lr) == (10, 1e-4)


def test_newer_schema_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="newer"):
        pass_from_dict({"name": "magnitude", "schema": PASS_SCHEMA + 1})


def test_a_dict_without_recovery_fields_keeps_the_pass_s_own_default_recovery():
    # nesting nothing would give Recovery()'s steps=0 instead of the pass's recovery (oBERT's 300 steps)
    assert pass_from_dict({"name": "obert", "schema": 2, "sparsity": 0.5}).recovery.steps == 300
    assert pass_from_dict({"name": "obert", "sparsity": 0.5}).recovery.steps == 300  # schema 1 alike
