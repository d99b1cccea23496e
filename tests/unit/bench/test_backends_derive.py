"""benchmarks/backends.py ``derive``: speedups and issue 9's targets from the cells, for a whole run and for a
run of some pipelines only (``--only int8``: another ISA class timed for the int8 cells)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks"
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
