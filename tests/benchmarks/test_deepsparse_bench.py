"""benchmarks/deepsparse_bench.py, its pure parts: which DeepSparse file stands for a run in the issue keys (the
compressed model's fastest scored int8 file at the largest batch, never the dense teacher's, never an unscored
one), and ``--recorded`` refusing a run whose bench stage has no DeepSparse figures."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def db():
    from compresslab.testing import import_benchmark

    return import_benchmark("deepsparse_bench", ROOT)


def _lat(b1: float, b32: float) -> dict:
    return {"b1xs128": {"p50_ms": b1}, "b32xs128": {"p50_ms": b32}}


def _section(**ms: tuple[float, float]) -> dict:
    scores = {k: {"score": 0.9} for k in ms
              if k.startswith("deepsparse") and "dense" not in k and k != "deepsparse_int8_unscored"}
    return {"latency": {k: _lat(*v) for k, v in ms.items()}, "scores": scores}


def test_fastest_scored_int8_file_of_the_model_at_the_largest_batch(db) -> None:
    sec = _section(ort_fp32=(18.0, 590.0), deepsparse_dense_int8=(5.0, 100.0),       # dense: never chosen
                   deepsparse_int8=(15.0, 560.0), deepsparse_int8_matmulinteger=(6.0, 160.0),
                   deepsparse_fp32=(9.0, 150.0))                                         # fp32: not int8
    assert db.fastest_int8(sec) == ("deepsparse_int8_matmulinteger", "b32xs128")
    # b1 decides nothing: the QDQ file faster at b1 but slower at b32 is not chosen
    sec["latency"]["deepsparse_int8"] = _lat(1.0, 170.0)
    assert db.fastest_int8(sec)[0] == "deepsparse_int8_matmulinteger"
    sec["latency"]["deepsparse_int8"] = _lat(20.0, 150.0)
    assert db.fastest_int8(sec)[0] == "deepsparse_int8"


def test_an_unscored_file_never_stands_for_the_run(db) -> None:
    sec = _section(ort_fp32=(18.0, 590.0), deepsparse_int8=(15.0, 560.0), deepsparse_int8_unscored=(1.0, 10.0))
    assert db.fastest_int8(sec)[0] == "deepsparse_int8"
    with pytest.raises(SystemExit, match="no scored int8"):
        db.fastest_int8(_section(ort_fp32=(18.0, 590.0), deepsparse_dense_int8=(5.0, 100.0)))


@pytest.mark.parametrize("bench, why", [({}, "no bench.deepsparse section"),
                                        ({"deepsparse": {"skipped": "bench.deepsparse.enabled is false"}}, "enabled is false")])
def test_recorded_refuses_a_run_without_its_own_figures(db, tmp_path, bench, why) -> None:
    from compresslab.manifest import RunManifest

    m = RunManifest.create(tmp_path, status="finished", bench=bench)
    m.save()
    with pytest.raises(SystemExit, match=why):
        db.recorded(tmp_path)
    m.data["status"] = "running"
    m.save()
    with pytest.raises(SystemExit, match="not a finished run"):
        db.recorded(tmp_path)


def test_only_a_quiet_bench_budget_run_scored_on_dev_gives_the_issue_keys(db) -> None:
    """A trial stored a busy debug=smoke run (64 dev examples) with --issue-keys: obert.json's headline became
    1.39x and 0.59 with nothing said."""
    good = {"config": {"budget": {"name": "bench"}}, "eval": {"split": "dev"},
            "bench": {"machine_load": {"busy": False}}}
    assert db.issue_key_problems(good) == []
    bad = {"config": {"budget": {"name": "smoke"}}, "eval": {"split": "validation"},
           "bench": {"machine_load": {"busy": True}}}
    why = db.issue_key_problems(bad)
    assert len(why) == 3 and "'smoke'" in why[0] and "'validation'" in why[1] and "busy" in why[2]
