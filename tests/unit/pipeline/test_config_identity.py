"""A run's identity (its config hash): keys added later keep the hashes of runs made before them."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from compresslab.config import compose
from compresslab.pipeline.plan import config_hash, config_identity


@pytest.mark.parametrize("task", ["sst2", "mrpc", "stsb_embedding"])
def test_the_default_val_carve_keeps_the_hash_runs_had_before_the_key(task: str) -> None:
    cfg = compose(["+pipeline=int8", f"task={task}"])
    assert cfg.task.val_carve == "random"
    before = OmegaConf.to_container(cfg, resolve=True)
    del before["task"]["val_carve"]  # the config as composed before task.val_carve existed
    assert config_hash(cfg) == config_hash(OmegaConf.create(before))
    assert "val_carve" not in config_identity(cfg)["task"]
    assert config_hash(compose(["+pipeline=int8", f"task={task}", "task.val_carve=null"])) == config_hash(cfg)
    grouped = compose(["+pipeline=int8", f"task={task}", "task.val_carve=grouped"])
    assert config_hash(grouped) != config_hash(cfg)
    assert config_identity(grouped)["task"]["val_carve"] == "grouped"


def test_eval_batch_dependence_at_its_default_keeps_the_hash_runs_had_before_the_key() -> None:
    cfg = compose(["+pipeline=int8"])
    assert cfg.eval.batch_dependence is True
    before = OmegaConf.to_container(cfg, resolve=True)
    del before["eval"]["batch_dependence"]  # the config as composed before eval.batch_dependence existed
    assert config_hash(cfg) == config_hash(OmegaConf.create(before))
    off = compose(["+pipeline=int8", "eval.batch_dependence=false"])
    assert config_hash(off) != config_hash(cfg) and config_identity(off)["eval"]["batch_dependence"] is False


@pytest.mark.parametrize("pipeline", ["int8", "ziplm_int8", "hawq_int8"])
def test_int8_activations_at_its_default_keeps_the_hash_runs_had_before_the_key(pipeline: str) -> None:
    cfg = compose([f"+pipeline={pipeline}"])
    assert cfg.pipeline.passes.int8.activations == "per_call"
    before = OmegaConf.to_container(cfg, resolve=True)
    del before["pipeline"]["passes"]["int8"]["activations"]  # as composed before the setting existed
    assert config_hash(cfg) == config_hash(OmegaConf.create(before))
    per_token = compose([f"+pipeline={pipeline}", "pipeline.passes.int8.activations=per_token"])
    assert config_hash(per_token) != config_hash(cfg)
    assert config_identity(per_token)["pipeline"]["passes"]["int8"]["activations"] == "per_token"


def test_deploy_smooth_alpha_at_its_default_grid_keeps_the_hash_and_other_values_do_not() -> None:
    cfg = compose(["+pipeline=int8"])
    assert list(cfg.deploy.smooth_alpha) == [0.5, 0.7, 0.8, 0.9, 0.95]
    before = OmegaConf.to_container(cfg, resolve=True)
    del before["deploy"]["smooth_alpha"]  # the config as composed before deploy.smooth_alpha existed
    assert config_hash(cfg) == config_hash(OmegaConf.create(before))
    none = compose(["+pipeline=int8", "deploy.smooth_alpha=null"])  # no smoothing: a setting of its own
    one, one_list = (compose(["+pipeline=int8", f"deploy.smooth_alpha={v}"]) for v in ("0.8", "[0.8]"))
    assert len({config_hash(cfg), config_hash(none), config_hash(one)}) == 3
    assert config_hash(one) == config_hash(one_list) and config_identity(one)["deploy"]["smooth_alpha"] == [0.8]
    assert config_hash(compose(["+pipeline=int8", "deploy.smooth_alpha=1"])) == config_hash(
        compose(["+pipeline=int8", "deploy.smooth_alpha=1.0"]))


@pytest.mark.parametrize("pipeline", ["ziplm_int8", "ziplm_2x", "ziplm_obert_int8"])
def test_ziplm_latency_runtime_at_its_default_keeps_the_hash_runs_had_before_the_key(pipeline: str) -> None:
    cfg = compose([f"+pipeline={pipeline}"])
    assert cfg.pipeline.passes.ziplm.latency_runtime == "ort"
    before = OmegaConf.to_container(cfg, resolve=True)
    del before["pipeline"]["passes"]["ziplm"]["latency_runtime"]  # as composed before the setting existed
    assert config_hash(cfg) == config_hash(OmegaConf.create(before))
    key = "pipeline.passes.ziplm.latency_runtime"
    assert config_hash(compose([f"+pipeline={pipeline}", f"{key}=[ort]"])) == config_hash(cfg)  # one setting
    one, one_list, two = (compose([f"+pipeline={pipeline}", f"{key}={v}"])
                          for v in ("ort_int8", "[ort_int8]", "[ort_int8,openvino_int8]"))
    assert config_hash(one) == config_hash(one_list)
    assert len({config_hash(cfg), config_hash(one), config_hash(two)}) == 3


def test_structured_l1_latency_runtime_at_its_default_keeps_the_hash() -> None:
    """compound_seeds.py's L1 arm: ziplm_2x with structured_l1 in ZipLM's place."""
    over = ["+pipeline=ziplm_2x", "~pipeline.passes.ziplm", "+pass@pipeline.passes.structured_l1=structured_l1",
            "pipeline.steps=[finetune,structured_l1]"]
    cfg = compose(over)
    assert cfg.pipeline.passes.structured_l1.latency_runtime == "ort"
    before = OmegaConf.to_container(cfg, resolve=True)
    del before["pipeline"]["passes"]["structured_l1"]["latency_runtime"]
    assert config_hash(cfg) == config_hash(OmegaConf.create(before))


@pytest.mark.parametrize("pipeline", ["int8", "ziplm_int8", "hawq_int8"])
def test_int8_outlier_settings_at_their_defaults_keep_the_hash_runs_had_before_them(pipeline: str) -> None:
    cfg = compose([f"+pipeline={pipeline}"])
    assert cfg.pipeline.passes.int8.outliers == "none"
    before = OmegaConf.to_container(cfg, resolve=True)
    for key in ("outliers", "outlier_ratio", "outlier_max_channels", "outlier_calibration"):
        del before["pipeline"]["passes"]["int8"][key]  # as composed before the settings existed
    assert config_hash(cfg) == config_hash(OmegaConf.create(before))
    split = compose([f"+pipeline={pipeline}", "pipeline.passes.int8.outliers=split"])
    assert config_hash(split) != config_hash(cfg)
    assert config_identity(split)["pipeline"]["passes"]["int8"]["outliers"] == "split"
    ratio = compose([f"+pipeline={pipeline}", "pipeline.passes.int8.outliers=split",
                     "pipeline.passes.int8.outlier_ratio=4"])
    assert config_hash(ratio) != config_hash(split)


@pytest.mark.parametrize("pipeline", ["int8", "ziplm_int8"])
def test_int8_embeddings_per_tensor_keeps_the_old_hash_and_the_new_default_does_not(pipeline: str) -> None:
    """per_tensor writes the files runs wrote before the key existed, so it finds them; blockwise (the default
    since) writes other files and must not."""
    old = compose([f"+pipeline={pipeline}", "pipeline.passes.int8.embeddings=per_tensor"])
    before = OmegaConf.to_container(old, resolve=True)
    del before["pipeline"]["passes"]["int8"]["embeddings"]  # as composed before the setting existed
    assert config_hash(old) == config_hash(OmegaConf.create(before))
    default = compose([f"+pipeline={pipeline}"])
    assert default.pipeline.passes.int8.embeddings == "blockwise"
    assert config_hash(default) != config_hash(old)
    fp32 = compose([f"+pipeline={pipeline}", "pipeline.passes.int8.embeddings=fp32"])
    assert len({config_hash(default), config_hash(old), config_hash(fp32)}) == 3


# +pipeline=bibert's hashes before its flat steps/lr/hidden_weight/temperature/eval_every/eval_examples moved into
# its recovery block (design review item 7), computed from the code before the move (1858a12) with COMPRESSLAB_DATA
# unset: data.root (${oc.env:COMPRESSLAB_DATA,null}) is part of the identity, so the test unsets it too
BIBERT_HASHES = {(): "b74f0e15e174", ("budget=bench",): "eea5f1827669", ("debug=smoke",): "8a10c10de6cb",
                 ("debug=smoke", "pipeline.passes.bibert.recovery.steps=9", "pipeline.passes.bibert.recovery.lr=0.002",
                  "pipeline.passes.bibert.recovery.select_examples=16"): "4d4145e38264"}


@pytest.mark.parametrize("over, want", BIBERT_HASHES.items())
def test_bibert_s_recovery_block_keeps_the_hashes_of_its_flat_keys(over: tuple[str, ...], want: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPRESSLAB_DATA", raising=False)
    cfg = compose(["+pipeline=bibert", *over])
    assert config_hash(cfg) == want
    node = config_identity(cfg)["pipeline"]["passes"]["bibert"]
    assert "recovery" not in node and {"steps", "lr", "eval_every", "eval_examples"} <= set(node)
    # a setting the flat keys had no name for stays in the identity, under recovery
    other = compose(["+pipeline=bibert", *over, "+pipeline.passes.bibert.recovery.hardness=1.0"])
    assert config_identity(other)["pipeline"]["passes"]["bibert"]["recovery"] == {"hardness": 1.0}
    assert config_hash(other) != want
