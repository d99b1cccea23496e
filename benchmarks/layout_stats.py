"""Import graph and module sizes of a package tree: the before/after figures of a layout change.

    python benchmarks/layout_stats.py [compresslab]        # this checkout
    git worktree add /tmp/old 909ffbe && python benchmarks/layout_stats.py /tmp/old/compresslab

Prints the import circles (``../shared/tools/import_cycles.py``: imports inside functions count),
modules per package, and the median / p90 / max lines of the modules (``__init__.py`` excluded).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "import_cycles.py"


def stats(pkg: Path) -> dict:
    files = sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)
    lines = {p: len(p.read_text().splitlines()) for p in files}
    mods = [p for p in files if p.name != "__init__.py"]
    sizes = sorted(lines[p] for p in mods)
    per_pkg = Counter("." if p.parent == pkg else str(p.parent.relative_to(pkg)) for p in mods)
    cycles = subprocess.run([sys.executable, str(TOOL), str(pkg)], capture_output=True, text=True).stdout.strip()
    biggest = sorted(mods, key=lambda p: -lines[p])[:5]
    return {"modules": len(mods), "lines": sum(lines.values()), "circles": cycles.splitlines() if cycles else [],
            "modules_per_package": dict(sorted(per_pkg.items())),
            "module_lines": {"median": statistics.median(sizes), "p90": sizes[int(0.9 * (len(sizes) - 1))],
                             "max": sizes[-1]},
            "largest": {str(p.relative_to(pkg)): lines[p] for p in biggest}}


if __name__ == "__main__":
    print(json.dumps(stats(Path(sys.argv[1] if len(sys.argv) > 1 else "compresslab").resolve()), indent=2))
