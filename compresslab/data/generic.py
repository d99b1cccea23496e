"""User data sets: CSV, TSV or JSONL files with configurable column names.

String class labels are mapped to ids in sorted order (or in the order given by ``labels``),
integer labels are used as they are; the mapping is recorded in ``info["label_names"]``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compresslab.data.schema import DataFormatError, DataNotFoundError, Example, TaskKind, TaskSpec

FORMATS = ("csv", "tsv", "jsonl")
_SUFFIX_FORMAT = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_INT = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class GenericConfig:
    """Where a user data set lives and which columns hold the text and the label.

    Relative paths are tried against the working directory, then against the data root.
    ``format`` is inferred from the file suffix when not given. TSV is read with quoting off
    (as GLUE files are); CSV with standard CSV quoting.
    """

    name: str = "generic"
    train: str | None = None
    dev: str | None = None
    format: str | None = None
    text_a: str = "text"
    text_b: str | None = None
    label: str = "label"
    kind: TaskKind = TaskKind.CLASSIFICATION
    labels: tuple[str, ...] | None = None
    primary_metric: str | None = None
    metrics: tuple[str, ...] = ()
    encoding: str = "utf-8-sig"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", TaskKind(self.kind))
        except ValueError:
            allowed = ", ".join(k.value for k in TaskKind)
            raise ValueError(f"generic data: unknown kind {self.kind!r}; allowed: {allowed}") from None
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"generic data: unknown format {self.format!r}; allowed: {', '.join(FORMATS)}")
        if not self.train and not self.dev:
            raise ValueError("generic data: give at least one of train=<path> or dev=<path>")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "metrics", tuple(self.metrics))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "GenericConfig":
        """Build from a (Hydra) dict, rejecting misspelled keys instead of ignoring them."""
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise ValueError(f"generic data: unknown key(s) {unknown}; allowed: {', '.join(allowed)}")
        return cls(**dict(raw))


def resolve_file(path: str, root_fn: Callable[[], Path | None]) -> Path:
    """Find ``path``: absolute as given, else relative to the working directory, then the data root."""
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


def _read_rows(path: Path, fmt: str, encoding: str) -> list[tuple[int, dict[str, Any]]]:
    """Rows as (line number, record) pairs, so errors can point at the line."""
    rows: list[tuple[int, dict[str, Any]]] = []
    with open(path, encoding=encoding, newline="") as fh:
        if fmt == "jsonl":
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataFormatError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    raise DataFormatError(f"{path}:{lineno}: expected a JSON object per line")
                rows.append((lineno, record))
        else:
            quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
            reader = csv.DictReader(fh, delimiter="\t" if fmt == "tsv" else ",", quoting=quoting)
            rows = [(reader.line_num, dict(r)) for r in reader]
    return rows


def _cell(record: dict[str, Any], column: str, where: str, *, optional: bool = False) -> Any:
    if column not in record or record[column] is None:
        if optional:
            return None
        raise DataFormatError(f"{where}: no value for column {column!r}; the record has {sorted(record)}")
    return record[column]


def _label_mapping(cfg: GenericConfig, raw: list[Any]) -> tuple[dict[str, int], tuple[str, ...]]:
    """Class label strings -> ids: explicit ``labels`` order, integers as-is, else sorted strings."""
    keys = [str(int(v)) if isinstance(v, bool) else str(v).strip() for v in raw]
    distinct = sorted(set(keys))
    if cfg.labels is not None:
        unknown = [k for k in distinct if k not in cfg.labels]
        if unknown:
            raise DataFormatError(f"generic data: label(s) {unknown} are not in labels={list(cfg.labels)}")
        return {k: i for i, k in enumerate(cfg.labels)}, cfg.labels
    if distinct and all(_INT.match(k) for k in distinct):
        ids = sorted({int(k) for k in distinct})
        if ids[0] < 0:
            raise DataFormatError(f"generic data: integer labels must be >= 0, found {ids[0]}")
        names = tuple(str(i) for i in range(max(ids[-1] + 1, 2)))
        return {k: int(k) for k in distinct}, names
    return {k: i for i, k in enumerate(distinct)}, tuple(distinct)


def read_generic(cfg: GenericConfig, root_fn: Callable[[], Path | None]) -> tuple[TaskSpec, dict[str, list[Example] | None], dict[str, Path]]:
    """Read the configured files; returns the spec, examples per split (None: not configured), paths."""
    paths: dict[str, Path] = {}
    raw_rows: dict[str, list[tuple[str, str | None, Any, str]]] = {}
    for split in ("train", "dev"):
        rel = getattr(cfg, split)
        if not rel:
            continue
        path = resolve_file(rel, root_fn)
        fmt = cfg.format or _SUFFIX_FORMAT.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"generic data: cannot tell the format of {path}; set format= one of {FORMATS}")
        parsed = []
        for lineno, record in _read_rows(path, fmt, cfg.encoding):
            where = f"{path}:{lineno}"
            text_b = _cell(record, cfg.text_b, where, optional=True) if cfg.text_b else None
            parsed.append((str(_cell(record, cfg.text_a, where)), None if text_b is None else str(text_b),
                           _cell(record, cfg.label, where), where))
        paths[split], raw_rows[split] = path, parsed

    label_names: tuple[str, ...] = ()
    if cfg.kind is TaskKind.CLASSIFICATION:
        mapping, label_names = _label_mapping(cfg, [r[2] for rows in raw_rows.values() for r in rows])
        convert: Callable[[Any, str], int | float] = lambda v, _w: mapping[str(int(v)) if isinstance(v, bool) else str(v).strip()]
    else:
        def convert(v: Any, where: str) -> int | float:
            try:
                return float(v)
            except (TypeError, ValueError):
                raise DataFormatError(f"{where}: label {v!r} is not a number ({cfg.kind.value} task)") from None

    default_metric = "accuracy" if cfg.kind is TaskKind.CLASSIFICATION else "spearman"
    spec = TaskSpec(
        name=cfg.name, kind=cfg.kind,
        num_labels=len(label_names) if cfg.kind is TaskKind.CLASSIFICATION else 1,
        primary_metric=cfg.primary_metric or default_metric, metrics=cfg.metrics,
        label_names=label_names, glue_dir=None, train_file=cfg.train, dev_file=cfg.dev,
        text_a=cfg.text_a, text_b=cfg.text_b, label=cfg.label, encoding=cfg.encoding,
        description="user data set (generic CSV/TSV/JSONL)",
    )
    examples: dict[str, list[Example] | None] = {"train": None, "dev": None}
    for split, rows in raw_rows.items():
        examples[split] = [Example(a, b, convert(v, w)) for a, b, v, w in rows]
    return spec, examples, paths
