"""Class labels read from files: each cell read as a class id, a score or a class name, and one class
set for train and dev, checked so that no label silently becomes a class the model cannot learn.

Rules (classification), all raising :class:`DataFormatError` with file:line and the setting to change:

* a cell that looks like a number is a number, in CSV, TSV and JSONL alike (``1``, ``"1"`` and
  ``1.0`` are class id 1); an empty or missing label is an error;
* with ``labels`` (names in id order) every label must be one of them;
* otherwise labels are all integer ids or all class names: a mix is an error, and so is a
  fractional number (scores belong to ``kind=regression``);
* class names are sorted; ids are used as they are, and ids that leave a class without any
  training example (a stray ``7``, 1-based ids) are an error unless ``num_labels`` says how
  many classes there are;
* a label seen in dev but never in train is an error (unless ``labels`` / ``num_labels`` declare
  it), and two names that differ only in case are an error.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from compresslab.data.files import looks_numeric
from compresslab.data.schema import DataFormatError

Label = int | float | str


def label_value(raw: Any, where: str, column: str) -> Label:
    """One label cell as an ``int`` (class id, also ``1.0``), a fractional ``float`` or a class name ``str``.

    Raises:
        DataFormatError: an empty / missing / NaN label, or a JSON list or object.
    """
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise DataFormatError(f"{where}: the label (column {column!r}) is empty; every row needs a label")
        if not looks_numeric(text):
            return text
        raw = float(text) if any(c in text for c in ".eE") else int(text)
    if raw is None:
        raise DataFormatError(f"{where}: the label (column {column!r}) is missing (null); every row needs a label")
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise DataFormatError(f"{where}: the label (column {column!r}) is {raw}; every row needs a label")
        return int(raw) if raw.is_integer() else raw
    raise DataFormatError(f"{where}: the label (column {column!r}) is a {type(raw).__name__} ({raw!r}); expected "
                          f"a class name, a class id or a number")


def label_text(value: Label) -> str:
    """The canonical spelling of a label, as ``labels`` entries are compared and as names are written."""
    return str(value)


@dataclass
class ClassLabels:
    """Class names in id order, how they were decided, and the examples per class per split."""

    names: tuple[str, ...]
    source: str  # "labels" (given in order), "ids" (integer ids as they are), "sorted_strings" (sorted names)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> name -> examples

    def __post_init__(self) -> None:
        self._ids = {n: i for i, n in enumerate(self.names)}

    def id_of(self, value: Label) -> int:
        return self._ids[label_text(value)]

    def describe(self) -> str:
        """One line for the log: the classes in id order with their example counts."""
        parts = []
        for i, n in enumerate(self.names):
            c = ", ".join(f"{s} {counts.get(n, 0)}" for s, counts in self.counts.items())
            parts.append(f"{i}={n!r} ({c})" if c else f"{i}={n!r}")
        how = {"labels": "from labels", "ids": "integer ids", "sorted_strings": "names, sorted"}[self.source]
        return f"{len(self.names)} classes ({how}): " + "; ".join(parts)


Seen = dict[str, list[tuple[Label, str]]]  # split -> (label, where) per example


def _first(seen: Seen, test: Any) -> tuple[Label, str] | None:
    return next(((v, w) for rows in seen.values() for v, w in rows if test(v)), None)


def _where_of(seen: Seen, text: str, limit: int = 3) -> str:
    places = list(dict.fromkeys(w for rows in seen.values() for v, w in rows if label_text(v) == text))
    more = f" and {len(places) - limit} more" if len(places) > limit else ""
    return ", ".join(places[:limit]) + more


def _suggest(text: str, known: Sequence[str]) -> str:
    same_case = [k for k in known if k.casefold() == text.casefold()]
    close = same_case or difflib.get_close_matches(text, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def class_labels(seen: Seen, *, labels: Sequence[Any] | None = None, num_labels: int | None = None,
                 prefix: str = "task.generic.") -> ClassLabels:
    """Decide the classes from every split's labels (see the module docstring); ``seen`` holds the
    ``train`` and/or ``dev`` labels as read by :func:`label_value`.

    Raises:
        DataFormatError: naming file:line and the setting (``{prefix}labels`` / ``num_labels`` /
            ``kind``) for each rule above.
    """
    primary = "train" if seen.get("train") else next(iter(seen))
    if labels is not None:
        names = tuple(label_text(label_value(x, f"{prefix}labels", "labels")) for x in labels)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DataFormatError(f"{prefix}labels={list(names)} lists {dup} more than once; name each class once")
        for rows in seen.values():
            for v, w in rows:
                if label_text(v) not in names:
                    raise DataFormatError(f"{w}: label {label_text(v)!r} is not in {prefix}labels={list(names)}"
                                          f"{_suggest(label_text(v), names)}; fix the label or add it to "
                                          f"{prefix}labels")
        result = ClassLabels(names, "labels")
    else:
        frac = _first(seen, lambda v: isinstance(v, float))
        if frac is not None:
            raise DataFormatError(f"{frac[1]}: label {frac[0]} is not a class id (classification): for scores set "
                                  f"{prefix}kind=regression; for named classes list them in {prefix}labels=[...]")
        name = _first(seen, lambda v: isinstance(v, str))
        number = _first(seen, lambda v: isinstance(v, int))
        if name is not None and number is not None:
            raise DataFormatError(f"labels mix class names ({name[0]!r} at {name[1]}) and class ids ({number[0]} at "
                                  f"{number[1]}); write every label one way in train and dev, or list every class "
                                  f"in id order in {prefix}labels=[...]")
        result = (_id_classes(seen, primary, num_labels, prefix) if number is not None
                  else _named_classes(seen, primary, num_labels, prefix))
    result.counts = {s: dict(Counter(label_text(v) for v, _ in rows)) for s, rows in seen.items()}
    if num_labels is not None and num_labels != len(result.names):
        raise DataFormatError(f"{prefix}num_labels={num_labels} but {prefix}labels names {len(result.names)} classes "
                              f"{list(result.names)}; give one name per class (or drop num_labels)")
    if len(result.names) < 2:
        raise DataFormatError(f"classification needs at least 2 classes; the data has only {list(result.names)} "
                              f"({_where_of(seen, result.names[0]) if result.names else 'no rows'}): check "
                              f"{prefix}label names the label column")
    return result


def _named_classes(seen: Seen, primary: str, num_labels: int | None, prefix: str) -> ClassLabels:
    names = sorted({label_text(v) for v, _ in seen[primary]})
    by_fold: dict[str, str] = {}
    for n in names:
        other = by_fold.setdefault(n.casefold(), n)
        if other != n:
            raise DataFormatError(f"labels {other!r} ({_where_of(seen, other, 1)}) and {n!r} ({_where_of(seen, n, 1)}) "
                                  f"differ only in case, so they would be two classes; spell them one way, or list "
                                  f"both in {prefix}labels=[...] if they are different classes")
    for split, rows in seen.items():
        for v, w in rows:
            if label_text(v) not in names:
                raise DataFormatError(f"{w}: label {label_text(v)!r} appears in {split} but never in {primary}"
                                      f"{_suggest(label_text(v), names)}, so the model could never learn it; fix "
                                      f"the label, or list every class in {prefix}labels=[...]")
    if num_labels is not None and num_labels != len(names):
        raise DataFormatError(f"{prefix}num_labels={num_labels} but {primary} has {len(names)} class names {names}; "
                              f"name every class in {prefix}labels=[...] (a class with no rows needs a name)")
    return ClassLabels(tuple(names), "sorted_strings")


def _id_classes(seen: Seen, primary: str, num_labels: int | None, prefix: str) -> ClassLabels:
    negative = _first(seen, lambda v: v < 0)
    if negative is not None:
        raise DataFormatError(f"{negative[1]}: class id {negative[0]} is negative; ids run 0..N-1 (-1 marks "
                              f"unlabelled rows, e.g. a GLUE test split: drop those rows)")
    if num_labels is not None:
        over = _first(seen, lambda v: v >= num_labels)
        if over is not None:
            raise DataFormatError(f"{over[1]}: class id {over[0]} is outside 0..{num_labels - 1} "
                                  f"({prefix}num_labels={num_labels})")
        return ClassLabels(tuple(str(i) for i in range(num_labels)), "ids")
    present = {int(v) for v, _ in seen[primary]}
    for split, rows in seen.items():
        for v, w in rows:
            if int(v) not in present:
                raise DataFormatError(f"{w}: class id {v} appears in {split} but never in {primary}, so the model "
                                      f"could never learn it; fix the label, or set {prefix}num_labels=<classes>")
    n = max(max(present) + 1, 2)
    empty = [i for i in range(n) if i not in present]
    if empty:
        ids = sorted(present)
        if ids == list(range(1, len(ids) + 1)):
            why = (f"the ids run 1..{ids[-1]} (1-based, as in many news-topic files), so class 0 would be empty; "
                   f"list them in order to map them to 0..{len(ids) - 1}: {prefix}labels={ids}")
        else:
            stray = max(present)
            why = (f"{primary} has no example of class(es) {_spans(empty)}; if {stray} is a stray label, fix it at "
                   f"{_where_of(seen, str(stray))}; if the ids are names, list them in order: {prefix}labels={ids}")
        raise DataFormatError(f"class ids {_spans(ids)} would make a head of {n} classes, some of which the model "
                              f"can never learn: {why}; or set {prefix}num_labels={n} to keep the empty classes")
    return ClassLabels(tuple(str(i) for i in range(n)), "ids")


def _spans(ids: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 6]`` -> ``0-2, 5-6``."""
    out: list[str] = []
    for i in sorted(ids):
        if out and int(out[-1].split("-")[-1]) == i - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ", ".join(out)


__all__ = ["ClassLabels", "Label", "class_labels", "label_text", "label_value"]
