"""``python -m compresslab.report RUN_DIR``: rebuild a run's report from its manifest.

Kept apart from the Hydra CLI on purpose: regenerating a report needs no config composition,
no model and no accelerator, only the run directory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from compresslab.report import ManifestError, build_report


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build the report, print what was written; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m compresslab.report",
        description="Build report.md, report.html and plots/*.png of a compresslab run from "
                    "its manifest.json (no model is loaded or run).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="run directory holding manifest.json, "
                             "e.g. outputs/<pipeline>/<config-hash>")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    try:
        written = build_report(args.run_dir)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        for path in written.values():
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
