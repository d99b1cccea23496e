"""Slot bias after torch: does the cell timed right after ``torch_fp32`` in an interleaved round run slower, and
does the runner's untimed settle (``TorchRunner.settle_s``, :func:`compresslab.bench.latency.settle`) remove it?

    python benchmarks/slot_bias.py outputs/int8/<hash>   # a finished +pipeline=int8 run with
                                        # pipeline.passes.int8.embeddings=per_tensor (debug=smoke will do)

The bench stage's own order with one file in two slots: ``ort_fp32``, ``deployed`` (the int8 pipeline's ORT file),
``openvino_f32``, ``torch_fp32``, ``ort_int8`` (the teacher's ORT int8: the same bytes as ``deployed`` when no torch
pass changed the model and the int8 pass ran as one ORT call, ``embeddings: per_tensor``; checked here), timed
by :func:`~compresslab.bench.latency.measure_latency` twice, with the settle off and at its default, each at b1xs128, b4xs32 and b32xs128. Same bytes, so ``ort_int8 / deployed`` should be
1 within noise. Writes ``benchmarks/results/slot_bias.json`` (ISA and machine load recorded); takes the timing lock.
Latency needs only shapes, so the smoke teacher serves.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _results import ResultsFile  # noqa: E402

SHAPES = [(1, 128), (4, 32), (32, 128)]
ORDER = ["ort_fp32", "deployed", "openvino_f32", "torch_fp32", "ort_int8"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path, help="a finished +pipeline=int8 run (its bench stage made bench/teacher_int8)")
    ap.add_argument("--runs", type=int, default=30, help="interleaved rounds per shape and setting")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "slot_bias.json")
    a = ap.parse_args(argv)
    import compresslab
    from compresslab.bench.env import cpu_flags, hardware_fingerprint
    from compresslab.bench.latency import measure_latency
    from compresslab.bench.openvino_runner import OpenVinoRunner
    from compresslab.bench.runners import TORCH_CPU_SETTLE_S, OrtRunner, TorchRunner
    from compresslab.manifest import git_sha, library_versions

    d = a.run_dir.resolve()
    files = {"ort_fp32": d / "export" / "model.onnx", "deployed": d / "steps" / "01_int8" / "model.onnx",
             "openvino_f32": d / "export" / "model_unfused.onnx", "ort_int8": d / "bench" / "teacher_int8" / "model.onnx"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"{d} is not a finished int8 run with a bench stage: missing {missing}")
    same = _sha(files["deployed"]) == _sha(files["ort_int8"])
    teacher = compresslab.load(d / "steps" / "00_finetune")
    vocab = int(teacher.config.vocab_size)
    out: dict = {"same_bytes_deployed_and_ort_int8": same, "order": ORDER, "runs": a.runs, "settings": {}}
    for settle in (0.0, TORCH_CPU_SETTLE_S):
        torch_runner = TorchRunner(teacher, 2)
        torch_runner.settle_s = settle
        runners = {n: torch_runner if n == "torch_fp32" else
                   OpenVinoRunner(files[n], 2, "f32", vocab_size=vocab) if n == "openvino_f32" else
                   OrtRunner(files[n], 2, vocab_size=vocab) for n in ORDER}
        lat = measure_latency(runners, SHAPES, warmup=3, runs=a.runs, seed=0)
        res = lat["results"]
        per = {k: {"p50_ms": {n: round(res[n][k]["p50_ms"], 3) for n in ORDER},
                   "ort_int8_over_deployed": round(res["ort_int8"][k]["p50_ms"] / res["deployed"][k]["p50_ms"], 4)}
               for k in res["deployed"]}
        out["settings"][f"settle_{settle * 1e3:g}ms"] = {"settle_s": settle, "shapes": per,
                                                        "machine_load": lat["machine_load"]}
        print(f"settle {settle * 1e3:g} ms:", {k: v["ort_int8_over_deployed"] for k, v in per.items()}, flush=True)
    flags = cpu_flags()
    out["cpu_isa"] = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]
    out["meta"] = {"git_sha": git_sha(), "versions": library_versions(), "hardware": hardware_fingerprint(2),
                   "threads": 2, "run_dir": os.path.relpath(d, REPO), "command": "python benchmarks/slot_bias.py "
                   + " ".join(argv if argv is not None else sys.argv[1:])}
    ResultsFile(a.results).write(out)
    print("wrote", a.results)


if __name__ == "__main__":
    main()
