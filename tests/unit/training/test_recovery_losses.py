"""``recover``'s ``losses=``, ``weight_decay=`` and ``Recovery.select_examples``: what a pass with its own
distillation losses (BiBERT) needs to train, checkpoint and select through the one recovery instead of its own
copy of it (design review item 7)."""

from __future__ import annotations

import pytest

import compresslab.training.recovery as recovery_mod
from compresslab.data.loaders import make_loader
from compresslab.models.tiny import tiny_model
from compresslab.testing import tiny_sentiment
from compresslab.training.losses import LogitKD, NormalizedHiddenKD, TaskLoss
from compresslab.training.recovery import Recovery, recover


def _loader(tok):
    return make_loader(tiny_sentiment(40, 0), tok, 8, 16, shuffle=True, seed=0)


@pytest.fixture
def spy(monkeypatch):
    """The (config, losses, teacher) each ``train`` call got; the real loop still runs."""
    calls = []
    real = recovery_mod.train

    def train(model, loader, cfg, losses, **kw):
        calls.append((cfg, list(losses), kw.get("teacher")))
        return real(model, loader, cfg, losses, **kw)

    monkeypatch.setattr(recovery_mod, "train", train)
    return calls


def test_the_given_losses_replace_the_ones_recovery_builds(tiny_tok, spy) -> None:
    model, teacher = tiny_model("bert", seed=0), tiny_model("bert", seed=1).eval()
    own = [TaskLoss(), NormalizedHiddenKD(weight=0.5)]
    recover(model, _loader(tiny_tok), Recovery(steps=2, lr=1e-3, hardness=1.0), teacher, batch_size=8, losses=own)
    cfg, losses, got_teacher = spy[0]
    assert losses == own and got_teacher is teacher  # not LogitKD from hardness=1
    recover(model, _loader(tiny_tok), Recovery(steps=2, lr=1e-3, hardness=1.0), teacher, batch_size=8,
            losses=[TaskLoss()])
    assert spy[1][2] is None  # no loss reads the teacher: no teacher forward per step


def test_weight_decay_and_the_schedule_reach_the_loop(tiny_tok, spy) -> None:
    recover(tiny_model("bert", seed=0), _loader(tiny_tok), Recovery(steps=2, lr=1e-3), tiny_model("bert", seed=1),
            batch_size=8, weight_decay=0.0, warmup_ratio=0.5, losses=[LogitKD()])
    cfg = spy[0][0]
    assert (cfg.weight_decay, cfg.warmup_ratio, cfg.schedule, cfg.lr, cfg.steps) == (0.0, 0.5, "linear", 1e-3, 2)
    recover(tiny_model("bert", seed=0), _loader(tiny_tok), Recovery(steps=2, lr=1e-3), tiny_model("bert", seed=1),
            batch_size=8)
    assert spy[1][0].weight_decay == 0.01  # the default: TrainConfig's, as before the argument existed


def test_select_examples_is_passed_to_the_scorer(tiny_tok) -> None:
    asked = []

    def score(model, max_examples=None):
        asked.append(max_examples)
        return 0.0

    res = recover(tiny_model("bert", seed=0), _loader(tiny_tok),
                  Recovery(steps=2, lr=1e-3, hardness=0.0, select_every=1, select_examples=5), None, batch_size=8,
                  validate=score)
    assert asked == [5, 5, 5] and [h["step"] for h in res.selection["history"]] == [0, 1, 2]
    recover(tiny_model("bert", seed=0), _loader(tiny_tok), Recovery(steps=1, lr=1e-3, hardness=0.0, select_every=1),
            None, batch_size=8, validate=lambda model: 0.0)  # without select_examples: validate(model), as before


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_select_examples_is_a_positive_integer_or_none(bad) -> None:
    with pytest.raises(ValueError, match="recovery.select_examples"):
        Recovery(select_examples=bad)
    assert Recovery(select_examples=None).select_examples is None


def test_the_context_scores_the_first_select_examples(tiny_ctx) -> None:
    model, ctx = tiny_model("bert", seed=0).eval(), tiny_ctx()
    from compresslab.eval.evaluate import predict, torch_forward

    want = predict(torch_forward(model), ctx.task.spec, ctx.task.validation[:3], ctx.tokenizer,
                   max_length=ctx.max_length).metrics["score"]
    assert ctx.validation_score(model, max_examples=3) == want
    assert ctx.validation_score(model, max_examples=None) == ctx.validation_score(model)


def test_select_examples_without_checks_is_refused_and_a_cap_is_logged(caplog):
    """recovery.select_examples is read only by the validation checks: with select_every=0 it would be accepted and
    ignored; larger than the validation split, each check scores the whole split, and the log says so."""
    import logging
    from types import SimpleNamespace

    import pytest

    from compresslab.training.recovery import Recovery

    with pytest.raises(ValueError, match="select_every=0 makes no checks"):
        Recovery(select_examples=8)
    task = SimpleNamespace(validation=list(range(4)), spec=None)
    with caplog.at_level(logging.WARNING):
        Recovery(select_every=2, select_examples=8).check_task(task)
    assert "select_examples=8 but the validation split holds 4 examples" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Recovery(select_every=2, select_examples=4).check_task(task)
    assert not caplog.text
