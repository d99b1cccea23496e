"""Tiny random models and a tiny tokenizer, built locally from configs (tests, smoke runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

_WORDS = ["the", "a", "movie", "film", "good", "bad", "great", "awful", "is", "was", "not", "very",
          "fun", "boring", "plot", "actors", "and", "but", "it", "this", "love", "hate", "!", ".", ","]


def tiny_config(arch: str = "bert", **overrides: Any):
    """A 2-layer, 4-head, hidden-32 config for ``arch`` in {bert, roberta, distilbert}."""
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    vocab = 64
    if arch == "distilbert":
        kw = dict(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)
        kw.update(overrides)
        return DistilBertConfig(**kw)
    kw = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=72, type_vocab_size=2)
    kw.update(overrides)
    if arch == "roberta":
        kw.setdefault("pad_token_id", 1)
        return RobertaConfig(**kw)
    if arch == "bert":
        return BertConfig(**kw)
    raise ValueError(f"unknown tiny arch {arch!r}; allowed: bert, roberta, distilbert")


def tiny_model(arch: str = "bert", *, num_labels: int = 2, seed: int = 0, **overrides: Any) -> nn.Module:
    """A randomly initialised tiny sequence-classification model (eager attention)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cfg = tiny_config(arch, num_labels=num_labels, **overrides)
    cfg._attn_implementation = "eager"
    return AutoModelForSequenceClassification.from_config(cfg).eval()


def tiny_tokenizer(directory: str | Path):
    """A WordPiece tokenizer over a 64-token vocabulary written to ``directory``."""
    from transformers import BertTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _WORDS
    vocab += [f"w{i}" for i in range(64 - len(vocab))]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab=str(directory / "vocab.txt"), do_lower_case=True)
