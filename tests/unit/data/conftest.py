"""Fixtures for the data tests: the real GLUE root (skip when absent) and a tiny local tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from compresslab.data.tasks import DataNotFoundError, resolve_data_root

TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "a", "is", "good", "bad", "film", "movie", "plot", "very", "not", ".", ",", "it", "was",
]


@pytest.fixture(scope="session")
def glue_root() -> Path:
    """The real data root (env COMPRESSLAB_DATA or ../shared/data); tests using it skip without it."""
    try:
        root = resolve_data_root()
    except DataNotFoundError as err:
        pytest.skip(f"GLUE data not available: {err}")
    return root


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """A BERT WordPiece tokenizer over a 19-word vocab, built locally (no downloads)."""
    from transformers import BertTokenizerFast

    vocab_dir = tmp_path_factory.mktemp("tiny_vocab")
    (vocab_dir / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return BertTokenizerFast.from_pretrained(str(vocab_dir))
