"""Latency table of the deployed n-bit Linears, measured on this machine (issue #10: the ``hawq``
pass's ``latency_limit``; HAWQ-V3's ``Σ Latency_i(b) ≤ Latency_limit``, ALGORITHMS.md §1.6).

What is timed is what ``ort_matmul_nbits`` deploys for one Linear of weight ``(N, K)``
(``out_features × in_features``) at width ``b``, as a one-node ONNX graph run by ONNX Runtime
with the bench's session settings (:func:`~compresslab.bench.load_probe.make_session`) on an input
``A`` of shape ``[batch·seq, K]`` float32:

* ``b`` in 1–8: ``com.microsoft.MatMulNBits`` with ``bits = deployed_bits(b)`` (3 bits deploy as
  4-bit codes, so 3 and 4 share one measurement), the deployed block (the largest power of two in
  [16, 256] dividing the quantization block) and the deploy step's ``accuracy_level``; the node
  is written by :func:`compresslab.export.nbits_pack.matmul_nbits_node`, the exporter's own code;
* ``b = 32`` (keep fp32), or a Linear whose block has no deployable power of two (the exporter
  leaves it fp32): a plain ``MatMul`` with a ``(K, N)`` float32 initializer.

The bias ``Add`` is left out: it is the same at every width. Each entry is the median over
``runs`` interleaved rounds (A B C A B C ..., after ``warmup`` calls each) of one session run, in
**seconds**; identical ``(K, N, block, deployed width)`` entries are measured once and shared (MiniLM's
36 Linears have 3 shapes). Weight values do not change the time, so codes are seeded random.

Cached by :mod:`~compresslab.bench.table_cache` under ``cache_dir/latency/matmul_nbits/<shapes and
settings>/<environment hash>.json``; the environment is the latency-relevant hardware fingerprint
(CPU model and ISA, onnxruntime version, threads) plus the shapes and settings. A table measured on
another machine is never reused (re-measured, with a log line naming what differs); one measured
on a busy machine is used for this run, with a loud warning, and never cached.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from compresslab.bench.env import LATENCY_KEYS, hardware_fingerprint, resolve_threads
from compresslab.bench.machine_load import timing_window
from compresslab.bench.table_cache import environment_facts, normalize, read_cached, stable_hash, write_cached
from compresslab.export.nbits_pack import ACCURACY_LEVELS, deployable_block, deployed_bits
from compresslab.validate import coerce_settings, is_int, typed_settings

log = logging.getLogger(__name__)

TABLE_METHOD = 1  # bump when the graphs or the arithmetic change: older caches are re-measured
FP32 = 32  # the "keep fp32" width

# (in_features K, out_features N, quantization block along K) of one Linear
Shape = tuple[int, int, int]
# (K, N, deployed block or None, deployed width: 2 / 4 / 8, or 32 = fp32 MatMul): one measurement
Entry = tuple[int, int, "int | None", int]


@typed_settings("latency")
@dataclass(frozen=True)
class NBitsTableSettings:
    """Where and how the n-bit table is measured.

    ``batch`` × ``seq`` rows of input (the bench shape; b32 × s128 by default); ``threads``: ORT
    intra-op threads (None = all physical cores, as the bench stage); ``accuracy_level``: the
    deploy step's MatMulNBits attribute (0–4); ``warmup`` untimed calls and ``runs`` interleaved
    timed rounds per entry. ValueError naming the field for anything out of range.
    """

    batch: int = 32
    seq: int = 128
    threads: int | None = None
    provider: str = "CPUExecutionProvider"
    accuracy_level: int = 0
    warmup: int = 3
    runs: int = 30

    def __post_init__(self) -> None:
        for name in ("batch", "seq", "runs"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise ValueError(f"latency.{name} must be an integer >= 1, got {v!r}")
        if not is_int(self.warmup) or self.warmup < 0:
            raise ValueError(f"latency.warmup must be an integer >= 0, got {self.warmup!r}")
        if not is_int(self.accuracy_level) or self.accuracy_level not in ACCURACY_LEVELS:
            raise ValueError(f"latency.accuracy_level={self.accuracy_level!r} is not valid; allowed: "
                             f"{', '.join(map(str, ACCURACY_LEVELS))} (MatMulNBits' attribute, as the deploy step "
                             "sets it)")
        if not isinstance(self.provider, str) or not self.provider:
            raise ValueError(f"latency.provider must be an ONNX Runtime provider name, got {self.provider!r}")
        resolve_threads(self.threads)  # ValueError for 0, negatives, bools

    @classmethod
    def coerce(cls, value: "NBitsTableSettings | Mapping[str, Any]") -> "NBitsTableSettings":
        """From itself or a mapping (Hydra gives dicts); ValueError naming ``latency`` for unknown keys."""
        return coerce_settings(cls, value, "latency")


def deployed_width(bits: int, block: int | None) -> int:
    """The width that is actually run: 32 for fp32 or a Linear without a deployable block (the
    exporter keeps it fp32), else the MatMulNBits width storing ``bits``-bit codes (2, 4 or 8)."""
    if bits == FP32 or block is None:
        return FP32
    return deployed_bits(bits)


def module_entries(shapes: Mapping[str, Shape], widths: Sequence[int]) -> dict[str, dict[int, Entry]]:
    """``{name: {width: entry}}``: which measurement prices each Linear at each asked width.

    ValueError for a non-positive dimension or a width outside 1–8 / 32.
    """
    out: dict[str, dict[int, Entry]] = {}
    for name, (k, n, bs) in shapes.items():
        if not all(is_int(v) and v > 0 for v in (k, n, bs)):
            raise ValueError(f"{name}: shape (in, out, block) must be positive integers, got {(k, n, bs)!r}")
        block = deployable_block(bs)
        row: dict[int, Entry] = {}
        for b in widths:
            if not is_int(b) or not (1 <= b <= 8 or b == FP32):
                raise ValueError(f"width {b!r}: weight bits must be an integer in [1, 8], or {FP32} (fp32)")
            w = deployed_width(b, block)
            row[b] = (k, n, None if w == FP32 else block, w)
        out[name] = row
    return out


def environment(entries: Sequence[Entry], s: NBitsTableSettings,
                fingerprint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every fact a measured table is valid for: the latency-relevant hardware fingerprint
    (``LATENCY_KEYS``), the settings that change a time, the entries and the method."""
    fp = fingerprint if fingerprint is not None else hardware_fingerprint(resolve_threads(s.threads))
    env = environment_facts(fp, LATENCY_KEYS)
    env.update({"provider": s.provider, "batch": s.batch, "seq": s.seq, "accuracy_level": s.accuracy_level,
                "entries": sorted([list(e) for e in set(entries)], key=str), "method": TABLE_METHOD})
    return normalize(env)


