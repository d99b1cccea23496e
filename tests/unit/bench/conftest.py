"""Tiny BERT classifiers built locally (no downloads) and exported to ONNX once per session
(``compresslab.testing.tiny_bert_classifier`` / ``export_tiny_onnx``)."""

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


@pytest.fixture(scope="session")
def tiny_onnx_no_segments(tiny_model, tmp_path_factory) -> Path:
    """The tiny model exported without token_type_ids, as DistilBERT/RoBERTa graphs are."""
    return export_tiny_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "tiny_no_tt.onnx",
                            ["input_ids", "attention_mask"])
