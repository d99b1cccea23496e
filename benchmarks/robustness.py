"""Issue #12's figures: every robustness case (tests/robustness) and the first-use numbers.

    python benchmarks/robustness.py cases     # runs the case tests, writes `cases` and `bad_inputs`
    bash benchmarks/wall_times.sh             # fresh clone: `make demo` then `make test`, quiet machine
    python benchmarks/robustness.py demo      # copies the demo's figures from results/wall_times.json:
                                              # wall time, deployed drop, b32 speedup, disk per run

Each case is one pytest test marked ``@pytest.mark.case(name, kind, expected)``; the conftest of
tests/robustness writes one JSON line per case (observed, pass, and for a bad input how it failed:
clear / unclear / traceback / silently wrong). Results: benchmarks/results/robustness.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import ResultsFile  # sibling module (script dir)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ResultsFile(Path(__file__).resolve().parent / "results" / "robustness.json")
CATEGORIES = ("clear", "unclear", "traceback", "silently wrong")


def cases(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cases.jsonl"
        env = {**os.environ, "COMPRESSLAB_CASES_OUT": str(out)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/robustness", *args.pytest_args]
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    if not rows:
        raise SystemExit(f"no cases recorded (pytest exit {rc})")
    counts = collections.Counter(r["category"] for r in rows if r["bad_input"] and not r["skipped"])
    RESULTS.put(["cases"], rows)
    RESULTS.put(["bad_inputs"], {c: counts.get(c, 0) for c in CATEGORIES} | {"total": sum(counts.values())})
    RESULTS.put(["cases_passed"], {"passed": sum(r["pass"] for r in rows), "total": len(rows),
                                   "skipped": sum(r["skipped"] for r in rows)})
    print(json.dumps(RESULTS.get(["bad_inputs"]), indent=1))
    print(f"{sum(r['pass'] for r in rows)}/{len(rows)} cases pass (pytest exit {rc})")


def _cpu() -> dict:
    """The CPU model and the ISA flags that decide int8 speed (recorded beside every speed figure)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    return {"model": model, "isa": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"})}


def demo(args: argparse.Namespace) -> None:
    """The first-use figures of the last fresh-clone `make demo` (benchmarks/wall_times.sh)."""
    wall = json.loads((Path(__file__).resolve().parent / "results" / "wall_times.json").read_text())
    s = wall.get("demo_summary") or {}
    if "deployed_drop" not in s:
        raise SystemExit("results/wall_times.json has no demo figures yet: run `bash benchmarks/wall_times.sh` first")
    disk = s.get("disk") or {}
    RESULTS.note_run("demo", wall)  # the demo's bench stage timed the speedup copied below (and the wall time's load)
    RESULTS.put(["demo_wall_s"], round(float(wall["demo_wall_s"]), 1))
    RESULTS.put(["demo_deployed_drop"], round(float(s["deployed_drop"]), 4))
    RESULTS.put(["demo_speedup_b32"], s.get("speedup_b32"))
    RESULTS.put(["demo_speedup_b32_vs_best_dense"], s.get("speedup_b32_vs_best_dense"))
    RESULTS.put(["disk_mb_per_run"], round(disk["new_bytes"] / 1e6, 1) if "new_bytes" in disk else None)
    RESULTS.put(["demo"], {"pipeline": s.get("pipeline"), "teacher": s.get("teacher_quick_acc"),
                           "deployed": s.get("deployed_acc"), "disk": disk, "machine_load": s.get("machine_load"),
                           "source": "benchmarks/results/wall_times.json (fresh clone, empty cache)",
                           "cpu": _cpu(), "note": "run `demo` in the session that ran wall_times.sh (same CPU)"})
    print(json.dumps({k: RESULTS.get([k]) for k in ("demo_wall_s", "demo_deployed_drop", "demo_speedup_b32",
                                                     "disk_mb_per_run")}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cases", help="run tests/robustness and record every case")
    c.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k fp16)")
    c.set_defaults(fn=cases)
    sub.add_parser("demo", help="copy the fresh-clone demo figures from results/wall_times.json").set_defaults(fn=demo)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
