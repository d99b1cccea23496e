"""Fixtures shared by the guided int8 tests: a fused tiny-BERT export, validation feeds, a fixed latency table."""

from __future__ import annotations

import pytest

from compresslab.data.loaders import make_loader
from compresslab.models.tiny import tiny_model
from compresslab.quant import guided_int8 as g
from compresslab.testing import tiny_sentiment


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_tok):
    """A fused export of the tiny BERT (wide init: int8 really moves its logits)."""
    from compresslab.export import export_model

    model = tiny_model("bert", initializer_range=0.3)
    batches = list(make_loader(tiny_sentiment(8), tiny_tok, 4, 32))
    return export_model(model, tiny_tok, tmp_path_factory.mktemp("guided") / "bert", batches, threads=1)


@pytest.fixture(scope="module")
def feeds(tiny_tok):
    loader = make_loader(tiny_sentiment(48, seed=3), tiny_tok, 16, 32)
    return [{k: v.numpy() for k, v in b.items() if k != "labels"} for b in loader]


@pytest.fixture
def synthetic_times(monkeypatch):
    """A fixed latency table (fp32 2 s, int8 1 s, the chosen model 1.05 s): no timing in unit tests."""
    table = {"fp32": 2.0, "int8": 1.0, "chosen": 1.05}
    monkeypatch.setattr(g, "time_models", lambda paths, *a, **k: {n: table[n] for n in paths})
    return table
