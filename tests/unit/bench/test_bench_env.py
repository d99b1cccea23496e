"""Hardware fingerprint, its latency key, and peak RSS."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from compresslab.bench.env import (
    ISA_FLAGS,
    LATENCY_KEYS,
    fingerprint_key,
    hardware_fingerprint,
    parse_cpuinfo,
    peak_rss_mb,
    resolve_threads,
)

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_vnni amx_tile
processor\t: 1
model name\t: other
flags\t\t: fpu
"""


def test_fingerprint_has_the_fields_results_need():
    fp = hardware_fingerprint(threads=2)
    assert {"cpu", "ram_gb", "os", "kernel", "python", "libraries", "ort_providers",
            "cuda_device", "threads"} <= set(fp)
    assert {"model", "logical_cores", "physical_cores", "isa"} <= set(fp["cpu"])
    assert set(fp["cpu"]["isa"]) == set(ISA_FLAGS)
    assert all(isinstance(v, bool) for v in fp["cpu"]["isa"].values())
    assert {"torch", "transformers", "onnxruntime", "onnx", "numpy"} <= set(fp["libraries"])
    assert "CPUExecutionProvider" in fp["ort_providers"]
    assert fp["threads"] == 2
    json.dumps(fp)  # must go into a results file as is


def test_parse_cpuinfo_reads_first_block_and_absent_flags_are_false():
    model, flags = parse_cpuinfo(CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx2", "avx512_vnni", "amx_tile"} <= flags
    assert "amx_int8" not in flags and "avx512_bf16" not in flags
    assert parse_cpuinfo("") == ("", set())


def test_fingerprint_key_is_stable_and_tracks_latency_fields_only():
    fp = hardware_fingerprint(threads=2)
    key = fingerprint_key(fp)
    assert key == fingerprint_key(json.loads(json.dumps(fp))) and len(key) == 16
    assert fingerprint_key({**fp, "ram_gb": 1.0}) == key  # RAM does not change latency
    assert fingerprint_key({**fp, "threads": 1}) != key
    other_isa = {**fp, "cpu": {**fp["cpu"], "isa": {**fp["cpu"]["isa"], "amx_int8": True}}}
    if not fp["cpu"]["isa"]["amx_int8"]:
        assert fingerprint_key(other_isa) != key
    assert "threads" in LATENCY_KEYS


def test_fingerprint_key_rejects_unknown_fields():
    with pytest.raises(KeyError, match="cpu.isa"):
        fingerprint_key(hardware_fingerprint(), ["cpu.nope"])
    with pytest.raises(ValueError):
        fingerprint_key(hardware_fingerprint(), [])


def test_peak_rss_is_positive_megabytes():
    assert 1.0 < peak_rss_mb() < 1e6


def test_resolve_threads():
    assert resolve_threads(None) >= 1
    assert resolve_threads(3) == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            resolve_threads(bad)


def test_bench_modules_import_no_heavy_library_at_module_level():
    # onnxruntime and torch are imported inside functions so `import compresslab` stays light
    # (DESIGN.md). Checked on the source: a fresh interpreter would also time the rest of the
    # package, which is not this module's business.
    import compresslab.bench as bench

    for path in Path(bench.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"onnxruntime", "torch", "transformers", "onnx"}, path.name


def test_more_threads_than_usable_cpus_is_warned_once(monkeypatch, caplog):
    """run.threads=999 on 2 cores is allowed but every timing is oversubscribed: a warning naming the setting."""
    from compresslab.bench import env

    monkeypatch.setattr(env, "_usable_cpus", lambda: 2)
    monkeypatch.setattr(env, "_WARNED_THREADS", set())
    with caplog.at_level("WARNING", logger="compresslab.bench.env"):
        assert env.resolve_threads(2) == 2
        assert not caplog.records
        assert env.resolve_threads(999) == 999
        assert env.resolve_threads(999) == 999
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "run.threads=999" in msgs[0] and "2 CPU(s)" in msgs[0] and "oversubscribed" in msgs[0]
