"""The validation carve: which training examples a run may select on (MEASURE.md, "Data splits").

Two ways, chosen by ``task.val_carve``:

- ``random`` (the default): a seeded uniform draw of examples. Right when examples are independent.
- ``grouped``: a seeded draw of *groups* (the idea of scikit-learn's ``GroupShuffleSplit``), so that no
  training example is a near-copy of a validation example. A group is a **root** and the examples
  that belong to it: its exact duplicates (same text after whitespace normalisation; for pairs, the
  same pair) and, for single-text data, every example that is a contiguous token span of it. SST-2's
  train split is the case in point: it holds each review sentence of the Stanford Sentiment Treebank
  *and* the phrases of its parse tree (67,349 examples from 6,885 whole sentences; 58% of them 8 words
  or fewer, while dev holds whole sentences, mean 19.5 words). A random carve there draws mostly
  phrases whose sentence (and sibling phrases) stay in train: the teacher is then ~3.7 pt more accurate
  on validation than on dev, and compressed models rank differently on the two (benchmarks/RESULTS.md,
  "CoLA and SST-2, session 19"). The grouped carve's validation holds whole sentences only (the roots,
  one example per group), and train drops every example whose only roots were carved; a phrase that is
  also a span of a kept sentence stays in train (it is that sentence's training data).

Span grouping splits on whitespace (GLUE's files are pre-tokenised), so it costs one dictionary lookup
per span of each root: ~1.7 M lookups (a few seconds) on SST-2. For long texts the count grows with the
square of the length; beyond :data:`MAX_SPAN_LOOKUPS` the carve refuses before doing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compresslab.data.schema import Example, MissingSplit

__all__ = ["CARVES", "MAX_SPAN_LOOKUPS", "Carve", "carve_validation", "check_carve", "default_val_size"]

CARVES: tuple[str, ...] = ("random", "grouped")
MAX_SPAN_LOOKUPS = 50_000_000  # ~30 s of Python: a data set with long texts should dedupe another way


def default_val_size(n_train: int) -> int:
    """5% of train or 1,000 examples, whichever is smaller (MEASURE.md)."""
    return min(1000, n_train // 20)


def check_carve(how: Any) -> str:
    """``how`` as a carve name, or ``ValueError`` listing the choices (before any data is read)."""
    if how is None:
        return "random"
    if not isinstance(how, str) or how not in CARVES:
        raise ValueError(f"val_carve={how!r}: use one of {', '.join(CARVES)} (task.val_carve on the command line)")
    return how


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
        val_size: validation examples; None: :func:`default_val_size` of ``len(train_all)``.
        seed: the run's seed (the draw is a function of it and the data only).
        how: ``random`` (examples) or ``grouped`` (roots of groups; see the module docstring).

    Returns:
        :class:`Carve`; ``info`` holds ``val_carve`` and, for ``grouped``, ``val_groups`` (roots in
        ``train_all``) and ``val_dropped_from_train`` (examples of carved groups left out of both).

    Raises:
        ValueError: an unknown ``how``; ``val_size`` that leaves no training examples (``random``) or
            no training group (``grouped``); span grouping over more than :data:`MAX_SPAN_LOOKUPS`.
    """
    how = check_carve(how)
    if isinstance(train_all, MissingSplit):
        return Carve(train_all, MissingSplit(train_all.reason + " (so no validation split either)"),
                     {"val_carve": how})
    n = len(train_all)
    size = default_val_size(n) if val_size is None else val_size
    if how == "random":
        if size >= n and n > 0:
            raise ValueError(f"val_size={size} would leave no training examples (train has {n}); set a smaller "
                             f"val_size (task.val_size on the command line; 0 for none)")
        rng = np.random.default_rng([0, seed])  # the stream every run before val_carve used: same splits
        is_val = np.zeros(n, dtype=bool)
        is_val[rng.permutation(n)[:size]] = True
        return Carve([e for e, v in zip(train_all, is_val) if not v], [e for e, v in zip(train_all, is_val) if v],
                     {"val_carve": how})
    return _grouped(train_all, size, seed)


def _key(e: Example) -> tuple[str, str | None]:
    return " ".join(e.text_a.split()), None if e.text_b is None else " ".join(e.text_b.split())


def _grouped(train_all: list[Example], size: int, seed: int) -> Carve:
    keys = [_key(e) for e in train_all]
    first: dict[tuple[str, str | None], int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    owners = _span_owners(list(first))  # key -> the root keys it is a proper span of (roots: absent)
    roots = [k for k in first if k not in owners]  # in file order of first occurrence: deterministic
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
    if not singles:
        return {}
    lengths = sorted({len(t.split()) for t in singles})
    order = sorted(singles, key=lambda t: -len(t.split()))
    cost = sum(sum(n - m + 1 for m in lengths if m < n) for n in (len(t.split()) for t in order))
    if cost > MAX_SPAN_LOOKUPS:  # an upper bound (contained texts are skipped): refuse before the work
        raise ValueError(f"val_carve=grouped would look up to {cost:,} token spans (texts too long for span "
                         f"grouping; limit {MAX_SPAN_LOOKUPS:,}); use val_carve=random")
    owners: dict[tuple[str, str | None], set] = {}
    for text in order:
        key = singles[text]
        if key in owners:
            continue  # inside a longer text: not a root
        toks = text.split()
        n = len(toks)
        for m in lengths:
            if m >= n:
                break
            for a in range(n - m + 1):
                span = singles.get(" ".join(toks[a:a + m]))
                if span is not None:
                    owners.setdefault(span, set()).add(key)
    return owners
