"""Build ``report.md``, ``report.html`` and ``plots/*.png`` for a run, from its manifest only.

The report never loads or runs a model: everything it shows was recorded in
``RUN_DIR/manifest.json`` by the pipeline, so a report can be rebuilt anywhere, any time, in
about a second (``python -m compresslab.report RUN_DIR``), including for a run that is still
going or that failed. Every file is written atomically (temporary file + ``os.replace``), so a
reader never sees half a report, and a crash while rebuilding leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from compresslab.manifest import atomic_write_bytes as write_atomic
from compresslab.report.render import to_html, to_markdown
from compresslab.report.sections import build_document

__all__ = ["ManifestError", "build_report", "load_manifest", "write_atomic"]

MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """The run directory has no readable manifest; the message says what to do about it."""


def load_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``RUN_DIR/manifest.json``, failing with an actionable :class:`ManifestError`."""
    path = Path(run_dir) / MANIFEST
    if not Path(run_dir).is_dir():
        raise ManifestError(f"Run directory {run_dir} does not exist. Pass the directory of a "
                            "run, e.g. outputs/<pipeline>/<config-hash>/.")
    if not path.is_file():
        raise ManifestError(f"Could not find {MANIFEST} in {run_dir}. A report is built from "
                            "the manifest a run writes after every step; pass the run "
                            "directory (outputs/<pipeline>/<config-hash>/), not a step or "
                            "export folder.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path} holds a {type(data).__name__}, expected a JSON object.")
    return data


def build_report(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the report files of ``run_dir`` and return them keyed by path relative to it.

    Keys are ``report.md``, ``report.html`` and ``plots/<name>.png`` for each plot the manifest
    has data for. Plots that no longer apply (e.g. the manifest was rewritten without bench)
    are removed so a stale figure cannot sit beside a new report.

    Raises:
        ManifestError: ``run_dir`` has no readable ``manifest.json``.
    """
    root = Path(run_dir)
    manifest = load_manifest(root)
    # matplotlib is imported here, not at module import: `import compresslab.report` stays light.
    from compresslab.report.plots import PLOTS, draw_all

    pngs, errors = draw_all(manifest)
    doc = build_document(manifest, set(pngs), errors, str(run_dir))
    written: dict[str, Path] = {}
    plot_dir = root / "plots"
    for name, png in pngs.items():
        write_atomic(plot_dir / name, png)
        written[f"plots/{name}"] = plot_dir / name
    for name in PLOTS.keys() - pngs.keys():
        (plot_dir / name).unlink(missing_ok=True)
    write_atomic(root / "report.md", to_markdown(doc).encode("utf-8"))
    written["report.md"] = root / "report.md"
    write_atomic(root / "report.html", to_html(doc, pngs).encode("utf-8"))
    written["report.html"] = root / "report.html"
    return written
