"""Tests of the measurement scripts under ``benchmarks/`` (not of ``compresslab.bench``, which ``tests/unit/bench``
mirrors). The tiny exported classifier some of them time is built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from compresslab.testing import export_tiny_onnx, tiny_bert_classifier


@pytest.fixture(scope="session")
def tiny_model():
    """A 2-layer, hidden-32 BertForSequenceClassification in eval mode with eager attention."""
    return tiny_bert_classifier(seed=0)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    """The tiny model exported with input_ids, attention_mask and token_type_ids."""
    return export_tiny_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "tiny.onnx",
                            ["input_ids", "attention_mask", "token_type_ids"])
