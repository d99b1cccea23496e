"""notebooks/quickstart.ipynb: every call it makes into compresslab still exists and takes the
arguments it passes (make test, in a second), and it runs top to bottom on the smoke config
(make test-e2e: a real int8 pipeline run plus the in-process API on the embedded MiniLM, minutes).

The executed run moved to the e2e runs because what it runs is covered in make test already: the
int8 smoke pipeline by tests/integration/test_pipeline_smoke.py, ``compress`` / ``export`` /
``evaluate`` / ``benchmark`` by tests/unit/test_api.py. What only the notebook can break (a renamed
API name or keyword left in its cells) is checked here without running it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
NB = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"

# The package face forwards ``**kwargs``; the keywords the notebook passes are checked against the
# functions that take them.
FORWARDED = {"compress": "compresslab.api:compress", "evaluate": "compresslab.measure:evaluate",
             "benchmark": "compresslab.measure:benchmark", "run": "compresslab.pipeline.driver:run_pipeline"}


def _code_cells() -> list[str]:
    import nbformat

    nb = nbformat.read(NB, as_version=4)
    nbformat.validate(nb)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _resolve(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _api_calls(tree: ast.AST) -> tuple[dict[str, Any], list[tuple[str, ast.Call]]]:
    """(names imported from compresslab modules -> objects, [(dotted name, call)] of calls into compresslab).

    Raises AttributeError / ImportError when a name the notebook uses is gone."""
    import compresslab

    names: dict[str, Any] = {"compresslab": compresslab}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "compresslab":
            mod = importlib.import_module(node.module)
            for alias in node.names:
                names[alias.asname or alias.name] = getattr(mod, alias.name)
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "compresslab":
            getattr(compresslab, f.attr)  # a renamed public function fails here
            calls.append((f"compresslab.{f.attr}", node))
        elif isinstance(f, ast.Name) and f.id in names and f.id != "compresslab":
            calls.append((f.id, node))
    return names, calls


def test_quickstart_notebook_calls_existing_api_with_valid_arguments():
    """Each code cell parses; each compresslab name it imports or calls exists; each call binds to the
    signature of the function that takes its arguments (the face's, and the forwarded one's)."""
    import compresslab

    cells = _code_cells()
    tree = ast.parse("\n".join(cells))  # a syntax error names the cell's line
    names, calls = _api_calls(tree)
    assert {"compresslab.run", "compresslab.compress", "compresslab.evaluate", "compresslab.benchmark"} <= {
        n for n, _ in calls}, "the notebook no longer shows the four API calls this test expects: update FORWARDED"
    for name, call in calls:
        if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
            continue  # *args / **kwargs: nothing static to bind
        attr = name.removeprefix("compresslab.")
        funcs = [getattr(compresslab, attr) if name.startswith("compresslab.") else names[name]]
        if name.startswith("compresslab.") and attr in FORWARDED:
            funcs.append(_resolve(FORWARDED[attr]))
        for fn in funcs:
            _check_binds(fn, call, name)


def _check_binds(fn: Any, call: ast.Call, name: str) -> None:
    """``call``'s arguments bind to ``fn``'s signature; keywords that only a ``**columns: str``
    catch-all takes must be string constants (a misspelt ``eval_data=dev`` lands there otherwise)."""
    where = f"notebook line {call.lineno}: {ast.unparse(call)[:80]}"
    sig = inspect.signature(fn)
    try:
        bound = sig.bind(*[None] * len(call.args), **{k.arg: None for k in call.keywords})
    except TypeError as e:
        pytest.fail(f"{where} no longer binds to {fn.__module__}.{fn.__qualname__}: {e}")
    var_kw = [p for p in sig.parameters.values() if p.kind is p.VAR_KEYWORD]
    if var_kw and var_kw[0].annotation in (str, "str"):
        values = {k.arg: k.value for k in call.keywords}
        for key in bound.arguments.get(var_kw[0].name, {}):
            assert isinstance(values[key], ast.Constant) and isinstance(values[key].value, str), (
                f"{where}: {key}= is no parameter of {fn.__module__}.{fn.__qualname__} (only its "
                f"**{var_kw[0].name}: str takes it, and it is given a non-string)")


def test_quickstart_notebook_needs_no_environment_variable():
    """The README's set-up finds the data without ``$COMPRESSLAB_DATA`` (``../shared/data`` beside the checkout):
    a cell that subscripts ``os.environ`` (a KeyError there) or reads a variable with no default fails for a user who
    set nothing (trial 48: ``os.environ["COMPRESSLAB_DATA"]``). ``os.environ.get(name, default)`` is fine."""
    bad = []
    for i, src in enumerate(_code_cells()):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                bad.append(f"cell {i}: {ast.unparse(node)}")
            if (isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv")
                    and len(node.args) + len(node.keywords) < 2):
                bad.append(f"cell {i}: {ast.unparse(node)} (no default)")
    assert not bad, f"the notebook needs environment variables the README does not ask for: {bad}"


def test_progress_bar_does_not_warn_in_a_notebook_without_ipywidgets():
    """tqdm.auto in a Jupyter kernel without ipywidgets prints 'TqdmWarning: IProgress not found' into the user's
    notebook (trial 48); the pipeline's bar takes the text bar where ipywidgets is missing."""
    import importlib.util
    import warnings

    from compresslab.pipeline.state import tqdm_progress

    if importlib.util.find_spec("ipywidgets") is not None:
        pytest.skip("ipywidgets is installed: the notebook bar is used and does not warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = tqdm_progress(total=2, desc="x")
        bar.close()
    assert type(bar).__module__ == "tqdm.std"


@pytest.mark.e2e
def test_quickstart_notebook_executes(tmp_path, data_root, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("COMPRESSLAB_DATA", str(data_root))
    monkeypatch.setenv("COMPRESSLAB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NB, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("speedup vs ort_fp32" in o.get("text", "") for o in outputs)
    assert any("compress: eval_data accuracy" in o.get("text", "") for o in outputs)  # the in-process API
    assert any("int8 speedup vs torch fp32" in o.get("text", "") for o in outputs)