def cache_file(cache_dir: str | Path, env: Mapping[str, Any]) -> Path:
    """``latency/matmul_nbits/<what was measured>/<environment hash>.json``: the files beside it are
    the same measurement on other machines (or thread counts, or ORT versions)."""
    what = {k: v for k, v in env.items() if k not in LATENCY_KEYS}
    group = f"b{env['batch']}xs{env['seq']}-level{env['accuracy_level']}-{stable_hash(what, 12)}"
    return Path(cache_dir) / "latency" / "matmul_nbits" / group / f"{stable_hash(env)}.json"


def entry_key(e: Entry) -> str:
    """``"<K>x<N>/b<block>/w<width>"`` (block ``-`` for fp32): an entry's name in records."""
    k, n, block, w = e
    return f"{k}x{n}/b{block if block is not None else '-'}/w{w}"


def linear_graph(e: Entry, accuracy_level: int, seed: int = 0) -> Any:
    """The one-node ONNX model of entry ``e``: input ``A`` ``[M, K]`` float32 (M dynamic), output ``Y``
    ``[M, N]``; MatMulNBits (the exporter's node) or, for width 32, a plain MatMul."""
    from onnx import TensorProto, helper, numpy_helper

    from compresslab.export.nbits_pack import matmul_nbits_node

    k, n, block, w = e
    rng = np.random.default_rng(seed)
    opsets = [helper.make_opsetid("", 17)]
    if w == FP32:
        weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32) * 0.05, "W")
        node, inits = helper.make_node("MatMul", ["A", "W"], ["Y"], name="linear"), [weight]
    else:
        if block is None:  # module_entries gives width 32 to a Linear without a deployable block
            raise ValueError(f"entry {entry_key(e)}: an n-bit entry needs a deployable block")
        q = rng.integers(0, 1 << w, size=(n, k), dtype=np.uint8)
        scales = np.full((n, k // block), 0.01, np.float32)
        zeros = np.full((n, k // block), 1 << (w - 1), np.uint8)
        node, inits = matmul_nbits_node("A", "Y", "linear", q, scales, zeros, w, block, accuracy_level)
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    graph = helper.make_graph([node], "linear", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])], inits)
    return helper.make_model(graph, opset_imports=opsets)


class _GraphRunner:
    """A :class:`~compresslab.bench.latency.measure_latency` runner of a one-node graph: it ignores
    the token batch and feeds its own fixed ``A``."""

    def __init__(self, path: Path, a: np.ndarray, threads: int, provider: str) -> None:
        from compresslab.bench.load_probe import make_session

        self.session, self.load_s = make_session(path, threads, provider)
        self.a, self.threads, self.provider = a, threads, provider

    def run(self, batch: Mapping[str, np.ndarray]) -> None:
        self.session.run(None, {"A": self.a})

    def info(self) -> dict[str, Any]:
        return {"kind": "onnxruntime", "provider": self.provider, "threads": self.threads,
                "input": list(self.a.shape), "load_s": round(self.load_s, 4)}


def measure_entries(entries: Sequence[Entry], s: NBitsTableSettings) -> tuple[dict[Entry, float], dict[str, Any]]:
    """Time every entry, interleaved in one :func:`~compresslab.bench.latency.measure_latency` call.

    Returns ``{entry: median seconds}`` and the raw record (per entry ``p50_ms``, ``p90_ms``,
    ``spread``, ``n``; the measurement's ``machine_load``). Runs inside the caller's timing window.
    """
    import onnx

    from compresslab.bench.latency import measure_latency

    threads, m = resolve_threads(s.threads), s.batch * s.seq
    rng = np.random.default_rng(0)
    inputs = {k: rng.standard_normal((m, k), dtype=np.float32) for k in sorted({e[0] for e in entries})}
    work = Path(tempfile.mkdtemp(prefix="nbits-latency-"))
    try:
        runners: dict[str, _GraphRunner] = {}
        for e in entries:
            path = work / f"{entry_key(e).replace('/', '_')}.onnx"
            onnx.save(linear_graph(e, s.accuracy_level), str(path))
            runners[entry_key(e)] = _GraphRunner(path, inputs[e[0]], threads, s.provider)
        res = measure_latency(runners, [(s.batch, s.seq)], warmup=s.warmup, runs=s.runs)
        del runners
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shape = f"b{s.batch}xs{s.seq}"
    stats = {key: {f: r[shape][f] for f in ("p50_ms", "p90_ms", "spread", "n")} for key, r in res["results"].items()}
    return ({e: stats[entry_key(e)]["p50_ms"] / 1e3 for e in entries},
            {"entries_ms": stats, "rows": m, "machine_load": res["machine_load"]})


Measure = Callable[[Sequence[Entry], NBitsTableSettings], tuple[dict[Entry, float], dict[str, Any]]]


def _parse(data: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any], dict[str, Any]]:
    times = {str(k): float(v) for k, v in data["times_s"].items()}
    if not all(np.isfinite(v) and v >= 0 for v in times.values()):
        raise ValueError("times must be finite and >= 0")
    return times, data["fingerprint"], data.get("info", {})


