"""User data sets: CSV, TSV or JSONL files with configurable column names (``task=generic``).

Every option is a key of ``task.generic`` (``conf/task/generic.yaml``); see :class:`GenericConfig`.
Files are read strictly (:mod:`compresslab.data.files`), class labels are decided once for train
and dev together (:mod:`compresslab.data.labels`) and logged at the start of a run; every fault is a
:class:`DataFormatError` naming file:line and the setting to change.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compresslab.data.files import FORMATS, QUOTINGS, Table, format_of, looks_numeric, read_table
from compresslab.data.labels import ClassLabels, LabelSettings, class_labels, label_score, label_value
from compresslab.data.schema import DataFormatError, DataNotFoundError, Example, TaskKind, TaskSpec
from compresslab.validate import choice_hint, did_you_mean

log = logging.getLogger(__name__)
PREFIX = "task.generic."
MISSING = "???"  # Hydra's "required, not set" (conf/task/generic.yaml)


@dataclass(frozen=True)
class GenericConfig:
    """Where a user data set lives and how to read it; each field is the key ``task.generic.<field>``.

    * ``train`` / ``dev``: file paths (at least one); relative paths are tried against the working
      directory, then the data root. ``dev`` is the held-out set that is scored.
    * ``format``: ``csv`` | ``tsv`` | ``jsonl``; None: from each file's suffix (``.csv``, ``.tsv``,
      ``.jsonl``, ``.ndjson``).
    * ``header``: False for a CSV/TSV without a header row; ``columns`` then names its cells in order.
    * ``quoting``: ``csv`` (quoted cells) or ``none`` (quotes are text); None: ``csv`` for CSV, ``none``
      for TSV (as GLUE's TSVs), and a TSV with CSV-quoted cells is an error asking which is meant.
    * ``encoding``: None (default): each file in the encoding its byte-order mark names (UTF-8, UTF-16
      as Excel's "Unicode text" writes, UTF-32), else UTF-8; so train and dev may differ. A Python
      codec name (``cp1252`` for Excel CSVs saved on Windows, ``latin-1``) reads every file without a
      mark in it; a mark that contradicts it is an error naming the file.
    * ``text_a`` / ``text_b`` / ``label``: column (CSV/TSV) or key (JSONL) names; ``text_b`` for pairs.
    * ``kind``: ``classification`` | ``regression`` (one score per example) | ``embedding``.
    * ``labels``: class names (as written in the label column) in id order; None: sorted names, or
      integer ids as they are. ``num_labels``: the number of classes when integer ids leave some
      class without examples on purpose.
    * ``primary_metric`` / ``metrics``: what to score (default accuracy, or spearman for scores).
    * ``name``: the task name in the manifest and report (default: ``task.name``).
    """

    name: str = "generic"
    train: str | None = None
    dev: str | None = None
    format: str | None = None
    header: bool = True
    columns: tuple[str, ...] | None = None
    quoting: str | None = None
    encoding: str | None = None
    text_a: str = "text"
    text_b: str | None = None
    label: str = "label"
    kind: TaskKind = TaskKind.CLASSIFICATION
    labels: tuple[Any, ...] | None = None
    num_labels: int | None = None
    primary_metric: str | None = None
    metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Raises ValueError naming the ``task.generic`` key that is wrong and the values it takes."""
        def setting(key: str, value: Any) -> None:
            object.__setattr__(self, key, value)

        try:
            setting("kind", TaskKind(self.kind))
        except ValueError:
            allowed = ", ".join(k.value for k in TaskKind)
            raise ValueError(f"{PREFIX}kind={self.kind!r} is not a task kind; allowed: {allowed}"
                             f"{choice_hint(self.kind, [k.value for k in TaskKind])}") from None
        for key, allowed_values in (("format", FORMATS), ("quoting", QUOTINGS)):
            value = getattr(self, key)
            if value is not None and value not in allowed_values:
                raise ValueError(f"{PREFIX}{key}={value!r} is not allowed; use one of {', '.join(allowed_values)} "
                                 f"(or null: {'from the file suffix' if key == 'format' else 'by format'})"
                                 f"{choice_hint(value, allowed_values)}")
        required = [k for k in ("train", "dev") if getattr(self, k) == MISSING]
        if required == ["train", "dev"]:
            raise ValueError(f"task=generic needs your files: set {PREFIX}train=PATH (the file to train on) and "
                             f"{PREFIX}dev=PATH (the file that is scored); CSV, TSV or JSONL")
        if required == ["dev"]:
            raise ValueError(f"{PREFIX}dev is not set: set {PREFIX}dev=PATH (the file that is scored), or "
                             f"{PREFIX}dev=null and eval.split=validation to score the split carved from train")
        if required == ["train"]:
            raise ValueError(f"{PREFIX}train is not set: set {PREFIX}train=PATH, or {PREFIX}train=null to only "
                             f"score dev (pipelines that fine-tune need train)")
        for key in ("train", "dev"):
            if getattr(self, key) in ("", None):
                setting(key, None)
            elif not isinstance(getattr(self, key), str):
                raise ValueError(f"{PREFIX}{key} must be a file path, got {getattr(self, key)!r}")
        if not self.train and not self.dev:
            raise ValueError(f"task=generic needs a file: set {PREFIX}train=PATH and/or {PREFIX}dev=PATH "
                             f"(CSV, TSV or JSONL)")
        for key in ("name", "text_a", "label", "encoding"):
            if key == "encoding" and self.encoding is None:
                continue  # from each file's byte-order mark
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"{PREFIX}{key} must be a non-empty string, got {getattr(self, key)!r}")
        if not isinstance(self.header, bool):
            raise ValueError(f"{PREFIX}header must be true or false, got {self.header!r}")
        if self.columns is not None:
            setting("columns", tuple(str(c) for c in self.columns))
        self._check_distinct_columns()
        self._check_columns()
        classification = self.kind is TaskKind.CLASSIFICATION
        if self.labels is not None:
            if not classification:
                raise ValueError(f"{PREFIX}labels names classes, but {PREFIX}kind={self.kind.value}; drop labels")
            if isinstance(self.labels, (str, bytes)) or len(tuple(self.labels)) < 2:
                raise ValueError(f"{PREFIX}labels must list at least 2 class names in id order, e.g. "
                                 f"{PREFIX}labels=[negative,positive]; got {self.labels!r}")
            setting("labels", tuple(self.labels))
        if self.num_labels is not None:
            if not classification:
                raise ValueError(f"{PREFIX}num_labels counts classes, but {PREFIX}kind={self.kind.value}; drop it")
            if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, int) or self.num_labels < 2:
                raise ValueError(f"{PREFIX}num_labels must be an integer >= 2, got {self.num_labels!r}")
        setting("metrics", tuple(self.metrics))

    def _check_distinct_columns(self) -> None:
        """text_a, text_b and label name three different columns. A text column that is also the label
        column trains a model that reads its answer (a score that means nothing, no error anywhere);
        text_b equal to text_a pairs each text with itself."""
        roles: dict[str, str] = {}
        for key in ("text_a", "text_b", "label"):
            col = getattr(self, key)
            if col is None:
                continue
            if col in roles:
                first = roles[col]
                why = ("the model would read each example's label as its input" if key == "label" else
                       "each text would be paired with itself")
                fix = (f"set {PREFIX}{first}= the column holding the text" if key == "label" else
                       f"set {PREFIX}text_b= the second text's column, or {PREFIX}text_b=null for single texts")
                raise ValueError(f"{PREFIX}{first} and {PREFIX}{key} both name the column {col!r}: {why}; {fix}")
            roles[col] = key

    def _check_columns(self) -> None:
        if self.header and self.columns is not None:
            raise ValueError(f"{PREFIX}columns names the cells of a file without a header row; set "
                             f"{PREFIX}header=false too (or drop columns to use the file's header)")
        if self.header:
            return
        cols = self.columns or ()
        if not cols:
            raise ValueError(f"{PREFIX}header=false needs {PREFIX}columns=[...] naming every cell of a row in "
                             f"order, e.g. {PREFIX}columns=[label,title,body]")
        if len(set(cols)) != len(cols):
            raise ValueError(f"{PREFIX}columns={list(cols)} names a column twice")
        for key in ("text_a", "text_b", "label"):
            col = getattr(self, key)
            if col is not None and col not in cols:
                raise ValueError(f"{PREFIX}{key}={col!r} is not in {PREFIX}columns={list(cols)}; set "
                                 f"{PREFIX}{key}= one of them")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "GenericConfig":
        """Build from a (Hydra) dict, rejecting misspelled keys instead of ignoring them.

        Raises:
            ValueError: an unknown key (the allowed keys are listed), or a bad value (see ``__post_init__``).
        """
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise ValueError(f"task.generic: unknown key(s) {unknown}{did_you_mean(unknown, allowed)}; "
                             f"allowed: {', '.join(allowed)}")
        return cls(**{k: v for k, v in raw.items() if not (k == "name" and v is None)})


