"""User-held data as a task: tuples, dict records, a ``datasets.Dataset``, or a CSV/TSV/JSONL path.

The data half of the in-process API (``compresslab.compress(..., data=train, eval_data=dev)``): the
same :class:`TaskData` and split contract as :func:`load_task`, plus cheap checks against the
model's head and tokenizer, so bad data fails before any model work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from compresslab.data.files import format_of, read_table
from compresslab.data.generic import resolve_file
from compresslab.data.labels import ClassLabelName, LabelSettings, Seen, class_labels, label_score, label_value
from compresslab.data.schema import DataFormatError, Example, MissingSplit, TaskData, TaskKind, TaskSpec
from compresslab.data.carve import carve_validation, check_carve
from compresslab.data.tasks import _check_count
from compresslab.manifest import sha256_file
from compresslab.validate import did_you_mean

__all__ = ["check_column_keywords", "task_from_user_data"]

log = logging.getLogger(__name__)

# Column names tried when the caller names none: pairs first (GLUE / HF hub names), then singles.
PAIR_COLUMNS = (("sentence1", "sentence2"), ("question", "sentence"), ("question1", "question2"),
                ("premise", "hypothesis"), ("text_a", "text_b"), ("text", "text_pair"))
TEXT_COLUMNS = ("text", "sentence", "text_a", "sentence1", "question", "premise")
LABEL_COLUMNS = ("label", "labels", "score")
# Where the names of class ids came from; only name-based sources are compared with config.id2label.
NAMED_SOURCES = ("label2id", "class_label", "sorted_strings", "labels")
# The API's column keywords -> the CLI's task.generic key (README's data table) that names the same column
COLUMN_KEYWORDS = {"text_column": "text_a", "text_pair_column": "text_b", "label_column": "label"}


def check_column_keywords(columns: Mapping[str, Any], caller: Callable[..., Any]) -> None:
    """TypeError for a keyword ``caller`` (an API entry taking user data: ``compress``, ``evaluate``) collects in its
    ``**columns`` but is no column keyword: the one message every entry gives. A CLI key (``text_a=``, which a user
    of ``task.generic`` writes) is told the API's keyword; any other gets a did-you-mean among the column keywords and
    ``caller``'s own (``eval_dat=`` would otherwise be read as a column name, or fail deep inside as Python's)."""
    import inspect

    unknown = sorted(set(columns) - set(COLUMN_KEYWORDS))
    if not unknown:
        return
    cli = {key: kw for kw, key in COLUMN_KEYWORDS.items()}
    own = [p.name for p in inspect.signature(caller).parameters.values() if p.kind is not p.VAR_KEYWORD]
    hints = "; ".join(f"{k}: the API's keyword is {cli[k]}=" for k in unknown if k in cli)
    close = did_you_mean([k for k in unknown if k not in cli], [*COLUMN_KEYWORDS, *own])
    raise TypeError(f"{caller.__name__}() got unexpected keyword(s) {unknown}" + (f" ({hints})" if hints else "")
                    + close)


@dataclass
class _Source:
    """One input, flattened: (text_a, text_b, raw label, where) rows and what was learned reading it."""

    rows: list[tuple[Any, Any, Any, str]]
    kind: str  # "tuples", "records", "datasets.Dataset", "pandas.DataFrame", "file"
    paired: bool
    columns: tuple[str | None, str | None, str | None] = (None, None, None)
    class_names: tuple[str, ...] | None = None
    file: dict[str, Any] | None = None


def _pick_columns(found: Sequence[str], text: str | None, pair: str | None, label: str | None,
                  what: str) -> tuple[str, str | None, str]:
    """Choose (text_a, text_b, label) columns: the caller's names, else the usual ones."""
    def need(col: str, role: str) -> str:
        if col not in found:  # the CLI's header check gives the same did-you-mean (data.generic)
            raise ValueError(f"{what}: {role} column {col!r} not found; columns found: {list(found)}"
                             f"{did_you_mean([col], found)}")
        return col

    if text is not None:
        a, b = need(text, "text"), (need(pair, "text pair") if pair is not None else None)
    elif pair is not None:
        b = need(pair, "text pair")
        a = next((c for c in TEXT_COLUMNS if c in found and c != b), None)
        if a is None:
            raise ValueError(f"{what}: no text column found (tried {list(TEXT_COLUMNS)}); columns found: "
                             f"{list(found)}; name it with text_column=")
    else:
        a, b = next(((x, y) for x, y in PAIR_COLUMNS if x in found and y in found), (None, None))
        if a is None:
            a = next((c for c in TEXT_COLUMNS if c in found), None)
        if a is None:
            raise ValueError(f"{what}: no text column found (tried {list(TEXT_COLUMNS)} and pairs "
                             f"{[list(p) for p in PAIR_COLUMNS]}); columns found: {list(found)}; "
                             f"name it with text_column= (and text_pair_column=)")
    if label is not None:
        lab = need(label, "label")
    else:
        lab = next((c for c in LABEL_COLUMNS if c in found and c not in (a, b)), None)
        if lab is None:
            raise ValueError(f"{what}: no label column found (tried {list(LABEL_COLUMNS)}); columns found: "
                             f"{list(found)}; name it with label_column=")
    # one column in two roles: a model that reads its own label as input, or a text paired with itself
    if lab in (a, b):
        raise ValueError(f"{what}: the label column {lab!r} is also the {'text' if lab == a else 'text pair'} column: "
                         f"the model would read each label as its input; name the text with text_column= "
                         f"(and text_pair_column=) and the label with label_column=")
    if a == b:
        raise ValueError(f"{what}: text_column and text_pair_column both name {a!r}: each text would be paired "
                         f"with itself; name the second text's column, or drop text_pair_column for single texts")
    return a, b, lab


