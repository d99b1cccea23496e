"""benchmarks/ziplm_check_noise.py (issue 13): the spread of repeated speedup checks, and bad arguments refused
before any export or timing."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cn():
    from compresslab.testing import import_benchmark

    return import_benchmark("ziplm_check_noise", ROOT)


def test_spread_of_known_checks(cn):
    s = cn.spread([1.8, 2.0, 2.2])
    assert s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(0.2)  # sample std (n - 1)
    assert s["cv"] == pytest.approx(0.1) and (s["min"], s["max"]) == (1.8, 2.2)
    assert s["max_over_min"] == pytest.approx(2.2 / 1.8)


def test_fewer_than_two_repeats_is_refused(cn, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.argv", ["ziplm_check_noise", "--run", str(tmp_path), "--repeats", "1"])
    with pytest.raises(SystemExit, match="repeats must be >= 2"):
        cn.main()
