"""The package's floors (DESIGN.md): no module imports a higher floor than its own, imports written
inside functions included, and there are no import circles among modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "compresslab"
TOOL = PKG.parents[1] / "shared" / "tools" / "import_cycles.py"

# Ground floor first. A room may import rooms on its own floor or below, never above.
FLOOR = {
    "ops": 0, "validate": 0, "provenance": 0, "manifest": 0, "config": 0, "runlock": 0, "dirlock": 0, "rng": 0, "failure": 0,
    "fileio": 0, "hashing": 0, "host": 0,  # split out of manifest: atomic writes, content hashes, host facts
    "data": 1, "models": 1, "training": 1, "report": 1,
    "types": 2, "targets": 2, "checkpoint": 2, "eval": 2,
    "registry": 3, "export": 3,
    "bench": 4, "testing": 4,  # testing's FakeCpu builds bench.machine_load readings; nothing imports testing
    "quant": 5,
    "pruning": 5,
    "passes": 6,
    "pipeline": 7,
    "api": 8, "api_heads": 8, "measure": 8, "search": 8,  # search runs candidates as pipeline runs
    "sweep": 8,  # a multirun's job outcomes, for the cli
    "cli": 9, "__init__": 9,
    "__main__": 10,
}


def _room(module: str) -> str:
    """``compresslab.pipeline.steps`` -> ``pipeline``; a name taken from the face (``__version__``) -> ``__init__``."""
    parts = module.split(".")
    if len(parts) == 1 or not ((PKG / parts[1]).is_dir() or (PKG / f"{parts[1]}.py").is_file()):
        return "__init__"
    return parts[1]


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported compresslab module) for every import in the file, at any depth."""
    out = []
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names = [f"{name}.{a.name}" for a in node.names] if name == "compresslab" else [name]
            out += [(node.lineno, n) for n in names]
    return [(ln, n) for ln, n in out if n == "compresslab" or n.startswith("compresslab.")]


def _modules() -> list[tuple[Path, str]]:
    return [(p, ".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__"))
            for p in sorted(PKG.rglob("*.py"))]


def test_every_room_has_a_floor():
    rooms = {_room(m) for _, m in _modules()}
    assert rooms <= set(FLOOR), f"give these a floor in FLOOR: {sorted(rooms - set(FLOOR))}"


def test_no_module_imports_a_higher_floor():
    bad = []
    for path, module in _modules():
        src = _room(module)
        for line, target in _imports(path, module):
            dst = _room(target)
            if dst != src and FLOOR[dst] > FLOOR[src]:
                bad.append(f"{path.relative_to(PKG.parent)}:{line} ({src}, floor {FLOOR[src]}) imports {target} "
                           f"(floor {FLOOR[dst]})")
    assert not bad, "imports that climb a floor:\n" + "\n".join(bad)


def test_ops_is_pure_math():
    for path, module in _modules():
        if _room(module) == "ops":
            assert all(_room(t) == "ops" for _, t in _imports(path, module)), path


@pytest.mark.skipif(not TOOL.is_file(), reason="../shared/tools/import_cycles.py not beside the checkout")
def test_no_import_circles():
    out = subprocess.run([sys.executable, str(TOOL), str(PKG)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr
