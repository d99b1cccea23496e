"""benchmarks/artifacts.py: a peer scored in its own process (issue 14) sends back logits for the dev batches
the suite recorded; replaying them through the same ``predict`` must give exactly the predictions of a
model run here on those batches, and a mismatch of batches must fail loudly, never score silently."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from compresslab.data.tasks import TaskKind, get_task
from compresslab.models.tiny import tiny_tokenizer
from compresslab.testing import tiny_sentiment

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
A = importlib.import_module("benchmarks.artifacts")


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    tok = tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    dev = tiny_sentiment(150, seed=3)  # 3 batches of the suite's 64: order matters
    return SimpleNamespace(task=SimpleNamespace(spec=get_task("sst2"), dev=dev), tokenizer=tok, max_length=24)


def _model(b):  # a deterministic "model": logits from the token ids, different for every row
    ids = b["input_ids"].astype(np.float64)
    return np.stack([np.sin(ids.sum(1)), np.cos(ids.sum(1) * 0.7)], 1).astype(np.float32)


def test_recorded_batches_replay_to_the_same_predictions(state, tmp_path) -> None:
    assert state.task.spec.kind is TaskKind.CLASSIFICATION
    batches = A.record_batches(state)
    assert len(batches) == 3 and all("labels" not in b for b in batches)
    np.savez(tmp_path / "l.npz", **{f"b{i}": _model(b) for i, b in enumerate(batches)})
    here = A._predict(lambda b: _model({k: v.numpy() for k, v in b.items()}), state)
    replayed = A._predict(A.replay_forward(tmp_path / "l.npz"), state)
    assert len(set(here.predictions.tolist())) == 2  # both classes: the comparison can see a shuffle
    np.testing.assert_array_equal(replayed.predictions, here.predictions)


def test_replay_refuses_batches_it_did_not_score(state, tmp_path) -> None:
    batches = A.record_batches(state)
    np.savez(tmp_path / "l.npz", **{f"b{i}": _model(b) for i, b in enumerate(batches[:2])})
    with pytest.raises(ValueError, match="more batches than the 2 the worker scored"):
        A._predict(A.replay_forward(tmp_path / "l.npz"), state)
    np.savez(tmp_path / "m.npz", **{f"b{i}": _model(b)[:-1] for i, b in enumerate(batches)})
    with pytest.raises(ValueError, match="not the batches it scored"):
        A._predict(A.replay_forward(tmp_path / "m.npz"), state)
