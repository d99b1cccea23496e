"""Small data files for the data-reading cases (test_data*.py): written to tmp_path, loaded through
``load_task("generic", generic=...)``, the call ``RunState.prepare`` makes before any model is loaded."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _cases import case_param
from compresslab.data.tasks import load_task

REPO = Path(__file__).resolve().parents[2]
POS_NEG = [("a good film", "positive"), ("a bad film", "negative"), ("great fun", "positive"), ("awful", "negative")]


def csv_file(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """``text`` written to ``path`` in ``encoding`` (``utf-16`` writes a byte-order mark, as Excel does)."""
    path.write_bytes(text.encode(encoding))
    return path


def table_text(header: str, records: list[tuple], sep: str = ",") -> str:
    """A header line and one line per record, cells joined by ``sep`` (no quoting)."""
    return header + "\n" + "".join(sep.join(str(c) for c in r) + "\n" for r in records)


def jsonl_file(path: Path, records: list) -> Path:
    """One JSON value per line (``json.dumps``: NaN stays NaN, None becomes null)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def load_generic(**generic: Any):
    """``load_task("generic", generic=...)`` with paths as strings, as the composed config holds them."""
    return load_task("generic", generic={k: str(v) if isinstance(v, Path) else v for k, v in generic.items()})


def compose_generic(tmp_path: Path, *extra: str):
    """The int8 pipeline's config at the smoke budget on ``task=generic``, outputs under ``tmp_path``."""
    from compresslab.config import compose

    return compose(["+pipeline=int8", "debug=smoke", "task=generic", f"paths.output_dir={tmp_path}/out",
                    f"paths.cache_dir={tmp_path}/cache", *extra])


def run_fails_fast(cfg: Any) -> None:
    """``pipeline.run`` on a bad config: the error must come within seconds (nothing trained)."""
    from compresslab.pipeline import run

    t0 = time.perf_counter()
    try:
        run(cfg)
    finally:
        assert time.perf_counter() - t0 < 60, "the error came after expensive work"


Content = str | list  # CSV/TSV text, or JSON Lines records


@dataclass(frozen=True)
class BadData:
    """Data files that loading must refuse: ``train`` (and ``dev``, else train is dev too), each a
    ``(file name, content, written in)``, read with the ``generic`` settings; the error must match ``match``."""

    match: str
    train: tuple[str, Content, str]
    dev: tuple[str, Content, str] | None = None
    generic: dict[str, Any] = field(default_factory=dict)

    def expect_refused(self, tmp_path: Path, expect_clear: Callable[..., str]) -> str:
        """Write the files under ``tmp_path`` and run ``expect_clear`` on loading them."""
        train = _write(tmp_path, *self.train)
        dev = train if self.dev is None else _write(tmp_path, *self.dev)
        return expect_clear(lambda: load_generic(train=train, dev=dev, **self.generic), match=self.match)


def _write(root: Path, name: str, content: Content, written_in: str) -> Path:
    return jsonl_file(root / name, content) if isinstance(content, list) else csv_file(root / name, content, written_in)


def refused(name: str, expected: str, file: str, content: Content, match: str, *, written_in: str = "utf-8",
            dev: tuple[str, Content] | None = None, dev_written_in: str = "utf-8", **generic: Any) -> Any:
    """One kind-2 case of a parametrized "refused" test: a :class:`BadData` as a ``pytest.param``
    marked with its case (``generic``: the task.generic settings it is read with)."""
    bad = BadData(match, (file, content, written_in), None if dev is None else (*dev, dev_written_in), generic)
    return case_param(bad, name=name, kind=2, expected=expected, id=name)
