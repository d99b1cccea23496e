"""optimum-onnx in its own venv (issue 14: it pins transformers<4.58): ``ORTOptimizer`` then ``ORTQuantizer``
with the ``avx512_vnni`` preset, on the teacher's plain export directory (the layout optimum's ORTModel
classes load: ``config.json`` and the ONNX file side by side), as optimum's quantization guide shows:

    optimizer = ORTOptimizer.from_pretrained(ort_model)
    optimizer.optimize(save_dir, AutoOptimizationConfig.O2())            # transformer fusions, no approximations
    quantizer = ORTQuantizer.from_pretrained(save_dir, file_name=...)
    quantizer.quantize(save_dir=..., quantization_config=AutoQuantizationConfig.avx512_vnni(
        is_static=False, per_channel=False))

    python optimum_worker.py SPEC.json

spec: ``export_dir``, ``file_name`` (the plain ONNX in it), ``ort_class`` (``ORTModelForSequenceClassification``
or ``ORTModelForFeatureExtraction``), ``optimization_level`` (``O2``; null: no ORTOptimizer, the quantizer
runs on the plain file, as sentence-transformers' ``export_dynamic_quantized_onnx_model`` does), ``per_channel``
(false), ``work``.
Writes ``work/quantized/<file>_quantized.onnx``; the suite scores and times that file on ITS OWN
onnxruntime, interleaved with every other cell (the file is what a user deploys; optimum only makes it).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (this directory, not a package: the worker runs in a foreign venv)


def main(argv: list[str]) -> None:
    import optimum.onnxruntime as ortm
    from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    spec = common.read_spec(argv)
    work = Path(spec["work"])
    src = work / "input"  # a private copy: optimum writes beside what it loads
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(spec["export_dir"], src, ignore=shutil.ignore_patterns("*.onnx", "*.onnx_data", "*.data"))
    shutil.copy2(Path(spec["export_dir"]) / spec["file_name"], src / spec["file_name"])
    t0 = time.perf_counter()
    level = spec.get("optimization_level")
    if level:
        model = getattr(ortm, spec["ort_class"]).from_pretrained(src, file_name=spec["file_name"])
        optimizer = ORTOptimizer.from_pretrained(model)
        opt_dir = work / "optimized"
        optimizer.optimize(save_dir=opt_dir, optimization_config=getattr(AutoOptimizationConfig, level)())
        found = sorted(opt_dir.glob("*.onnx"))
        if len(found) != 1:
            raise RuntimeError(f"ORTOptimizer wrote {[p.name for p in found]} in {opt_dir}; expected one ONNX file")
        optimized = found[0]
    else:
        optimized = src / spec["file_name"]
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=bool(spec.get("per_channel", False)))
    quantizer = ORTQuantizer.from_pretrained(optimized.parent, file_name=optimized.name)
    q_dir = work / "quantized"
    quantizer.quantize(save_dir=q_dir, quantization_config=qconfig)
    out = sorted(q_dir.glob("*.onnx"))
    if len(out) != 1:
        raise RuntimeError(f"ORTQuantizer wrote {[p.name for p in out]} in {q_dir}; expected one ONNX file")
    common.write_out(spec, {"file": str(out[0]), "optimized": str(optimized) if level else None, "optimization_level": level,
                            "quantization": _jsonable(qconfig), "build_s": round(time.perf_counter() - t0, 2),
                            "versions": common.versions(["optimum", "optimum-onnx", "onnxruntime", "onnx",
                                                         "transformers", "torch"])})


def _jsonable(qconfig: Any) -> dict[str, Any]:
    d = qconfig.__dict__ if hasattr(qconfig, "__dict__") else {}
    return {k: str(v) for k, v in d.items()}


if __name__ == "__main__":
    main(sys.argv[1:])
