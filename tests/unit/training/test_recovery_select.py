"""``Recovery.select_every``: a recovery keeps the weights that scored best on the validation split.

The fault class it fixes: a fixed recovery length on a small task (MRPC: 2,000 steps are ~17 epochs) can
overfit the teacher's train-set outputs, and the last weights are kept however the validation score went.
The tests pin the weights kept (those of the best check, not the last step), the refusals (no scorer, a
gradual pruning schedule whose early checks are less sparse) and that every recovering pass wires the
scorer through.
"""

from __future__ import annotations

import pytest
import torch

from compresslab.data.loaders import make_loader
from compresslab.models.tiny import tiny_model
from compresslab.registry import build_pass
from compresslab.testing import StopAt as _StopAt, StopRun as _Stop, tiny_sentiment
from compresslab.training.recovery import Recovery, recover


def _loader(tok):
    return make_loader(tiny_sentiment(40, 0), tok, 8, 16, shuffle=True, seed=0)


class _Snapshots:
    """Records a copy of the weights after every step (the loop calls it before the selection callback)."""

    def __init__(self) -> None:
        self.by_step: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_end(self, step, model, optimizer):
        self.by_step[step + 1] = {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Scripted:
    """A validation scorer giving a fixed sequence of scores, one per call."""

    def __init__(self, scores):
        self.scores, self.calls = list(scores), 0

    def __call__(self, model) -> float:
        assert not model.training  # scored in eval mode
        self.calls += 1
        return self.scores[self.calls - 1]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_select_every_is_a_non_negative_integer(bad) -> None:
    with pytest.raises(ValueError, match="select_every"):
        Recovery(steps=4, select_every=bad)


def test_the_best_check_is_kept_not_the_last_step(tiny_tok) -> None:
    model = tiny_model("bert", seed=0)
    snaps = _Snapshots()
    score = _Scripted([0.3, 0.5, 0.9, 0.7])  # checks at steps 0, 2, 4, 6: step 4 wins
    res = recover(model, _loader(tiny_tok), Recovery(steps=6, lr=3e-3, hardness=0.0, select_every=2), None,
                  callbacks=[snaps], batch_size=8, validate=score)
    assert score.calls == 4
    assert res.selection["best_step"] == 4 and res.selection["best_score"] == 0.9
    assert [h["step"] for h in res.selection["history"]] == [0, 2, 4, 6]
    kept = model.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in snaps.by_step[4].items())
    assert any(not torch.equal(kept[k], v) for k, v in snaps.by_step[6].items())  # the last step trained on
    assert res.to_dict()["selection"]["best_step"] == 4


def test_the_last_step_is_checked_even_off_the_grid(tiny_tok) -> None:
    model = tiny_model("bert", seed=0)
    score = _Scripted([0.0, 0.1, 0.2, 0.3])
    res = recover(model, _loader(tiny_tok), Recovery(steps=5, lr=3e-3, hardness=0.0, select_every=2), None,
                  batch_size=8, validate=score)
    assert [h["step"] for h in res.selection["history"]] == [0, 2, 4, 5] and res.selection["best_step"] == 5


def test_the_weights_before_recovery_are_a_candidate(tiny_tok) -> None:
    """Training that only loses validation score leaves the model exactly as the pass made it (SST-2: ZipLM
    1.2x one-shot scored 0.34 pt under the teacher on dev, after 2,000 KD steps 1.0 pt): step 0 is scored
    before the first step and, when it stays the best, its weights come back bit for bit."""
    model = tiny_model("bert", seed=0)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    score = _Scripted([0.8, 0.5, 0.6, 0.7])
    res = recover(model, _loader(tiny_tok), Recovery(steps=6, lr=3e-3, hardness=0.0, select_every=2), None,
                  batch_size=8, validate=score)
    assert res.steps == 6 and res.selection["best_step"] == 0 and res.selection["best_score"] == 0.8
    assert res.selection["history"][0] == {"step": 0, "score": 0.8}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_off_by_default_and_no_scorer_needed(tiny_tok) -> None:
    res = recover(tiny_model("bert", seed=0), _loader(tiny_tok), Recovery(steps=2, lr=3e-3, hardness=0.0), None,
                  batch_size=8)
    assert res.selection is None and "selection" not in res.to_dict()


def test_selection_without_a_scorer_is_refused_before_any_step() -> None:
    class NoBatches:
        def __iter__(self):
            raise AssertionError("a training step started")

    with pytest.raises(ValueError, match="no validate"):
        recover(tiny_model("bert", seed=0), NoBatches(), Recovery(steps=2, hardness=0.0, select_every=1), None)


@pytest.mark.parametrize("name", ["magnitude", "obert"])
def test_gradual_pruning_refuses_selection_when_built(name) -> None:
    """Refused with the settings, before any pipeline step (oBERT's default mode is gradual)."""
    with pytest.raises(ValueError, match="gradual pruning changes the sparsity"):
        build_pass(name, sparsity=0.5, mode="gradual", recovery={"steps": 8, "select_every": 2})


@pytest.mark.parametrize("name, kw", [
    ("ziplm", {}), ("structured_l1", {}), ("layer_drop", {"keep": [0]}), ("int8_qat", {}),
    ("hawq", {"bits": 4, "avg_bits": None, "block_size": 32}), ("obert", {"mode": "oneshot", "num_grads": 2}),
    ("magnitude", {"mode": "oneshot"}),
])
def test_no_validation_split_is_refused_at_check(name, kw) -> None:
    """``task.val_size=0`` leaves nothing to select on: every recovering pass's ``check`` says so, before
    any model is loaded (it used to fail at the first check, after N steps of training)."""
    import dataclasses

    from compresslab.testing import tiny_task

    task = dataclasses.replace(tiny_task(), validation=[])
    p = build_pass(name, **kw, recovery={"steps": 4, "select_every": 2})
    with pytest.raises(ValueError, match="task has none"):
        p.check(task)
    build_pass(name, **kw, recovery={"steps": 4}).check(task)  # without selection the split is not needed


