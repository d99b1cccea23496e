"""bibert: the swap, the variants' losses, validation selection, the frozen result, resume, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

from compresslab.models.binary import BINARY_KEY, BI_ATTENTION, BinaryEmbedding, BinaryLinear, binary_modules
from compresslab.models.tiny import tiny_model
from compresslab.passes.bibert import BiBert
from compresslab.training.losses import DirectionMatchingKD, LogitKD, NormalizedHiddenKD, SoftCrossEntropyKD

FAST = dict(steps=4, batch_size=8, eval_every=2, lr=1e-3, max_length=16)


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
    sel = res.metrics["selection"]
    assert sel["split"] == "validation" and [h["step"] for h in sel["history"]] == [2, 4]
    assert res.metrics["train"]["steps"] == 4 and res.formats == ["packed_binary"]
    # the teacher was never touched
    assert all(torch.equal(before[n], p) for n, p in teacher.named_parameters())
    assert not (tiny_ctx().step_dir / "train_checkpoint").exists()


def test_variants_are_settings_of_one_pass():
    full = BiBert().losses()
    assert [type(l) for l in full] == [SoftCrossEntropyKD, NormalizedHiddenKD, DirectionMatchingKD]
    assert [type(l) for l in BiBert(dmd_weight=0).losses()] == [SoftCrossEntropyKD, NormalizedHiddenKD]
    naive = BiBert(attention="softmax", prediction="logit_kd", hidden_weight=0, dmd_weight=0).losses()
    assert [type(l) for l in naive] == [LogitKD]


def test_softmax_ablation_keeps_softmax_over_binarized_scores(tiny_ctx):
    model = tiny_model()
    BiBert(attention="softmax", **FAST).apply(model, tiny_ctx(teacher=copy.deepcopy(model)))
    from transformers.models.bert.modeling_bert import BertSelfAttention

    attn = next(m for m in model.modules() if isinstance(m, BertSelfAttention))
    assert attn.binary_attention == "softmax"


def test_a_stopped_run_resumes_from_its_step_checkpoint(tiny_ctx, monkeypatch):
    """A run stopped after its first checkpoint resumes there and ends where an unbroken run ends."""
    import compresslab.passes.bibert as bb

    monkeypatch.setattr(bb, "CHECKPOINT_EVERY", 2)
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
    ({"steps": 0}, "steps"),
    ({"lr": -1}, "lr"),
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
