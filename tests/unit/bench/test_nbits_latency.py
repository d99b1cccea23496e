"""The n-bit latency table (``bench/nbits_latency``): one entry per Linear and width, identical shapes
measured once, the deployed graphs run in ONNX Runtime and compute what the exporter's layout means,
and the cache is used only on the machine that measured it (another fingerprint re-measures, with a
log line; a busy measurement is never cached)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import compresslab.bench.nbits_latency as nl
from compresslab.bench.nbits_latency import NBitsTableSettings, build_nbits_table, cache_file, linear_graph
from compresslab.models.tiny import tiny_model
from compresslab.targets import select_modules

WIDTHS = [2, 3, 4, 8, 32]
SETTINGS = NBitsTableSettings(batch=2, seq=4, threads=1, warmup=0, runs=2)


def _fp(cpu: str = "Test CPU", ort: str = "1.0", threads: int = 1) -> dict[str, Any]:
    return {"cpu": {"model": cpu, "isa": {"avx2": True}}, "libraries": {"onnxruntime": ort}, "threads": threads}


def _shapes(block: int = 16) -> dict[str, tuple[int, int, int]]:
    """(in, out, block) of every targeted Linear of the tiny BERT (2 layers x 6 Linears, 3 shapes)."""
    return {n: (m.in_features, m.out_features, block) for n, m in select_modules(tiny_model("bert")).items()}


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache rules on a quiet machine, whatever runs on the real one (a busy one is tested below)."""
    import compresslab.bench.machine_load as ml
    from compresslab.testing import FakeCpu

    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=0.0))
    monkeypatch.setattr(ml, "PROBE_S", 0.0)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[list]:
    """Replace the measurement: time = K*N*c(width) ns; records the entries each call was asked for."""
    calls: list[list] = []
    per = {2: 3.0, 4: 1.0, 8: 1.5, 32: 2.0}

    def measure(entries, s):
        calls.append(list(entries))
        return {e: e[0] * e[1] * per[e[3]] * 1e-9 for e in entries}, {"entries_ms": {}}

    monkeypatch.setattr(nl, "measure_entries", measure)
    return calls


