"""benchmarks/results/backends*.json (issue 9: one file per ISA class measured, ``backends.json`` the first) has
the shape the issue names, and every speedup in it is recomputed here from the cells' own medians (one
interleaved run), so a stale or hand-edited figure fails."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "benchmarks" / "results").glob("backends*.json"))
MODELS = ("dense", "int8", "ziplm_2x", "ziplm_int8", "obert_int8")
CELL_KEYS = {"acc", "agreement", "b1_ms", "b32_ms", "real_len_sent_per_s", "file", "precision", "method"}

pytestmark = pytest.mark.skipif(not FILES, reason="benchmarks/results/backends*.json not measured yet")


@pytest.fixture(scope="module", params=FILES, ids=[f.name for f in FILES])
def res(request) -> dict:
    return json.loads(request.param.read_text())


def test_shape_is_the_issues(res):
    assert isinstance(res["cpu_isa"], list) and 0 < res["teacher_acc"] <= 1
    assert set(MODELS) <= set(res["models"])
    for model, cells in res["models"].items():
        for name, c in cells.items():
            extra = {"sparse_weights_decompression_rate"} if name.endswith("_sparse") else set()  # the AMX cells
            assert set(c) == CELL_KEYS | extra, (model, name)
            assert c["method"] in ("compresslab", "peer") and 0 <= c["agreement"] <= 1 and 0 <= c["acc"] <= 1
            assert c["b1_ms"] > 0 and c["b32_ms"] > 0 and c["real_len_sent_per_s"] > 0
            assert isinstance(c["file"], str) and c["file"].startswith("outputs/")  # run dirs: not committed
            assert name.split("_", 1)[0] in ("ort", "openvino", "torch"), name
    dense = res["models"]["dense"]
    assert {"ort_fp32", "openvino_default", "openvino_f32", "torch_fp32", "openvino_nncf_int8"} <= set(dense)
    assert dense["openvino_nncf_int8"]["method"] == "peer"
    assert all(c["method"] == "peer" for m in res["models"].values() for n, c in m.items() if "nncf" in n)
    assert dense["torch_fp32"]["agreement"] == 1.0 and dense["torch_fp32"]["acc"] == res["teacher_acc"]
    for pipeline, cell in res["deployed_auto"].items():
        model = {"int8": "int8"}.get(pipeline, pipeline)
        assert cell in res["models"][model] or cell in res["models"]["dense"], (pipeline, cell)


def test_speedups_and_best_dense_are_recomputed_from_the_cells(res):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from backends import derive
    finally:
        sys.path.pop(0)
    dense = res["models"]["dense"]
    best = min(dense, key=lambda n: dense[n]["b32_ms"])
    assert res["derived"]["best_dense"] == f"dense.{best}"
    again = derive(res["models"], res["cpu_isa"])
    for key, v in res["derived"]["speedups"].items():
        model, name = key.split(".", 1)
        c = res["models"][model][name]
        assert math.isclose(v["b32_vs_ort_fp32"], dense["ort_fp32"]["b32_ms"] / c["b32_ms"], rel_tol=2e-3)
        assert math.isclose(v["b32_vs_best_dense"], dense[best]["b32_ms"] / c["b32_ms"], rel_tol=2e-3)
        assert v == pytest.approx(again["speedups"][key], rel=2e-3)
    assert {k: t["met"] for k, t in res["derived"]["targets"].items()} == \
        {k: t["met"] for k, t in again["targets"].items()}
    z8 = again["targets"]["ziplm_int8_8x_ort_fp32"]  # judged only where the cells were timed on AMX
    assert z8["judged"] == ("amx_int8" in res["cpu_isa"]) and ("no AMX" in z8["note"]) != z8["judged"]