def resolve_file(path: str, root_fn: Callable[[], Path | None]) -> Path:
    """Find ``path``: absolute as given, else relative to the working directory, then the data root.

    Raises:
        DataNotFoundError: naming every place looked at.
    """
    p = Path(path).expanduser()
    tried = [p] if p.is_absolute() else [Path.cwd() / p]
    if tried[0].is_file():
        return tried[0]
    if not p.is_absolute():
        root = root_fn()
        if root is not None:
            tried.append(root / p)
            if tried[-1].is_file():
                return tried[-1]
    raise DataNotFoundError(f"data file {path!r} not found; looked at: {', '.join(str(t) for t in tried)}")


def _read(cfg: GenericConfig, path: Path) -> Table:
    fmt = format_of(path, cfg.format, f"{PREFIX}format")
    if fmt == "jsonl" and (not cfg.header or cfg.columns):
        raise ValueError(f"{path} is JSON Lines (keys name the fields); {PREFIX}header and {PREFIX}columns apply "
                         f"to CSV/TSV files only: drop them")
    table = read_table(path, fmt, encoding=cfg.encoding, header=cfg.header, columns=cfg.columns,
                       quoting=cfg.quoting, prefix=PREFIX)
    if fmt != "jsonl":
        _check_header(cfg, table)
    return table


