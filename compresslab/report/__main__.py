"""``python -m compresslab.report RUN_DIR``: rebuild a run's report from its manifest.
``python -m compresslab.report --compare RUN_DIR...``: compare runs (Pareto plots, sweep summary).

Kept apart from the Hydra CLI on purpose: regenerating a report needs no config composition,
no model and no accelerator, only the run directories.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from compresslab.report import ManifestError, build_report

EPILOG = """examples:
  python -m compresslab.report outputs/int8/1a2b3c4d5e6f
  python -m compresslab.report --compare outputs/*/*
  python -m compresslab.report --compare outputs/obert_int8/* --out outputs/obert_sweep"""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build the report or the comparison, print what was written; return the
    exit status (2 for a bad argument or an unreadable run, with the reason on stderr)."""
    parser = argparse.ArgumentParser(
        prog="python -m compresslab.report",
        description="Build report.md, report.html and plots/*.png of a compresslab run from its manifest.json, "
                    "or compare several runs (no model is loaded or run).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?",
                        help="run directory holding manifest.json, e.g. outputs/<pipeline>/<config-hash>")
    parser.add_argument("--compare", metavar="RUN_DIR", nargs="+",
                        help="compare these runs: writes compare.md, compare.html and Pareto plots of score vs "
                             "latency and vs size (paths that are not runs are listed and passed over)")
    parser.add_argument("--out", metavar="DIR", help="with --compare: where to write (default: compare/ beside "
                                                     "the runs, e.g. outputs/compare for outputs/*/*)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    if args.compare is None and args.run_dir is None:
        parser.error("give a RUN_DIR, or --compare RUN_DIR... (e.g. --compare outputs/*/*)")
    if args.compare is not None and args.run_dir is not None:
        args.compare.insert(0, args.run_dir)  # `report DIR --compare DIR2`: compare both
    if args.out is not None and args.compare is None:
        parser.error("--out goes with --compare; a run's report is always written into its RUN_DIR")
    try:
        if args.compare is not None:
            from compresslab.report.compare import compare

            written = compare(args.compare, args.out)
        else:
            written = build_report(args.run_dir)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full disk: say where, not a traceback
        where = "--out DIR" if args.compare is not None else "the run directory"
        print(f"error: could not write the report: {exc}. Make {where} writable"
              + (" or pass --out with a writable folder." if args.compare is not None else "."), file=sys.stderr)
        return 2
    if not args.quiet:
        for path in written.values():
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
