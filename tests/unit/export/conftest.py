"""Fixtures for export tests: tiny random models, a local tokenizer, real padded batches.

Everything is built locally (no downloads); torch runs single-threaded so the suite stays fast
on shared CPUs. Outputs go under pytest's tmp dirs, never the working tree.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import pytest
import torch

from compresslab.models.tiny import tiny_model

_WORDS = ["the", "a", "movie", "film", "good", "bad", "great", "awful", "is", "was", "not", "very",
          "fun", "boring", "plot", "actors", "and", "but", "it", "this", "!", ".", ","]

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A WordPiece tokenizer over a 64-token vocab (``vocab=``: transformers 5 ignores ``vocab_file=``)."""
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _WORDS
    vocab += [f"w{i}" for i in range(64 - len(vocab))]
    path = tmp_path_factory.mktemp("tok") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(path))
    assert len(tokenizer) == 64
    return tokenizer


@pytest.fixture(scope="session")
def make_batches(tok: Any) -> Callable[..., list[dict[str, torch.Tensor]]]:
    """``make_batches(n, bs, seed, padding_side)``: padded batches of random sentences with labels."""

    def make(n: int = 3, bs: int = 4, seed: int = 0, padding_side: str = "right") -> list[dict[str, torch.Tensor]]:
        rng = random.Random(seed)
        old, tok.padding_side = tok.padding_side, padding_side
        try:
            out = []
            for _ in range(n):
                texts = [" ".join(rng.choices(_WORDS, k=rng.randint(2, 14))) for _ in range(bs)]
                enc = dict(tok(texts, padding=True, return_tensors="pt"))
                enc["labels"] = torch.randint(0, 2, (bs,))
                out.append(enc)
            return out
        finally:
            tok.padding_side = old

    return make


@pytest.fixture(scope="session")
def batches(make_batches: Callable[..., list]) -> list[dict[str, torch.Tensor]]:
    return make_batches()


@pytest.fixture(scope="session")
def bert_model() -> torch.nn.Module:
    # a wide init makes attention peaked, so a wrong head count or mask shows up in the logits
    return tiny_model("bert", initializer_range=0.3)


@pytest.fixture(scope="session")
def exported_bert(tmp_path_factory: pytest.TempPathFactory, bert_model: torch.nn.Module, tok: Any,
                  batches: list) -> Any:
    """A fused export of the tiny BERT, shared by the quantization and pass tests (read-only)."""
    from compresslab.export import export_model

    return export_model(bert_model, tok, tmp_path_factory.mktemp("export") / "bert", batches, threads=1)


@pytest.fixture(scope="session")
def torch_out() -> Callable[[torch.nn.Module, dict], Any]:
    """``torch_out(model, batch)``: the model's first output as numpy (labels dropped)."""

    def run(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        with torch.no_grad():
            return model(**{k: v for k, v in batch.items() if k != "labels"})[0].numpy()

    return run
