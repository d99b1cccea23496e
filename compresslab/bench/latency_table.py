"""Measure ZipLM's latency table (ALGORITHMS.md §4.3) on the deployment runtime, and cache it.

The runtime is ``TableSettings.runtime`` (:data:`RUNTIMES`): ``ort`` (the default, described below),
``ort_int8`` (each fused export quantized as ``ort_int8_dynamic`` deploys it: ORT dynamic int8, per-channel
weights), ``openvino`` (each probe's plain export on OpenVINO's CPU plugin at its default precision) or
``openvino_int8`` (each plain export turned into our int8 IR by :func:`as_deployed`, as a pipeline that
ends in int8 deploys it on OpenVINO): :mod:`compresslab.bench.latency_runtimes`, whose :func:`fastest_runtime`
picks one of several by timing the dense model. Probes, whole-model points, dense reference and candidate checks
all go through :func:`deploy_probe` / :func:`as_deployed` and :func:`make_runner`, so every time in one
table comes from one runtime; the OpenVINO runtimes add ``runtime``, the OpenVINO version and (int8)
the IR recipe to the environment a cached table is keyed on (``ort_int8``: the runtime and its quantizer
recipe).

What is timed is what we deploy: every entry comes from a *one-layer probe model* of the same
architecture, exported and fused by :mod:`compresslab.export` exactly like the real model (fused
``Attention`` with per-layer head counts, ``BiasGelu``, ``SkipLayerNormalization``; on ``ort_int8`` then
quantized), then run by the same :class:`~compresslab.bench.runners.OrtRunner` session settings at the
user's batch x seq (on the OpenVINO runtimes: the plain export, or our int8 IR of it, on OpenVINO).
Timing a lone sub-block graph instead would miss the fusions ORT only finds in a whole encoder.

* ``t_att(h) = T(probe with h heads, no FFN) - T(probe with no heads, no FFN)``
* ``t_ffn(n) = T(probe with no heads, n neurons) - T(same base probe)``

Sizes that are no faster than a larger size are dropped (see :func:`efficient_sizes`), so the
table is strictly increasing and the search only sees widths worth choosing.

The base probe (embeddings, LayerNorms, head: cost that never changes) is interleaved with every
chunk of probes, so slow drift on a shared machine cancels in the differences. The dense model is
timed in the first chunk for ``T_dense`` and ``t_0 = T_dense - L (t_att(H) + t_ffn(F))``. Probes
run in chunks because every ORT session keeps its own memory arena (dozens at b32 x s128 would
take gigabytes).

Tables are cached as JSON under ``cache_dir/latency/<model+shape>/<environment hash>.json`` by
:mod:`compresslab.bench.table_cache` (shared with the n-bit table). The environment covers the CPU
model and ISA, the onnxruntime/torch/transformers versions, threads, provider, batch x seq and the
architecture; a table from another environment is never used, and when one exists the log says which
facts differ before measuring anew. A table measured on a busy machine
(:mod:`compresslab.bench.machine_load`: other processes' CPU use before or during the timing, or a
training lock overridden) is used for this run, with a loud warning, but never cached: a later run
on a quiet machine measures it again.

**Whole-model calibration** (issue #13). One-layer probes price a module out of context: on the
bench teacher the table predicted 2.82x for a member that measured 2.17x, and the error grew the
more a layer was shrunk. So, in the same timing window, a few whole models are timed
interleaved (:func:`calibration_points`: the dense export, uniform shrinks to
``TableSettings.calibration_fractions`` of every layer's heads and FFN, every attention removed,
every FFN removed, both removed) and :func:`~compresslab.ops.spdy.fit_fixed_costs` fits
``T = t_0 + sum over present modules (c_kind + scale * t_kind(s))`` to them by least squares.
The returned table has that model folded in (a module with ``s = 0`` still costs 0, so the DP
sees the fixed cost a layer saves when it loses a whole module); the one-layer table, the fit
and every point's measured vs predicted time (before and after) are in ``info["raw"]["calibration"]``
and are cached with the table.

**Linear model** (``latency_model=linear``, :func:`linear_table`). The one-layer probes scatter a few
percent around a line in size (timing noise, tile effects that whole models do not reproduce), and a
search that minimises error under a budget picks the sizes whose probes came out low, so its structures
run slower than priced (first tries at 0.91-0.95 of the target on the bench teachers). The linear model
puts each kind's probes on their least-squares line and refits the fixed costs to the same whole-model
points: the same cached measurement, nothing timed again. The line goes through the sizes the table
kept: dominated sizes (probes that came out higher than a larger size's) were dropped before, so it
may lean a little low, and those sizes stay unpriced.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from compresslab.bench.env import LATENCY_KEYS, hardware_fingerprint, resolve_threads
from compresslab.bench.latency_probes import deploy_probe, export_probe, probe_model, uniform_model
from compresslab.bench.latency_runtimes import ORT_INT8_RECIPE, RUNTIMES, make_runner, reads_plain
from compresslab.bench.machine_load import timing_window
from compresslab.bench.table_cache import environment_facts, read_cached, stable_hash, write_cached
from compresslab.ops.spdy import FixedCostFit, LatencyTable, fit_fixed_costs

if TYPE_CHECKING:  # torch stays unloaded until a table is measured (bench imports stay light)
    from torch import nn

log = logging.getLogger(__name__)

TABLE_METHOD = 2  # bump when the probes or the arithmetic change: older caches are re-measured
# 2: whole-model calibration (fixed cost per present module + scale) folded into the table
ENV_KEYS = (*LATENCY_KEYS, "libraries.torch", "libraries.transformers")


@dataclass(frozen=True)
class TableSettings:
    """Where and how to measure: the deployment shape and runtime, and the timing effort."""

    batch: int = 32
    seq: int = 128
    threads: int | None = None  # None = physical cores, as the bench stage does
    provider: str = "CPUExecutionProvider"  # ORT's execution provider (runtime "ort")
    # what is timed: "ort" (the fused fp32 export on ONNX Runtime), "ort_int8" (the fused export as ORT dynamic int8,
    # ORT_INT8_RECIPE), "openvino" (the plain export on OpenVINO's CPU plugin at its default precision: bf16 on CPUs
    # with AVX512-BF16 or AMX) or "openvino_int8" (the plain export as our int8 IR, export/openvino_int8.py: where
    # the pipeline deploys int8 on OpenVINO). See RUNTIMES.
    runtime: str = "ort"
    ffn_grid: int = 32  # FFN widths priced: multiples of this (tile-friendly), plus 0 and d_ff
    warmup: int = 3
    runs: int = 30  # interleaved rounds; medians over them
    chunk: int = 8  # probes per interleaved chunk (each chunk also runs the base probe)
    # whole-model calibration: uniform shrinks of every layer to these fractions of the dense
    # heads and FFN width (plus dense, no attention, no FFN, neither: see calibration_points)
    calibration_fractions: tuple[float, ...] = (0.5, 0.25, 0.125)

    def __post_init__(self) -> None:
        for name in ("batch", "seq", "ffn_grid", "runs", "chunk"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"latency table {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"latency table warmup must be >= 0, got {self.warmup}")
        fractions = tuple(float(f) for f in self.calibration_fractions)
        if not fractions or not all(0.0 < f < 1.0 for f in fractions):
            raise ValueError("latency table calibration_fractions must be one or more fractions in (0, 1) "
                             f"(the uniform shrinks the fixed costs are fitted on), got {self.calibration_fractions!r}")
        object.__setattr__(self, "calibration_fractions", fractions)  # a list from YAML becomes a tuple
        if self.runtime not in RUNTIMES:
            raise ValueError(f"latency table runtime must be one of {list(RUNTIMES)}, got {self.runtime!r}")
        resolve_threads(self.threads)

    def check_runtime(self) -> None:
        """Raise RuntimeError when this runtime's library is not installed (before any export or timing)."""
        if reads_plain(self.runtime):
            from compresslab.bench.openvino_runner import openvino_missing_reason

            if (why := openvino_missing_reason()) is not None:
                raise RuntimeError(f"latency runtime {self.runtime!r}: {why}")


