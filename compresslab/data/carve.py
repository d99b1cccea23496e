"""The validation carve: which training examples a run may select on (MEASURE.md, "Data splits").

Two ways, chosen by ``task.val_carve``:

- ``random`` (the default): a seeded uniform draw of examples. Right when examples are independent.
- ``grouped``: a seeded draw of *groups* (the idea of scikit-learn's ``GroupShuffleSplit``), so that no
  training example is a copy or a phrase of a validation example (exact matches: see below). A group is
  a **root** and the examples that belong to it: its exact duplicates (same text after whitespace
  normalisation; for pairs, the same pair) and, for single-text data, every example that is a
  contiguous token span of it. SST-2's train split is the case in point: it holds each review sentence
  of the Stanford Sentiment Treebank *and* the phrases of its parse tree (67,349 examples from 6,885
  whole sentences; 58% of them 8 words or fewer, while dev holds whole sentences, mean 19.5 words). A
  random carve there draws mostly phrases whose sentence (and sibling phrases) stay in train: the bench
  teacher scores 3.7 pt higher on that validation split than on dev, on the grouped carve's 0.9 pt
  (``benchmarks/results/val_carve.json``). The grouped carve's validation holds whole sentences only (the
  roots, one example per group), and train drops every example whose only roots were carved; a phrase
  that is also a span of a kept sentence stays in train (it is that sentence's training data). The
  cost: those sentences leave train (SST-2 at 1,000 groups: 8,337 examples, 12.4%).

Only exact matches group: whitespace-token spans and whitespace-normalised duplicates (GLUE's files are
pre-tokenised); case, punctuation glued to a word and detokenisation are not normalised. Duplicates with
different labels keep the first example's label in validation. Pairs group by exact duplicates only.

Span grouping joins and looks up every span of each root: ~1.7 M lookups (a few seconds) on SST-2. The
work grows with the cube of a text's length (spans x their length), so the carve counts the tokens it
joins and stops with an error past :data:`MAX_SPAN_TOKENS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compresslab.data.schema import Example, MissingSplit
from compresslab.validate import choice_hint

__all__ = ["CARVES", "MAX_SPAN_TOKENS", "Carve", "carve_validation", "check_carve", "default_val_size"]

CARVES: tuple[str, ...] = ("random", "grouped")
MAX_SPAN_TOKENS = 200_000_000  # tokens joined into spans: ~1 min of Python; SST-2 needs ~15 M


def default_val_size(n_train: int) -> int:
    """5% of train or 1,000 examples, whichever is smaller (MEASURE.md)."""
    return min(1000, n_train // 20)


def check_count(value: int | None, what: str) -> None:
    """``ValueError`` unless ``value`` is a non-negative int (not a bool) or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{what} must be a non-negative integer or None, got {value!r}")


def check_carve(how: Any) -> str:
    """``how`` as a carve name (None: ``random``), or ``ValueError`` listing the choices (before any data is read)."""
    if how is None:
        return "random"
    if not isinstance(how, str) or how not in CARVES:
        raise ValueError(f"val_carve={how!r}: use one of {', '.join(CARVES)} (task.val_carve on the command line, "
                         f"val_carve= in compresslab.compress){choice_hint(how, CARVES)}")
    return how


