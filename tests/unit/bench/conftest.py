"""Tiny BERT classifiers built locally (no downloads) and exported to ONNX once per session."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

VOCAB = 128


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=160,
                     attn_implementation="eager")
    return BertForSequenceClassification(cfg).eval()


def _export(model, path: Path, names: list[str]) -> Path:
    import torch

    ids = torch.randint(0, VOCAB, (2, 16))
    args = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids)}
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(args[n] for n in names), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=17,
                          dynamo=False)
    return path


@pytest.fixture(scope="session")
def tiny_model():
    """A 2-layer, hidden-32 BertForSequenceClassification in eval mode with eager attention."""
    import torch

    torch.manual_seed(0)
    return _tiny_bert()


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    """The tiny model exported with input_ids, attention_mask and token_type_ids."""
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return _export(tiny_model, out, ["input_ids", "attention_mask", "token_type_ids"])


@pytest.fixture(scope="session")
def tiny_onnx_no_segments(tiny_model, tmp_path_factory) -> Path:
    """The tiny model exported without token_type_ids, as DistilBERT/RoBERTa graphs are."""
    out = tmp_path_factory.mktemp("onnx") / "tiny_no_tt.onnx"
    return _export(tiny_model, out, ["input_ids", "attention_mask"])