def _check_header(cfg: GenericConfig, table: Table) -> None:
    """Every configured column is in the header, or an error listing the columns found."""
    for key in ("text_a", "text_b", "label"):
        col = getattr(cfg, key)
        if col is None or col in table.columns:
            continue
        if any(looks_numeric(c) or len(c.split()) > 4 for c in table.columns):  # ids or sentences: data
            raise DataFormatError(f"{table.path}:1: no column {col!r} ({PREFIX}{key}), and the first row "
                                  f"{table.columns} looks like data, not a header: if the file has no header row, "
                                  f"set {PREFIX}header=false and {PREFIX}columns=[...] naming its "
                                  f"{len(table.columns)} cells in order")
        raise DataFormatError(f"{table.path}:1: no column {col!r} ({PREFIX}{key}); the header has {table.columns}"
                              f"{did_you_mean([col], table.columns)}; set {PREFIX}{key}= the column to use")


def _text(record: dict[str, Any], column: str, key: str, where: str) -> str:
    if column not in record:
        raise DataFormatError(f"{where}: no key {column!r} ({PREFIX}{key}); the record has {sorted(record)}"
                              f"{did_you_mean([column], record)}")
    value = record[column]
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: {column!r} ({PREFIX}{key}) must be text, got {type(value).__name__} "
                              f"{value!r}")
    if not value.strip():
        raise DataFormatError(f"{where}: {column!r} ({PREFIX}{key}) is empty; every row needs its text")
    return value


