"""Do an int8 file's predictions depend on the batch a sentence is sent in? (issues 10 and 14: agreement figures)

    python benchmarks/int8_batch_dependence.py                          # random carve's bench teacher
    python benchmarks/int8_batch_dependence.py --carve grouped --val-size 500

ONNX Runtime's dynamic int8 (``DynamicQuantizeLinear``) computes ONE activation scale per tensor per call,
over every token of every sentence in the batch, padding rows included (ONNX operator spec,
DynamicQuantizeLinear: ``y_scale = (max(x) - min(x)) / 255`` over the whole input). A sentence's logits
therefore move with its batchmates, and with the padding their lengths bring. A static (calibrated) scale
does not move. This script scores the same SST-2 dev sentences through each file at batch 1, 8 and 32
(dynamic padding, the evaluation's own loader) and at batch 32 in a shuffled order (same batch size, other
batchmates), and counts the sentences whose predicted label changes against batch 1, and each setting's
agreement with the torch teacher. Files: the fused fp32 export (the control: 0 flips expected), ORT's
dynamic int8 with per-channel weights on the fused graph (``+pipeline=int8``'s deploy before its block-wise word
embeddings, i.e. with ``embeddings: per_tensor``), ORT ``quantize_dynamic`` with its defaults (the
suite's peer), and ORT static QDQ (per-channel, MinMax on 300 train examples). No timing: safe beside
training. Writes ``results/int8_batch_dependence[_<carve><size>].json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
SEED = 42
THREADS = 2
BATCHES = (1, 8, 32)
CALIBRATION_EXAMPLES = 300  # the suite's calibration_examples

log = logging.getLogger("int8_batch_dependence")


def main(argv: list[str]) -> None:
    from compresslab.cli import setup_process
    from compresslab.data.loaders import make_loader
    from compresslab.eval.evaluate import onnx_forward, predict, torch_forward
    from compresslab.eval.onnx_runner import OnnxRunner
    from compresslab.export import export_model
    from compresslab.export.ort_quant import quantize_dynamic_int8, quantize_static_qdq
    from compresslab.manifest import git_sha, library_versions
    from compresslab.bench.env import hardware_fingerprint

    from _carve_teacher import add_carve_args, carve_label, carve_teacher, teacher_meta  # sibling modules
    from _results import ResultsFile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_carve_args(ap)
    ap.add_argument("--max-dev", type=int, default=None, help="a smoke run on the first N dev sentences")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out_path = a.out or (ROOT / "results" / f"int8_batch_dependence{carve_label(a)}.json")
    if a.max_dev is not None and a.out is None:
        raise SystemExit("--max-dev is a smoke run: give --out (results/ holds full-dev figures only)")
    results = ResultsFile(out_path)  # stamps meta.machine_load (nothing here is timed; the load is kept anyway)
    setup_process(THREADS, SEED)
    t_start = time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix="int8-batch-"))
    carved = carve_teacher(a, SEED, work)
    teacher, tok, task = carved.model.eval(), carved.tokenizer, carved.task
    dev = list(task.dev)[: a.max_dev]
    train = list(task.train)
    calib_idx = np.random.default_rng(SEED).choice(len(train), CALIBRATION_EXAMPLES, replace=False)
    calib = [train[i] for i in sorted(calib_idx)]

    exp = export_model(teacher, tok, work / "export", list(make_loader(calib[:64], tok, 32, 128)),
                       threads=THREADS, keep_unfused=True)
    plain = exp.unfused_path or exp.onnx_path
    files = {"ort_fp32_fused": exp.onnx_path, "int8_dynamic_per_channel": work / "dyn_pc.onnx",
             "ort_quantize_dynamic_defaults": work / "dyn_defaults.onnx", "static_qdq_per_channel": work / "qdq.onnx"}
    # +pipeline=int8 with embeddings: per_tensor
    quantize_dynamic_int8(exp.onnx_path, files["int8_dynamic_per_channel"])
    from onnxruntime.quantization import quantize_dynamic  # the peer: the library's defaults, plain export

    quantize_dynamic(str(plain), str(files["ort_quantize_dynamic_defaults"]))
    quantize_static_qdq(plain, files["static_qdq_per_channel"], make_loader(calib, tok, 32, 128))

    kw = dict(max_length=128)
    ref = predict(torch_forward(teacher), task.spec, dev, tok, batch_size=32, **kw).predictions
    labels = np.array([e.label for e in dev])
    order = np.random.default_rng(SEED + 1).permutation(len(dev))
    inverse = np.argsort(order)
    models: dict[str, Any] = {}
    for name, path in files.items():
        fwd = onnx_forward(OnnxRunner(path, threads=THREADS))
        preds = {f"b{b}": predict(fwd, task.spec, dev, tok, batch_size=b, **kw).predictions for b in BATCHES}
        shuffled = predict(fwd, task.spec, [dev[i] for i in order], tok, batch_size=32, **kw).predictions
        preds["b32_shuffled"] = shuffled[inverse]
        base = preds["b1"]
        models[name] = {
            "file": path.name, "size_bytes": path.stat().st_size,
            "flips_vs_b1": {k: int(np.sum(p != base)) for k, p in preds.items() if k != "b1"},
            "flips_b32_vs_b32_shuffled": int(np.sum(preds["b32"] != preds["b32_shuffled"])),
            "agreement_with_teacher": {k: round(float(np.mean(p == ref)), 4) for k, p in preds.items()},
            "accuracy": {k: round(float(np.mean(p == labels)), 4) for k, p in preds.items()},
        }
        log.info("%s: %s", name, json.dumps(models[name]))
    result = {
        "n_dev": len(dev), "models": models,
        "question": "does a sentence's predicted label depend on the batch it is sent in?",
        "batches": list(BATCHES), "padding": "dynamic (to the longest sentence of each batch), as evaluation pads",
        "meta": {"git_sha": git_sha(), "versions": library_versions(), "hardware": hardware_fingerprint(THREADS),
                 **teacher_meta(carved, a),
                 "calibration_examples": CALIBRATION_EXAMPLES, "seed": SEED, "threads": THREADS,
                 "wall_s": round(time.perf_counter() - t_start, 1), "timing": "none (scores only)",
                 "command": " ".join(["python benchmarks/int8_batch_dependence.py", *argv])},
    }
    results.write(result)
    print(json.dumps({k: {kk: v[kk] for kk in ("flips_vs_b1", "flips_b32_vs_b32_shuffled")} for k, v in models.items()},
                     indent=1))
    log.info("wrote %s", out_path)


if __name__ == "__main__":
    main(sys.argv[1:])