def _from_records(records: list[Any], what: str, cols: tuple[str | None, ...]) -> _Source:
    found = list(records[0])
    a, b, lab = _pick_columns(found, *cols, what=what)
    rows = []
    for i, rec in enumerate(records):
        where = f"{what}[{i}]"
        if not isinstance(rec, Mapping):
            raise ValueError(f"{where}: expected a dict like {what}[0], got {type(rec).__name__} {rec!r}")
        missing = [c for c in (a, b, lab) if c is not None and c not in rec]
        if missing:
            raise ValueError(f"{where}: no key(s) {missing}; the record has {sorted(rec)}{did_you_mean(missing, rec)}")
        rows.append((rec[a], rec[b] if b else None, rec[lab], where))
    return _Source(rows, "records", b is not None, (a, b, lab))


def _from_tuples(items: list[Any], what: str) -> _Source:
    width = len(items[0])
    rows = []
    for i, item in enumerate(items):
        where = f"{what}[{i}]"
        if not isinstance(item, (tuple, list)):
            raise ValueError(f"{where}: expected a tuple like {what}[0], got {type(item).__name__} {item!r}")
        if len(item) not in (2, 3):
            raise ValueError(f"{where}: expected (text, label) or (text_a, text_b, label), got {len(item)} "
                             f"items: {item!r}")
        if len(item) != width:
            raise ValueError(f"{where} has {len(item)} items but {what}[0] has {width}: all items must be "
                             f"(text, label) or all (text_a, text_b, label)")
        rows.append((item[0], None, item[1], where) if width == 2 else (item[0], item[1], item[2], where))
    return _Source(rows, "tuples", width == 3)


def _is_dataframe(obj: Any) -> bool:
    """A pandas ``DataFrame`` (duck-typed, so pandas is never imported here). Iterated as a list it
    would yield its column names, read as if they were examples."""
    return type(obj).__name__ == "DataFrame" and type(obj).__module__.startswith("pandas") and hasattr(obj, "columns")


def _from_dataframe(df: Any, what: str, cols: tuple[str | None, ...]) -> _Source:
    """Rows as dict records (``data[i]`` is row i by position); a NaN cell fails as a missing label or text."""
    if len(df) == 0:
        raise ValueError(f"{what} is an empty DataFrame (0 rows); give at least one labelled example")
    source = _from_records(df.to_dict("records"), what, cols)
    return replace(source, kind="pandas.DataFrame")


def _is_hf_dataset(obj: Any) -> bool:
    """A ``datasets.Dataset`` (duck-typed, so ``datasets`` is never imported here)."""
    return hasattr(obj, "column_names") and hasattr(obj, "features") and hasattr(obj, "num_rows")


