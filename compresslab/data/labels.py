"""Class labels, read the same way from files (the CLI) and from data held in Python (the API): each
label read as a class id, a score or a class name, and one class set for train and dev, checked so
that no label silently becomes a class the model cannot learn.

Rules (classification), all raising :class:`DataFormatError` with the place (``file:line`` or
``data[17]``) and the setting to change, spelled as the caller spells it (:class:`LabelSettings`):

* a label that looks like a number is a number, in CSV, TSV, JSONL and Python alike (``1``, ``"1"``,
  ``1.0`` and ``numpy.int64(1)`` are class id 1); an empty, missing (``None`` / JSON ``null``), NaN or
  infinite label is an error, written as a number or as text (``NaN``, ``-inf``);
* a cell that spreadsheets and pandas write for "no value" (``NA``, ``N/A``, ``null``, ``None``,
  ``#N/A``: pandas' default ``na_values``) is an error too, unless the declared classes name it;
* ``true`` / ``false`` (JSON booleans, Python and numpy bools) are class ids 1 / 0, and mixing them
  with other class ids is an error (``true`` would silently be class 1);
* with declared classes (``labels`` in the CLI; ``label2id``, the model's ``config.label2id`` or a
  ``ClassLabel`` feature in the API), every label must be one of them: its name as written, or
  ignoring case when no two declared names differ only in case (hub models write ``POSITIVE``);
  integer labels are ids into them (0 = the first) unless the names are numbers themselves
  (``labels=[1, 2, 3, 4]`` names 1-based ids);
* otherwise labels are all integer ids or all class names: a mix is an error, and so is a
  fractional number (scores belong to ``kind=regression``);
* class names are sorted; ids are used as they are, and ids that leave a class without any
  training example (a stray ``7``, 1-based ids) are an error unless ``num_labels`` says how
  many classes there are;
* undeclared, a label seen in dev but never in train is an error, and so are two names that
  differ only in case (``Positive`` and ``positive`` would be two classes).
"""

from __future__ import annotations

import difflib
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from compresslab.data.files import looks_numeric
from compresslab.data.schema import DataFormatError, TaskKind

log = logging.getLogger(__name__)

Label = int | float | str

# What spreadsheets and pandas write in a cell that has no value: pandas.read_csv's default
# ``na_values`` (pandas._libs.parsers.STR_NA_VALUES) without the NaN spellings, which float() reads and
# label_value refuses as non-finite. As a label, such a cell would become a class the model learns.
MISSING_MARKERS = frozenset({"#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "1.#IND", "1.#QNAN", "<NA>", "N/A",
                             "NA", "NULL", "None", "n/a", "null"})


@dataclass(frozen=True)
class LabelSettings:
    """The settings that decide the classes, spelled as the caller writes them, for error messages.

    :meth:`files` for the CLI's generic task (``task.generic.labels=[1, 2]``, Hydra syntax) and
    :meth:`api` for ``compresslab.compress`` / ``task_from_user_data`` (``label2id={'1': 0, '2': 1}``,
    Python syntax; the API has no ``num_labels``: listing every class in ``label2id`` does its job).
    """

    labels: str  # the setting that declares the classes: "task.generic.labels" / "label2id"
    kind: str  # "task.generic.kind" / "kind"
    column: str  # the label column: "task.generic.label" / "label_column"
    num_labels: str | None  # "task.generic.num_labels"; None in the API
    declared_by: str | None = None  # where declared names came from when not from ``labels`` itself

    @classmethod
    def files(cls, prefix: str = "task.generic.") -> "LabelSettings":
        return cls(f"{prefix}labels", f"{prefix}kind", f"{prefix}label", f"{prefix}num_labels")

    @classmethod
    def api(cls, declared_by: str | None = None) -> "LabelSettings":
        return cls("label2id", "kind", "label_column", None, declared_by)

    @property
    def python(self) -> bool:
        """Settings are Python arguments (the API), not Hydra overrides (the CLI)."""
        return self.num_labels is None

    @property
    def verb(self) -> str:
        return "pass" if self.python else "set"

    def list_classes(self, names: Sequence[Any] | None = None) -> str:
        """The setting that lists every class in id order: with ``names``, ready to paste."""
        if self.python:
            body = repr({label_text(n): i for i, n in enumerate(names)}) if names else "{name: id, ...}"
            return f"{self.labels}={body}"
        return f"{self.labels}=[{', '.join(label_text(n) for n in names)}]" if names else f"{self.labels}=[...]"

    def keep_classes(self, n: int) -> str:
        """The setting that keeps ``n`` classes although some have no training example."""
        if self.python:
            return f"{self.labels}={{str(i): i for i in range({n})}}"
        return f"{self.num_labels}={n}"

    def set_kind(self, kind: TaskKind) -> str:
        return f"{self.kind}={kind.value!r}" if self.python else f"{self.kind}={kind.value}"

    def declared(self) -> str:
        """Where the declared classes come from: the ``labels`` setting, or ``declared_by``."""
        return self.declared_by or self.labels


