"""§3.7.5 toy run: a fully binarized 2-layer, d = 64 BERT learns a separable task through the one
training loop with BiBERT's losses (prediction, normalized hidden states, DMD). It catches a broken
straight-through estimator: with sign's gradient cut the student stays near chance.

The student starts from a *random* initialisation, not from the teacher: on this easy task the
binarized copy of the teacher is already right, which would hide a broken STE.
"""

import copy

import pytest
import torch

from compresslab.data.loaders import make_loader
from compresslab.models.binary import binarize_model, binary_modules, freeze_binary
from compresslab.models.tiny import tiny_model
from compresslab.testing import tiny_sentiment
from compresslab.training import TaskLoss, TrainConfig, train
from compresslab.training.losses import DirectionMatchingKD, NormalizedHiddenKD, SoftCrossEntropyKD

D64 = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128)


def _accuracy(model, batch):
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return (logits.argmax(-1) == batch["labels"]).float().mean().item()


@pytest.fixture(scope="module")
def toy(tiny_tok):
    loader = make_loader(tiny_sentiment(256, 0), tiny_tok, 16, 24, shuffle=True, seed=0)
    dev = next(iter(make_loader(tiny_sentiment(200, 5), tiny_tok, 200, 24)))
    teacher = tiny_model("bert", seed=0, **D64)
    train(teacher, loader, TrainConfig(lr=3e-3, steps=60, batch_size=16, seed=0, device="cpu"), [TaskLoss()])
    assert _accuracy(teacher, dev) > 0.95
    return loader, dev, teacher


def test_binarized_student_learns_the_toy_task(toy):
    loader, dev, teacher = toy
    student = tiny_model("bert", seed=1, **D64)
    binarize_model(student)
    assert len(binary_modules(student)) == 2 * 6 + 2  # encoder Linears, pooler, word embeddings
    chance = _accuracy(student, dev)
    res = train(student, loader, TrainConfig(lr=1e-3, steps=150, batch_size=16, seed=0, device="cpu",
                                              warmup_ratio=0.1, log_every=25),
                [SoftCrossEntropyKD(), NormalizedHiddenKD(), DirectionMatchingKD()], teacher=copy.deepcopy(teacher))
    acc = _accuracy(student, dev)
    assert res.losses[-1] < 0.6 * res.losses[0]
    assert chance < 0.7 and acc > 0.85, (chance, acc)
    # deployment (sign ties 0 -> +1, α in float16) keeps the accuracy on this task
    freeze_binary(student)
    assert _accuracy(student, dev) > 0.85
