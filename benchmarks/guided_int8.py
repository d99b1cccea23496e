"""Sensitivity-guided int8 (issue 10) vs plain all-int8 on the cached ``bench`` teacher (SST-2).

    python benchmarks/guided_int8.py                 # the measurement: results/guided_int8.json (~10-15 min, 2 cores)
    python benchmarks/guided_int8.py --carve grouped --val-size 500   # selected on a carve that looks like dev:
                                                     # results/guided_int8_grouped500.json
    python benchmarks/guided_int8.py --quick         # smoke: 128 validation / 128 dev examples, 2 timing runs,
                                                     # written to outputs/guided_int8_quick.json (not results/)
    python benchmarks/guided_int8.py --carve grouped --val-size 500 --per-token
                                                     # each MatMul per-call int8, per-token int8 or fp32:
                                                     # results/guided_int8_per_token_grouped500.json
    python benchmarks/guided_int8.py --embeddings blockwise   # the int8 pass's default tables since 2026-12-05
                                                     # (export/embedding_int8.py): results/guided_int8_blockwise.json

The ``bench`` teacher of the named validation carve (``task.val_carve``/``task.val_size``; found in
the teacher cache by content, as a pipeline's finetune step finds it, and trained there if missing) is
exported and fused (ORT's graph, the one we deploy). The fp32 fallback set is chosen on the
VALIDATION split (the random carve: 1,000 examples carved from train, seed 42 as in the bench runs;
``--carve grouped``: whole sentences whose phrases are kept out of train, which scores like dev:
results/val_carve.json) against the fp32 graph's outputs, by both sensitivities (``single_int8``,
``single_fp32``), under speedup >= 0.9 x the all-int8 speedup at b32xs128 (quant/guided_int8.py);
dev is the test split, never selected on. Agreement on dev is with the torch teacher's predictions.
Latency: ORT fp32, all-int8 and the guided model(s), one process, interleaved, b32xs128 and
b1xs128 medians, 2 threads. Scores and speed come from the same files. Nothing else may run on
the machine while it measures (its load is recorded in meta.machine_load, and the load average).

``--embeddings blockwise``: the word table as block-wise int8 codes in every file (the pass's ``embeddings``
default since 2026-12-05; the default here stays ORT's per-tensor tables, which the earlier files measured); the
choice is scored against the fp32 graph before the tables were quantized, and ``all_int8`` is then the all-int8 file
with the same tables (``all_int8_per_tensor_tables`` is timed beside it; the speed target then holds against
both).

``--per-token``: the pass's ``activations: per_token`` with ``fp32_fallback: guided``: each weight MatMul is
per-call int8, per-token int8 or fp32 and each Attention int8 or fp32, by all three estimates (``single_per_call``
too). The file then also times ``per_token`` (every MatMul per token, every Attention fp32: the plain
``activations: per_token`` pass) beside the guided choice.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results" / "guided_int8.json"
QUICK_OUT = REPO / "outputs" / "guided_int8_quick.json"
THREADS = 2
SEED = 42  # the bench runs' seed: the same validation carve
SHAPES = ((32, 128), (1, 128))
ISA_FLAGS = ("amx_int8", "amx_bf16", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")

log = logging.getLogger("guided_int8")


def main(argv: list[str]) -> None:
    from compresslab.bench import OrtRunner, measure_latency, speedups
    from compresslab.bench.env import cpu_flags, hardware_fingerprint
    from compresslab.bench.latency import shape_key
    from compresslab.cli import setup_process
    from compresslab.data.loaders import make_loader
    from compresslab.eval.evaluate import compare, onnx_forward, predict, torch_forward
    from compresslab.eval.onnx_runner import OnnxRunner
    from compresslab.export import export_model
    from compresslab.export.embedding_int8 import blockwise_word_embeddings
    from compresslab.export.ort_quant import quantize_dynamic_int8
    from compresslab.bench.machine_load import timing_window
    from compresslab.manifest import git_sha, library_versions
    from compresslab.export.per_token_int8 import per_token_activations
    from compresslab.quant.guided_int8 import Choice, guided_int8, make_build

    from _carve_teacher import add_carve_args, carve_label, carve_teacher, teacher_meta  # sibling modules
    from _results import ResultsFile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_carve_args(ap)
    ap.add_argument("--quick", action="store_true", help="small smoke run; never writes results/")
    ap.add_argument("--runs", type=int, default=30, help="interleaved timing rounds of the final measurement")
    ap.add_argument("--latency-runs", type=int, default=10, help="the method's own timing rounds (cost model, check)")
    ap.add_argument("--latency-ratio", type=float, default=0.9)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--per-token", action="store_true", help="per-token int8 as a third choice per MatMul")
    ap.add_argument("--embeddings", choices=["per_tensor", "blockwise"], default="per_tensor",
                    help="the word table in every int8 file (the int8 pass's `embeddings`)")
    a = ap.parse_args(argv)
    if a.quick:
        a.runs, a.latency_runs = 2, 2
    label = (("_per_token" if a.per_token else "") + ("_blockwise" if a.embeddings == "blockwise" else "")
             + carve_label(a))
    out_path = a.out or (QUICK_OUT.with_stem(QUICK_OUT.stem + label) if a.quick
                         else RESULTS.with_stem(RESULTS.stem + label))
    results = ResultsFile(out_path)  # stamps meta.machine_load: the method's timings and the final one
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    setup_process(THREADS, SEED)
    load0 = os.getloadavg()
    t_start = time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix="guided-int8-"))
    carved = carve_teacher(a, SEED, work)
    teacher, tok, task = carved.model.eval(), carved.tokenizer, carved.task
    log.info("teacher: %s carve, validation %d, train %d", a.carve, len(task.validation), len(task.train))
    n = 128 if a.quick else None
    splits = {"validation": list(task.validation)[:n], "dev": list(task.dev)[:n]}
    kw = dict(batch_size=32, max_length=128)
    ref = {s: predict(torch_forward(teacher), task.spec, ex, tok, **kw) for s, ex in splits.items()}

    sample = list(make_loader(splits["validation"][:64], tok, 32, 128))
    exp = export_model(teacher, tok, work / "export", sample, threads=THREADS, keep_unfused=False)
    fp32 = exp.onnx_path
    src, exclude, emb = Path(fp32), [], None  # the graph int8 files are made of, and the nodes left alone
    if a.embeddings == "blockwise":
        emb = blockwise_word_embeddings(fp32, work / "embeddings_int8.onnx")
        src, exclude = work / "embeddings_int8.onnx", emb["exclude"]

    def quantize(s: Path, d: Path, **nodes: Any) -> Any:  # as guided_int8 quantizes: the embedding nodes left alone
        if exclude and "nodes_to_quantize" not in nodes:
            nodes = {**nodes, "nodes_to_exclude": sorted({*nodes.get("nodes_to_exclude", ()), *exclude})}
        return quantize_dynamic_int8(s, d, **nodes)

    feeds = [{k: v.numpy() for k, v in b.items() if k != "labels"}
             for b in make_loader(splits["validation"], tok, 32, 128)]
    t0 = time.perf_counter()
    rec = guided_int8(src, work / "guided.onnx", feeds, sensitivity="auto", latency_ratio=a.latency_ratio,
                      threads=THREADS, latency_runs=a.latency_runs, vocab_size=int(tok.vocab_size),
                      per_token=a.per_token, exclude=exclude, reference=fp32)
    method_s = time.perf_counter() - t0
    rec.pop("quantize_metrics")
    files = {"ort_fp32": fp32, "all_int8": work / "all_int8.onnx", "guided": work / "guided.onnx"}
    quantize(src, files["all_int8"])
    if emb is not None:  # ORT's own tables: the speed every earlier file was compared with
        files["all_int8_per_tensor_tables"] = work / "all_int8_per_tensor_tables.onnx"
        quantize_dynamic_int8(fp32, files["all_int8_per_tensor_tables"])
    build = make_build(src, quantize, work)
    for m, sel in rec["selections"].items():  # each sensitivity's own set, for the record (dev is not selected on)
        if m != rec["winner"] and (sel["fp32_matmuls"] or sel["per_token_matmuls"]):
            files[f"guided_{m}"] = work / f"guided_{m}.onnx"
            build({**{n: Choice.FP32 for n in sel["fp32_matmuls"]},
                   **{n: Choice.PER_TOKEN for n in sel["per_token_matmuls"]}}, files[f"guided_{m}"])
    if a.per_token:  # the plain per-token pass: every MatMul per token, every Attention fp32
        files["per_token"] = work / "per_token.onnx"
        quantize_dynamic_int8(src, work / "matmul_per_call.onnx", op_types=["MatMul"], nodes_to_exclude=exclude)
        per_token_activations(work / "matmul_per_call.onnx", files["per_token"])

    models: dict[str, dict[str, Any]] = {}
    for name, path in files.items():
        fwd = onnx_forward(OnnxRunner(path, threads=THREADS))
        models[name] = {s: compare(predict(fwd, task.spec, ex, tok, **kw), ref[s], task.spec)
                        for s, ex in splits.items()}
        models[name]["size_bytes"] = path.stat().st_size
        log.info("%s: validation agreement %.4f, dev acc %.4f agreement %.4f", name,
                 models[name]["validation"]["agreement"], models[name]["dev"]["accuracy"],
                 models[name]["dev"]["agreement"])

    log.info("timing %s interleaved at %s, %d rounds", list(files), SHAPES, a.runs)
    t0 = time.perf_counter()
    with timing_window("guided_int8 benchmark: fp32, all-int8 and guided files"):
        lat = measure_latency({k: OrtRunner(p, THREADS, vocab_size=int(tok.vocab_size)) for k, p in files.items()},
                              SHAPES, warmup=3, runs=a.runs, seed=0, vocab_size=int(tok.vocab_size))
    timing_s = time.perf_counter() - t0
    sp = speedups(lat, "ort_fp32")
    b32 = shape_key(32, 128)
    for name in files:
        models[name]["latency_ms"] = {k: v["p50_ms"] for k, v in lat["results"][name].items()}
        models[name]["latency_p90_ms"] = {k: v["p90_ms"] for k, v in lat["results"][name].items()}
        models[name]["speedup_vs_ort_fp32"] = sp[name]

    def fragment(name: str, fp32_matmuls: list[str], sensitivity: str | None,
                 per_token_matmuls: list[str] | None = None) -> dict[str, Any]:
        m = models[name]
        return {"agreement": m["dev"]["agreement"], "acc": m["dev"]["accuracy"], "mcnemar_p": m["dev"]["mcnemar_p"],
                "speedup_b32_vs_ort_fp32": m["speedup_vs_ort_fp32"][b32],
                "speedup_vs_all_int8": lat["results"]["all_int8"][b32]["p50_ms"] / lat["results"][name][b32]["p50_ms"],
                "fp32_matmuls": fp32_matmuls, "sensitivity": sensitivity,
                **({"per_token_matmuls": per_token_matmuls} if a.per_token else {}),
                "validation": {"agreement": m["validation"]["agreement"], "acc": m["validation"]["accuracy"]},
                "size_bytes": m["size_bytes"]}

    flags = cpu_flags()
    guided = fragment("guided", rec["fp32_matmuls"], rec["sensitivity"], rec["per_token_matmuls"])
    guided["method_choice"] = rec["winner"]  # all_int8 when neither set agreed more on validation
    if emb is not None:
        guided["speedup_vs_all_int8_per_tensor_tables"] = (
            lat["results"]["all_int8_per_tensor_tables"][b32]["p50_ms"] / lat["results"]["guided"][b32]["p50_ms"])
    result = {
        "guided_int8": guided,
        "all_int8": fragment("all_int8", [], None),
        "by_sensitivity": {m: fragment(f"guided_{m}" if f"guided_{m}" in files else
                                       ("guided" if m == rec["winner"] else "all_int8"), s["fp32_matmuls"], m,
                                       s["per_token_matmuls"])
                           for m, s in rec["selections"].items()},
        **({"per_token": fragment("per_token", [], None)} if a.per_token else {}),
        **({"all_int8_per_tensor_tables": fragment("all_int8_per_tensor_tables", [], None),
            "embeddings": {k: v for k, v in emb.items() if k != "exclude"}} if emb is not None else {}),
        "teacher_acc": {s: r.metrics["accuracy"] for s, r in ref.items()},
        "ort_fp32": {s: models["ort_fp32"][s] for s in splits},
        "targets": {"agreement_ge_0.995": guided["agreement"] >= 0.995,
                    "drop_le_0.003": ref["dev"].metrics["accuracy"] - guided["acc"] <= 0.003,
                    "speed_ge_0.9x_all_int8": min(guided["speedup_vs_all_int8"], guided.get(
                        "speedup_vs_all_int8_per_tensor_tables", 1.0)) >= a.latency_ratio},
        "selection": rec,  # the ranking, both selections, validation scores, the cost model and its check
        "models": models,
        "meta": {"git_sha": git_sha(), "versions": library_versions(), "hardware": hardware_fingerprint(THREADS),
                 "cpu_isa": [f for f in ISA_FLAGS if f in flags], "threads": THREADS, "seed": SEED,
                 **teacher_meta(carved, a),
                 "split_sizes": {s: len(ex) for s, ex in splits.items()},
                 "selected_on": "validation (carved from train); dev reported only",
                 "agreement_reference": "torch teacher predictions (dev and validation in this file); the "
                                        "method itself selects against the fp32 ONNX graph's outputs",
                 "shapes": [list(s) for s in SHAPES], "runs": a.runs, "latency": lat["settings"],
                 "method_s": round(method_s, 1), "timing_s": round(timing_s, 1),
                 "wall_s": round(time.perf_counter() - t_start, 1),
                 "loadavg_before": load0, "loadavg_after": os.getloadavg(), "quick": a.quick,
                 "command": " ".join(["python benchmarks/guided_int8.py", *argv])},
    }
    results.write(result)
    print(json.dumps({k: result[k] for k in ("guided_int8", "all_int8", "targets")}, indent=1))
    log.info("wrote %s", out_path)


if __name__ == "__main__":
    main(sys.argv[1:])