def build_nbits_table(shapes: Mapping[str, Shape], widths: Sequence[int], settings: NBitsTableSettings, *,
                      cache_dir: str | Path | None = None, fingerprint: Mapping[str, Any] | None = None,
                      measure: Measure | None = None) -> tuple[dict[str, dict[int, float]], dict[str, Any]]:
    """The latency table ``{module: {width: seconds}}`` for ``shapes`` (``{name: (in_features,
    out_features, quantization block)}``) at every width in ``widths`` (1–8 bits, 32 = fp32), measured
    on this machine or read from this machine's cache, and how it was made.

    The info: ``source`` (``"measured"`` / ``"cached"``), ``fingerprint`` (the environment the table
    is valid for), ``cache_file``, ``entries`` (distinct measurements), ``entries_ms`` (medians),
    ``machine_load`` (``busy``: then not cached, ``not_cached`` says why) and ``settings``.
    ``fingerprint`` and ``measure`` (default :func:`measure_entries`) are for tests.
    Raises ValueError for bad shapes or widths, MachineBusyError when training holds the timing lock
    past the wait.
    """
    rows = module_entries(shapes, widths)
    entries = sorted({e for row in rows.values() for e in row.values()}, key=str)
    env = environment(entries, settings, fingerprint)
    path = cache_file(cache_dir, env) if cache_dir is not None else None
    hit = read_cached(path, env, _parse, log=log, what="n-bit latency table", scope="these Linear shapes") \
        if path is not None else None
    if hit is not None:
        times, info = hit
        log.info("n-bit latency table: reusing %s (measured on this machine)", path)
        info = {**info, "source": "cached", "cached": True, "cache_file": str(path)}
    else:
        t0 = time.perf_counter()
        with timing_window("n-bit latency table") as window:
            measured, raw = (measure or measure_entries)(entries, settings)
        load = window.record()
        times = {entry_key(e): float(measured[e]) for e in entries}
        info = {**raw, "machine_load": load, "measure_s": round(time.perf_counter() - t0, 2),
                "settings": asdict(settings), "entries": len(entries)}
        stored = write_cached(path, {"times_s": times, "fingerprint": env, "info": info}, load, log=log,
                              what="n-bit latency table")
        info = {**info, **stored, "source": "measured"}
    missing = [entry_key(e) for e in entries if entry_key(e) not in times]
    if missing:  # a hand-edited cache file: the environment matched but entries are gone
        raise ValueError(f"n-bit latency table {path} lacks entries {missing[:3]}: delete it to re-measure")
    table = {name: {b: times[entry_key(e)] for b, e in row.items()} for name, row in rows.items()}
    return table, {**info, "fingerprint": env, "unit": "s"}


__all__ = ["ACCURACY_LEVELS", "FP32", "NBitsTableSettings", "TABLE_METHOD", "build_nbits_table", "cache_file",
           "deployed_width", "entry_key", "environment", "linear_graph", "measure_entries",
           "module_entries"]
