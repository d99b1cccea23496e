"""Every setting of a pass is in its ``conf/pass/<name>.yaml``, nested blocks included, so the command line takes it
as ``pipeline.passes.<step>.<key>=value`` like any other (Hydra's struct mode refuses a key the YAML lacks: obert's
``checkpoint_every`` was refused as "no such setting ... did you mean recovery.select_every?"). Adding a key to a
YAML must not rename earlier runs: the pass declares it in ``identity_defaults`` (checked by the hash pins)."""

import dataclasses
import importlib
from pathlib import Path

import pytest
import yaml

import compresslab
from compresslab.validate import nested_settings

CONF = Path(compresslab.__file__).parent / "conf" / "pass"
# settings deliberately left out of a YAML, with the reason
NOT_LISTED = {
    ("Finetune", "overrides"): "never read; refused unless empty (kept for old pass.json files)",
    ("BiBert", "recovery.hardness"): "BiBERT's prediction loss is set by `prediction`; hardness must stay 1",
}


def _yamls():
    return sorted(CONF.glob("*.yaml"))


@pytest.mark.parametrize("path", _yamls(), ids=lambda p: p.stem)
def test_the_pass_yaml_lists_every_setting(path):
    node = yaml.safe_load(path.read_text())
    module, name = node["_target_"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in node]
    for block, keys in nested_settings(cls).items():
        if isinstance(node.get(block), dict):
            missing += [f"{block}.{k}" for k in keys if k not in node[block]]
    missing = [m for m in missing if (name, m) not in NOT_LISTED]
    assert not missing, f"{path.name}: settable only with a leading '+': {missing}"


def test_finetune_refuses_the_overrides_it_never_read():
    from compresslab.registry import build_pass

    assert build_pass("finetune", overrides={}).overrides == {}  # old pass.json files hold {}
    with pytest.raises(ValueError, match="not read .* set lr, epochs, steps"):
        build_pass("finetune", overrides={"weight_decay": 0.0})


# compress(output_dir=)'s identity of a pass before recovery.select_examples existed (2026-12-06, commit 1858a12):
# an output dir made then is found again (resumed, or reused when finished)
API_PASS_HASHES = {"ziplm": "b5680a1a396c", "obert": "185d53d9b3a5", "int8_qat": "5da353753972"}


@pytest.mark.parametrize("name", sorted(API_PASS_HASHES))
def test_compress_s_pass_identity_keeps_its_hash_when_a_block_gains_a_key(name):
    from compresslab.manifest import stable_hash
    from compresslab.pipeline.plan import block_identity
    from compresslab.registry import build_pass, pass_to_dict

    p = build_pass(name)
    assert "select_examples" in pass_to_dict(p)["recovery"]
    assert stable_hash(block_identity(type(p), pass_to_dict(p)))[:12] == API_PASS_HASHES[name]
    d = pass_to_dict(p)
    d["recovery"] = {**d["recovery"], "select_examples": 8}  # a value of its own is part of the identity
    assert stable_hash(block_identity(type(p), d))[:12] != API_PASS_HASHES[name]
