"""Which int8 format and which sparsity pattern engage DeepSparse's sparse int8 kernels on this CPU (issue #13).

Issue #13 asks for DeepSparse sparse int8 >= 3x ``ort_fp32`` at 80% sparsity, "or the exact reason its sparse
kernels do not engage". This benchmark answers the second half with speed alone: the pretrained MiniLM (the
embedded default model, a fresh 2-label head) dense, 80% unstructured magnitude and 80% 4-block magnitude (groups
of 4 consecutive input weights of a row ranked by L2 norm, VNNI's width), each encoder Linear pruned on its own,
no recovery. Accuracy does not decide which kernel DeepSparse runs, so nothing is scored: the files are speed
probes, not models to deploy.

Every model is exported plain (one fp32 MatMul per Linear, what DeepSparse reads) and as static int8 in each
format of ``bench.deepsparse.int8_formats``: ``qdq`` (Q/DQ pairs), ``qoperator`` (QLinearMatMul),
``matmulinteger`` (SparseML's exported form: :mod:`compresslab.export.matmul_integer`), calibrated on real SST-2
train examples. The denominator ``ort_fp32`` is the dense model's fused ORT graph as the pipeline's export makes
it (``model.onnx`` beside ``model_unfused.onnx``). One DeepSparse worker process times them all interleaved.

Derived (:func:`derive`): per model and format the speedup vs ``ort_fp32``; ``int8_over_fp32`` (an int8 file's
speedup over the same model's fp32 file on DeepSparse: below ~1.1x its int8 kernels do not run);
``sparse_over_dense`` (a sparse file's speedup over the dense file of the same format: >= ~1.2x means the sparse
kernels engaged); and a ``verdict`` written from those numbers.

    COMPRESSLAB_DEEPSPARSE_PYTHON=.venv-deepsparse/bin/python python benchmarks/deepsparse_kernels.py
    python benchmarks/deepsparse_kernels.py --sparsities 0.8 0.9 --runs 30
    python benchmarks/deepsparse_kernels.py --smoke --results /tmp/ds_smoke.json   # 2 rounds at b1, one sparsity
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from _results import ResultsFile, since, write_aside  # sibling module (script dir)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "deepsparse_kernels.json"
OUT = REPO / "outputs" / "deepsparse_kernels"
PATTERNS = {"unstructured": 1, "block4": 4}  # pattern -> group size (consecutive input weights of a row)
FORMATS = ("qdq", "qoperator", "matmulinteger")
SEQ = 128
INT8_RUNS = 1.1  # dense int8 at least this much faster than dense fp32 on DeepSparse: its int8 kernels run
SPARSE_ENGAGED = 1.2  # a sparse file at least this much faster than the dense file of its format: sparse kernels
TARGET = 3.0  # issue #13: sparse int8 >= 3x ort_fp32 ...
TARGET_SPARSITY = 0.8  # ... at 80%
SPEED_ONLY = ("speed only: the pretrained MiniLM magnitude-pruned with no recovery, so nothing is scored; "
              "accuracy does not decide which kernel DeepSparse runs")

log = logging.getLogger("deepsparse_kernels")


# ------------------------------------------------------------------------------------------------ models
def model_key(pattern: str, sparsity: float) -> str:
    """``dense``, ``unstructured_80``, ``block4_90``, ..."""
    return "dense" if pattern == "dense" else f"{pattern}_{round(sparsity * 100)}"


def model_specs(sparsities: Sequence[float]) -> list[dict[str, Any]]:
    """The models to build and time: dense first, then every pattern at every sparsity."""
    out = [{"key": "dense", "pattern": "dense", "sparsity": 0.0}]
    for s in sparsities:
        out += [{"key": model_key(p, s), "pattern": p, "sparsity": float(s)} for p in PATTERNS]
    return out


def label(model: str, fmt: str) -> str:
    """A file's label in the worker's latency table: ``<model>.<format>`` (``fp32`` or an int8 format)."""
    return f"{model}.{fmt}"


def prune(model: Any, sparsity: float, group_size: int) -> dict[str, float]:
    """Zero ``sparsity`` of every encoder Linear's weight groups by magnitude, each Linear on its own.

    A group is ``group_size`` consecutive weights of a row (the input dim: ``nn.Linear`` stores ``(out, in)``),
    ranked by L2 norm (oBERT's saliency with an identity Fisher); exactly ``round(sparsity * groups)`` groups
    are pruned per Linear (``global_prune_masks`` breaks ties by position). Returns name -> zero fraction."""
    import torch

    from compresslab.ops.obs import expand_group_mask, global_prune_masks, magnitude_scores
    from compresslab.targets import select_modules

    out: dict[str, float] = {}
    with torch.no_grad():
        for name, mod in select_modules(model).items():  # the encoder linears (q, k, v, o, ffn in/out)
            w = mod.weight
            if w.shape[1] % group_size:
                raise ValueError(f"{name}: {w.shape[1]} inputs are not a multiple of the group size {group_size}")
            flat = w.detach().reshape(-1).float()
            [group_mask] = global_prune_masks([magnitude_scores(flat, group_size)], None, sparsity)
            w.view(-1).masked_fill_(expand_group_mask(group_mask, group_size).to(w.device), 0.0)
            out[name] = float((w == 0).float().mean())
    return out


def calibration(tokenizer: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` seeded SST-2 train examples, tokenized (max length SEQ) in batches of 32."""
    from compresslab.data.loaders import calibration_examples, make_loader
    from compresslab.data.tasks import load_task, resolve_data_root

    task = load_task("sst2", resolve_data_root(None), seed=seed)
    examples = calibration_examples(task.train, n, seed)
    return list(make_loader(examples, tokenizer, 32, SEQ, shuffle=False, kind=task.spec.kind))


def check_builds(out: Path, specs: Sequence[Mapping[str, Any]], n_calibration: int, seed: int) -> None:
    """Refuse, before any work, a build dir made with other calibration settings (its files would be mixed in)."""
    for spec in specs:
        rec = out / spec["key"] / "build.json"
        if rec.is_file():
            from compresslab.manifest import read_json

            got = read_json(rec)
            want = {"calibration_examples": n_calibration, "seed": seed, "sparsity": spec["sparsity"]}
            diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
            if diff:
                raise SystemExit(f"{rec.parent} was built with other settings (recorded, asked): {diff}; "
                                 "delete it or pass --out DIR")


def build(out: Path, specs: Sequence[Mapping[str, Any]], formats: Sequence[str], n_calibration: int,
          seed: int) -> dict[str, Any]:
    """Export every model (fp32, plain) and its int8 files under ``out/<key>/``; files present are reused (each is
    written atomically; ``build.json``, written after the fp32 export, marks it done). Returns key -> record."""
    from compresslab.bench.deepsparse_backend import quantize_qdq_for_deepsparse
    from compresslab.checkpoint import load_pretrained
    from compresslab.export.matmul_integer import qdq_to_matmul_integer
    from compresslab.export.onnx import export_model
    from compresslab.export.optimize import plain_graph
    from compresslab.manifest import read_json
    from compresslab.models.loading import embedded_default_path
    from compresslab.targets import select_modules

    check_builds(out, specs, n_calibration, seed)
    source = embedded_default_path()
    base, tok = load_pretrained(source, kind="classification", num_labels=2, seed=seed)
    calib: list[dict[str, Any]] | None = None
    records: dict[str, Any] = {}
    for spec in specs:
        d, key = out / spec["key"], spec["key"]
        if not (d / "build.json").is_file():
            calib = calib or calibration(tok, n_calibration, seed)
            t0 = time.perf_counter()
            model = copy.deepcopy(base)
            zeros = prune(model, spec["sparsity"], PATTERNS[spec["pattern"]]) if spec["pattern"] != "dense" else {}
            linears = select_modules(model)  # the share of zeros over every encoder weight, not a mean of shares
            sparsity = sum(float((m.weight == 0).sum()) for m in linears.values()) / sum(
                m.weight.numel() for m in linears.values())
            # the dense model as the pipeline exports it: fused model.onnx (ort_fp32) + model_unfused.onnx
            export_model(model, tok, d, calib[:2], optimize=key == "dense")
            del model
            write_aside(d / "build.json", {
                **spec, "source": str(source), "calibration_examples": n_calibration, "seed": seed,
                "encoder_sparsity": sparsity,
                "encoder_sparsity_per_linear": zeros, "export_s": since(t0)})
        rec = read_json(d / "build.json")
        files = {"fp32": plain_graph(d, d / "model.onnx", "DeepSparse")}
        for fmt in formats:
            dst = d / f"int8_{fmt}.onnx"
            if not dst.is_file():
                calib = calib or calibration(tok, n_calibration, seed)
                if fmt == "matmulinteger":  # SparseML's form: a rewrite of the QDQ file
                    qdq = d / "int8_qdq.onnx"
                    if not qdq.is_file():
                        quantize_qdq_for_deepsparse(files["fp32"], qdq, calib, quant_format="qdq")
                    qdq_to_matmul_integer(qdq, dst)
                else:
                    quantize_qdq_for_deepsparse(files["fp32"], dst, calib, quant_format=fmt)
            files[fmt] = dst
        records[key] = {**rec, "files": {f: str(p) for f, p in files.items()}}
    records["dense"]["files"]["ort_fp32"] = str(out / "dense" / "model.onnx")
    return records


# ------------------------------------------------------------------------------------------------ derive
def _batch(shape: str) -> int:
    return int(shape.split("x")[0][1:])  # b32xs128 -> 32


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if not num or not den else round(num / den, 3)


def derive(p50: Mapping[str, Mapping[str, float]], specs: Sequence[Mapping[str, Any]], formats: Sequence[str], *,
           cpu_isa: Sequence[str] = (), version: str = "?") -> dict[str, Any]:
    """Cells, ratios and the verdict from a p50 table (label -> shape -> ms; ``ort_fp32`` and ``<model>.<fmt>``)."""
    ref = p50["ort_fp32"]
    shapes = sorted(ref, key=_batch, reverse=True)
    head = shapes[0]  # the largest batch: the figure
    all_fmts = ["fp32", *formats]
    cells: dict[str, dict[str, Any]] = {}
    int8_over_fp32: dict[str, dict[str, Any]] = {}
    sparse_over_dense: dict[str, dict[str, Any]] = {}
    for spec in specs:
        m = spec["key"]
        for f in all_fmts:
            row = p50.get(label(m, f)) or {}
            cells.setdefault(m, {})[f] = {
                **{f"b{_batch(s)}_ms": row.get(s) for s in shapes},
                **{f"b{_batch(s)}_speedup_vs_ort_fp32": _ratio(ref[s], row.get(s)) for s in shapes}}
            if f != "fp32":
                fp32 = p50.get(label(m, "fp32")) or {}
                int8_over_fp32.setdefault(m, {})[f] = {f"b{_batch(s)}": _ratio(fp32.get(s), row.get(s)) for s in shapes}
            if m != "dense":
                dense = p50.get(label("dense", f)) or {}
                sparse_over_dense.setdefault(m, {})[f] = {f"b{_batch(s)}": _ratio(dense.get(s), row.get(s))
                                                         for s in shapes}
    derived = {"headline_shape": head, "cells": cells, "int8_over_fp32": int8_over_fp32,
               "sparse_over_dense": sparse_over_dense,
               "thresholds": {"int8_runs": INT8_RUNS, "sparse_engaged": SPARSE_ENGAGED, "target": TARGET,
                              "target_sparsity": TARGET_SPARSITY}}
    derived["verdict"] = verdict(derived, specs, formats, cpu_isa=cpu_isa, version=version)
    return derived


def _listed(items: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {x:.2f}x" for name, x in items) or "none"


def verdict(derived: Mapping[str, Any], specs: Sequence[Mapping[str, Any]], formats: Sequence[str], *,
            cpu_isa: Sequence[str] = (), version: str = "?") -> str:
    """The answer in words, built from ``derived``'s numbers at its headline shape (never written by hand)."""
    head = derived["headline_shape"]
    b = f"b{_batch(head)}"
    dense_i8 = derived["int8_over_fp32"].get("dense", {})
    runs = [(f, dense_i8[f][b]) for f in formats if dense_i8.get(f, {}).get(b) is not None]
    int8_fmts = {f for f, x in runs if x >= INT8_RUNS}
    out = [f"At {head} on DeepSparse {version} (CPU {', '.join(cpu_isa) or 'flags unknown'}); {SPEED_ONLY}.",
           f"int8 kernels run (dense int8 >= {INT8_RUNS}x dense fp32 on DeepSparse) for: "
           f"{_listed([r for r in runs if r[0] in int8_fmts])}; not for: "
           f"{_listed([r for r in runs if r[0] not in int8_fmts])}."]
    for kind, fmts in (("fp32", ["fp32"]), ("int8", [f for f in formats if f in int8_fmts])):
        on, off = [], []
        for spec in specs:
            if spec["key"] == "dense":
                continue
            for f in fmts:
                x = derived["sparse_over_dense"][spec["key"]][f][b]
                if x is not None:
                    (on if x >= SPARSE_ENGAGED else off).append((f"{spec['key']} {f}" if kind == "int8"
                                                                 else spec["key"], x))
        skipped = [f for f in formats if f not in int8_fmts] if kind == "int8" else []
        out.append(f"Sparse {kind} kernels engage (sparse file >= {SPARSE_ENGAGED}x the dense file of its format) "
                   f"for: {_listed(on)}; not for: {_listed(off)}"
                   + (f" (not judged: {', '.join(skipped)}, whose int8 kernels do not run)" if skipped else "") + ".")
    at_target = [s["key"] for s in specs if s["key"] != "dense" and abs(s["sparsity"] - TARGET_SPARSITY) < 1e-9]
    best = max(((f"{m} {f}", derived["cells"][m][f][f"{b}_speedup_vs_ort_fp32"]) for m in at_target for f in formats
                if derived["cells"][m][f][f"{b}_speedup_vs_ort_fp32"] is not None), key=lambda t: t[1], default=None)
    if best is None:
        out.append(f"Target ({TARGET}x ort_fp32 at {TARGET_SPARSITY:.0%}): not judged, no sparse int8 file at "
                   f"{TARGET_SPARSITY:.0%} was timed.")
    else:
        out.append(f"Fastest sparse int8 file at {TARGET_SPARSITY:.0%}: {best[0]} {best[1]:.2f}x ort_fp32: target "
                   f"{TARGET}x {'met' if best[1] >= TARGET else 'not met'}.")
    return " ".join(out)


# ------------------------------------------------------------------------------------------------ main
def _args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.8])
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30, help="interleaved rounds per shape (at least)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--min-time-s", type=float, default=2.0)
    ap.add_argument("--calibration", type=int, default=128, help="SST-2 train examples for the int8 ranges")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT, help="build dir (files reused when present)")
    ap.add_argument("--results", type=Path, default=None,
                    help=f"results file (default {RESULTS.relative_to(REPO)}; --smoke: <out>/smoke_results.json)")
    ap.add_argument("--python", default=None, help="the DeepSparse venv's python (default: "
                                                   "$COMPRESSLAB_DEEPSPARSE_PYTHON, then .venv-deepsparse)")
    ap.add_argument("--smoke", action="store_true", help="2 rounds at b1 only, the first sparsity: checks the script")
    a = ap.parse_args(argv)
    if a.smoke:
        a.sparsities, a.batches, a.runs, a.warmup, a.min_time_s = a.sparsities[:1], [1], 2, 1, 0.0
        a.results = a.results or a.out / "smoke_results.json"  # never the committed results file
    a.results = a.results or RESULTS
    bad = [s for s in a.sparsities if not 0.0 < s < 1.0]
    if bad:
        ap.error(f"--sparsities must lie in (0, 1), got {bad}")
    if min(a.batches) < 1 or a.runs < 1 or a.threads < 1 or a.calibration < 1:
        ap.error("--batches, --runs, --threads and --calibration must be positive")
    return a


