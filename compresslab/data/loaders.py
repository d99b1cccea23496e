"""Tokenization, dynamically padded loaders, calibration samples and token lengths.

Pairs are encoded jointly ("[CLS] a [SEP] b [SEP]", a cross-encoder) for classification and
regression. Embedding tasks (a bi-encoder) encode each side on its own: a batch holds side A
under the usual names (``input_ids``, ``attention_mask``, ``token_type_ids``) and side B under the
same names with ``_b`` appended; :func:`side_inputs` picks one side as model kwargs. Code that
only reads the usual names therefore sees single sentences, which is what an embedding model
is calibrated on. The kind is inferred from the labels (``int`` -> classification, ``float`` ->
regression) unless ``kind`` is given; pass ``kind=TaskKind.EMBEDDING`` for embedding tasks.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from compresslab.data.schema import Example, TaskKind, require_examples
from compresslab.validate import check_positive_int

log = logging.getLogger(__name__)

SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class LengthGroupedBatches:
    """Shuffled batches of similar length (HF's ``group_by_length``), seeded and reproducible.

    Why: SST-2 sentences average ~13 tokens but a random batch pads to ~45; grouping cuts
    training compute about 3x on CPU. Indices are shuffled, cut into mega-batches of
    ``mega * batch_size``, sorted by length inside each, batched, and the batch order shuffled.
    Each ``__iter__`` is a new epoch (the epoch number joins the seed), identical on every rank.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, mega: int = 50) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.mega, self.epoch = batch_size, seed, mega, 0

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        idx = rng.permutation(len(self.lengths))
        size = self.mega * self.batch_size
        batches = []
        for start in range(0, len(idx), size):
            chunk = idx[start:start + size]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        for j in rng.permutation(len(batches)):
            yield batches[j]


def _resolve_kind(examples: Sequence[Example], kind: TaskKind | str | None) -> TaskKind:
    if kind is not None:
        try:
            return TaskKind(kind)
        except ValueError:
            allowed = ", ".join(k.value for k in TaskKind)
            raise ValueError(f"unknown kind {kind!r}; allowed: {allowed}") from None
    is_int = [isinstance(e.label, (int, np.integer)) and not isinstance(e.label, bool) for e in examples]
    return TaskKind.CLASSIFICATION if all(is_int) else TaskKind.REGRESSION


def _encode(tokenizer: Any, texts_a: list[str], texts_b: list[str] | None, max_length: int) -> list[dict[str, list[int]]]:
    """One batched tokenizer call (fast tokenizers parallelise it), split back per example."""
    if not texts_a:
        return []
    enc = tokenizer(texts_a, texts_b, truncation=True, max_length=max_length, padding=False)
    keys = [k for k in SEQUENCE_KEYS if k in enc]
    return [{k: list(enc[k][i]) for k in keys} for i in range(len(texts_a))]


def _encode_joint(tokenizer: Any, examples: list[Example], max_length: int) -> list[dict[str, list[int]]]:
    """Encode single sentences and pairs in their own calls, then restore the input order."""
    out: list[dict[str, list[int]] | None] = [None] * len(examples)
    singles = [i for i, e in enumerate(examples) if e.text_b is None]
    pairs = [i for i, e in enumerate(examples) if e.text_b is not None]
    for idx, texts_b in ((singles, None), (pairs, [examples[i].text_b for i in pairs])):
        encoded = _encode(tokenizer, [examples[i].text_a for i in idx], texts_b, max_length)  # type: ignore[misc]
        for i, features in zip(idx, encoded):
            out[i] = features
    return out  # type: ignore[return-value]


def tokenize_examples(
    examples: Sequence[Example], tokenizer: Any, max_length: int, *, kind: TaskKind | str | None = None
) -> list[dict[str, Any]]:
    """Tokenize without padding: one dict of token lists (+ ``labels``) per example."""
    examples = require_examples(examples, "tokenize")
    check_positive_int(max_length, "max_length")
    kind = _resolve_kind(examples, kind)
    if kind is TaskKind.EMBEDDING:
        has_b = {e.text_b is not None for e in examples}
        if len(has_b) > 1:
            raise ValueError("embedding examples must be all pairs or all single sentences, not a mix")
        feats = _encode(tokenizer, [e.text_a for e in examples], None, max_length)
        if has_b == {True}:
            side_b = _encode(tokenizer, [e.text_b for e in examples], None, max_length)  # type: ignore[misc]
            feats = [{**fa, **{f"{k}_b": v for k, v in fb.items()}} for fa, fb in zip(feats, side_b)]
    else:
        feats = _encode_joint(tokenizer, examples, max_length)
    return [{**f, "labels": e.label} for f, e in zip(feats, examples)]


class PadCollator:
    """Pads each sequence key to the longest in the batch (or to ``pad_to``), right side.

    Padding ``input_ids`` uses the tokenizer's pad id; masks and token types pad with 0.
    """

    def __init__(self, pad_id: int, label_dtype: torch.dtype, pad_to: int | None = None) -> None:
        self.pad_id, self.label_dtype, self.pad_to = pad_id, label_dtype, pad_to

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for key in (k for k in items[0] if k != "labels"):
            length = self.pad_to or max(len(it[key]) for it in items)
            fill = self.pad_id if key.startswith("input_ids") else 0
            out = torch.full((len(items), length), fill, dtype=torch.long)  # (B, T)
            for row, it in enumerate(items):
                out[row, : len(it[key])] = torch.tensor(it[key], dtype=torch.long)
            batch[key] = out
        batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=self.label_dtype)  # (B,)
        return batch


