"""Every distillation-loss weight is a finite number >= 0, refused at settings time otherwise (BiBERT's
label/hidden/DMD weights, recovery's hidden weight and temperatures), and the training loop holds
plug-ins built elsewhere to the same rule: ``inf`` or ``nan`` would make every step's loss inf/NaN."""

from __future__ import annotations

import math

import pytest

from compresslab.passes.bibert import BiBert
from compresslab.training.losses import LogitKD, SoftCrossEntropyKD, TaskLoss
from compresslab.training.recovery import Recovery

BAD = [math.inf, -math.inf, math.nan, -1.0]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("field", ["label_weight", "dmd_weight"])
def test_bibert_refuses_a_non_finite_or_negative_loss_weight(field, bad):
    with pytest.raises(ValueError, match=rf"bibert\.{field} must be >= 0 and finite"):
        BiBert(**{field: bad})
    assert getattr(BiBert(**{field: 0.0}), field) == 0.0  # 0 turns the term off
    # its hidden-state KD weight is its recovery's (Recovery's check, below)
    with pytest.raises(ValueError, match=r"recovery\.hidden_weight must be >= 0 and finite"):
        BiBert(recovery={"hidden_weight": bad})


@pytest.mark.parametrize("bad", BAD)
def test_recovery_refuses_a_non_finite_or_negative_hidden_weight(bad):
    with pytest.raises(ValueError, match=r"recovery\.hidden_weight must be >= 0 and finite"):
        Recovery(hidden_weight=bad)


@pytest.mark.parametrize("make", [lambda t: BiBert(recovery={"temperature": t}), lambda t: Recovery(temperature=t)])
def test_an_infinite_temperature_is_refused(make):  # bibert's logit_kd temperature is its recovery's
    with pytest.raises(ValueError, match=r"recovery\.temperature must be a finite number > 0"):
        make(math.inf)
    with pytest.raises(ValueError, match=r"recovery\.temperature"):
        make(math.nan)


def test_recovery_hardness_stays_a_fraction():
    for bad in (math.nan, math.inf, 1.5):
        with pytest.raises(ValueError, match="hardness"):
            Recovery(hardness=bad)


@pytest.mark.parametrize("loss, match", [
    (LogitKD(weight=math.inf), r"LogitKD\.weight"),
    (SoftCrossEntropyKD(label_weight=math.nan), r"SoftCrossEntropyKD\.label_weight"),
    (TaskLoss(weight=-0.5), r"TaskLoss\.weight"),
])
def test_the_loop_refuses_a_plug_in_with_a_bad_weight_before_any_work(loss, match):
    from compresslab.training.loop import TrainConfig, train

    with pytest.raises(ValueError, match=match + " must be >= 0 and finite"):
        train(None, [], TrainConfig(), [loss], teacher=object())  # type: ignore[arg-type]


@pytest.mark.parametrize("field, bad", [("weight_decay", math.inf), ("weight_decay", math.nan), ("weight_decay", -0.1),
                                        ("warmup_ratio", 1.0), ("warmup_ratio", math.inf), ("warmup_ratio", math.nan),
                                        ("warmup_ratio", -0.1)])
def test_bibert_refuses_an_infinite_weight_decay_and_a_warmup_ratio_outside_0_1(field, bad):
    with pytest.raises(ValueError, match=rf"bibert\.{field}"):
        BiBert(**{field: bad})
    assert getattr(BiBert(**{field: 0.0}), field) == 0.0


@pytest.mark.parametrize("kw", [{"hidden_weight": 1.0}, {"hardness": 0.5}, {"temperature": 4.0}])
def test_a_logit_kd_setting_on_an_embedding_task_is_refused_not_ignored(kw):
    # an embedding task's recovery is embedding KD alone (build_losses): a review found these silently dropped
    from types import SimpleNamespace

    from compresslab.data.schema import TaskKind
    from compresslab.training.recovery import Recovery

    task = SimpleNamespace(spec=SimpleNamespace(kind=TaskKind.EMBEDDING, name="stsb_embedding"), validation=[1])
    key = next(iter(kw))
    with pytest.raises(ValueError, match=f"recovery.{key}=.*embedding task 'stsb_embedding'"):
        Recovery(steps=10, **kw).check_task(task)
    Recovery(steps=10).check_task(task)  # the defaults pass
    Recovery(steps=10, **kw).check_task(SimpleNamespace(spec=SimpleNamespace(kind=TaskKind.CLASSIFICATION,
                                                                             name="sst2"), validation=[1]))
