"""bibert: the swap, the variants' losses, validation selection, the frozen result, resume, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

from compresslab.models.binary import BINARY_KEY, BI_ATTENTION, BinaryEmbedding, BinaryLinear, binary_modules
from compresslab.models.tiny import tiny_model
from compresslab.passes.bibert import BiBert
from compresslab.training.losses import DirectionMatchingKD, LogitKD, NormalizedHiddenKD, SoftCrossEntropyKD
from compresslab.training.recovery import Recovery

FAST = dict(batch_size=8, max_length=16, recovery=dict(steps=4, select_every=2, lr=1e-3))


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_binarizes_trains_selects_on_validation_and_freezes(tiny_ctx, arch):
    model = tiny_model(arch)
    teacher = copy.deepcopy(model).eval()
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    res = BiBert(**FAST).apply(model, tiny_ctx(teacher=teacher))
    mods = binary_modules(model)
    assert mods and all(m.frozen for m in mods.values())
    assert any(isinstance(m, BinaryEmbedding) for m in mods.values())
    assert sum(isinstance(m, BinaryLinear) for m in mods.values()) == res.metrics["binarized"]["linears"]
    # the classifier stays full precision
    assert not any("classifier" in n for n in mods)
    assert model.config._attn_implementation == BI_ATTENTION
    assert getattr(model.config, BINARY_KEY)["frozen"] is True
    for m in mods.values():  # every row is {±alpha}
        assert torch.equal(m.weight.abs(), m.alpha()[:, None].expand_as(m.weight))
    sel = res.metrics["selection"]  # recover()'s record: the binarized weights before training are a candidate
    assert sel["split"] == "validation" and [h["step"] for h in sel["history"]] == [0, 2, 4]
    assert (sel["every"], sel["steps"], sel["examples"]) == (2, 4, len(tiny_ctx().task.validation))
    assert "selection" not in res.metrics["train"]  # one record, at the top level (the report lists it once)
    assert res.metrics["train"]["steps"] == 4 and res.formats == ["packed_binary"]
    # the teacher was never touched
    assert all(torch.equal(before[n], p) for n, p in teacher.named_parameters())
    assert not (tiny_ctx().step_dir / "train_checkpoint").exists()


def test_variants_are_settings_of_one_pass():
    full = BiBert().losses()
    assert [type(l) for l in full] == [SoftCrossEntropyKD, NormalizedHiddenKD, DirectionMatchingKD]
    assert [type(l) for l in BiBert(dmd_weight=0).losses()] == [SoftCrossEntropyKD, NormalizedHiddenKD]
    naive = BiBert(attention="softmax", prediction="logit_kd", recovery={"hidden_weight": 0}, dmd_weight=0).losses()
    assert naive == [LogitKD(temperature=2.0)]
    assert BiBert(prediction="logit_kd", recovery={"temperature": 4.0}).losses()[0] == LogitKD(temperature=4.0)


def test_a_partial_recovery_keeps_bibert_s_defaults_not_recovery_s():
    r = BiBert(recovery={"steps": 300}).recovery
    assert (r.steps, r.lr, r.hidden_weight, r.select_every, r.select_examples) == (300, 1e-3, 1.0, 500, None)
    assert BiBert().recovery == Recovery(steps=1000, lr=1e-3, hidden_weight=1.0, temperature=2.0, select_every=500)


def test_softmax_ablation_keeps_softmax_over_binarized_scores(tiny_ctx):
    model = tiny_model()
    BiBert(attention="softmax", **FAST).apply(model, tiny_ctx(teacher=copy.deepcopy(model)))
    from transformers.models.bert.modeling_bert import BertSelfAttention

    attn = next(m for m in model.modules() if isinstance(m, BertSelfAttention))
    assert attn.binary_attention == "softmax"


def test_a_stopped_run_resumes_from_its_step_checkpoint(tiny_ctx, monkeypatch):
    """A run stopped after its first checkpoint resumes there and ends where an unbroken run ends."""
    import compresslab.passes.bibert as bb

    monkeypatch.setattr(bb, "CHECKPOINT_EVERY", 2)  # recover()'s step checkpoints, in the step dir
    ref = tiny_model()
    ctx = tiny_ctx(teacher=copy.deepcopy(ref))
    unbroken = copy.deepcopy(ref)
    BiBert(**FAST).apply(unbroken, ctx)

    from compresslab.training.select import BestOnValidation

    calls = {"n": 0}
    orig = BestOnValidation.on_step_end

    def stop_after_checkpoint(self, step, model, optimizer):
        orig(self, step, model, optimizer)
        calls["n"] += 1
        if step + 1 == 3:
            raise KeyboardInterrupt("stopped")

    monkeypatch.setattr(BestOnValidation, "on_step_end", stop_after_checkpoint)
    stopped = copy.deepcopy(ref)
    with pytest.raises(KeyboardInterrupt):
        BiBert(**FAST).apply(stopped, ctx)
    assert (ctx.step_dir / "train_checkpoint").is_dir()
    monkeypatch.setattr(BestOnValidation, "on_step_end", orig)
    resumed = copy.deepcopy(ref)
    res = BiBert(**FAST).apply(resumed, ctx)
    assert res.metrics["train"].get("resumed_at") == 2
    for (n, a), b in zip(unbroken.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("kw,match", [
    ({"attention": "sigmoid"}, "attention"),
    ({"prediction": "mse"}, "prediction"),
    ({"recovery": {"steps": 0}}, "recovery.steps"),
    ({"recovery": {"select_every": 0}}, "recovery.select_every"),
    ({"recovery": {"lr": -1}}, "recovery.lr"),
    ({"recovery": {"hardness": 0.5}}, "hardness.*prediction"),
    ({"recovery": {"select_examples": 0}}, "recovery.select_examples"),
    ({"recovery": {"eval_every": 3}}, r"recovery has no option\(s\) \['eval_every'\]"),
    ({"dmd_weight": -1}, "dmd_weight"),
    ({"warmup_ratio": 1.0}, "warmup_ratio"),
    ({"embeddings": "yes"}, "embeddings"),
    ({"max_length": 0}, "max_length"),
    ({"ties": "minus"}, "ties"),
])
def test_bad_settings_are_refused_at_construction(kw, match):
    with pytest.raises(ValueError, match=match):
        BiBert(**kw)


def test_fp16_model_and_already_binarized_model_are_refused_before_work(tiny_ctx):
    model = tiny_model().half()
    with pytest.raises(ValueError, match="float32"):
        BiBert(**FAST).apply(model, tiny_ctx())
    model = tiny_model()
    BiBert(**FAST).apply(model, tiny_ctx(teacher=copy.deepcopy(model)))
    with pytest.raises(ValueError, match="float32|already binarized"):
        BiBert(**FAST).check_model(model)


def test_a_batch_larger_than_the_train_split_names_the_largest_that_works(tiny_ctx):
    with pytest.raises(ValueError, match=r"bibert.batch_size=128 exceeds the train split \(96 examples\); "
                                         r"set bibert.batch_size<=96"):
        BiBert(**{**FAST, "batch_size": 128}).check(tiny_ctx().task)


def test_selection_is_recover_s_with_the_context_s_scorer(tiny_ctx, monkeypatch):
    """BiBERT scores its checks with ``PassContext.validation_score`` (the scorer every distilling pass selects
    with), on the first ``recovery.select_examples`` validation examples, the frozen model on the same ones."""
    import compresslab.types as types

    calls = []

    def scored(self, model, max_examples=None):
        calls.append((model.training, max_examples))
        return float(len(calls) == 2)  # the check at step 2 wins

    monkeypatch.setattr(types.PassContext, "validation_score", scored)
    model = tiny_model()
    fast = {**FAST, "recovery": {**FAST["recovery"], "select_examples": 3}}
    res = BiBert(**fast).apply(model, tiny_ctx(teacher=copy.deepcopy(model)))
    assert calls == [(False, 3)] * 4  # steps 0, 2, 4, then the frozen model
    sel = res.metrics["selection"]
    assert sel["best_step"] == 2 and sel["best_score"] == 1.0 and sel["examples"] == 3
    assert res.metrics["validation_score"]["trained"] == 1.0 and res.metrics["validation_score"]["frozen"] == 0.0


# BiBERT's flat settings before its recovery block (design review item 7) -> where they are now
MOVED = {"steps": "recovery.steps", "lr": "recovery.lr", "hidden_weight": "recovery.hidden_weight",
         "temperature": "recovery.temperature", "eval_every": "recovery.select_every",
         "eval_examples": "recovery.select_examples"}


@pytest.mark.parametrize("old, new", MOVED.items())
def test_an_old_flat_key_is_refused_naming_its_new_place(old, new):
    """The CLI (a plain override, and one added with +) and the API (a pass dict) refuse the old key with the
    new one in the message; nothing is trained under a setting that is silently dropped."""
    from compresslab.config import ConfigError, compose
    from compresslab.pipeline.plan import PipelineError, build_steps
    from compresslab.registry import build_pass

    hint = f"did you mean '{new}'"
    with pytest.raises(ConfigError, match=rf"pipeline\.passes\.bibert\.{old}: no such setting .*{hint}"):
        compose(["+pipeline=bibert", "debug=smoke", f"pipeline.passes.bibert.{old}=3"])
    with pytest.raises(PipelineError, match=rf"pipeline\.passes\.bibert: unknown setting\(s\) \['{old}'\].*{hint}"):
        build_steps(compose(["+pipeline=bibert", "debug=smoke", f"+pipeline.passes.bibert.{old}=3"]))
    with pytest.raises(ValueError, match=rf"pass 'bibert' has no option\(s\) \['{old}'\].*{hint}"):
        build_pass("bibert", **{old: 3})


def test_a_pass_json_written_before_the_recovery_block_still_loads():
    """A run's record (``pass.json``, the manifest) of the flat keys is read into the same pass."""
    from compresslab.registry import pass_from_dict, pass_to_dict

    old = {"name": "bibert", "schema": 2, "attention": "bool", "prediction": "bibert", "label_weight": 0.5,
           "hidden_weight": 1.0, "dmd_weight": 1.0, "temperature": 2.0, "embeddings": True, "pooler": True,
           "ties": "plus", "steps": 6, "lr": 0.001, "batch_size": 16, "max_length": 64, "warmup_ratio": 0.1,
           "weight_decay": 0.01, "eval_every": 3, "eval_examples": None}  # a smoke run's pass.json, verbatim
    p = pass_from_dict(old)
    assert p == BiBert(recovery={"steps": 6, "select_every": 3})
    assert pass_from_dict(pass_to_dict(p)) == p
    assert pass_from_dict({"name": "bibert", "schema": 2, "eval_examples": 8}).recovery == Recovery(
        steps=1000, lr=1e-3, hidden_weight=1.0, select_every=500, select_examples=8)  # the rest: BiBERT's defaults
