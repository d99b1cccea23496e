"""benchmarks/peers/workers/common.py, the helpers every peer worker runs in its own venv: the dev batches
survive the file round trip in order, timing interleaves the models of one process (A B A B ...) after
warm-up, and real-length throughput counts every sentence once per pass."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
PATH = REPO / "benchmarks" / "peers" / "workers" / "common.py"
spec = importlib.util.spec_from_file_location("peer_worker_common", PATH)
C = importlib.util.module_from_spec(spec)
spec.loader.exec_module(C)


def test_batches_round_trip_in_order(tmp_path) -> None:
    from benchmarks.peers.torch_venv import save_batches

    batches = [{"input_ids": np.full((2, 3 + i), i), "attention_mask": np.ones((2, 3 + i), np.int64)}
               for i in range(12)]  # 12 > 9: "b10" must not sort before "b2"
    back = C.load_batches(str(save_batches(tmp_path / "b.npz", batches)))
    assert [b["input_ids"][0, 0] for b in back] == list(range(12))
    assert all(np.array_equal(a["attention_mask"], b["attention_mask"]) for a, b in zip(batches, back))


def test_interleaved_order_and_warmup() -> None:
    calls: list[str] = []
    models = {n: (lambda feeds, n=n: calls.append(n)) for n in ("peer", "dense")}
    res = C.interleaved(models, {}, 4, warmup=2, runs=3)
    assert calls == ["peer", "peer", "dense", "dense"] + ["peer", "dense"] * 3
    assert res["peer"]["runs"] == 3 and res["dense"]["throughput_per_s"] > 0


def test_real_lengths_counts_sentences() -> None:
    batches = [{"input_ids": np.zeros((5, 4))}, {"input_ids": np.zeros((3, 7))}]
    res = C.real_lengths({"a": lambda b: None}, batches, rounds=2)
    assert res["a"]["sentences"] == 8 and res["a"]["sentences_per_s"] > 0


def test_workers_write_an_error_as_compresslab_does() -> None:
    """A worker's venv has none of compresslab's packages: common.py loads failure.py by itself, so an error
    with an empty message is still one word, never ``Type: ``."""
    assert C.error_text(RuntimeError()) == "RuntimeError" and C.error_text(KeyError("x")) == "KeyError: 'x'"
