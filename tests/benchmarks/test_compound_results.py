"""benchmarks/results/compound*.json (issue 13: ``compound.json`` the first machine, one more file per ISA class
measured) has the shape the issue names, and ``best_dense``, every ``models.<pipeline>`` entry and ``best`` are
derived again here from the stored cells (benchmarks/compound.py ``derive``), so a stale or hand-edited figure
fails."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "benchmarks" / "results").glob("compound*.json"))
TOP = {"teacher_acc", "cpu_isa", "best_dense", "models", "best", "meta"}

pytestmark = pytest.mark.skipif(not FILES, reason="benchmarks/results/compound*.json not measured yet")


@pytest.fixture(scope="module")
def compound():
    from compresslab.testing import import_benchmark

    return import_benchmark("compound", ROOT)


@pytest.fixture(scope="module", params=FILES, ids=[f.name for f in FILES])
def res(request) -> dict:
    return json.loads(request.param.read_text())


def test_shape_is_the_issues(res, compound):
    assert TOP <= set(res) and isinstance(res["cpu_isa"], list) and 0 < res["teacher_acc"] <= 1
    assert {"cell", "b32_ms"} <= set(res["best_dense"])
    for p, m in res["models"].items():
        if "error" in m:
            continue
        assert set(compound.MODEL_KEYS) <= set(m), p
        assert isinstance(m["file"], str) and m["file"].startswith("outputs/"), p  # run dirs: not committed


def test_teacher_is_the_dense_torch_cell(res):
    assert res["teacher_acc"] == res["best_dense"]["cells"]["torch_fp32"]["acc"]


def test_derived_figures_are_recomputed_from_the_cells(res, compound):
    again = compound.derive(compound.cells_of(res))
    assert again["best_dense"]["cell"] == res["best_dense"]["cell"]
    assert math.isclose(again["best_dense"]["b32_ms"], res["best_dense"]["b32_ms"])
    assert (again["best"] is None) == (res["best"] is None)
    for k, v in (res["best"] or {}).items():  # a file written before a key existed is checked on the keys it has
        assert again["best"][k] == v, k
    for p, m in res["models"].items():
        if "error" in m:
            continue
        for k in ("cell", "acc", "backend", "b32_ms", "within_1pt"):
            assert again["models"][p][k] == m[k], (p, k)
        for k in ("speedup_b32_vs_ort_fp32", "speedup_b32_vs_best_dense", "speedup_b1_vs_ort_fp32"):
            assert math.isclose(again["models"][p][k], m[k], rel_tol=1e-9), (p, k)
        for k in ("speedup_b32_vs_ort_fp32_paired", "speedup_b32_vs_best_dense_paired"):
            if m.get(k) is not None:  # files measured since the round times are kept
                assert math.isclose(again["models"][p][k], m[k], rel_tol=1e-9), (p, k)


def test_paired_figures_are_there_when_rounds_were_kept(res):
    """A file whose cells kept their b32 round times states the paired speedups of every timed model."""
    kept = res["best_dense"]["cells"].get("ort_fp32", {}).get("b32_times_ms")
    for p, m in res["models"].items():
        if kept and "error" not in m and m["cells"][m["cell"]].get("b32_times_ms"):
            for k in ("speedup_b32_vs_best_dense_paired", "speedup_b32_vs_ort_fp32_paired"):
                assert m.get(k) is not None and m[k] > 0, (p, k, "round times kept but no paired figure")


def test_best_is_within_1pt_of_the_teacher_and_ours(res, compound):
    b = res["best"]
    if b is None:
        assert not any(m.get("within_1pt") for m in res["models"].values())
        return
    assert res["teacher_acc"] - b["acc"] <= compound.WITHIN + 1e-12
    assert b["method"] == "compresslab"  # a peer's IR of our model is never our headline (issue 9's rule)
