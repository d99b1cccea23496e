"""Readers for GLUE TSV files: exact column layout, quoting off, labels checked row by row."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from compresslab.data.files import first_bad_line
from compresslab.data.schema import DataFormatError, Example, TaskKind, TaskSpec


def parse_label(spec: TaskSpec, value: str, path: Path, lineno: int) -> int | float:
    """Turn one label cell into an ``int`` class id or a ``float`` score, or say where it failed."""
    value = value.strip()
    if spec.kind is not TaskKind.CLASSIFICATION:
        try:
            score = float(value)
        except ValueError:
            raise DataFormatError(f"{path}:{lineno}: label {value!r} is not a number ({spec.kind.value} task)") from None
        if not math.isfinite(score):  # float() reads 'nan' and 'inf': a damaged file, never a score
            raise DataFormatError(f"{path}:{lineno}: label {value!r} is not a finite number ({spec.kind.value} task); "
                                  f"was this file replaced or damaged?")
        return score
    if spec.string_labels:
        if value not in spec.label_names:
            raise DataFormatError(f"{path}:{lineno}: label {value!r} is not one of {list(spec.label_names)}")
        return spec.label_names.index(value)
    try:
        label = int(value)
    except ValueError:
        raise DataFormatError(f"{path}:{lineno}: label {value!r} is not an integer class id") from None
    if not 0 <= label < spec.num_labels:
        raise DataFormatError(f"{path}:{lineno}: label {label} is outside 0..{spec.num_labels - 1}")
    return label


def read_glue_tsv(spec: TaskSpec, path: Path) -> list[Example]:
    """Read one GLUE TSV file into examples.

    Quoting is off (``csv.QUOTE_NONE``) because RTE, STS-B, QNLI and CoLA contain bare ``"``
    that would otherwise merge rows; every row must have as many cells as the header.

    Raises:
        DataFormatError: naming file:line (a missing column, a row of the wrong width, a bad
            label, bytes that are not ``spec.encoding``) or the file (empty).
    """
    try:
        return _read_glue_tsv(spec, path)
    except UnicodeDecodeError as err:
        lineno, bad = first_bad_line(path.read_bytes(), spec.encoding, err)
        raise DataFormatError(f"{path}:{lineno}: byte(s) {bad.hex(' ')} are not valid {spec.encoding}; the GLUE "
                              f"files are {spec.encoding}: was this file replaced or damaged? (see "
                              f"data/PROVENANCE.md for the files)") from None


def _read_glue_tsv(spec: TaskSpec, path: Path) -> list[Example]:
    examples: list[Example] = []
    with open(path, encoding=spec.encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        if spec.columns is None:
            header = next(reader, None)
            if header is None:
                raise DataFormatError(f"{path}: the file is empty (expected a header row)")
            first_line = 2
        else:
            header, first_line = list(spec.columns), 1
        wanted = [spec.text_a, spec.label] + ([spec.text_b] if spec.text_b else [])
        missing = [c for c in wanted if c not in header]
        if missing:
            raise DataFormatError(f"{path}: column(s) {missing} not found; the header has {header}")
        ia, il = header.index(spec.text_a), header.index(spec.label)
        ib = header.index(spec.text_b) if spec.text_b else None
        for lineno, row in enumerate(reader, start=first_line):
            if not row:
                continue  # tolerate a blank last line
            if len(row) != len(header):
                raise DataFormatError(
                    f"{path}:{lineno}: {len(row)} tab-separated cells, expected {len(header)} ({header})"
                )
            label = parse_label(spec, row[il], path, lineno)
            examples.append(Example(row[ia], row[ib] if ib is not None else None, label))
    return examples