def test_scoring_leaves_the_run_unchanged(tiny_tok) -> None:
    """A check that draws from the global RNG (a DataLoader does) and changes buffers in eval mode (int8 QAT's
    observers do) must not change the training: with the best check the last, the weights equal a run
    without selection."""
    def scorer_with_side_effects(model) -> float:
        torch.rand(16)  # an RNG draw, as iterating a DataLoader takes
        for b in model.buffers():
            b.zero_()
        scorer_with_side_effects.calls += 1
        return float(scorer_with_side_effects.calls)  # rising: the last check wins

    scorer_with_side_effects.calls = 0
    plain = tiny_model("bert", seed=0)
    recover(plain, _loader(tiny_tok), Recovery(steps=6, lr=3e-3, hardness=0.0), None, batch_size=8)
    picked = tiny_model("bert", seed=0)
    res = recover(picked, _loader(tiny_tok), Recovery(steps=6, lr=3e-3, hardness=0.0, select_every=2), None,
                  batch_size=8, validate=scorer_with_side_effects)
    assert res.selection["best_step"] == 6
    assert picked.training is False
    a, b = plain.state_dict(), picked.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(bool(buf.abs().sum()) for buf in picked.buffers())  # buffers restored, not left zeroed


@pytest.mark.parametrize("embedding", [False, True])
def test_the_real_validation_score(embedding, tiny_ctx) -> None:
    """``PassContext.validation_score`` on a classifier and on a bare encoder (embedding task), unpatched."""
    from transformers import AutoModel

    from compresslab.models.tiny import tiny_config
    from compresslab.testing import tiny_embedding_task

    if embedding:
        torch.manual_seed(0)
        model, ctx = AutoModel.from_config(tiny_config("bert")).eval(), tiny_ctx(task=tiny_embedding_task(32, 8, 8))
    else:
        model, ctx = tiny_model("bert", seed=0).eval(), tiny_ctx()
    s = ctx.validation_score(model)
    assert isinstance(s, float) and s == s  # a number, not NaN
    assert s == ctx.validation_score(model)  # deterministic


@pytest.mark.parametrize("name, kw", [
    ("layer_drop", {"keep": [0]}),
    ("magnitude", {"sparsity": 0.5, "mode": "oneshot"}),
    ("int8_qat", {}),
    ("hawq", {"bits": 4, "avg_bits": None, "block_size": 32}),
])  # ZipLM and structured_l1 recover through pruning.speedup.recover: below
def test_every_recovering_pass_selects_on_validation(name, kw, tiny_ctx, monkeypatch) -> None:
    import compresslab.types as types

    calls = []

    def scored(self, model):  # the pass's scorer is the context's validation score
        calls.append(model.training)
        return float(len(calls) == 1)  # the first check (step 0, before training) wins

    monkeypatch.setattr(types.PassContext, "validation_score", scored)
    p = build_pass(name, **kw, recovery={"steps": 4, "hardness": 0.0, "lr": 1e-3, "select_every": 2})
    res = p.apply(tiny_model("bert", seed=0), tiny_ctx())
    assert calls == [False, False, False]  # steps 0, 2 and 4, in eval mode
    assert '"best_step": 0' in __import__("json").dumps(res.metrics, default=str)


def test_speedup_recovery_selects_on_validation(tiny_ctx, monkeypatch) -> None:
    """ZipLM's and structured_l1's recovery (``pruning.speedup.recover``) passes the scorer too."""
    import compresslab.types as types
    from compresslab.pruning.speedup import recover as speedup_recover

    calls = []
    monkeypatch.setattr(types.PassContext, "validation_score", lambda self, m: calls.append(1) or -len(calls))
    model = tiny_model("bert", seed=0)
    ctx = tiny_ctx()
    rec = speedup_recover(model, ctx, Recovery(steps=4, lr=1e-3, select_every=2), ctx.kd_teacher(model), "ziplm")
    assert len(calls) == 3 and rec["selection"]["best_step"] == 0  # steps 0, 2, 4: scores -1, -2, -3


def test_a_stopped_recovery_resumes_with_its_checks_and_refuses_another_select_every(tiny_tok, tmp_path) -> None:
    """The checks before the stop (and the best weights) come back from the step checkpoint; resuming with
    another ``select_every`` is a different run, refused naming the field."""
    from compresslab.training.loop import ResumeError

    def run(every, score, stop=-1):
        model = tiny_model("bert", seed=0)
        res = recover(model, _loader(tiny_tok), Recovery(steps=6, lr=3e-3, hardness=0.0, select_every=every), None,
                      callbacks=[_StopAt(stop)], batch_size=8, validate=score, checkpoint_dir=str(tmp_path),
                      checkpoint_every=2)
        return model, res

    with pytest.raises(_Stop):
        run(2, _Scripted([0.1, 0.9]), stop=3)  # checks 0 and 2 (the best of the run) are in the step-2 checkpoint
    with pytest.raises(ResumeError, match="callback_settings"):
        run(3, _Scripted([0.1, 0.2]))
    _, res = run(2, _Scripted([0.5, 0.7]))  # steps 4 and 6 are checked after the resume; step 0 is not rescored
    assert [h["step"] for h in res.selection["history"]] == [0, 2, 4, 6]
    assert res.selection["best_step"] == 2 and res.selection["best_score"] == 0.9
