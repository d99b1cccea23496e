"""No package exports a name that one of its submodules also has.

`compresslab.bench` once exported a function `probe_load` beside a submodule `bench/probe_load.py`:
the first `import compresslab.bench.probe_load` anywhere rebinds the package attribute to the
module, and `from compresslab.bench import probe_load` then hands out a module
("TypeError: 'module' object is not callable", seen in the ziplm_2x bench stage). This walks every
package under `compresslab`, in a fresh interpreter so that what other tests imported does not
hide the clash, and checks the namespace both before and after importing every submodule.

Run by path it prints the problems for a root package as JSON: `python test_package_names.py ROOT`.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

# Modules that do something when imported (the CLI entry) are never imported here.
SKIP_LEAVES = {"__main__"}


def _clashes(pkg: types.ModuleType, when: str) -> list[str]:
    """Non-module attributes of `pkg` named like a submodule; `__all__` names that are modules."""
    out = []
    for info in pkgutil.iter_modules(pkg.__path__):  # lists files, imports nothing
        value = getattr(pkg, info.name, None)
        if value is not None and not isinstance(value, types.ModuleType):
            out.append(f"{when}: {pkg.__name__}.{info.name} is a {type(value).__name__} but also a "
                       f"submodule ({pkg.__name__}.{info.name}); importing the submodule rebinds it")
    for name in getattr(pkg, "__all__", ()):
        if isinstance(getattr(pkg, name, None), types.ModuleType):
            out.append(f"{when}: {pkg.__name__}.__all__ lists {name!r}, which resolves to a module")
    return out


def problems(root: str) -> list[str]:
    """Every clash in the packages under `root` (imports them; run it in a fresh interpreter)."""
    top = importlib.import_module(root)
    infos = list(pkgutil.walk_packages(top.__path__, root + "."))  # imports packages, not leaves
    packages = [top] + [importlib.import_module(i.name) for i in infos if i.ispkg]
    found = [p for pkg in packages for p in _clashes(pkg, "before importing submodules")]
    for info in infos:
        if info.ispkg or info.name.rsplit(".", 1)[-1] in SKIP_LEAVES:
            continue
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as err:  # an optional third-party engine (e.g. DeepSparse's worker)
            if (err.name or "").split(".")[0] == root:
                found.append(f"{info.name} does not import: {err}")
    found += [p for pkg in packages for p in _clashes(pkg, "after importing every submodule")]
    return found


def _problems_in_fresh_interpreter(root: str, pythonpath: Path | None = None) -> list[str]:
    env = None if pythonpath is None else {**os.environ, "PYTHONPATH": str(pythonpath)}
    # -P: tests/unit (this file's directory) stays off sys.path, so its folders shadow nothing
    proc = subprocess.run([sys.executable, "-P", __file__, root], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_no_package_attribute_shadows_a_submodule():
    assert _problems_in_fresh_interpreter("compresslab") == []


def test_the_check_catches_a_function_named_like_its_sibling_module(tmp_path):
    # The layout that broke ziplm_2x: pkg exports impl.probe as `probe`, and pkg/probe.py exists.
    pkg = tmp_path / "clashpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('from clashpkg.impl import probe\n__all__ = ["probe"]\n')
    (pkg / "impl.py").write_text("def probe():\n    return 1\n")
    (pkg / "probe.py").write_text("def main():\n    return 2\n")
    found = _problems_in_fresh_interpreter("clashpkg", pythonpath=tmp_path)
    assert any(p.startswith("before") and "clashpkg.probe is a function" in p for p in found), found
    assert any(p.startswith("after") and "lists 'probe'" in p for p in found), found


def test_the_check_passes_a_clean_package(tmp_path):
    pkg = tmp_path / "cleanpkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('from cleanpkg.impl import probe\n__all__ = ["probe"]\n')
    (pkg / "impl.py").write_text("def probe():\n    return 1\n")
    (pkg / "sub" / "__init__.py").write_text(textwrap.dedent("""\
        from cleanpkg.sub.leaf import X
        __all__ = ["X"]
        """))
    (pkg / "sub" / "leaf.py").write_text("X = 1\n")
    assert _problems_in_fresh_interpreter("cleanpkg", pythonpath=tmp_path) == []


if __name__ == "__main__":
    print(json.dumps(problems(sys.argv[1])))