def _from_dataset(ds: Any, what: str, cols: tuple[str | None, ...]) -> _Source:
    if ds.num_rows == 0:
        raise ValueError(f"{what} is an empty Dataset (0 rows)")
    a, b, lab = _pick_columns(list(ds.column_names), *cols, what=what)
    feature = ds.features.get(lab)
    names = tuple(feature.names) if type(feature).__name__ == "ClassLabel" else None
    texts_a, labels = list(ds[a]), list(ds[lab])
    texts_b = list(ds[b]) if b else [None] * len(texts_a)
    if names is not None:  # the ids are read as these names (ClassLabelName) when the labels are decided
        bad = next((i for i, v in enumerate(labels) if not (isinstance(v, int) and 0 <= v < len(names))), None)
        if bad is not None:
            unlabelled = (f"; -1 marks unlabelled rows (a test split): drop them, e.g. "
                          f"{what}.filter(lambda r: r[{lab!r}] >= 0)" if labels[bad] == -1 else "")
            raise DataFormatError(f"{what}[{bad}]: class id {labels[bad]!r} is outside 0..{len(names) - 1}, the ids "
                                  f"of the ClassLabel feature {lab!r} {list(names)}{unlabelled}")
    rows = [(x, y, v, f"{what}[{i}]") for i, (x, y, v) in enumerate(zip(texts_a, texts_b, labels))]
    return _Source(rows, "datasets.Dataset", b is not None, (a, b, lab), class_names=names)


def _from_file(path: str | os.PathLike[str], what: str, cols: tuple[str | None, ...]) -> _Source:
    resolved = resolve_file(str(path), lambda: None)
    fmt = format_of(resolved, None, None)
    records = read_table(resolved, fmt, prefix=None).rows
    a, b, lab = _pick_columns(list(records[0][1]), *cols, what=f"{what} ({resolved})")
    rows = []
    for lineno, rec in records:
        text_b = rec.get(b) if b else None
        rows.append((rec.get(a), text_b, rec.get(lab), f"{resolved}:{lineno}"))
    info = {"path": str(resolved), "sha256": sha256_file(resolved), "rows": len(rows)}
    return _Source(rows, "file", b is not None, (a, b, lab), file=info)


def _read_source(obj: Any, what: str, cols: tuple[str | None, ...]) -> _Source:
    if isinstance(obj, (str, os.PathLike)):
        source = _from_file(obj, what, cols)
    elif _is_hf_dataset(obj):
        source = _from_dataset(obj, what, cols)
    elif _is_dataframe(obj):
        source = _from_dataframe(obj, what, cols)
    elif isinstance(obj, Mapping) and obj and all(_is_hf_dataset(v) for v in obj.values()):
        raise ValueError(f"{what} is a {type(obj).__name__} with splits {list(obj)}; pass one split, e.g. "
                         f"ds['train']")
    elif isinstance(obj, Mapping):
        raise ValueError(f"{what} is a {type(obj).__name__} with keys {list(obj)[:10]}; pass a list of "
                         f"(text, label) tuples or dict records, a datasets.Dataset (one split), or a path")
    elif isinstance(obj, Iterable) and not isinstance(obj, bytes):
        items = list(obj)
        if not items:
            raise ValueError(f"{what} is empty; give at least one labelled example")
        if isinstance(items[0], Mapping):
            source = _from_records(items, what, cols)
        elif isinstance(items[0], (tuple, list)):
            named = [f"{k}={v!r}" for k, v in zip(("text_column", "text_pair_column", "label_column"), cols) if v]
            if named:  # positions, not names: the columns would be ignored
                raise ValueError(f"{what} is a list of tuples, read by position ((text, label) or (text, text pair, "
                                 f"label)); {', '.join(named)} names columns of dict records, a dataset or a file: "
                                 "leave it out, or pass dict records")
            source = _from_tuples(items, what)
        else:
            raise ValueError(f"{what}[0]: expected a (text, label) tuple or a dict record, got "
                             f"{type(items[0]).__name__} {items[0]!r}")
    else:
        raise ValueError(f"{what}: unsupported type {type(obj).__name__}; pass a list of (text, label) tuples "
                         f"or dict records, a datasets.Dataset, or a CSV/TSV/JSONL path")
    for text_a, text_b, _, where in source.rows:
        for text, role in [(text_a, "text")] + ([(text_b, "text pair")] if source.paired else []):
            if not isinstance(text, str):
                raise ValueError(f"{where}: {role} must be a str, got {type(text).__name__} {text!r}")
            if not text.strip():
                raise ValueError(f"{where}: {role} is empty ({text!r})")
    return source