def test_one_entry_per_linear_and_width_identical_shapes_measured_once(tmp_path: Path, fake: list) -> None:
    shapes = _shapes()
    table, info = build_nbits_table(shapes, WIDTHS, SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert set(table) == set(shapes) and len(shapes) == 12
    assert all(sorted(row) == WIDTHS for row in table.values())
    # 12 Linears x 5 widths priced by 3 shapes x 4 deployed widths (3 bits run as 4-bit codes)
    assert len(fake) == 1 and len(fake[0]) == len(set(fake[0])) == 12 and info["entries"] == 12
    for name, (k, n, _) in shapes.items():
        assert table[name][3] == table[name][4] == pytest.approx(k * n * 1e-9)
        assert table[name][32] == pytest.approx(k * n * 2e-9) and table[name][2] == pytest.approx(k * n * 3e-9)
    assert info["source"] == "measured" and info["unit"] == "s"
    assert info["fingerprint"]["cpu.model"] == "Test CPU" and info["fingerprint"]["accuracy_level"] == 0


def test_an_undeployable_block_is_priced_as_the_fp32_matmul_it_stays(fake: list) -> None:
    table, _ = build_nbits_table({"odd": (48, 32, 24)}, WIDTHS, SETTINGS, fingerprint=_fp())
    assert len(set(table["odd"].values())) == 1  # 24 has no power-of-two block >= 16: every width is fp32
    assert fake[0] == [(48, 32, None, 32)]


def test_the_cache_is_reused_only_on_the_machine_that_measured_it(tmp_path: Path, fake: list,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    shapes = _shapes()
    first, _ = build_nbits_table(shapes, WIDTHS, SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    again, info = build_nbits_table(shapes, WIDTHS, SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert len(fake) == 1 and info["source"] == "cached" and again == first
    with caplog.at_level(logging.WARNING, logger="compresslab.bench.nbits_latency"):
        _, info = build_nbits_table(shapes, WIDTHS, SETTINGS, cache_dir=tmp_path, fingerprint=_fp(cpu="Other CPU"))
    assert len(fake) == 2 and info["source"] == "measured"
    assert "not reused" in caplog.text and "cpu.model" in caplog.text
    for fp in (_fp(ort="2.0"), _fp(threads=2)):  # another ORT or thread count is another table too
        build_nbits_table(shapes, WIDTHS, SETTINGS, cache_dir=tmp_path, fingerprint=fp)
    assert len(fake) == 4
    level4 = NBitsTableSettings(batch=2, seq=4, threads=1, warmup=0, runs=2, accuracy_level=4)
    build_nbits_table(shapes, WIDTHS, level4, cache_dir=tmp_path, fingerprint=_fp())
    assert len(fake) == 5
    # a file whose recorded fingerprint is another machine's is not used even under this machine's name
    env = nl.environment([e for r in nl.module_entries(shapes, WIDTHS).values() for e in r.values()], SETTINGS, _fp())
    path = cache_file(tmp_path, env)
    data = json.loads(path.read_text())
    data["fingerprint"]["cpu.model"] = "edited"
    path.write_text(json.dumps(data))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="compresslab.bench.nbits_latency"):
        _, info = build_nbits_table(shapes, WIDTHS, SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert len(fake) == 6 and info["source"] == "measured" and "another environment" in caplog.text


def test_a_busy_measurement_is_used_but_never_cached(tmp_path: Path, fake: list, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    import compresslab.bench.machine_load as ml
    from compresslab.testing import FakeCpu

    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=1.0))
    with caplog.at_level(logging.WARNING):
        _, info = build_nbits_table(_shapes(), WIDTHS, SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert info["machine_load"]["busy"] and info["cache_file"] is None and "NOT cached" in caplog.text
    build_nbits_table(_shapes(), WIDTHS, SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert len(fake) == 2


def test_reusing_a_noisy_table_warns(tmp_path: Path, fake: list, caplog: pytest.LogCaptureFixture) -> None:
    """Noisy is not busy: the table is cached, and each run that reuses it warns (tables share table_cache)."""
    shapes = _shapes()
    build_nbits_table(shapes, WIDTHS, SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    env = nl.environment([e for r in nl.module_entries(shapes, WIDTHS).values() for e in r.values()], SETTINGS, _fp())
    path = cache_file(tmp_path, env)
    data = json.loads(path.read_text())
    assert "flagged noisy" not in caplog.text
    data["info"]["machine_load"]["spread"].update(noisy=True, max=0.3, runner="768x384", shape="b2xs4")
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="compresslab.bench.nbits_latency"):
        _, info = build_nbits_table(shapes, WIDTHS, SETTINGS, cache_dir=tmp_path, fingerprint=_fp())
    assert len(fake) == 1 and info["source"] == "cached"
    assert "flagged noisy" in caplog.text and "768x384" in caplog.text


@pytest.mark.parametrize("kw, match", [({"runs": 0}, "latency.runs"), ({"batch": 1.5}, "latency.batch"),
                                       ({"warmup": -1}, "latency.warmup"), ({"accuracy_level": 5}, "accuracy_level"),
                                       ({"threads": 0}, "threads")])
def test_bad_settings_name_the_field(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NBitsTableSettings(**kw)
    with pytest.raises(ValueError, match="batchez"):
        NBitsTableSettings.coerce({"batchez": 2})


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_the_timed_graph_is_the_deployed_operator(bits: int) -> None:
    """The MatMulNBits graph computes A · dequant(B)ᵀ with B as the exporter packs it, so what is timed
    is the deployed operator (a wrong packing or shape would fail here)."""
    import onnxruntime as ort

    k, n, block = 64, 32, 16
    sess = ort.InferenceSession(linear_graph((k, n, block, bits), 0).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    q = rng.integers(0, 1 << bits, size=(n, k), dtype=np.uint8)  # the codes linear_graph draws (same seed)
    a = np.random.default_rng(1).standard_normal((3, k), dtype=np.float32)
    y = sess.run(None, {"A": a})[0]
    w = (q.astype(np.float32) - (1 << (bits - 1))) * 0.01  # scales 0.01, zero points at mid-range
    assert y.shape == (3, n)
    np.testing.assert_allclose(y, a @ w.T, rtol=1e-4, atol=1e-4)


def test_real_measurement_of_tiny_shapes(tmp_path: Path) -> None:
    """End to end with ONNX Runtime (tiny shapes, 2 rounds: the figures mean nothing, only that every
    entry ran and was recorded)."""
    table, info = build_nbits_table({"a": (32, 64, 16), "b": (64, 32, 32)}, WIDTHS, SETTINGS, cache_dir=tmp_path)
    assert all(v > 0 for row in table.values() for v in row.values())
    assert len(info["entries_ms"]) == 8 and info["source"] == "measured" and info["rows"] == 8
    assert "machine_load" in info and info["fingerprint"]["threads"] == 1
