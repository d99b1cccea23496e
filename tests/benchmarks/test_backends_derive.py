"""benchmarks/backends.py ``derive``: speedups and issue 9's targets from the cells, for a whole run and for a
run of some pipelines only (``--only int8``: another ISA class timed for the int8 cells)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:  # backends.py imports its sibling _results module
    sys.path.insert(0, str(BENCH))
backends = importlib.import_module("backends")


def _c(b32: float, acc: float = 0.9, agreement: float = 1.0, method: str = "compresslab") -> dict:
    return {"acc": acc, "agreement": agreement, "b1_ms": b32 / 20, "b32_ms": b32, "real_len_sent_per_s": 1000 / b32,
            "method": method}


def _models() -> dict:
    return {"dense": {"ort_fp32": _c(300.0), "openvino_bf16": _c(100.0), "torch_fp32": _c(320.0),
                      "openvino_nncf_int8": _c(80.0, agreement=0.995, method="peer")},
            "int8": {"ort_int8": _c(150.0, agreement=0.98), "openvino_int8": _c(78.0, agreement=0.992)}}


def test_a_run_of_the_int8_pipeline_only_judges_the_int8_target_and_says_the_rest_was_not_measured():
    d = backends.derive(_models(), ["avx512_bf16", "avx512_vnni"])
    t = d["targets"]
    assert d["best_dense"] == "dense.openvino_nncf_int8"
    assert t["int8_best_ours_agreement_ge_0.99"]["cell"] == "int8.openvino_int8"  # ort_int8 agrees 0.98: out
    assert t["int8_best_ours_agreement_ge_0.99"]["met"] is True  # 78 ms <= NNCF's 80
    for k in ("ziplm_2x_within_1pt_at_1.8x_best_dense", "ziplm_int8_8x_ort_fp32"):
        assert t[k]["met"] is None and t[k]["measured"] is False
    assert d["speedups"]["int8.openvino_int8"]["b32_vs_ort_fp32"] == pytest.approx(300 / 78, abs=1e-3)


def test_slower_than_nncf_or_below_the_agreement_bar_is_not_met_and_the_full_run_judges_every_target():
    m = _models()
    m["int8"]["openvino_int8"] = _c(81.0, agreement=0.999)
    assert backends.derive(m)["targets"]["int8_best_ours_agreement_ge_0.99"]["met"] is False
    m["int8"]["openvino_int8"] = _c(10.0, agreement=0.989)
    assert backends.derive(m)["targets"]["int8_best_ours_agreement_ge_0.99"]["cell"] is None
    m["ziplm_2x"] = {"openvino_bf16": _c(40.0, acc=0.895)}
    m["ziplm_int8"] = {"ort_int8": _c(30.0, acc=0.89), "openvino_nncf_int8": _c(10.0, method="peer")}
    t = backends.derive(m, ["amx_int8"])["targets"]
    assert t["ziplm_2x_within_1pt_at_1.8x_best_dense"]["met"] is True  # 0.5 pt, 2.0x best_dense (NNCF on the teacher, 80 ms)
    z = t["ziplm_int8_8x_ort_fp32"]
    assert z["cell"] == "ziplm_int8.ort_int8" and z["met"] is True and z["judged"] is True  # NNCF's cell not ours


def _timed(c: dict, times: list[float]) -> dict:
    return {**c, "b32_times_ms": times}


def test_paired_ratios_come_from_the_rounds_and_a_target_needs_both_ratios():
    """Two speed states: the model's median round sits in the fast state, the dense reference's in the slow one,
    so the ratio of medians can say more than most rounds do."""
    m = _models()
    m["dense"]["openvino_bf16"] = _c(220.0)
    dense = [200.0, 200.0, 200.0, 250.0, 250.0]   # median 200
    model = [100.0, 100.0, 100.0, 200.0, 200.0]   # median 100; per round 2.0, 2.0, 2.0, 1.25, 1.25
    m["dense"]["openvino_nncf_int8"] = _timed(_c(200.0, agreement=0.995, method="peer"), dense)
    m["dense"]["ort_fp32"] = _timed(_c(300.0), [300.0] * 5)
    m["ziplm_2x"] = {"openvino_bf16": _timed(_c(100.0, acc=0.895), model)}
    d = backends.derive(m)
    s = d["speedups"]["ziplm_2x.openvino_bf16"]
    assert s["b32_vs_best_dense"] == 2.0 and s["b32_vs_best_dense_paired"] == 2.0
    assert s["b32_vs_ort_fp32_paired"] == pytest.approx(3.0)
    t = d["targets"]["ziplm_2x_within_1pt_at_1.8x_best_dense"]
    assert t["met"] is True and t["b32_vs_best_dense_paired"] == 2.0
    # the same medians, but the rounds pair the model's fast state with the reference's fast state
    m["dense"]["openvino_nncf_int8"] = _timed(m["dense"]["openvino_nncf_int8"], [160.0, 160.0, 200.0, 200.0, 250.0])
    m["ziplm_2x"]["openvino_bf16"] = _timed(m["ziplm_2x"]["openvino_bf16"], [100.0, 100.0, 100.0, 200.0, 200.0])
    d = backends.derive(m)
    t = d["targets"]["ziplm_2x_within_1pt_at_1.8x_best_dense"]
    assert t["b32_vs_best_dense"] == 2.0 and t["b32_vs_best_dense_paired"] == pytest.approx(1.6)  # 1.6 1.6 2 1 1.25
    assert t["met"] is False  # the median ratio alone would say met
    # cells without round times (files measured before 2026-12-05) keep their keys: no paired figure at all
    assert "b32_vs_best_dense_paired" not in backends.derive(_models())["speedups"]["int8.openvino_int8"]
