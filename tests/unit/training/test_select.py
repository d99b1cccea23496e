"""BestOnValidation: keeps the best weights, survives a state round trip and a stopped-and-resumed run."""

import io

import pytest
import torch

from compresslab.data.loaders import make_loader
from compresslab.models.tiny import tiny_model
from compresslab.testing import StopAt as _StopAt, StopRun as _Stop, tiny_sentiment
from compresslab.training import TaskLoss, TrainConfig, train
from compresslab.training.select import BestOnValidation

STEPS, EVERY = 13, 3  # scored after steps 3, 6, 9, 12 and the last, 13


class _Score:
    """A deterministic, non-monotone function of the weights (so the best is not simply the last),
    that also snapshots what it scored and checks the model is in eval mode while scored."""

    def __init__(self):
        self.snapshots = {}
        self.calls = 0

    def __call__(self, model):
        assert not model.training
        self.calls += 1
        w = model.classifier.weight.detach()
        s = float(torch.sin(w.sum() * 1e4))
        self.snapshots[s] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return s


class _TrainModeAfter:
    def __init__(self):
        self.modes = []

    def on_step_end(self, step, model, optimizer):
        self.modes.append(model.training)


def _run(tok, ckpt=None, callbacks=(), score=None, every=0):
    model = tiny_model("bert", seed=0)
    loader = make_loader(tiny_sentiment(40, 0), tok, 8, 16, shuffle=True, seed=0)
    score = score or _Score()
    select = BestOnValidation(score, EVERY, STEPS)
    cfg = TrainConfig(lr=3e-3, steps=STEPS, batch_size=8, seed=0, device="cpu",
                      checkpoint_dir=str(ckpt) if ckpt else None, checkpoint_every=every)
    train(model, loader, cfg, [TaskLoss()], callbacks=[select, *callbacks])
    return model, select, score


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_keeps_the_best_weights(tiny_tok):
    modes = _TrainModeAfter()
    model, select, score = _run(tiny_tok, callbacks=[modes])
    assert [h["step"] for h in select.history] == [3, 6, 9, 12, 13]
    assert score.calls == 5
    scores = [h["score"] for h in select.history]
    best = max(range(5), key=lambda i: scores[i])
    assert select.best_step == select.history[best]["step"] and select.best_score == scores[best]
    assert select.best_step != STEPS  # this seed's best is mid-run: the test means something
    assert _same_state(select.best_state, score.snapshots[select.best_score])
    assert all(modes.modes)  # back in train mode after every scoring
    assert not _same_state(model.state_dict(), select.best_state)
    select.restore_best(model)
    assert _same_state(model.state_dict(), select.best_state)
    # a copy, not a view of the live weights
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    assert _same_state(select.best_state, score.snapshots[select.best_score])


def test_state_dict_round_trip(tiny_tok):
    _, select, _ = _run(tiny_tok)
    buf = io.BytesIO()
    torch.save(select.state_dict(), buf)  # the loop's checkpoints load with weights_only=True
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = BestOnValidation(lambda m: 0.0, EVERY, STEPS)
    other.load_state_dict(state)
    assert other.best_step == select.best_step and other.best_score == select.best_score
    assert other.history == select.history
    assert _same_state(other.best_state, select.best_state)
    # before anything was scored
    fresh = BestOnValidation(lambda m: 0.0, 2, 4)
    again = BestOnValidation(lambda m: 0.0, 2, 4)
    again.load_state_dict(fresh.state_dict())
    assert again.best_score == -float("inf") and again.best_step is None and again.best_state is None
    m = tiny_model("bert")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    again.restore_best(m)  # nothing scored: no-op
    assert _same_state(before, m.state_dict())


def test_resume_through_the_loops_checkpoints_gives_the_same_best(tiny_tok, tmp_path):
    _, ref, _ = _run(tiny_tok)
    with pytest.raises(_Stop):
        _run(tiny_tok, tmp_path, callbacks=[_StopAt(8)], every=4)  # checkpoints after 4 and 8 steps, then stops
    score = _Score()  # a fresh callback: its history and best weights come from the checkpoint
    _, resumed, _ = _run(tiny_tok, tmp_path, score=score, every=4)
    assert score.calls == 3  # steps 9, 12 and 13 only: 3 and 6 were scored before the stop
    assert resumed.history == ref.history
    assert resumed.best_step == ref.best_step and resumed.best_score == ref.best_score
    assert _same_state(resumed.best_state, ref.best_state)


def test_eval_every_must_be_a_positive_integer():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="eval_every"):
            BestOnValidation(lambda m: 0.0, bad, 10)