def _check_label2id(label2id: Any) -> dict[str, int]:
    """``label2id`` as ``{name: id}`` with the ids 0..N-1 once each.

    Raises:
        ValueError: not a dict, an ``{id: name}`` dict, or ids that are not 0..N-1.
    """
    if not isinstance(label2id, Mapping) or not label2id:
        raise ValueError(f"label2id must be a non-empty dict {{name: id}}, got {label2id!r}")
    if all(isinstance(k, int) and isinstance(v, str) for k, v in label2id.items()):
        raise ValueError(f"label2id {dict(label2id)} looks like id2label ({{id: name}}); pass {{name: id}}")
    if not all(isinstance(k, str) for k in label2id) or sorted(label2id.values()) != list(range(len(label2id))):
        raise ValueError(f"label2id must map str names to the ids 0..{len(label2id) - 1} once each, "
                         f"got {dict(label2id)}")
    return {str(k): int(v) for k, v in label2id.items()}


def _written_as_float(raw: Any) -> bool:
    """A Python, numpy or torch float (``5.0``), as a column of scores holds; text is not."""
    dtype = getattr(raw, "dtype", None)
    if dtype is not None:
        return bool(getattr(dtype, "is_floating_point", False) or getattr(dtype, "kind", "") == "f")
    return isinstance(raw, float)


@dataclass
class _Labels:
    """The labels of ``data`` and ``eval_data`` decided by the files' rules (:mod:`compresslab.data.labels`)."""

    kind: TaskKind
    values: dict[str, list[int | float]]  # "data" / "eval_data" -> label per example (class id or score)
    names: tuple[str, ...] = ()
    source: str = "scores"  # label2id, class_label, sorted_strings, ids; scores for regression / embedding
    mapping: dict[str, int] | None = None


def _decide_labels(kind: TaskKind | None, sources: dict[str, _Source], class_names: tuple[str, ...] | None,
                   label2id: Mapping[str, int] | None, label2id_from: str | None, name: str) -> _Labels:
    """Read every label with :func:`label_value`, infer the kind when None (a fractional number and no
    class name in ``data``: regression; else classification) and decide the classes with
    :func:`class_labels`: declared by ``label2id``, else the ``ClassLabel`` names, else the data.

    Raises:
        DataFormatError: a label the rules refuse, naming ``data[i]`` / ``eval_data[i]`` (or
            file:line) and ``label2id=`` / ``kind=`` / ``label_column=``.
        ValueError: a malformed ``label2id``.
    """
    seen: Seen = {}
    for split, src in sources.items():
        values = [(label_value(raw, where, src.columns[2]), where) for _, _, raw, where in src.rows]
        if src.class_names is not None:  # a ClassLabel id is its name, so label2id (the model's) can remap it
            values = [(ClassLabelName(src.class_names[int(v)]), w) for v, w in values]
        seen[split] = values
    if kind is None:
        train = [v for v, _ in seen["data"]]
        scores = (any(isinstance(v, float) for v in train)  # a fractional label
                  or all(_written_as_float(raw) for _, _, raw, _ in sources["data"].rows))  # a column of floats
        kind = (TaskKind.REGRESSION if scores and not any(isinstance(v, str) for v in train)
                else TaskKind.CLASSIFICATION)
    if kind is not TaskKind.CLASSIFICATION:
        settings = LabelSettings.api()
        return _Labels(kind, {split: [label_score(v, w, kind, settings) for v, w in rows]
                              for split, rows in seen.items()})
    declared: list[str] | None = None
    declared_by = None  # None: the label2id argument itself
    if label2id is not None:
        checked = _check_label2id(label2id)
        declared, declared_by = sorted(checked, key=checked.__getitem__), label2id_from
    elif class_names is not None:
        declared, declared_by = list(class_names), "the ClassLabel names of the label feature"
    classes = class_labels(seen, labels=declared, settings=LabelSettings.api(declared_by))
    log.info("task %s: %s", name, classes.describe())
    source = "label2id" if label2id is not None else "class_label" if class_names is not None else classes.source
    values: dict[str, list[int | float]] = {split: [classes.id_of(v) for v, _ in rows] for split, rows in seen.items()}
    mapping = {n: i for i, n in enumerate(classes.names)} if source in NAMED_SOURCES else None
    return _Labels(kind, values, classes.names, source, mapping)


