"""Small data files for the data-reading cases (test_data*.py): written to tmp_path, loaded through
``load_task("generic", generic=...)``, the call ``RunState.prepare`` makes before any model is loaded."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

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
