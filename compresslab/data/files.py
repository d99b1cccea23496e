"""Reading user CSV / TSV / JSONL files strictly: every record with its line, every fault named by file:line.

What is checked here, before any label or text is looked at: each file is read in its own encoding
(the one its byte-order mark names, else the configured one, else UTF-8; a mark that contradicts
the configured encoding is an error, and so are NUL bytes, the sign of UTF-16 without a mark), the
file decodes (else the first bad line and an encoding to try), the file is not empty, the header has no
duplicated or blank names, no data row repeats the header (files concatenated with ``cat``), every
row has as many cells as the header (an unquoted comma or tab splits a text), CSV quoting is well
formed (``csv`` strict mode: an unclosed quote would swallow the rest of the file), a TSV does not
hold CSV-style quoted cells unless ``quoting`` says how to read them, and each JSONL line is one
JSON object.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from compresslab.data.schema import DataFormatError

FORMATS = ("csv", "tsv", "jsonl")
QUOTINGS = ("csv", "none")
SUFFIX_FORMAT = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_BOM = "\ufeff"
# Byte-order marks: (mark, the codec that reads the file and drops the mark, what to call it, the
# codec names a set encoding may have and agree with it). UTF-32-LE's mark begins with UTF-16-LE's,
# so it is tried first.
_BOMS: tuple[tuple[bytes, str, str, tuple[str, ...]], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32 (little-endian)", ("utf-32", "utf-32-le")),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32 (big-endian)", ("utf-32", "utf-32-be")),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8", ("utf-8", "utf-8-sig")),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16 (little-endian)", ("utf-16", "utf-16-le")),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16 (big-endian)", ("utf-16", "utf-16-be")),
)
# Codecs that cannot tell the byte order without a mark (Python would guess the machine's).
_NEED_BOM = ("utf-16", "utf-32")
# A TSV cell written by a CSV writer (pandas ``to_csv(sep="\t")``): wrapped in quotes, inner quotes doubled.
_CSV_QUOTED = re.compile(r'^"(?:[^"]|"")*""(?:[^"]|"")*"$')
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class Table:
    """The records of one file: ``rows`` are (first line of the record, {column: value})."""

    path: Path
    fmt: str
    columns: list[str]
    rows: list[tuple[int, dict[str, Any]]]
    encoding: str = "utf-8"  # the codec the file was read with (:func:`file_encoding`)


def format_of(path: Path, fmt: str | None, setting: str | None = "task.generic.format") -> str:
    """The file's format: ``fmt`` when set, else its suffix (``.csv``, ``.tsv``, ``.jsonl``, ``.ndjson``).
    ``setting`` names the key that sets the format (None: there is none; the file must be renamed).

    Raises:
        DataFormatError: the suffix names no known format and ``fmt`` is not set.
    """
    if fmt is not None:
        return fmt
    found = SUFFIX_FORMAT.get(path.suffix.lower())
    if found is None:
        raise DataFormatError(f"{path}: cannot tell the format from the suffix {path.suffix!r} (known: "
                              f"{', '.join(sorted(SUFFIX_FORMAT))}); " + (f"set {setting}= one of {', '.join(FORMATS)}"
                              if setting else "rename the file with one of those suffixes"))
    return found


def read_table(path: Path, fmt: str, *, encoding: str | None = None, header: bool = True,
               columns: tuple[str, ...] | None = None, quoting: str | None = None,
               prefix: str | None = "task.generic.") -> Table:
    """Read one file into records, or raise :class:`DataFormatError` naming file:line and the setting to change.

    ``encoding``: a Python codec name, or None (each file in the encoding its byte-order mark names,
    else UTF-8); see :func:`file_encoding`. ``header=False`` reads a CSV/TSV without a header row,
    naming its cells ``columns``. ``quoting``: ``csv`` (cells may be quoted, ``""`` inside), ``none``
    (quotes are text, as in GLUE TSVs); None: ``csv`` for CSV files, ``none`` for TSV files, and a TSV
    with CSV-quoted cells is an error asking which is meant. ``prefix`` is where these settings live,
    named in messages (None: the caller has no such settings, and messages say to read the file
    another way and pass its records).
    """
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise DataFormatError(f"{path}: unknown encoding {encoding!r}; {_set(prefix, 'encoding=<codec>')} with a "
                                  f"Python codec name (utf-8, cp1252, latin-1, utf-16, ...), or null to read each file "
                                  f"in the encoding its byte-order mark names (UTF-8 without one)") from None
    codec = file_encoding(path, encoding, prefix)
    try:
        if fmt == "jsonl":
            table = _read_jsonl(path, codec, prefix)
        else:
            table = _read_delimited(path, fmt, codec, header, columns, quoting, prefix)
    except UnicodeDecodeError as err:
        raise DataFormatError(_decode_message(path, codec, err, prefix)) from None
    table.encoding = codec
    return table


def file_encoding(path: Path, encoding: str | None, prefix: str | None = "task.generic.") -> str:
    """The codec that reads ``path``: the one its byte-order mark (UTF-8, UTF-16, UTF-32) names, else
    ``encoding``, else ``utf-8``. So a UTF-16 train file (Excel's "Unicode text") and a UTF-8 dev file
    are each read right with ``encoding`` unset.

    Raises:
        DataFormatError: naming the file and the ``encoding`` setting, when ``encoding`` is set and the
            mark names another encoding; when ``encoding`` is ``utf-16``/``utf-32`` and the file has no
            mark (Python would guess the byte order: a UTF-8 file would be read as garbage); or when a
            file without a mark holds NUL bytes (UTF-16/32 without a mark, read as 8-bit text).
    """
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    name = codecs.lookup(encoding).name if encoding is not None else None
    setting = f"{prefix}encoding={encoding}" if prefix else f"encoding {encoding!r}"
    for bom, codec, what, agrees in _BOMS:
        if head.startswith(bom):
            if name is not None and name not in agrees:
                raise DataFormatError(f"{path}: the file starts with a {what} byte-order mark, but {setting}; "
                                      f"{_set(prefix, 'encoding=null')} to read each file in the encoding its mark "
                                      f"names (UTF-8 when it has none), or save this file as {encoding}")
            return codec
    if name in _NEED_BOM:
        raise DataFormatError(f"{path}: {setting}, but the file has no {name.upper()} byte-order mark, so its byte "
                              f"order is unknown (is it another file's encoding?); {_set(prefix, 'encoding=null')} to "
                              f"read each file in the encoding its mark names (UTF-8 when it has none), or "
                              f"{_set(prefix, f'encoding={name}-le')} (or -be) for {name.upper()} without a mark")
    codec = encoding or "utf-8"
    nul = head.find(b"\x00")
    if nul >= 0 and not codecs.lookup(codec).name.startswith(_NEED_BOM):
        wide = _utf16_without_bom(head)
        if wide is None:  # NULs, but not every other byte: binary (a zip, a model file, random bytes), not text
            raise DataFormatError(f"{path}: the file holds NUL bytes (the first at byte {nul}) and does not read as "
                                  f"text in {codec} or UTF-16: is it a data file at all (a spreadsheet, an archive, a "
                                  "binary)? Give a CSV / TSV / JSON Lines text file")
        raise DataFormatError(f"{path}: the file holds NUL bytes (the first at byte {nul}), which "
                              f"text in {codec} never does: it looks like UTF-16 saved without a byte-order mark; "
                              f"{_set(prefix, f'encoding={wide}')} (or save it as UTF-8)")
    return codec


def _utf16_without_bom(head: bytes) -> str | None:
    """``utf-16-le`` / ``utf-16-be`` where ``head`` reads as text in that byte order without a mark, else None
    (binary data: an archive, a model file, random bytes). Text in the right order has line breaks and is
    printable; in the wrong order ``\n`` becomes U+0A00, so the order with the line breaks wins. Non-Latin text
    (Cyrillic, CJK) has few NUL bytes, so NUL positions alone cannot tell it from binary."""
    body = head[: len(head) // 2 * 2]
    best, best_lines = None, 0
    for codec in ("utf-16-le", "utf-16-be"):
        text = body.decode(codec, errors="replace")
        if not text:
            continue
        printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text) / len(text)
        lines = text.count("\n")
        if printable >= 0.95 and "\ufffd" not in text[:-1] and lines > best_lines:
            best, best_lines = codec, lines
    return best


def _lines(fh: Any) -> Iterator[tuple[int, str]]:
    for lineno, line in enumerate(fh, start=1):
        yield lineno, (line[1:] if lineno == 1 and line.startswith(_BOM) else line)


def _read_jsonl(path: Path, encoding: str, prefix: str | None) -> Table:
    rows: list[tuple[int, dict[str, Any]]] = []
    keys: dict[str, None] = {}
    with open(path, encoding=encoding, newline="") as fh:
        for lineno, line in _lines(fh):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                shape = line.strip() in ("[", "{") and " (the file looks like indented JSON or one JSON array)"
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno}){shape or ''}; "
                                      f"JSON Lines needs one complete object per line") from None
            if not isinstance(record, dict):
                hint = (" (the file looks like one JSON array: write one object per line)"
                        if isinstance(record, list) or line.lstrip().startswith("[") else "")
                raise DataFormatError(f"{path}:{lineno}: expected a JSON object per line, got "
                                      f"{type(record).__name__}{hint}")
            keys.update(dict.fromkeys(record))
            rows.append((lineno, record))
    if not rows:
        raise DataFormatError(f"{path}: the file is empty (no JSON objects)")
    return Table(path, "jsonl", list(keys), rows)


def _read_delimited(path: Path, fmt: str, encoding: str, header: bool, columns: tuple[str, ...] | None,
                    quoting: str | None, prefix: str | None) -> Table:
    quote = quoting or ("none" if fmt == "tsv" else "csv")
    delimiter = "\t" if fmt == "tsv" else ","
    kw: dict[str, Any] = ({"quoting": csv.QUOTE_NONE} if quote == "none" else
                          {"quoting": csv.QUOTE_MINIMAL, "strict": True})  # strict: a stray quote is an error
    rows: list[tuple[int, dict[str, Any]]] = []
    # csv's default cell limit (128 KiB) refuses long documents that JSONL reads; 64 MiB still stops a
    # runaway unclosed quote long before memory does (the limit is process-wide: only ever raised)
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))
    with open(path, encoding=encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, **kw)
        names: list[str] | None = list(columns) if not header and columns else None
        end = 0  # the line the previous record ended on: a quoted cell may span lines
        try:
            for cells in reader:
                start, end = end + 1, reader.line_num
                if start == 1 and cells and cells[0].startswith(_BOM):
                    cells[0] = cells[0][1:]  # a BOM read with encoding=utf-8 (utf-8-sig drops it itself)
                if not cells:
                    continue  # a blank line
                if names is None:
                    names = _header(path, cells, fmt, prefix)
                    continue
                if header and [c.strip() for c in cells] == names:
                    raise DataFormatError(f"{path}:{start}: this row repeats the header {names} (files joined with "
                                          f"their headers?); remove it")
                if len(cells) != len(names):
                    raise DataFormatError(f"{path}:{start}: {len(cells)} cells, but the "
                                          f"{'header' if header else (prefix or '') + 'columns'} has {len(names)} "
                                          f"({names}); {_split_hint(fmt, quote, prefix)}")
                if fmt == "tsv" and quoting is None:
                    _refuse_csv_quoting(path, start, cells, prefix)
                rows.append((start, dict(zip(names, cells))))
        except csv.Error as err:
            raise DataFormatError(f"{path}:{end + 1}: {err} (CSV quoting: a cell that starts with \" must end with \" "
                                  f"and write a quote inside it as \"\"; fix the row, or to read quotes as text "
                                  f"{_set(prefix, 'quoting=none')})") from None
    if names is None:
        raise DataFormatError(f"{path}: the file is empty" + (" (expected a header row)" if header else ""))
    if not rows:
        raise DataFormatError(f"{path}: no data rows (only {'a header' if header else 'blank lines'})")
    return Table(path, fmt, names, rows)


def _header(path: Path, cells: list[str], fmt: str, prefix: str | None) -> list[str]:
    names = [c.strip() for c in cells]
    if any(not n for n in names):
        raise DataFormatError(f"{path}:1: the header {names} has an empty column name; name every column, or "
                              f"{_set(prefix, 'header=false', 'columns=[...]')} if the file has no header row")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataFormatError(f"{path}:1: the header names column(s) {dup} more than once; rename them so each "
                              f"column has its own name")
    if len(names) == 1:
        _refuse_other_separator(path, names[0], fmt, prefix)
    return names


def _refuse_other_separator(path: Path, header: str, fmt: str, prefix: str | None) -> None:
    """A one-column header that holds another separator: the file is split by something else than
    its format's separator (a TSV named .csv, a CSV named .tsv, Excel's ';' CSVs of locales where ','
    is the decimal mark). Without this the error would be a missing column, pointing at the wrong setting."""
    if fmt == "csv" and "\t" in header:
        raise DataFormatError(f"{path}:1: the header {header!r} holds tabs: this looks like a TSV file; "
                              f"{_set(prefix, 'format=tsv')} (or name it .tsv)")
    if fmt == "tsv" and "," in header:
        raise DataFormatError(f"{path}:1: the header {header!r} holds commas but no tab: this looks like a CSV file; "
                              f"{_set(prefix, 'format=csv')} (or name it .csv)")
    for sep in (";", "|"):
        if sep in header:
            raise DataFormatError(f"{path}:1: the header {header!r} is separated by {sep!r} (as Excel saves CSVs "
                                  f"where ',' is the decimal mark); CSV files are read with ',' and TSV files with "
                                  f"tabs: save it as \"CSV UTF-8 (comma delimited)\" or as a TSV")


def _split_hint(fmt: str, quote: str, prefix: str | None) -> str:
    if fmt == "csv":
        return 'a text holding a comma must be quoted ("a, b"), as CSV writers do'
    if quote == "none":
        return (f"a text holding a tab or a line break splits the row; if its cells are quoted CSV-style, "
                f"{_set(prefix, 'quoting=csv')}")
    return "a text holding a tab must be quoted"


def _refuse_csv_quoting(path: Path, lineno: int, cells: list[str], prefix: str | None) -> None:
    """TSVs are read with quotes as text (GLUE's convention); a CSV writer's quoted cell would keep its
    wrapping quotes and doubled inner quotes, silently. Ask which reading is meant."""
    for cell in cells:
        if _CSV_QUOTED.match(cell):
            raise DataFormatError(f"{path}:{lineno}: the cell {cell[:60]!r} is quoted CSV-style (\"...\" with \"\" "
                                  f"inside), as pandas writes TSVs; to unquote cells {_set(prefix, 'quoting=csv')}, "
                                  f"to keep every quote as text (GLUE TSVs) {_set(prefix, 'quoting=none')}")


def first_bad_line(data: bytes, encoding: str, err: UnicodeDecodeError) -> tuple[int, bytes]:
    """(line number, offending bytes) of the first line of ``data`` that does not decode."""
    decoder = codecs.getincrementaldecoder(encoding)()
    for lineno, line in enumerate(data.splitlines(keepends=True), start=1):
        try:
            decoder.decode(line)
        except UnicodeDecodeError as line_err:
            return lineno, line[line_err.start:line_err.end]
    return 1, err.object[err.start:err.end]


def _decode_message(path: Path, encoding: str, err: UnicodeDecodeError, prefix: str | None) -> str:
    """file:line of the first line that does not decode, and an encoding to try."""
    data = path.read_bytes()  # a byte-order mark was dealt with before (file_encoding)
    lineno, bad = first_bad_line(data, encoding, err)
    guess = f"; {_set(prefix, 'encoding=<its encoding>')} (cp1252, latin-1, utf-16, ...)"
    for candidate, what in (("utf-8-sig", "UTF-8"), ("cp1252", "cp1252 (Windows Western, as Excel saves CSVs)")):
        if codecs.lookup(candidate).name == codecs.lookup(encoding).name:
            continue
        try:
            data.decode(candidate)
        except UnicodeDecodeError:
            continue
        guess = f"; it decodes as {what}: {_set(prefix, 'encoding=' + candidate.split('-sig')[0])}"
        break
    return f"{path}:{lineno}: byte(s) {bad.hex(' ')} are not valid {encoding}{guess}"


def _set(prefix: str | None, *assignments: str) -> str:
    """How to change a setting: ``set task.generic.x=v``, or, for callers without such settings, how else."""
    if prefix is None:
        return f"read the file yourself (e.g. pandas.read_csv with {', '.join(assignments)}) and pass its records"
    return "set " + " and ".join(prefix + a for a in assignments)


def looks_numeric(text: str) -> bool:
    """True for an int or decimal number as written in a CSV cell (``3``, ``-1``, ``2.5``, ``1e-3``)."""
    return bool(_NUMBER.match(text.strip()))


__all__ = ["FORMATS", "QUOTINGS", "SUFFIX_FORMAT", "Table", "file_encoding", "first_bad_line", "format_of",
           "looks_numeric", "read_table"]
