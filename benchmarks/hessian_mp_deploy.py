"""``python benchmarks/hessian_mp.py deploy``: the QAT'd MP-3 checkpoint -> ONNX MatMulNBits (parity, size,
latency), stored under ``mp_3`` of benchmarks/results/hessian_mp.json."""

from __future__ import annotations

import os
import shutil

import numpy as np

from compresslab.manifest import read_json, sha256_file

from _hessian_mp_core import BLOCK, work_dir, _dev_batches, _onnx_scored, _store, _teacher, _teacher_preds  # sibling module
from _results import write_aside  # sibling module: a file that holds no figures


def deploy(args) -> None:
    """The QAT'd MP-3 checkpoint -> ONNX (MatMulNBits at accuracy_level 0 and 4): parity, scores, sizes, latency."""
    import torch

    import compresslab
    from compresslab.bench.latency import measure_latency
    from compresslab.bench.runners import OrtRunner
    from compresslab.checkpoint.packed import packed_sizes
    from compresslab.data.metrics import agreement
    from compresslab.export.matmul_nbits import (KERNEL_2BIT, export_quantized, probe_kernel_path, read_quant_sidecar,
                                                 to_matmul_nbits)
    from compresslab.export.onnx import export_model
    from compresslab.export.size import onnx_size_breakdown

    cfg, teacher, _ = _teacher()
    teacher_preds = _teacher_preds()
    src = work_dir() / "qat" / "acc_mp_3"
    if not src.is_dir():
        raise SystemExit(f"{src} missing: run `python benchmarks/hessian_mp.py qat` first")
    out = work_dir() / "deploy"
    model = compresslab.load(src, attn_implementation="eager")
    parity_batches = _dev_batches(32, 16)
    # the export is cached, keyed by the checkpoint it came from: a re-trained acc_mp_3 is exported again
    source = {"checkpoint": str(src), "sha256": sha256_file(src / "model.safetensors")}
    stamp_path = out / "export" / "source.json"
    if stamp_path.is_file() and read_json(stamp_path) != source:
        shutil.rmtree(out / "export")
    if not (out / "export" / "model_unfused.onnx").is_file():
        export_quantized(model, teacher.tokenizer, out / "export", parity_batches)
        write_aside(stamp_path, source)
    if not (out / "teacher" / "model.onnx").is_file():
        export_model(teacher.model, teacher.tokenizer, out / "teacher", parity_batches)
    stamp = read_json(out / "export" / "config.json")["compresslab_quant"]
    params = read_quant_sidecar(out / "export")
    paths, conv = {}, {}
    for level in (0, 4):
        paths[level] = out / f"nbits_level{level}" / "model.onnx"
        conv[level] = to_matmul_nbits(out / "export" / "model_unfused.onnx", paths[level], stamp, params,
                                      accuracy_level=level)
    # parity at level 0 against the fake-quant torch model, over the whole dev split
    from compresslab.eval.onnx_runner import OnnxRunner

    runner = OnnxRunner(paths[0], threads=2)
    worst = 0.0
    with torch.no_grad():
        for b in _dev_batches():
            ref = model(**{k: v for k, v in b.items()}).logits.numpy()
            got = runner.session.run(runner.output_names[:1], runner.feeds(b))[0]
            worst = max(worst, float(np.abs(got - ref).max()))
    s0, s4 = _onnx_scored(paths[0]), _onnx_scored(paths[4])
    fp32 = onnx_size_breakdown(out / "teacher" / "model_unfused.onnx")
    dep = onnx_size_breakdown(paths[0])
    packed = packed_sizes(model)
    lin = [m for m in conv[0]["modules"].values() if m["op"] == "MatMulNBits"]
    n_lin = sum(m["numel"] for m in lin)
    mp3 = {"avg_bits": sum(m["numel"] * m["bits"] for m in lin) / n_lin,
           "avg_deployed_bits": sum(m["numel"] * m["deployed_bits"] for m in lin) / n_lin,
           "avg_bits_scope": "the 36 encoder Linears (the 8-bit word embeddings are outside the budget)",
           "onnx_acc": s0.metrics["score"], "onnx_agreement": agreement(s0.predictions, teacher_preds),
           "onnx_parity_max_abs_level0": worst, "agreement_level4": agreement(s4.predictions, teacher_preds),
           "acc_level4": s4.metrics["score"],
           "compression_encoder": fp32["encoder"] / dep["encoder"], "compression_total": fp32["file"] / dep["file"],
           "compression_packed_encoder": packed["ratio"]["encoder"],
           "size_bytes": {"fp32": fp32, "deployed": dep, "packed": packed},
           "kernel_paths": {f"bits{b}_block{BLOCK}_level{lv}": probe_kernel_path(b, BLOCK, lv)
                            for b in (2, 4, 8) for lv in (0, 4)},
           "kernel_2bit": KERNEL_2BIT,
           "files": {str(k): str(v) for k, v in paths.items()}, "source": source,
           "note": "deployed graph is the unfused export (ORT's attention fuser does not recognise MatMulNBits); "
                   "the ort_fp32 denominator is the fused dense teacher"}
    if not args.no_timing:
        load0 = os.getloadavg()
        runners = {"ort_fp32": OrtRunner(out / "teacher" / "model.onnx", 2),
                   "ort_fp32_unfused": OrtRunner(out / "teacher" / "model_unfused.onnx", 2),
                   "mp3_level0": OrtRunner(paths[0], 2), "mp3_level4": OrtRunner(paths[4], 2)}
        lat = measure_latency(runners, [(32, 128), (1, 128)], warmup=3, runs=args.runs,
                              vocab_size=teacher.tokenizer.vocab_size)
        mp3["latency_ms"] = {n: {sh: v["p50_ms"] for sh, v in d.items()} for n, d in lat["results"].items()}
        mp3["latency_p90_ms"] = {n: {sh: v["p90_ms"] for sh, v in d.items()} for n, d in lat["results"].items()}
        mp3["latency_load"] = {"before": load0, "after": os.getloadavg()}
    _store("mp_3", mp3)