def make_loader(
    examples: Sequence[Example],
    tokenizer: Any,
    batch_size: int,
    max_length: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    pad_to: int | None = None,
    kind: TaskKind | str | None = None,
    group_by_length: bool = False,
) -> DataLoader:
    """A loader of padded tensor dicts (see the module docstring for keys).

    Examples are tokenized once up front; shuffling uses its own generator seeded with
    ``seed``, so the order is reproducible and independent of global RNG state. ``pad_to`` fixes
    the sequence length (for fixed-shape benchmarks); it must be >= ``max_length`` so no
    sequence has to be cut after tokenization.
    """
    check_positive_int(batch_size, "batch_size")
    check_positive_int(max_length, "max_length")
    if pad_to is not None and (isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < max_length):
        raise ValueError(f"pad_to must be an integer >= max_length ({max_length}), got {pad_to!r}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token before building a loader")
    examples = require_examples(examples, "build a data loader")
    kind = _resolve_kind(examples, kind)
    features = tokenize_examples(examples, tokenizer, max_length, kind=kind)
    label_dtype = torch.long if kind is TaskKind.CLASSIFICATION else torch.float32
    collate = PadCollator(tokenizer.pad_token_id, label_dtype, pad_to)
    if group_by_length and shuffle:
        lengths = [len(f["input_ids"]) for f in features]
        return DataLoader(features, batch_sampler=LengthGroupedBatches(lengths, batch_size, seed),
                          collate_fn=collate, num_workers=0)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        features,  # a list is a map-style dataset
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=PadCollator(tokenizer.pad_token_id, label_dtype, pad_to),
        num_workers=0,
    )


def side_inputs(batch: dict[str, torch.Tensor], side: str = "a") -> dict[str, torch.Tensor]:
    """Model kwargs for one side of an embedding batch (``side`` is "a" or "b")."""
    if side not in ("a", "b"):
        raise ValueError(f"side must be 'a' or 'b', got {side!r}")
    suffix = "" if side == "a" else "_b"
    out = {k: batch[k + suffix] for k in SEQUENCE_KEYS if k + suffix in batch}
    if "input_ids" not in out:
        raise ValueError(f"the batch has no side {side!r} (keys: {sorted(batch)})")
    return out


def calibration_examples(train: Sequence[Example], n: int, seed: int) -> list[Example]:
    """``n`` train examples drawn without replacement, seeded (calibration statistics use train only)."""
    train = require_examples(train, "draw calibration examples from the train split")
    check_positive_int(n, "n (number of calibration examples)")
    if n > len(train):
        raise ValueError(f"asked for {n} calibration examples but only {len(train)} train examples are available")
    idx = np.random.default_rng([3, seed]).choice(len(train), size=n, replace=False)
    return [train[i] for i in idx]


def token_lengths(
    examples: Sequence[Example], tokenizer: Any, max_length: int, *, kind: TaskKind | str | None = None
) -> list[int]:
    """Token count per encoded sequence (specials included, truncated at ``max_length``).

    One length per example; for embedding tasks with pairs, all A sides then all B sides.
    These drive the realistic-length (dynamic padding) benchmark.
    """
    feats = tokenize_examples(examples, tokenizer, max_length, kind=kind)
    lengths = [len(f["input_ids"]) for f in feats]
    return lengths + [len(f["input_ids_b"]) for f in feats if "input_ids_b" in f]


def count_truncated(
    examples: Sequence[Example], tokenizer: Any, max_length: int, *, kind: TaskKind | str | None = None
) -> int:
    """How many ``examples`` :func:`tokenize_examples` cuts at ``max_length``: whose encoding (specials included;
    a pair's two sentences together, an embedding pair's each side alone) is longer. Tokenizing cuts silently,
    so a run counts them per split (``data.truncated``, the eval's ``truncated``) and says so."""
    examples = require_examples(examples, "count truncated examples")
    check_positive_int(max_length, "max_length")
    if not examples:
        return 0
    kind = _resolve_kind(examples, kind)

    def lengths(texts_a: list[str], texts_b: list[str] | None) -> list[int]:
        if not texts_a:
            return []
        # verbose=False: no "longer than the specified maximum sequence length" warning for the very rows counted
        enc = tokenizer(texts_a, texts_b, truncation=False, padding=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    if kind is TaskKind.EMBEDDING:
        longest = lengths([e.text_a for e in examples], None)
        if any(e.text_b is not None for e in examples):
            longest = [max(a, b) for a, b in zip(longest, lengths([e.text_b or "" for e in examples], None))]
        return sum(n > max_length for n in longest)
    singles = [e for e in examples if e.text_b is None]
    pairs = [e for e in examples if e.text_b is not None]
    found = lengths([e.text_a for e in singles], None) + lengths([e.text_a for e in pairs], [e.text_b for e in pairs])
    return sum(n > max_length for n in found)


def truncation_line(n: int, of: int, what: str, max_length: int) -> str:
    """``N of M <what> examples truncated at max_length=L``: the line every count of :func:`count_truncated` logs."""
    return f"{n} of {of} {what} examples truncated at max_length={max_length}"


def count_and_say(examples: Sequence[Example], tokenizer: Any, max_length: int, what: str,
                  kind: TaskKind | str | None = None) -> dict[str, int]:
    """Count ``examples`` cut at ``max_length`` and log it (a WARNING when any is: their scores or statistics
    rest on part of the text); the record ``{"n", "of", "max_length"}``."""
    n = count_truncated(examples, tokenizer, max_length, kind=kind) if len(examples) else 0
    (log.warning if n else log.info)("%s", truncation_line(n, len(examples), what, max_length))
    return {"n": int(n), "of": len(examples), "max_length": int(max_length)}