def default_group_count(n_train: int, n_groups: int) -> int:
    """The grouped carve's default: :func:`default_val_size` of the examples, at most a fifth of the groups
    (a group takes a sentence *and* its phrases out of train: SST-2 keeps 1,000 of 6,885 sentences)."""
    return min(default_val_size(n_train), n_groups // 5)


@dataclass
class Carve:
    """Train minus validation, the validation split, and what the carve did (for the manifest)."""

    train: list[Example]
    validation: list[Example]
    info: dict[str, Any] = field(default_factory=dict)


def carve_validation(train_all: list[Example], val_size: int | None, seed: int, how: str = "random") -> Carve:
    """Split a seeded validation set off ``train_all``; both keep file order.

    Args:
        train_all: every training example (a :class:`MissingSplit` passes through, with an empty
            validation split that says why).
        val_size: validation examples (``grouped``: groups, one example each); None: :func:`default_val_size`
            of ``len(train_all)`` (``grouped``: at most a fifth of the groups, :func:`default_group_count`).
        seed: the run's seed (the draw is a function of it and the data only).
        how: ``random`` (examples) or ``grouped`` (roots of groups; see the module docstring).

    Returns:
        :class:`Carve`; ``info`` holds ``val_carve`` and, for ``grouped``, ``val_groups`` (roots in
        ``train_all``) and ``val_dropped_from_train`` (examples of carved groups left out of both).

    Raises:
        ValueError: an unknown ``how``; a ``val_size`` that is not a non-negative int or None, or that leaves
            no training examples (``random``) or no training group (``grouped``); span grouping that joins
            more than :data:`MAX_SPAN_TOKENS` tokens (texts too long for it).
    """
    how = check_carve(how)
    check_count(val_size, "val_size")
    if isinstance(train_all, MissingSplit):
        return Carve(train_all, MissingSplit(train_all.reason + " (so no validation split either)"),
                     {"val_carve": how})
    n = len(train_all)
    if how == "random":
        size = default_val_size(n) if val_size is None else val_size
        if size >= n and n > 0:
            raise ValueError(f"val_size={size} would leave no training examples (train has {n}); set a smaller "
                             f"val_size (task.val_size on the command line; 0 for none)")
        rng = np.random.default_rng([0, seed])  # the stream every run before val_carve used: same splits
        is_val = np.zeros(n, dtype=bool)
        is_val[rng.permutation(n)[:size]] = True
        return Carve([e for e, v in zip(train_all, is_val) if not v], [e for e, v in zip(train_all, is_val) if v],
                     {"val_carve": how})
    return _grouped(train_all, val_size, seed)


def _key(e: Example) -> tuple[str, str | None]:
    return " ".join(e.text_a.split()), None if e.text_b is None else " ".join(e.text_b.split())


def _grouped(train_all: list[Example], val_size: int | None, seed: int) -> Carve:
    keys = [_key(e) for e in train_all]
    first: dict[tuple[str, str | None], int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    owners = _span_owners(list(first))  # key -> the root keys it is a proper span of (roots: absent)
    roots = [k for k in first if k not in owners]  # in file order of first occurrence: deterministic
    size = default_group_count(len(train_all), len(roots)) if val_size is None else val_size
    if size >= len(roots) and roots:
        raise ValueError(f"val_size={size} would leave no training group (train has {len(roots)} groups: whole "
                         f"texts with their duplicates and phrases); set a smaller val_size or val_carve=random")
    rng = np.random.default_rng([3, seed])  # its own stream: a grouped carve never mirrors a random one
    carved = {roots[i] for i in rng.permutation(len(roots))[:size]}
    validation = [train_all[first[k]] for k in sorted(carved, key=first.__getitem__)]
    train = [e for e, k in zip(train_all, keys)
             if k not in carved and not (k in owners and owners[k] <= carved)]
    info = {"val_carve": "grouped", "val_groups": len(roots),
            "val_dropped_from_train": len(train_all) - len(train) - len(validation)}
    return Carve(train, validation, info)


def _span_owners(keys: Sequence[tuple[str, str | None]]) -> dict[tuple[str, str | None], set]:
    """For each key that is a proper token span of another single text, the roots it is a span of.

    Longest texts first: a text already found inside a longer one is not a root, and its own spans
    were found as spans of that root, so only roots are enumerated. Pairs are never spans (their
    groups are exact duplicates only).
    """
    singles = {k[0]: k for k in keys if k[1] is None}
    lengths = sorted({len(t.split()) for t in singles})
    order = sorted(singles, key=lambda t: -len(t.split()))
    owners: dict[tuple[str, str | None], set] = {}
    joined = 0
    for text in order:
        key = singles[text]
        if key in owners:
            continue  # inside a longer text: not a root
        toks = text.split()
        n = len(toks)
        joined += sum((n - m + 1) * m for m in lengths if m < n)  # this root's work, counted before doing it
        if joined > MAX_SPAN_TOKENS:
            raise ValueError(f"val_carve=grouped would join more than {MAX_SPAN_TOKENS:,} tokens into spans (texts "
                             f"too long for span grouping: {n} tokens here); use val_carve=random")
        for m in lengths:
            if m >= n:
                break
            for a in range(n - m + 1):
                span = singles.get(" ".join(toks[a:a + m]))
                if span is not None:
                    owners.setdefault(span, set()).add(key)
    return owners
