"""Shared fixtures: tiny local models and tokenizers, the real data root, single-threaded torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path | None:
    for cand in (os.environ.get("COMPRESSLAB_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "glue" / "SST-2" / "dev.tsv").is_file():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip("real GLUE data not found (set COMPRESSLAB_DATA or put ../shared/data beside the repo)")
    return root


@pytest.fixture(scope="session")
def tiny_tok(tmp_path_factory: pytest.TempPathFactory):
    from compresslab.models.tiny import tiny_tokenizer

    return tiny_tokenizer(tmp_path_factory.mktemp("tiny_tok"))


@pytest.fixture
def tiny_ctx(tiny_tok, tmp_path):
    """``tiny_ctx(teacher=None, task=None)`` builds a PassContext over a toy task."""
    from compresslab.testing import tiny_context

    def make(**kw):
        return tiny_context(tiny_tok, tmp_path, **kw)

    return make
