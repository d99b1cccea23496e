import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from compresslab.data.loaders import make_loader
from compresslab.models.tiny import tiny_model
from compresslab.testing import tiny_sentiment
from compresslab.training import EmbeddingKD, LogitKD, TaskLoss, TrainConfig, build_losses, train
from compresslab.training.loop import lr_lambda

WORKER = Path(__file__).with_name("ddp_worker.py")


class _Out:
    def __init__(self, logits=None, last_hidden_state=None):
        self.logits, self.last_hidden_state = logits, last_hidden_state


def test_logit_kd_matches_reference_formula():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    T = 2.0
    pt = F.softmax(zt / T, -1)
    ref = T * T * (pt * (pt.log() - F.log_softmax(zs / T, -1))).sum(-1).mean()
    got = LogitKD(temperature=T)(_Out(zs), _Out(zt), {})
    torch.testing.assert_close(got, ref)
    assert LogitKD()(_Out(zt), _Out(zt), {}).abs() < 1e-6


def test_embedding_kd_zero_for_identical_and_masks_padding():
    h = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    h2 = h.clone()
    h2[0, 2:] += 100.0  # padding positions must not matter
    assert EmbeddingKD()(_Out(last_hidden_state=h2), _Out(last_hidden_state=h), {"attention_mask": mask}) < 1e-6


def test_build_losses_hardness():
    assert [type(l) for l in build_losses(0.0)] == [TaskLoss]
    assert [type(l) for l in build_losses(1.0)] == [LogitKD]
    assert [l.weight for l in build_losses(0.25)] == [0.75, 0.25]
    with pytest.raises(ValueError):
        build_losses(1.5)


def test_lr_schedules():
    f = lr_lambda(TrainConfig(lr=1.0, schedule="linear", warmup_ratio=0.1), 100)
    assert f(0) == pytest.approx(0.1) and f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.0)
    c = lr_lambda(TrainConfig(lr=1.0, schedule="cyclic_linear", cycle_steps=10, final_lr_ratio=0.1), 100)
    assert c(0) == 1.0 and c(9) == pytest.approx(1 - 0.9 * 0.9) and c(10) == 1.0  # restarts each cycle
    with pytest.raises(ValueError, match="allowed"):
        TrainConfig(schedule="cosine")


def test_training_learns_toy_task(tiny_tok):
    m = tiny_model("bert", seed=0)
    loader = make_loader(tiny_sentiment(128, 0), tiny_tok, 16, 32, shuffle=True, seed=0)
    dev = make_loader(tiny_sentiment(64, 5), tiny_tok, 64, 32)
    res = train(m, loader, TrainConfig(lr=3e-3, steps=60, batch_size=16), [TaskLoss()])
    b = next(iter(dev))
    acc = (m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1) == b["labels"]).float().mean()
    assert res.steps == 60 and res.losses[-1] < res.losses[0]
    assert acc > 0.8


def test_kd_without_teacher_is_an_error(tiny_tok):
    loader = make_loader(tiny_sentiment(8, 0), tiny_tok, 4, 16)
    with pytest.raises(ValueError, match="teacher"):
        train(tiny_model(), loader, TrainConfig(steps=1), [LogitKD()])


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """DDP with gloo on CPU (torchrun, 2 ranks, global batch split) == one process (the one-process
    run is in the test's own process: a third interpreter would add only its start-up)."""
    import importlib.util

    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    a = worker.train_tiny(tmp_path / "tok")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    two = tmp_path / "two.safetensors"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                    str(WORKER), str(two)], check=True, env=env, timeout=300, capture_output=True)
    b = load_file(str(two))
    start = tiny_model("bert", seed=0).state_dict()
    moved = max((a[k] - start[k]).abs().max().item() for k in a if a[k].is_floating_point())
    assert moved > 1e-3  # training really changed the weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_train_leaves_the_callers_random_streams_and_is_seeded_by_its_config(tiny_tok):
    """train() seeds its own fork of the streams (dropout draws from it): the caller's torch, Python and numpy
    streams are where they were, and the weights depend on cfg.seed only, not on what the caller drew before."""
    import random

    import numpy as np

    def fit(pre_draws: int):
        torch.manual_seed(99)
        torch.rand(pre_draws)  # the caller's stream at different positions must not change the result
        m = tiny_model("bert", seed=0)
        m.config.hidden_dropout_prob = 0.3  # dropout must draw, or the test could not tell
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.3
        loader = make_loader(tiny_sentiment(32, 0), tiny_tok, 8, 16, shuffle=True, seed=0)
        random.seed(5)
        np.random.seed(7)
        before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
        train(m, loader, TrainConfig(lr=1e-3, steps=4, batch_size=8, seed=3), [TaskLoss()])
        after = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
        assert torch.equal(before[0], after[0]) and before[1] == after[1] and np.array_equal(before[2], after[2])
        return m.state_dict()

    a, b = fit(0), fit(17)
    assert all(torch.equal(a[k], b[k]) for k in a)