def _to_kind(kind: TaskKind | str | None) -> TaskKind | None:
    if kind is None:
        return None
    try:
        return TaskKind(kind)
    except ValueError:
        raise ValueError(f"unknown kind {kind!r}; allowed: {', '.join(k.value for k in TaskKind)}") from None


def task_from_user_data(
    data: Any,
    eval_data: Any = None,
    *,
    label2id: Mapping[str, int] | None = None,
    kind: TaskKind | str | None = None,
    val_size: int | None = None,
    val_carve: str = "random",
    seed: int = 42,
    name: str = "user",
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    primary_metric: str | None = None,
    label2id_from: str | None = None,
    scored: bool = False,
) -> TaskData:
    """Build a :class:`TaskData` from data the caller holds; all checks run before any model work.

    ``data`` / ``eval_data`` may each be:

    * a list, tuple or other iterable of ``(text, label)`` or ``(text_a, text_b, label)`` tuples
      (all the same length), or of dicts with text/label keys (guessed as below);
    * a ``datasets.Dataset`` (one split; a ``ClassLabel`` label feature gives the class names);
    * a pandas ``DataFrame`` (its rows as dict records; ``data[i]`` in messages is row i by position);
    * a path (``str`` / ``Path``) to a ``.csv``, ``.tsv`` or ``.jsonl`` file with a header/keys,
      read by the generic readers; CSV/TSV label cells that look like ints or floats are numbers.

    Columns (dicts, datasets, files) are ``text_column`` / ``text_pair_column`` / ``label_column``
    when given, else the first present of the pairs ``sentence1+sentence2``, ``question+sentence``,
    ``question1+question2``, ``premise+hypothesis``, ``text_a+text_b``, ``text+text_pair``, then
    the single ``text``, ``sentence``, ``text_a``, ...; labels ``label``, ``labels``, ``score``.

    Labels are read by the rules the CLI applies to files (:mod:`compresslab.data.labels`): ``1``,
    ``"1"``, ``1.0`` and numpy / torch scalars are class id 1. ``kind`` (``"classification"`` /
    ``"regression"`` / ``"embedding"``) is inferred from ``data`` when None: regression when it
    holds no class name and a fractional number or only floats (``5.0``, a column of scores), else
    classification (``1`` next to ``1.0`` is one class). The classes are declared by
    ``label2id`` (``label2id_from`` says where it came from, for messages, e.g. "the model's
    config.label2id"), else by the ``ClassLabel`` names; a label matches a declared name as
    written, else ignoring case when no two names differ only in case, and integer labels are ids
    into the declared names unless the names are numbers. Undeclared, the classes are the sorted
    names of ``data``, or its integer ids as they are; then ids mixed with names, a fractional
    label, a label only in ``eval_data``, names that differ only in case and ids that leave a class
    without an example in ``data`` (a stray 7, 1-based ids) are errors. ``eval_data`` uses the
    same classes. ``label2id`` is ignored for regression and embedding tasks.

    ``scored``: ``data`` is only scored (``compresslab.evaluate``): it is read once, named ``data`` in
    messages and logs, and is the dev split as well as train (``eval_data`` must be None).

    Splits: ``train`` is ``data`` minus ``validation``, a seeded carve of ``val_size`` examples
    (default ``min(1000, len(data) // 20)``, as :func:`load_task`; 0 below 20 examples), both in
    input order; ``val_carve="grouped"`` draws whole texts and keeps their duplicates and phrases out
    of train (:mod:`compresslab.data.carve`). ``dev`` is ``eval_data``; when it is None, ``dev`` is an empty
    :class:`MissingSplit` that says why, and code that needs dev examples raises
    :class:`SplitUnavailableError`. ``info["label_source"]`` says where class names came from
    (``label2id``, ``class_label``, ``sorted_strings``, ``ids``; ``scores`` for regression).

    Raises:
        ValueError: empty data, mixed tuple lengths, non-string or empty text, a column not found
            (listing the columns found), pairs in one input and singles in the other, a DatasetDict
            or plain dict, an unknown ``kind``, a bad ``val_size`` / ``val_carve`` / ``label2id``, a
            ``val_size`` that leaves no training example (or group).
        DataFormatError: (a ValueError) a label the rules above refuse, naming ``data[i]`` /
            ``eval_data[i]`` (or file:line) and the argument to change (``label2id=``, ``kind=``).
        DataNotFoundError: a path that is not a file (a ``FileNotFoundError``).
    """
    kind = _to_kind(kind)
    _check_count(val_size, "val_size")
    val_carve = check_carve(val_carve)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if data is None:
        raise ValueError("data is None; pass the training examples (tuples, dicts, a datasets.Dataset or a path)")
    cols = (text_column, text_pair_column, label_column)
    train_src = _read_source(data, "data", cols)
    dev_src = _read_source(eval_data, "eval_data", cols) if eval_data is not None else None
    if dev_src is not None and dev_src.paired != train_src.paired:
        shape = {True: "sentence pairs", False: "single sentences"}
        raise ValueError(f"data holds {shape[train_src.paired]} but eval_data holds {shape[dev_src.paired]}")

    if scored and eval_data is not None:
        raise ValueError("scored=True reads data as the split to score: eval_data must be None")
    sources = {"data": train_src, **({"eval_data": dev_src} if dev_src is not None else {})}
    class_names = train_src.class_names or (dev_src.class_names if dev_src else None)
    labels = _decide_labels(kind, sources, class_names, label2id, label2id_from, name)
    kind = labels.kind

    def examples(src: _Source, values: list[int | float]) -> list[Example]:
        return [Example(a, b, y) for (a, b, _, _), y in zip(src.rows, values)]

    train_all = examples(train_src, labels.values["data"])
    dev: list[Example] = (examples(dev_src, labels.values["eval_data"]) if dev_src else list(train_all) if scored else
                          MissingSplit("no eval_data was given, so there is no dev split to score; pass eval_data="))
    classification = kind is TaskKind.CLASSIFICATION
    text_a, text_b, label = train_src.columns
    spec = TaskSpec(
        name=name, kind=kind, num_labels=len(labels.names) if classification else 1,
        primary_metric=primary_metric or ("accuracy" if classification else "spearman"),
        label_names=labels.names, glue_dir=None,
        train_file=train_src.file["path"] if train_src.file else None,
        dev_file=dev_src.file["path"] if dev_src and dev_src.file else None,
        text_a=text_a or ("text_a" if train_src.paired else "text"),
        text_b=(text_b or "text_b") if train_src.paired else None, label=label or "label",
        description=f"user data ({train_src.kind})",
    )
    carve = carve_validation(train_all, val_size, seed, val_carve)
    train, validation = carve.train, carve.validation
    files = {s: src.file for s, src in (("train", train_src), ("dev", dev_src)) if src is not None and src.file}
    info: dict[str, Any] = {
        "task": spec.name,
        "kind": spec.kind.value,
        "data_root": None,
        "files": files,
        "sources": {"train": train_src.kind, "dev": dev_src.kind if dev_src else None},
        "sizes": {"train": len(train), "validation": len(validation), "dev": len(dev)},
        "val_seed": seed,
        "val_size": len(validation),
        **carve.info,
        "max_train": None,
        "max_dev": None,
        "label_names": list(spec.label_names),
        "label_source": labels.source,
        "label2id": dict(labels.mapping) if labels.mapping else None,
        "missing_splits": {"dev": dev.reason} if isinstance(dev, MissingSplit) else {},
    }
    return TaskData(spec=spec, train=train, validation=validation, dev=dev, info=info)