class ClassLabelName(str):
    """A class name read through a ``datasets.ClassLabel`` feature: the data holds its id, so next
    to integer ids in other data it is not "ids mixed with names"."""


class MissingLabel(str):
    """A label written as a missing-value marker (:data:`MISSING_MARKERS`): refused by
    :func:`class_labels` unless the declared classes name it, and by :func:`label_score`.
    ``problem`` says where it is and in which column."""

    problem: str = ""


class BoolLabel(int):
    """A boolean label (JSON ``true``, a Python or numpy bool) read as class id 1 / 0; kept apart
    from other ints so that booleans mixed with class ids are caught (:func:`class_labels`)."""


def _shown(value: Label) -> str:
    """A label as the user wrote it, for messages (``true`` for a boolean, quotes around a name)."""
    if isinstance(value, BoolLabel):
        return "true" if value else "false"
    return repr(str(value)) if isinstance(value, str) else str(value)


def _non_finite_text(text: str) -> bool:
    """True for text that Python reads as a NaN or an infinity (``nan``, ``-NaN``, ``inf``, ``Infinity``)."""
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def label_value(raw: Any, where: str, column: str | None = None) -> Label:
    """One label as an ``int`` (class id, also ``1.0`` and ``"1"``), a fractional ``float`` or a class name ``str``.

    Text that looks like a number is that number; numpy and torch scalars are read with ``.item()``;
    ``True``/``False`` are 1/0 (as :class:`BoolLabel`); a missing-value marker (``NA``, ``null``) is a
    :class:`MissingLabel`, refused later unless declared as a class name.

    Raises:
        DataFormatError: an empty / missing / NaN / infinite label (as a number or as text such as
            ``NaN`` or ``-inf``), or a list, dict or other object.
    """
    what = f"the label (column {column!r})" if column else "the label"
    if not isinstance(raw, (str, bytes)) and callable(getattr(raw, "item", None)):
        try:  # numpy / torch scalars (a 1-element array too); several elements stay and fail below
            raw = raw.item()
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise DataFormatError(f"{where}: {what} is empty; every example needs a label: fill it in or drop the row")
        if not looks_numeric(text):
            if _non_finite_text(text):  # pandas writes NaN for an empty cell; never a class name or a score
                how = " (NaN is how pandas writes an empty cell)" if "nan" in text.casefold() else ""
                raise DataFormatError(f"{where}: {what} is {text!r}, not a finite number{how}; every example needs a "
                                      f"label: fill it in or drop the row")
            if text in MISSING_MARKERS:
                missing = MissingLabel(text)
                missing.problem = f"{where}: {what} is {text!r}"
                return missing
            return text
        raw = float(text) if any(c in text for c in ".eE") else int(text)
    if raw is None or type(raw).__name__ in ("NAType", "NaTType"):  # pandas' NA / NaT, without importing pandas
        raise DataFormatError(f"{where}: {what} is missing ({'None / null' if raw is None else raw}); every example "
                              f"needs a label: fill it in or drop the row")
    if isinstance(raw, bool):
        return BoolLabel(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise DataFormatError(f"{where}: {what} is {raw}, not a finite number; every example needs a label: "
                                  f"fill it in or drop the row")
        return int(raw) if raw.is_integer() else raw
    raise DataFormatError(f"{where}: {what} is a {type(raw).__name__} ({raw!r}); expected a class name (str), "
                          f"a class id (int) or a score (float)")


def label_text(value: Any) -> str:
    """The canonical spelling of a label, as declared names are compared and as names are written."""
    return str(value)


def label_score(value: Label, where: str, kind: TaskKind, settings: LabelSettings) -> float:
    """A label read by :func:`label_value` as the score of a regression / embedding task.

    Raises:
        DataFormatError: a missing-value marker, a boolean, or a class name (not a number), naming the
            ``kind`` setting for a class name.
    """
    if isinstance(value, MissingLabel):
        raise DataFormatError(f"{value.problem}, a missing value; every example needs a score: fill it in or drop "
                              f"the row")
    if isinstance(value, BoolLabel):
        raise DataFormatError(f"{where}: label {_shown(value)} is not a score ({kind.value} task); {settings.verb} "
                              f"{settings.set_kind(TaskKind.CLASSIFICATION)} if the labels are classes")
    if isinstance(value, str):
        raise DataFormatError(f"{where}: label {value!r} is not a number ({kind.value} task); {settings.verb} "
                              f"{settings.set_kind(TaskKind.CLASSIFICATION)} if the labels are classes")
    return float(value)


@dataclass
class ClassLabels:
    """Class names in id order, how they were decided, and the examples per class per split."""

    names: tuple[str, ...]
    source: str  # "labels" (declared, in order), "ids" (integer ids as they are), "sorted_strings" (sorted names)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> name -> examples
    lookup: dict[str, int] = field(default_factory=dict)  # every label as written (label_text) -> class id

    def __post_init__(self) -> None:
        if not self.lookup:
            self.lookup = {n: i for i, n in enumerate(self.names)}

    def id_of(self, value: Label) -> int:
        return self.lookup[label_text(value)]

    def describe(self) -> str:
        """One line for the log: the classes in id order with their example counts."""
        parts = []
        for i, n in enumerate(self.names):
            c = ", ".join(f"{s} {counts.get(n, 0)}" for s, counts in self.counts.items())
            parts.append(f"{i}={n!r} ({c})" if c else f"{i}={n!r}")
        how = {"labels": "declared", "ids": "integer ids", "sorted_strings": "names, sorted"}[self.source]
        return f"{len(self.names)} classes ({how}): " + "; ".join(parts)


Seen = dict[str, list[tuple[Label, str]]]  # split -> (label, where) per example, train first


def _first(seen: Seen, test: Any) -> tuple[Label, str] | None:
    return next(((v, w) for rows in seen.values() for v, w in rows if test(v)), None)


def _where_of(seen: Seen, text: str, limit: int = 3) -> str:
    places = list(dict.fromkeys(w for rows in seen.values() for v, w in rows if label_text(v) == text))
    more = f" and {len(places) - limit} more" if len(places) > limit else ""
    return ", ".join(places[:limit]) + more


def _suggest(text: str, known: Sequence[str]) -> str:
    """A did-you-mean for ``text`` among ``known``, ignoring case (``posit`` -> ``POSITIVE``)."""
    folded = {k.casefold(): k for k in known}
    close = difflib.get_close_matches(text.casefold(), list(folded), n=1, cutoff=0.75)
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""


def class_labels(seen: Seen, *, labels: Sequence[Any] | None = None, num_labels: int | None = None,
                 prefix: str = "task.generic.", settings: LabelSettings | None = None) -> ClassLabels:
    """Decide the classes from every split's labels (see the module docstring).

    ``seen`` holds each split's labels as read by :func:`label_value`, the training split first
    (``train``/``dev`` for files, ``data``/``eval_data`` in the API); ``labels`` declares the
    classes in id order. Errors name the settings of ``settings`` (default: the CLI's, under
    ``prefix``).

    Raises:
        DataFormatError: naming the place and the setting (``labels`` / ``num_labels`` / ``kind``)
            for each rule above.
    """
    s = settings or LabelSettings.files(prefix)
    primary = next((k for k, rows in seen.items() if rows), next(iter(seen)))
    _check_missing(seen, labels, s)
    _check_bools(seen, s)
    if labels is not None:
        result = _declared_classes(seen, labels, s)
    else:
        _check_one_way(seen, s)
        number = _first(seen, lambda v: isinstance(v, int))
        result = (_id_classes(seen, primary, num_labels, s) if number is not None
                  else _named_classes(seen, primary, num_labels, s))
    result.counts = {split: dict(Counter(result.names[result.id_of(v)] for v, _ in rows))
                     for split, rows in seen.items()}
    if num_labels is not None and num_labels != len(result.names):
        raise DataFormatError(f"{s.num_labels}={num_labels} but {s.declared()} names {len(result.names)} classes "
                              f"{list(result.names)}; give one name per class (or drop {s.num_labels})")
    if len(result.names) < 2:
        raise DataFormatError(f"classification needs at least 2 classes; the data has only {list(result.names)} "
                              f"({_where_of(seen, result.names[0]) if result.names else 'no rows'}): check "
                              f"{s.column} names the label column")
    return result


def _check_missing(seen: Seen, declared: Sequence[Any] | None, s: LabelSettings) -> None:
    """No missing-value marker (``NA``, ``null``, ``None``) as a label, unless a declared class is
    named so (as written or ignoring case): then it is that class."""
    names = {label_text(x).casefold() for x in declared or () if x is not None}
    found = _first(seen, lambda v: isinstance(v, MissingLabel) and v.casefold() not in names)
    if found is not None:
        text, problem = str(found[0]), getattr(found[0], "problem", found[1])
        raise DataFormatError(f"{problem}, which marks a missing value; every example needs a label: fill it in or "
                              f"drop the row (if {text!r} is a class name, {s.verb} {s.list_classes()} naming every "
                              f"class in id order)")


def _check_bools(seen: Seen, s: LabelSettings) -> None:
    """Booleans (ids 1 / 0) not mixed with other class ids: ``true`` next to ``2`` is a mistake."""
    flag = _first(seen, lambda v: isinstance(v, BoolLabel))
    number = _first(seen, lambda v: isinstance(v, int) and not isinstance(v, BoolLabel))
    if flag is not None and number is not None:
        raise DataFormatError(f"labels mix true/false ({_shown(flag[0])} at {flag[1]}) and class ids ({number[0]} at "
                              f"{number[1]}): true would be read as class 1 and false as 0; write every label one way "
                              f"in {' and '.join(seen)}, or list every class in id order in {s.list_classes()}")


def _fraction_error(value: Label, where: str, s: LabelSettings) -> DataFormatError:
    return DataFormatError(f"{where}: label {value} is not a class id (classification): for scores {s.verb} "
                           f"{s.set_kind(TaskKind.REGRESSION)}; for named classes list them in {s.list_classes()}")


def _check_one_way(seen: Seen, s: LabelSettings) -> None:
    """No fractional label (a score) and no mix of class ids and class names."""
    frac = _first(seen, lambda v: isinstance(v, float))
    if frac is not None:
        raise _fraction_error(*frac, s)
    name = _first(seen, lambda v: isinstance(v, str) and not isinstance(v, ClassLabelName))
    number = _first(seen, lambda v: isinstance(v, int))
    if name is not None and number is not None:
        raise DataFormatError(f"labels mix class names ({name[0]!r} at {name[1]}) and class ids "
                              f"({_shown(number[0])} at {number[1]}); write every label one way in "
                              f"{' and '.join(seen)}, or list every class in id order in {s.list_classes()}")


def _declared_classes(seen: Seen, declared: Sequence[Any], s: LabelSettings) -> ClassLabels:
    """Every label is a declared name (as written, else ignoring case when unambiguous), or, when no
    declared name is a number, every label is an integer id into them."""
    names = tuple(label_text(label_value(x, s.labels)) for x in declared)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataFormatError(f"{s.declared()}={list(names)} lists {dup} more than once; name each class once")
    folds = Counter(n.casefold() for n in names)
    by_fold = {n.casefold(): i for i, n in enumerate(names) if folds[n.casefold()] == 1}
    ids_index = not any(looks_numeric(n) for n in names) and _first(seen, lambda v: isinstance(v, int)) is not None
    if ids_index:
        _check_one_way(seen, s)
    lookup = {n: i for i, n in enumerate(names)}
    folded: dict[str, str] = {}
    for rows in seen.values():
        for v, w in rows:
            text = label_text(v)
            if text in lookup:
                continue
            if ids_index and isinstance(v, int):
                if not 0 <= v < len(names):
                    unlabelled = "; -1 marks unlabelled rows (e.g. a test split): drop them" if v == -1 else ""
                    raise DataFormatError(f"{w}: class id {v} is outside 0..{len(names) - 1}: {s.declared()} names "
                                          f"{len(names)} classes {list(names)}{unlabelled}; fix the label, or name "
                                          f"every class in {s.list_classes()}")
                lookup[text] = v
                continue
            if isinstance(v, float):
                raise _fraction_error(v, w, s)
            i = by_fold.get(text.casefold()) if isinstance(v, str) else None
            if i is None:
                fix = (f"fix the label, or name every class in {s.list_classes()}" if s.declared_by
                       else f"fix the label or add it to {s.labels}")
                raise DataFormatError(f"{w}: label {text!r} is not in {s.declared()}={list(names)}"
                                      f"{_suggest(text, names)}; {fix}")
            lookup[text], folded[text] = i, names[i]
    if folded:  # harmless (the class is declared), but the user may want to tidy the data
        log.info("labels matched to %s ignoring case: %s", s.declared(),
                 ", ".join(f"{k!r} -> {v!r}" for k, v in folded.items()))
    return ClassLabels(names, "labels", lookup=lookup)


def _named_classes(seen: Seen, primary: str, num_labels: int | None, s: LabelSettings) -> ClassLabels:
    names = sorted({label_text(v) for v, _ in seen[primary]})
    by_fold: dict[str, str] = {}
    for n in names:
        other = by_fold.setdefault(n.casefold(), n)
        if other != n:
            raise DataFormatError(f"labels {other!r} ({_where_of(seen, other, 1)}) and {n!r} ({_where_of(seen, n, 1)}) "
                                  f"differ only in case, so they would be two classes; spell them one way, or list "
                                  f"both in {s.list_classes()} if they are different classes")
    for split, rows in seen.items():
        for v, w in rows:
            if label_text(v) not in names:
                raise DataFormatError(f"{w}: label {label_text(v)!r} appears in {split} but never in {primary}"
                                      f"{_suggest(label_text(v), names)}, so the model could never learn it; fix "
                                      f"the label, or list every class in {s.list_classes()}")
    if num_labels is not None and num_labels != len(names):
        raise DataFormatError(f"{s.num_labels}={num_labels} but {primary} has {len(names)} class names {names}; "
                              f"name every class in {s.list_classes()} (a class with no rows needs a name)")
    return ClassLabels(tuple(names), "sorted_strings")


def _id_classes(seen: Seen, primary: str, num_labels: int | None, s: LabelSettings) -> ClassLabels:
    negative = _first(seen, lambda v: v < 0)
    if negative is not None:
        raise DataFormatError(f"{negative[1]}: class id {negative[0]} is negative; ids run 0..N-1 (-1 marks "
                              f"unlabelled rows, e.g. a GLUE test split: drop those rows)")
    if num_labels is not None:
        over = _first(seen, lambda v: v >= num_labels)
        if over is not None:
            raise DataFormatError(f"{over[1]}: class id {over[0]} is outside 0..{num_labels - 1} "
                                  f"({s.num_labels}={num_labels})")
        return ClassLabels(tuple(str(i) for i in range(num_labels)), "ids")
    present = {int(v) for v, _ in seen[primary]}
    for split, rows in seen.items():
        for v, w in rows:
            if int(v) not in present:
                raise DataFormatError(f"{w}: class id {v} appears in {split} but never in {primary}, so the model "
                                      f"could never learn it; fix the label, or keep every class with "
                                      f"{s.keep_classes(max(max(present), int(v)) + 1)}")
    n = max(max(present) + 1, 2)
    empty = [i for i in range(n) if i not in present]
    if empty:
        ids = sorted(present)
        if ids == list(range(1, len(ids) + 1)):
            why = (f"the ids run 1..{ids[-1]} (1-based, as in many news-topic files), so class 0 would be empty; "
                   f"list them in order to map them to 0..{len(ids) - 1}: {s.list_classes(ids)}")
        else:
            stray = max(present)
            why = (f"{primary} has no example of class(es) {_spans(empty)}; if {stray} is a stray label, fix it at "
                   f"{_where_of(seen, str(stray))}; if the ids are names, list them in order: {s.list_classes(ids)}")
        raise DataFormatError(f"class ids {_spans(ids)} would make a head of {n} classes, some of which the model "
                              f"can never learn: {why}; or keep the empty classes with {s.keep_classes(n)}")
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


__all__ = ["MISSING_MARKERS", "BoolLabel", "ClassLabelName", "ClassLabels", "Label", "LabelSettings", "MissingLabel",
           "class_labels", "label_score", "label_text", "label_value"]