@dataclass
class GenericData:
    """What :func:`read_generic` read: the spec, examples per split (None: no file configured), the
    files, and the classes (None for regression / embedding)."""

    spec: TaskSpec
    examples: dict[str, list[Example] | None]
    paths: dict[str, Path]
    classes: ClassLabels | None
    encodings: dict[str, str] = dataclasses.field(default_factory=dict)  # split -> the codec its file was read with


def read_generic(cfg: GenericConfig, root_fn: Callable[[], Path | None]) -> GenericData:
    """Read the configured files and decide the classes.

    Logs the class set (names in id order, examples per class per split) for classification.

    Raises:
        DataNotFoundError: a file that does not exist.
        DataFormatError: anything wrong inside a file, or a label set that cannot be trained (file:line).
        ValueError: settings that do not fit the file (``header``/``columns`` on JSONL).
    """
    paths: dict[str, Path] = {}
    encodings: dict[str, str] = {}
    rows: dict[str, list[tuple[str, str | None, Any, str]]] = {}
    for split in ("train", "dev"):
        rel = getattr(cfg, split)
        if not rel:
            continue
        path = resolve_file(rel, root_fn)
        parsed = []
        table = _read(cfg, path)
        encodings[split] = table.encoding
        for lineno, record in table.rows:
            where = f"{path}:{lineno}"
            text_b = _text(record, cfg.text_b, "text_b", where) if cfg.text_b else None
            if cfg.label not in record:
                raise DataFormatError(f"{where}: no key {cfg.label!r} ({PREFIX}label); the record has {sorted(record)}"
                                      f"{did_you_mean([cfg.label], record)}")
            parsed.append((_text(record, cfg.text_a, "text_a", where), text_b, record[cfg.label], where))
        paths[split], rows[split] = path, parsed

    classes: ClassLabels | None = None
    if cfg.kind is TaskKind.CLASSIFICATION:
        seen = {s: [(label_value(v, w, cfg.label), w) for *_, v, w in r] for s, r in rows.items()}
        classes = class_labels(seen, labels=cfg.labels, num_labels=cfg.num_labels, prefix=PREFIX)
        log.info("task %s: %s", cfg.name, classes.describe())
        unseen = [n for n in classes.names if not classes.counts[next(iter(seen))].get(n)]
        if unseen:
            log.warning("task %s: class(es) %s have no example in %s (declared by %slabels / num_labels)",
                        cfg.name, unseen, next(iter(seen)), PREFIX)
        labels: dict[str, list[int | float]] = {s: [classes.id_of(v) for v, _ in r] for s, r in seen.items()}
    else:
        settings = LabelSettings.files(PREFIX)  # scores are read as labels are: NaN, null and NA refused alike
        labels = {s: [label_score(label_value(v, w, cfg.label), w, cfg.kind, settings) for *_, v, w in r]
                  for s, r in rows.items()}

    default_metric = "accuracy" if cfg.kind is TaskKind.CLASSIFICATION else "spearman"
    spec = TaskSpec(
        name=cfg.name, kind=cfg.kind, num_labels=len(classes.names) if classes else 1,
        primary_metric=cfg.primary_metric or default_metric, metrics=cfg.metrics,
        label_names=classes.names if classes else (), glue_dir=None, train_file=cfg.train, dev_file=cfg.dev,
        columns=cfg.columns, text_a=cfg.text_a, text_b=cfg.text_b, label=cfg.label,
        encoding=next(iter(encodings.values())),  # the first file's codec; each file's own is in ``encodings``
        description="user data set (generic CSV/TSV/JSONL)",
    )
    examples: dict[str, list[Example] | None] = {"train": None, "dev": None}
    for split, r in rows.items():
        examples[split] = [Example(a, b, y) for (a, b, _, _), y in zip(r, labels[split])]
    return GenericData(spec, examples, paths, classes, encodings)
