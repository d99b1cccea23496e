"""Which ORT int8 scheme keeps the teacher's predictions? Selected on the VALIDATION split (carved
from train), then reported on dev (MEASURE.md: dev is never selected on). Latency is one
interleaved call with the fused fp32 export.

    python benchmarks/int8_variants.py RUN_DIR      # RUN_DIR: a finished +pipeline=int8 budget=bench run
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from compresslab.bench import OrtRunner, measure_latency, speedups
from compresslab.data.tasks import load_task
from compresslab.eval.evaluate import compare, onnx_forward, predict
from compresslab.eval.onnx_runner import OnnxRunner
from compresslab.export.ort_quant import quantize_dynamic_int8, quantize_static_qdq
from compresslab.manifest import read_json
from compresslab.models.loading import load_tokenizer

from _results import ResultsFile  # sibling module (script dir)

RESULTS = ResultsFile(Path(__file__).resolve().parent / "results" / "int8_variants.json")  # stamps meta.machine_load

VARIANTS = {
    "dynamic_per_channel": dict(per_channel=True),
    "dynamic_per_tensor": dict(per_channel=False),
    "dynamic_matmul_only": dict(per_channel=True, op_types=["MatMul"]),
    "dynamic_per_channel_reduce_range": dict(per_channel=True, reduce_range=True),
}


def main(run_dir: Path) -> None:
    m = read_json(run_dir / "manifest.json")
    fp32 = run_dir / m["export"]["fp32"]["path"]
    tok = load_tokenizer(fp32.parent)
    task = load_task("sst2", m["data"]["data_root"], val_size=None, seed=m["seed"])
    work = Path(tempfile.mkdtemp(prefix="int8v-"))
    paths = {"ort_fp32": fp32}
    for name, kw in VARIANTS.items():
        quantize_dynamic_int8(fp32, work / f"{name}.onnx", **kw)
        paths[name] = work / f"{name}.onnx"
    from compresslab.data.loaders import calibration_examples, make_loader

    calib = make_loader(calibration_examples(task.train, 256, m["seed"]), tok, 32, 128)
    quantize_static_qdq(fp32, work / "static_qdq.onnx", list(calib))
    paths["static_qdq"] = work / "static_qdq.onnx"
    out: dict = {"selected_on": "validation (1000, carved from train)", "variants": {}}
    for split in ("validation", "dev"):
        ex = getattr(task, split)
        ref = predict(onnx_forward(OnnxRunner(fp32, threads=2)), task.spec, ex, tok)
        for name, p in paths.items():
            s = predict(onnx_forward(OnnxRunner(p, threads=2)), task.spec, ex, tok)
            out["variants"].setdefault(name, {})[split] = compare(s, ref, task.spec)
    lat = measure_latency({k: OrtRunner(p, 2) for k, p in paths.items()}, [(1, 128), (32, 128)], warmup=3, runs=20)
    for name, sp in speedups(lat, "ort_fp32").items():
        out["variants"][name]["speedup_vs_ort_fp32"] = sp
        out["variants"][name]["size_bytes"] = paths[name].stat().st_size
    best = max((n for n in paths if n != "ort_fp32"),
               key=lambda n: out["variants"][n]["validation"]["agreement"])
    out["best_on_validation"] = best
    RESULTS.write(out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
