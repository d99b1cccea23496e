"""The loop's q/k/v capture for direction-matching KD (loss plug-ins with ``needs_qkv``)."""

import copy

import pytest
import torch

from compresslab.data.loaders import make_loader
from compresslab.models.adapters import get_adapter
from compresslab.models.binary import binarize_model
from compresslab.models.tiny import tiny_model
from compresslab.testing import tiny_sentiment
from compresslab.training import TrainConfig, train
from compresslab.training.losses import DirectionMatchingKD
from compresslab.training.loop import _forward

ARCHS = ["bert", "roberta", "distilbert"]


def _heads(x, h, d):
    b, t, _ = x.shape
    return x.view(b, t, h, d).transpose(1, 2)


class _Probe:
    """Records the loop's qkv and checks it against the q/k/v projections of each layer's input
    (``hidden_states[l]``), in the (B, H, T, d_h) layout; the loss is DMD."""

    weight = 1.0
    needs_teacher = True
    needs_hidden = True
    needs_attentions = False
    needs_qkv = True

    def __init__(self, student, teacher):
        self.models = {"student": student, "teacher": teacher}
        self.seen = []

    def __call__(self, student, teacher, batch):
        b, t = batch["input_ids"].shape
        rec = {}
        for who, out in (("student", student), ("teacher", teacher)):
            ad = get_adapter(self.models[who])
            h, d = ad.layer(0).num_heads, ad.head_size
            assert isinstance(out.qkv, list) and len(out.qkv) == ad.num_layers
            with torch.no_grad():
                for lv, qkv in zip(ad.layers(), out.qkv):
                    assert len(qkv) == 3
                    for proj, got in zip((lv.q, lv.k, lv.v), qkv):
                        assert got.shape == (b, h, t, d)
                        assert torch.equal(got, _heads(proj(out.hidden_states[lv.index]), h, d))
            rec[who] = [tuple(x.detach().clone() for x in qkv) for qkv in out.qkv]
            rec[who + "_grad"] = out.qkv[0][0].requires_grad
        self.seen.append(rec)
        return DirectionMatchingKD()(student, teacher, batch)


@pytest.mark.parametrize("arch", ARCHS)
def test_loop_delivers_pre_sign_qkv_for_student_and_teacher(arch, tiny_tok):
    teacher = tiny_model(arch, seed=0)
    student = copy.deepcopy(teacher)
    binarize_model(student)
    probe = _Probe(student, teacher)
    loader = make_loader(tiny_sentiment(16, 0), tiny_tok, 8, 16)
    train(student, loader, TrainConfig(lr=1e-3, steps=2, batch_size=8, device="cpu"), [probe], teacher=teacher)
    assert len(probe.seen) == 2
    for rec in probe.seen:
        assert rec["student_grad"] and not rec["teacher_grad"]  # the teacher runs under no_grad
        for q, k, v in rec["student"]:
            for x in (q, k, v):  # the pre-sign projections, not sign(x) ∈ {−1, 0, 1}
                assert not set(x.unique().tolist()) <= {-1.0, 0.0, 1.0}
                assert x.abs().max() > 0
    # the teacher's qkv is its own (full precision), not the student's
    first = probe.seen[0]
    assert not torch.equal(first["student"][0][0], first["teacher"][0][0])


def test_qkv_capture_leaves_no_hooks(tiny_tok):
    m = tiny_model("bert")
    batch = next(iter(make_loader(tiny_sentiment(4, 0), tiny_tok, 4, 16)))
    out = _forward(m, batch, False, False, m)
    assert len(out.qkv) == 2
    assert all(not mod._forward_hooks for mod in m.modules())
    plain = _forward(m, batch, False, False)
    assert not hasattr(plain, "qkv") or plain.qkv is None


@pytest.mark.parametrize("arch", ARCHS)
def test_dmd_decreases_over_a_few_steps(arch, tiny_tok):
    teacher = tiny_model(arch, seed=0)
    student = copy.deepcopy(teacher)
    binarize_model(student)
    loader = make_loader(tiny_sentiment(32, 0), tiny_tok, 8, 16, shuffle=True, seed=0)
    fixed = next(iter(make_loader(tiny_sentiment(16, 7), tiny_tok, 16, 16)))

    def dmd():
        student.eval()
        with torch.no_grad():
            s = _forward(student, fixed, False, False, student)
            t = _forward(teacher, fixed, False, False, teacher)
            return DirectionMatchingKD()(s, t, fixed).item()

    before = dmd()
    res = train(student, loader, TrainConfig(lr=2e-3, steps=12, batch_size=8, log_every=4, seed=0, device="cpu"),
                [DirectionMatchingKD()], teacher=teacher)
    after = dmd()
    assert res.losses[-1] < res.losses[0]
    assert after < 0.9 * before, (before, after)
