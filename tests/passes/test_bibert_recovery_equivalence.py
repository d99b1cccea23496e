"""BiBERT trains through ``training.recover`` (design review item 7) and reaches, step for step, the weights its
own loop reached before: the same losses, the same optimizer recipe and the same validation scores.

The loop the pass had is written out here (``_old_apply``: its ``TrainConfig``, its losses from the flat
settings, ``BestOnValidation`` over its own ``predict`` closure) and run beside the pass on the same model. The one
difference is recover()'s rule for every distilling pass: the weights before the first step (the binarized,
undistilled model) are a selection candidate too; they change no training step, only what may be kept.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import shutil

import pytest

import compresslab.passes.bibert as bb
import compresslab.training.recovery as recovery_mod
from compresslab.eval.evaluate import predict, torch_forward
from compresslab.models.binary import binarize_model, default_targets, freeze_binary
from compresslab.models.tiny import tiny_model
from compresslab.passes.bibert import BiBert
from compresslab.training import TrainConfig, train
from compresslab.training.losses import DirectionMatchingKD, LogitKD, NormalizedHiddenKD, SoftCrossEntropyKD
from compresslab.training.select import BestOnValidation

# the flat settings of before, and the same run in the recovery block
OLD = dict(steps=6, lr=3e-3, hidden_weight=0.7, temperature=3.0, eval_every=2, eval_examples=None)
NEW = dict(recovery=dict(steps=6, lr=3e-3, hidden_weight=0.7, temperature=3.0, select_every=2, select_examples=None))
COMMON = dict(batch_size=8, max_length=16, warmup_ratio=0.2, weight_decay=0.05, label_weight=0.4, dmd_weight=0.8)


def _old_losses(prediction: str, label_weight: float, hidden_weight: float, dmd_weight: float,
                temperature: float) -> list:
    """``BiBert.losses()`` before the recovery block."""
    out: list = [SoftCrossEntropyKD(label_weight=label_weight) if prediction == "bibert"
                 else LogitKD(temperature=temperature)]
    if hidden_weight:
        out.append(NormalizedHiddenKD(weight=hidden_weight))
    if dmd_weight:
        out.append(DirectionMatchingKD(weight=dmd_weight))
    return out


def _old_apply(model, ctx, prediction: str, attention: str) -> tuple[BestOnValidation, TrainConfig]:
    """The pass's training and selection before design review item 7, as it was written."""
    teacher = ctx.kd_teacher(model)
    binarize_model(model, attention=attention, ties="plus", **default_targets(model))
    tctx = dataclasses.replace(ctx, max_length=COMMON["max_length"])
    loader = tctx.train_loader(batch_size=COMMON["batch_size"])
    val = ctx.task.validation

    def score(m):
        return predict(torch_forward(m, ctx.device), ctx.task.spec, val, ctx.tokenizer,
                       max_length=ctx.max_length).metrics["score"]

    select = BestOnValidation(score, OLD["eval_every"], OLD["steps"])
    cfg = TrainConfig(lr=OLD["lr"], steps=OLD["steps"], batch_size=COMMON["batch_size"],
                      weight_decay=COMMON["weight_decay"], warmup_ratio=COMMON["warmup_ratio"], schedule="linear",
                      seed=ctx.seed, device=ctx.device.type, checkpoint_dir=str(ctx.step_dir / "train_checkpoint"),
                      checkpoint_every=bb.CHECKPOINT_EVERY)
    losses = _old_losses(prediction, COMMON["label_weight"], OLD["hidden_weight"], COMMON["dmd_weight"],
                         OLD["temperature"])
    train(model, loader, cfg, losses, teacher=teacher, callbacks=[select])
    select.restore_best(model)
    model.eval()
    freeze_binary(model)
    shutil.rmtree(ctx.step_dir / "train_checkpoint")  # as the pass did (else the next run resumes this one)
    return select, cfg


def _digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("prediction, attention", [("bibert", "bool"), ("logit_kd", "softmax")])
def test_the_pass_through_recover_trains_as_its_own_loop_did(prediction, attention, tiny_ctx, tmp_path,
                                                              monkeypatch) -> None:
    checks: list[tuple[int, str, float]] = []  # (step, weights, score) of every validation check, in order
    real_check = BestOnValidation._check

    def check(self, done, model):
        n = len(self.history)
        real_check(self, done, model)
        checks.append((done, _digest(model), self.history[n]["score"]))

    monkeypatch.setattr(BestOnValidation, "_check", check)
    configs = []
    real_train = recovery_mod.train
    monkeypatch.setattr(recovery_mod, "train", lambda m, loader, cfg, losses, **kw: configs.append((cfg, losses))
                        or real_train(m, loader, cfg, losses, **kw))

    ref = tiny_model("bert", seed=0)
    teacher = copy.deepcopy(ref).eval()
    old_model, new_model = copy.deepcopy(ref), copy.deepcopy(ref)
    old_select, old_cfg = _old_apply(old_model, tiny_ctx(teacher=teacher), prediction, attention)
    old_checks = list(checks)
    checks.clear()
    res = BiBert(prediction=prediction, attention=attention, **COMMON, **NEW).apply(new_model,
                                                                                    tiny_ctx(teacher=teacher))

    # the same recipe and the same loss plug-ins reach the one loop
    (cfg, losses), = configs
    assert cfg == old_cfg
    assert list(losses) == _old_losses(prediction, COMMON["label_weight"], OLD["hidden_weight"],
                                       COMMON["dmd_weight"], OLD["temperature"])
    # step 0 is scored (the weights before training), then the very checks of before: same weights, same scores
    assert [c[0] for c in checks] == [0, 2, 4, 6]
    assert checks[1:] == old_checks
    sel = res.metrics["selection"]
    assert sel["history"][1:] == old_select.history
    assert sel["history"][0]["score"] == checks[0][2]
    if sel["best_step"] == old_select.best_step:  # the kept weights are then the same, frozen alike
        assert _digest(new_model) == _digest(old_model)
        assert res.metrics["validation_score"]["trained"] == old_select.best_score
    else:  # only the step-0 candidate can make a difference, and only by scoring at least the old best
        assert sel["best_step"] == 0 and sel["history"][0]["score"] >= old_select.best_score


def test_the_shipped_yaml_builds_the_losses_and_recipe_it_built_before() -> None:
    """conf/pass/bibert.yaml under each budget gives the values its flat keys gave (bench: 3000 steps at 1e-3,
    checks every 500; the whole validation split)."""
    from omegaconf import OmegaConf
    from hydra.utils import instantiate

    from compresslab.config import config_dir

    for budget, steps, every in (("bench", 3000, 500), ("quick", 300, 100), ("smoke", 6, 3)):
        node = OmegaConf.merge({"budget": OmegaConf.load(f"{config_dir()}/budget/{budget}.yaml")},
                               {"p": OmegaConf.load(f"{config_dir()}/pass/bibert.yaml")})
        p = instantiate(node.p, _convert_="all")
        r = p.recovery
        assert (r.steps, r.lr, r.select_every, r.select_examples, r.hidden_weight, r.temperature, r.hardness) == (
            steps, 1e-3, every, None, 1.0, 2.0, 1.0)
        assert (p.batch_size, p.max_length, p.warmup_ratio, p.weight_decay) == (16, 64, 0.1, 0.01)
        assert p.losses() == _old_losses("bibert", 0.5, 1.0, 1.0, 2.0)
