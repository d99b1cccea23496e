"""Run one command; write its wall time and the machine's load meanwhile as JSON (``wall_times.sh``).

    python benchmarks/_timed.py OUT.json make demo

OUT.json: ``{"wall_s", "exit", "command", "machine_load": {what, busy, reasons, other_cpu, wall_s,
loadavg}}``. The command and everything it starts are waited for, so their CPU counts as this
process's own: ``other_cpu`` is the CPU time everything else on the machine used per wall second (a
wall time taken beside a training is stretched, and says so). Exits with the command's exit code.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        raise SystemExit("usage: python benchmarks/_timed.py OUT.json COMMAND [ARGS...]")
    from compresslab.bench.machine_load import LoadMeter

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import write_aside

    out, command = Path(argv[0]), argv[1:]
    meter = LoadMeter(what=" ".join(command))
    t0 = time.perf_counter()
    rc = subprocess.call(command)
    wall = time.perf_counter() - t0
    write_aside(out, {"wall_s": round(wall, 1), "exit": rc, "command": " ".join(command),
                      "machine_load": meter.lap(min_s=0.0)})
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
