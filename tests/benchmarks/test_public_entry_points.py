"""DESIGN-REVIEW §4 (peer benchmark): the scripts in ``benchmarks/`` use only compresslab's public entry points,
never a run's state. Read from the source (AST), every file under ``benchmarks/``: no import of ``RunState``, no
``<anything>.prepare(...)`` call (``RunState.prepare``: the teacher comes from ``compresslab.pipeline.teacher_of``,
a config's task data from ``task_data``), and no private name of compresslab (a ``_name`` imported from it, a
``_module`` on the import path, or a ``_name`` read off an imported compresslab module)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _compresslab(module: str | None) -> bool:
    return module is not None and (module == "compresslab" or module.startswith("compresslab."))


def problems(source: str) -> list[str]:
    """What in ``source`` reaches past compresslab's public entry points, one line each (``line N: ...``)."""
    tree = ast.parse(source)
    out: list[str] = []
    modules: set[str] = set()  # local names bound to compresslab modules (import compresslab.x as m)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _compresslab(a.name):
                    modules.add(a.asname or a.name.split(".")[0])
                    out += [f"line {node.lineno}: imports the private module {a.name}"
                            for part in a.name.split(".") if _private(part)][:1]
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if "RunState" in names:
                out.append(f"line {node.lineno}: imports RunState from {node.module}")
            if _compresslab(node.module):
                assert node.module is not None
                if any(_private(p) for p in node.module.split(".")):
                    out.append(f"line {node.lineno}: imports from the private module {node.module}")
                out += [f"line {node.lineno}: imports the private name {n} from {node.module}"
                        for n in names if _private(n)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "prepare":
            out.append(f"line {node.lineno}: calls .prepare(...)")
        elif isinstance(node, ast.Attribute) and node.attr == "RunState":
            out.append(f"line {node.lineno}: reads RunState")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                out.append(f"line {node.lineno}: reads the private name {node.attr} of a compresslab module")
    return sorted(set(out))


def _files() -> list[Path]:
    return sorted(BENCHMARKS.rglob("*.py"))


def test_every_benchmark_script_uses_only_public_entry_points() -> None:
    found = {str(p.relative_to(BENCHMARKS.parent)): problems(p.read_text()) for p in _files()}
    bad = {f: ps for f, ps in found.items() if ps}
    assert len(found) > 40 and "benchmarks/suite.py" in found  # the walk saw the scripts
    assert not bad, "\n".join(f"{f}: {p}" for f, ps in bad.items() for p in ps)


@pytest.mark.parametrize("source,needle", [
    ("from compresslab.pipeline.state import RunState", "imports RunState"),
    ("from compresslab.pipeline import state\nstate.RunState.prepare(cfg, steps)", "calls .prepare"),
    ("def f(cfg):\n    from compresslab.pipeline.state import RunState\n    return RunState.prepare(cfg, [])",
     "imports RunState"),
    ("from compresslab.quant.sensitivity import _graph, linear_traces", "private name _graph"),
    ("from compresslab.passes._helpers import x", "private module compresslab.passes._helpers"),
    ("import compresslab.quant.sensitivity as s\ns._hvp_fn(g, p)", "private name _hvp_fn"),
    ("import compresslab.quant.sensitivity\ncompresslab.quant.sensitivity._graph", "private name _graph"),
])
def test_the_check_sees_each_way_past_the_public_entry_points(source: str, needle: str) -> None:
    assert any(needle in p for p in problems(source)), problems(source)


def test_the_check_leaves_public_use_alone() -> None:
    ok = ("from compresslab.pipeline import Teacher, task_data, teacher_of, teacher_onnx\n"
          "from compresslab.quant.hvp import batch_hvps\n"
          "from _results import _private_sibling  # a sibling script's own helper, not compresslab\n"
          "import compresslab\n"
          "t = teacher_of(cfg, work)\nctx = t.context(work, work / 'step')\nm = t.model.__class__\n"
          "x = obj._cache  # a private attribute of a non-module object is not an import\n"
          "prepare(exported, quant_config=c)  # a peer tool's own function\n")
    assert problems(ok) == []
