"""Trial 48, 5: busy-machine warnings said "void (MEASURE.md: ...)", a team document no user has (it is not in the
repository nor the wheel). No text a user reads may send them to one: every string literal under compresslab/ (log
lines, errors, report text, f-strings' parts) and README.md / the notebooks are scanned for the team's documents
(ALGORITHMS.md, DESIGN*.md, MEASURE.md, STYLE.md) and for paths into the team's shared folder (``../shared/...``
other than ``../shared/data``, the data root the CLI looks for). Docstrings and comments may keep such references:
they are for whoever reads the code beside those documents (help() on the public API shows none: checked below)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEAM_DOCS = re.compile(r"\b(?:MEASURE|ALGORITHMS|DESIGN[\w-]*|STYLE)\.md\b|\.\./shared/(?!data\b)|/work/shared\b")


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring constants (module, class, function)."""
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
            and isinstance(n.body[0].value.value, str)}


def team_doc_citations(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal, docstrings aside, that names a team document or a shared path."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    return [(n.lineno, n.value[:120]) for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs and TEAM_DOCS.search(n.value)]


@pytest.mark.parametrize("code, cites", [
    ('log.warning("void (MEASURE.md: a timing taken while anything else runs)")', True),
    ('raise ValueError(f"{x} is void (see DESIGN-REVIEW.md)")', True),
    ('msg = "run ../shared/tools/import_cycles.py"', True),
    ('def f():\n    """oBERT (ALGORITHMS.md §2)."""\n    return 1', False),  # a docstring: for the code's readers
    ('x = 1  # MEASURE.md', False),
    ('root = "../shared/data"', False),  # the data root the CLI looks for (README)
    ('msg = "void (README, \'Timing on a shared machine\')"', False)])
def test_the_scan_finds_each_form(code, cites):
    assert bool(team_doc_citations(code)) == cites


def test_no_string_a_user_reads_cites_a_team_document():
    found = [f"{p.relative_to(REPO)}:{line}: {text!r}" for p in sorted((REPO / "compresslab").rglob("*.py"))
             for line, text in team_doc_citations(p.read_text())]
    assert not found, ("users have none of these: cite README, benchmarks/RESULTS.md, or say the rule in words:\n"
                       + "\n".join(found))


@pytest.mark.parametrize("doc", ["README.md", *[str(p.relative_to(REPO)) for p in (REPO / "notebooks").glob("*.ipynb")]])
def test_the_user_docs_cite_no_team_document(doc):
    lines = [f"{i}: {ln.strip()[:120]}" for i, ln in enumerate((REPO / doc).read_text().splitlines(), 1)
             if TEAM_DOCS.search(ln)]
    assert not lines, f"{doc} sends users to files they do not have:\n" + "\n".join(lines)


def test_the_public_api_help_cites_no_team_document():
    """The docstrings help() shows for what the package exports (compresslab.compress, run, ...)."""
    import compresslab

    shown = {name: getattr(compresslab, name).__doc__ or "" for name in getattr(compresslab, "__all__", [])
             if hasattr(compresslab, name)}
    shown["compresslab"] = compresslab.__doc__ or ""
    assert not {k: TEAM_DOCS.findall(v) for k, v in shown.items() if TEAM_DOCS.search(v)}