def main(argv: Sequence[str] | None = None) -> None:
    a = _args(argv)
    logging.basicConfig(level=logging.INFO)
    results = ResultsFile(a.results)  # stamps meta.machine_load on every write
    from compresslab.bench.deepsparse_backend import DeepSparseBench, by_runner, check_python, find_python
    from compresslab.bench.env import ISA_FLAGS, cpu_flags, hardware_fingerprint
    from compresslab.bench.machine_load import timing_window
    from compresslab.cli import setup_process
    from compresslab.manifest import git_sha

    python = find_python(a.python)  # no DeepSparse: fail before any export
    version = check_python(python)
    setup_process(a.threads, a.seed)
    specs = model_specs(a.sparsities)
    t0 = time.perf_counter()
    records = build(a.out.resolve(), specs, a.formats, a.calibration, a.seed)
    build_s = since(t0)
    models = {"ort_fp32": (records["dense"]["files"]["ort_fp32"], "ort")}
    for spec in specs:
        for f in ["fp32", *a.formats]:
            models[label(spec["key"], f)] = (records[spec["key"]]["files"][f], "deepsparse")
    job = DeepSparseBench(models=models, batches=tuple(a.batches), seq=SEQ, threads=a.threads, warmup=a.warmup,
                          runs=a.runs, min_time_s=a.min_time_s, max_runs=max(200, a.runs))
    results.restart_timings(builds="building the files before the timing phase")  # every figure is timed anew
    t0 = time.perf_counter()
    with timing_window("deepsparse kernels: every file, one worker, interleaved") as window:
        res = job.run(python)
    latency = by_runner(res["latency"])
    p50 = {k: {shape: v["p50_ms"] for shape, v in per.items()} for k, per in latency.items()}
    flags = cpu_flags()
    isa = [f for f in ISA_FLAGS if f in flags]
    out = {
        "question": "which int8 format and which sparsity pattern engage DeepSparse's sparse int8 kernels on this "
                    "CPU, and how fast each runs against ort_fp32",
        "note": SPEED_ONLY, "cpu_isa": isa, "deepsparse_version": version, "smoke": a.smoke,
        "models": {k: {f: r[f] for f in ("pattern", "sparsity", "encoder_sparsity") if f in r}
                   for k, r in records.items()},
        "latency": latency,
        "derived": derive(p50, specs, a.formats, cpu_isa=isa, version=version),
        "meta": {"git_sha": git_sha(), "hardware": hardware_fingerprint(a.threads), "versions": res["versions"],
                 "threads": a.threads, "seq": SEQ, "batches": a.batches, "runs": a.runs, "warmup": a.warmup,
                 "min_time_s": a.min_time_s, "calibration_examples": a.calibration, "seed": a.seed,
                 "formats": a.formats, "sparsities": a.sparsities, "compile_s": res["compile_s"],
                 "build_s": build_s, "timing_s": since(t0), "timing_window": window.record(),
                 "loadavg": os.getloadavg(), "files": {k: r["files"] for k, r in records.items()},
                 "how": "DeepSparse runs static shapes (an engine per batch at seq 128) on the plain graphs; "
                        "ort_fp32 is the dense model's fused ORT graph, timed in the same worker process, "
                        "interleaved; int8 files: static, MatMuls only, per-tensor weights, calibrated on SST-2 train",
                 "command": " ".join(["python benchmarks/deepsparse_kernels.py",
                                       *(sys.argv[1:] if argv is None else argv)])}}
    results.write(out)
    print(out["derived"]["verdict"])


if __name__ == "__main__":
    main()