def ffn_sizes(d_ff: int, grid: int) -> list[int]:
    """FFN widths with a table entry: 0, grid, 2 grid, ... and d_ff itself."""
    return sorted({*range(0, d_ff, grid), d_ff})


def arch_signature(model: nn.Module) -> dict[str, Any]:
    """The dense architecture facts a table depends on (from the config, not current shapes)."""
    from compresslab.export.optimize import heads_and_hidden

    cfg = model.config
    heads, hidden = heads_and_hidden(cfg)
    get = lambda *names: next(getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None)  # noqa: E731
    return {"model_type": cfg.model_type, "hidden": hidden, "heads": heads, "head_size": hidden // heads,
            "ffn": int(get("intermediate_size", "hidden_dim")), "layers": int(get("num_hidden_layers", "n_layers")),
            "vocab": int(cfg.vocab_size), "class": type(model).__name__}


def environment(model: nn.Module, s: TableSettings, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every fact a measured table is valid for (flat, so mismatches are easy to name)."""
    fp = fingerprint if fingerprint is not None else hardware_fingerprint(resolve_threads(s.threads))
    env = environment_facts(fp, ENV_KEYS)
    env.update({"provider": s.provider, "batch": s.batch, "seq": s.seq, "ffn_grid": s.ffn_grid,
                "calibration_fractions": list(s.calibration_fractions), "arch": arch_signature(model),
                "method": TABLE_METHOD})
    # ORT fp32 tables keep the environment (and cache files) they had before runtimes existed
    if s.runtime == "ort_int8":
        env.update({"runtime": s.runtime, "int8_recipe": ORT_INT8_RECIPE})
    elif s.runtime != "ort":
        import openvino

        from compresslab.export.openvino_int8 import RECIPE

        env.update({"runtime": s.runtime, "libraries.openvino": openvino.__version__.split("-")[0]})
        if s.runtime == "openvino_int8":
            env["int8_recipe"] = RECIPE
    return json.loads(json.dumps(env, sort_keys=True, default=str))


def cache_file(cache_dir: Path, env: dict[str, Any]) -> Path:
    """``latency/<arch+shape>/<env hash>.json``: siblings are the same model on other machines."""
    a = env["arch"]
    group = f"{a['model_type']}-L{a['layers']}-H{a['hidden']}-b{env['batch']}xs{env['seq']}-{stable_hash(a, 8)}"
    return Path(cache_dir) / "latency" / group / f"{stable_hash(env)}.json"


def _parse(data: dict[str, Any]) -> tuple[LatencyTable, dict[str, Any], dict[str, Any]]:
    """A cache file's table, the environment it was measured in, and its info."""
    table = LatencyTable.from_dict(data["table"])
    return table, table.fingerprint, data.get("info", {})


def _read_cached(path: Path, env: dict[str, Any]) -> tuple[LatencyTable, dict[str, Any]] | None:
    """The cached table if it was measured in exactly ``env``; log why not otherwise."""
    return read_cached(path, env, _parse, log=log, what="latency table", scope="this model and shape")


Progress = Callable[..., Any]


def build_latency_table(model: nn.Module, dense_onnx: str | Path, settings: TableSettings, *,
                        cache_dir: str | Path | None = None, fingerprint: dict[str, Any] | None = None,
                        progress: Progress | None = None) -> tuple[LatencyTable, dict[str, Any]]:
    """The table for ``model``'s architecture (cached), and facts about how it was made.

    ``dense_onnx`` is the file of ``model`` that ``settings.runtime`` deploys, timed for ``T_dense``
    (:func:`as_deployed`): the fused export on ORT or its dynamic int8 (``ort_int8``), the plain export or its int8
    IR on OpenVINO.
    ``fingerprint`` overrides :func:`~compresslab.bench.env.hardware_fingerprint` (tests).
    The facts include ``machine_load`` (``busy``: then the table is not cached, and
    ``not_cached`` says why). Raises MachineBusyError when training holds the lock past the wait,
    ValueError when ``settings.seq`` exceeds the model's position table, RuntimeError when the runtime is not
    installed (both before any timing).
    """
    from compresslab.models.loading import check_max_length

    check_max_length(settings.seq, model.config, "latency table seq")
    settings.check_runtime()
    env, path, hit = _lookup(model, settings, cache_dir, fingerprint)
    if hit is not None:
        return hit
    t0 = time.perf_counter()
    with timing_window("latency table") as window:
        table, raw = measure_table(model, dense_onnx, settings, env, progress=progress)
    load = window.record()
    info = {"raw": raw, "measure_s": round(time.perf_counter() - t0, 2), "settings": asdict(settings),
            "machine_load": load}
    stored = write_cached(path, {"table": table.to_dict(), "info": info}, load, log=log, what="latency table")
    return table, {**info, **stored}


def cached_latency_table(model: nn.Module, settings: TableSettings, *, cache_dir: str | Path | None,
                         fingerprint: dict[str, Any] | None = None) -> tuple[LatencyTable, dict[str, Any]] | None:
    """The table :func:`build_latency_table` would reuse from ``cache_dir`` for ``model``'s architecture, and its
    info; None when it would measure one (nothing is exported or timed here). The preflight asks this first, so a
    cached table costs it no export of the dense model."""
    return _lookup(model, settings, cache_dir, fingerprint)[2]


def _lookup(model: nn.Module, settings: TableSettings, cache_dir: str | Path | None,
            fingerprint: dict[str, Any] | None) -> tuple[dict[str, Any], Path | None,
                                                         tuple[LatencyTable, dict[str, Any]] | None]:
    """``model``'s environment, its cache file (None without ``cache_dir``) and the cached table there, if valid."""
    env = environment(model, settings, fingerprint)
    path = cache_file(Path(cache_dir), env) if cache_dir is not None else None
    if path is None or (hit := _read_cached(path, env)) is None:
        return env, path, None
    log.info("latency table: reusing %s", path)
    return env, path, (hit[0], {**hit[1], "cached": True, "cache_file": str(path)})


def measure_table(model: nn.Module, dense_onnx: str | Path, s: TableSettings, env: dict[str, Any], *,
                  progress: Progress | None = None) -> tuple[LatencyTable, dict[str, Any]]:
    """Export every probe, time them chunk by chunk against the base probe, build the table."""
    from compresslab.bench.latency import measure_latency

    arch = env["arch"]
    H, F, L = arch["heads"], arch["ffn"], arch["layers"]
    wanted = [("attention", h) for h in range(H, 0, -1)] + [("ffn", n) for n in reversed(ffn_sizes(F, s.ffn_grid)) if n]
    key = f"b{s.batch}xs{s.seq}"
    work = Path(tempfile.mkdtemp(prefix="latency-probes-"))
    try:
        paths: dict[tuple[str, int], Path] = {}
        for kind, size in _track(progress, [("base", 0), *wanted], "latency table: export probes"):
            heads, ffn = (size, 0) if kind == "attention" else (0, size if kind == "ffn" else 0)
            paths[(kind, size)] = deploy_probe(probe_model(model, heads, ffn), work / f"{kind}_{size}.onnx", s,
                                               1 if heads else 0)
        chunks = [wanted[i:i + s.chunk] for i in range(0, len(wanted), s.chunk)]
        p50: dict[tuple[str, int], float] = {}
        raw: dict[str, Any] = {"base_ms": [], "probes_ms": {}}
        for ci, chunk in enumerate(_track(progress, chunks, "latency table: time probe chunks")):
            runners: dict[str, Any] = {"base": make_runner(paths[("base", 0)], s)}
            runners.update({f"{k}_{n}": make_runner(paths[(k, n)], s) for k, n in chunk})
            if ci == 0:  # ids are drawn below the smallest declared vocabulary (the dense one here)
                runners["dense"] = make_runner(dense_onnx, s, vocab_size=arch["vocab"])
            res = measure_latency(runners, [(s.batch, s.seq)], warmup=s.warmup, runs=s.runs)["results"]
            base = res["base"][key]["p50_ms"]
            raw["base_ms"].append(base)
            for k, n in chunk:
                ms = res[f"{k}_{n}"][key]["p50_ms"]
                raw["probes_ms"][f"{k}_{n}"] = ms
                p50[(k, n)] = max(0.0, ms - base) / 1e3
            if ci == 0:
                raw["dense_ms"] = res["dense"][key]["p50_ms"]
            del runners, res
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tables = {kind: efficient_sizes({0: 0.0, **{n: t for (k, n), t in p50.items() if k == kind}})
              for kind in ("attention", "ffn")}
    raw["dominated"] = {k: sorted({n for (kk, n) in p50 if kk == k} - set(tables[k])) for k in tables}
    table = LatencyTable.from_dense(raw["dense_ms"] / 1e3, tables, {"attention": L, "ffn": L}, env)
    if table.base_time < 0:
        log.warning("latency table: T_dense is below the sum of module times (t_0 = %.4g s): the "
                    "additive model overestimates; clamping t_0 to 0", table.base_time)
        table = LatencyTable(0.0, table.module_times, env)
    fit, raw["calibration"] = measure_calibration(model, dense_onnx, table, s, env, progress=progress)
    return fit.apply(table), raw


def calibration_points(table: LatencyTable, heads: int, ffn: int, layers: int,
                       fractions: tuple[float, ...]) -> dict[str, dict[str, list[int]]]:
    """The whole models the fixed costs are fitted on, by name: ``{"attention": [...], "ffn": [...]}``.

    ``dense``; ``uniform_<f>`` for each fraction (every layer at the table size nearest to
    ``f`` x dense, at least the smallest non-zero size, ties to the larger); ``no_attention`` and
    ``no_ffn`` (one kind removed in every layer: only these separate each kind's fixed cost from
    ``t_0``); ``empty`` (both removed: ``t_0`` itself). A uniform shrink that lands on an
    earlier point's shape is left out.
    """
    def nearest(kind: str, x: float) -> int:
        return min((n for n in table.sizes(kind) if n > 0), key=lambda n: (abs(n - x), -n))

    shapes = {"dense": (heads, ffn)}
    for f in fractions:
        shapes[f"uniform_{f:g}"] = (nearest("attention", f * heads), nearest("ffn", f * ffn))
    shapes.update({"no_attention": (0, ffn), "no_ffn": (heads, 0), "empty": (0, 0)})
    points: dict[str, dict[str, list[int]]] = {}
    for name, (h, n) in shapes.items():
        config = {"attention": [h] * layers, "ffn": [n] * layers}
        if config not in points.values():
            points[name] = config
    return points


def measure_calibration(model: nn.Module, dense_onnx: str | Path, table: LatencyTable, s: TableSettings,
                        env: dict[str, Any], *, progress: Progress | None = None
                        ) -> tuple[FixedCostFit, dict[str, Any]]:
    """Time the :func:`calibration_points` interleaved (one call), fit the fixed costs to them.

    Returns the fit and its record: the fit in ms, the one-layer ``table`` (so the uncorrected
    model stays available), and per point the shape, the measured time and the time predicted by
    the one-layer table (``before_ms``) and by the fitted model (``after_ms``).
    """
    from compresslab.bench.latency import measure_latency, shape_key

    arch = env["arch"]
    points = calibration_points(table, arch["heads"], arch["ffn"], arch["layers"], s.calibration_fractions)
    key, vocab = shape_key(s.batch, s.seq), arch["vocab"]
    work = Path(tempfile.mkdtemp(prefix="latency-calibration-"))
    try:
        paths: dict[str, Path] = {"dense": Path(dense_onnx)}  # the deployed export the speedups are against
        for name in _track(progress, [n for n in points if n != "dense"], "latency table: export whole models"):
            h, n = points[name]["attention"][0], points[name]["ffn"][0]
            paths[name] = deploy_probe(uniform_model(model, h, n), work / f"{name}.onnx", s, arch["layers"] if h else 0)
        runners = {name: make_runner(path, s, vocab_size=vocab) for name, path in paths.items()}
        res = measure_latency(runners, [(s.batch, s.seq)], warmup=s.warmup, runs=s.runs)["results"]
        del runners
    finally:
        shutil.rmtree(work, ignore_errors=True)
    measured = [res[name][key]["p50_ms"] / 1e3 for name in points]
    # every uniform shrink landed on the dense shape when the table's only non-zero size per kind is
    # the full one: then nothing is scaled and the fixed costs alone carry the correction
    fit_scale = any(name.startswith("uniform_") for name in points)
    if not fit_scale:
        log.warning("latency calibration: the table prices only removed or full modules (sizes %s), so no "
                    "uniform shrink differs from dense; the scale stays 1 and only t_0 and the fixed costs are "
                    "fitted", {k: table.sizes(k) for k in table.module_times})
    fit, record = calibration_record(table, points, measured, fit_scale)
    log.info("latency calibration: fixed costs %s ms, scale %.3f, t_0 %.2f ms; worst relative error "
             "%.1f%% with the one-layer table, %.1f%% fitted",
             {k: round(v * 1e3, 3) for k, v in fit.fixed.items()}, fit.scale, fit.base_time * 1e3,
             100 * record["max_abs_rel_error_before"], 100 * record["max_abs_rel_error_after"])
    return fit, {**record, "one_layer_table": table.to_dict()}


def calibration_record(table: LatencyTable, points: dict[str, dict[str, list[int]]], measured: list[float],
                       fit_scale: bool) -> tuple[FixedCostFit, dict[str, Any]]:
    """Fit the fixed costs of ``table`` to whole-model times and record every point before and after.

    ``points``: name -> ``{"attention": [heads per layer], "ffn": [neurons per layer]}`` (as
    :func:`calibration_points` names them); ``measured``: their times in seconds, in the same order.
    Returns the fit and the record :func:`measure_calibration` stores (times in ms), which
    :func:`linear_table` refits from. Raises ValueError (from ``fit_fixed_costs``) on too few points.
    """
    fit = fit_fixed_costs(table, list(points.values()), measured, fit_scale=fit_scale)
    fitted = fit.apply(table)
    rows = []
    for (name, config), t in zip(points.items(), measured, strict=True):
        before, after = table.predict(config), fitted.predict(config)
        rows.append({"name": name, "heads": config["attention"][0], "ffn": config["ffn"][0],
                     "measured_ms": t * 1e3, "before_ms": before * 1e3, "after_ms": after * 1e3,
                     "before_rel_error": before / t - 1, "after_rel_error": after / t - 1})
    worst = {w: max(abs(r[f"{w}_rel_error"]) for r in rows) for w in ("before", "after")}
    return fit, {"model": "T = t_0 + sum over present modules (fixed[kind] + scale * t_kind(size))",
                 "fit_ms": {"t_0": fit.base_time * 1e3, "fixed": {k: v * 1e3 for k, v in fit.fixed.items()},
                            "scale": fit.scale},
                 "scale_fitted": fit_scale, "fit": fit.to_dict(), "points": rows,
                 "max_abs_rel_error_before": worst["before"], "max_abs_rel_error_after": worst["after"]}


def one_layer_table(info: dict[str, Any]) -> LatencyTable:
    """The uncorrected one-layer table from :func:`build_latency_table`'s ``info`` (to compare).

    Raises ValueError when ``info`` has no calibration record (a table not made by this method).
    """
    try:
        return LatencyTable.from_dict(info["raw"]["calibration"]["one_layer_table"])
    except (KeyError, TypeError) as e:
        raise ValueError("this latency table has no one-layer table in its record (made before the whole-model "
                         f"calibration, TABLE_METHOD {TABLE_METHOD}): delete its cache file to re-measure") from e


def linear_table(info: dict[str, Any]) -> tuple[LatencyTable, dict[str, Any]]:
    """The calibrated model on a linearised one-layer table (``latency_model=linear``), and its record.

    The cached one-layer table is put on one least-squares line per module type
    (:meth:`~compresslab.ops.spdy.LatencyTable.linear_in_size`: the search can no longer pick sizes whose
    probes came out low by chance), then the fixed costs and scale are refitted to the same whole-model
    timings the calibrated model used. No new timing. The record holds the lines (ms, ms per head or
    neuron), the fit and every calibration point's measured vs predicted time (``before``: the
    linearised table alone, ``after``: with the fit). Raises ValueError like :func:`one_layer_table`.
    """
    one = one_layer_table(info)
    cal = info["raw"]["calibration"]
    layers = int(one.fingerprint["arch"]["layers"])
    points = {r["name"]: {"attention": [int(r["heads"])] * layers, "ffn": [int(r["ffn"])] * layers}
              for r in cal["points"]}
    measured = [float(r["measured_ms"]) / 1e3 for r in cal["points"]]
    line_table, lines = one.linear_in_size()
    fit, record = calibration_record(line_table, points, measured, bool(cal.get("scale_fitted", True)))
    record["lines_ms"] = {k: {"intercept": a * 1e3, "slope": b * 1e3} for k, (a, b) in lines.items()}
    record["model"] = ("T = t_0 + sum over present modules (fixed[kind] + scale * max(0, a_kind + b_kind * size)); "
                       "a, b: least-squares line through the one-layer table")
    return fit.apply(line_table), record


def efficient_sizes(times: dict[int, float]) -> dict[int, float]:
    """Drop every size that is no faster than some larger size; the rest is strictly increasing.

    Latency is tile-quantized, not monotone: on AVX-512 an FFN of 448 neurons can run slower than
    one of 512. Averaging such violators away (isotonic smoothing) would misprice both sizes;
    a dominated size has more error and no less time, so the search should never pick it.
    The full size and 0 are always kept.
    """
    sizes = sorted(times, reverse=True)
    kept, best = {sizes[0]: times[sizes[0]]}, times[sizes[0]]
    for n in sizes[1:]:
        if n == 0 or times[n] < best:
            kept[n], best = times[n], min(best, times[n])
    return dict(sorted(kept.items()))


def _track(progress: Progress | None, iterable: Any, desc: str) -> Any:
    return iterable if progress is None else progress(iterable, total=len(iterable), desc=desc)
