"""optimum-onnx ``ORTOptimizer`` (O2) + ``ORTQuantizer`` with the ``avx512_vnni`` preset (dynamic, per-tensor,
as optimum's quantization guide shows it) on the teacher's plain export directory.

With onnxruntime >= 1.17 the quantizer cannot type the outputs of the optimizer's fused ``com.microsoft``
ops and stops ("Unable to find data type for weight_name=...": huggingface/optimum#1959, unmerged;
sentence-transformers#2598); optimum gives no way to pass ORT's ``DefaultTensorType`` fix. So the
documented chain keeps its exact error in its cell when it fails, and a second peer runs the quantizer
alone on the plain export, as sentence-transformers' ``export_dynamic_quantized_onnx_model`` does (ORT
fuses that file itself when it loads it). optimum-onnx pins
transformers<4.58, so it runs in its own venv (``venvs.OPTIMUM``) through ``compresslab.bench.external``;
what it writes is an ONNX file, scored and timed by the suite on our onnxruntime, interleaved with every
other cell (the file is what is deployed; optimum only makes it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifacts import Artifact
from . import PeerInputs
from .venvs import OPTIMUM
from .workers import worker_sha256

WORKER = Path(__file__).with_name("workers") / "optimum_worker.py"


@dataclass(frozen=True)
class OptimumOrt:
    name: str = "optimum_ort_avx512_vnni"
    tool: str = "optimum-onnx ORTOptimizer O2 + ORTQuantizer avx512_vnni (dynamic, per-tensor)"
    optimization_level: str | None = "O2"  # None: no ORTOptimizer
    per_channel: bool = False

    def settings(self) -> dict[str, Any]:
        return {"worker": worker_sha256(WORKER), "venv": {"requirements": list(OPTIMUM.requirements), "key": OPTIMUM.key()},
                "optimization": f"AutoOptimizationConfig.{self.optimization_level}()" if self.optimization_level else None,
                "quantization": f"AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel={self.per_channel})",
                "source": "plain_onnx"}

    def build(self, inputs: PeerInputs) -> Artifact:
        from compresslab.bench.external import ensure_venv, run_worker

        python = ensure_venv(OPTIMUM)
        cls = "ORTModelForSequenceClassification" if inputs.head == "classification" else "ORTModelForFeatureExtraction"
        r = run_worker(python, WORKER, {"export_dir": str(inputs.plain_onnx.parent), "file_name": inputs.plain_onnx.name,
                                        "ort_class": cls, "optimization_level": self.optimization_level,
                                        "per_channel": self.per_channel}, work=inputs.work_dir / "worker",
                       env={"OMP_NUM_THREADS": str(inputs.threads)})
        info = {k: r.out[k] for k in ("optimization_level", "quantization", "build_s", "versions")}
        return Artifact(Path(r.out["file"]), "ort", "int8", {**info, "venv": str(python.parent.parent)})


PEERS = (OptimumOrt(),
         OptimumOrt("optimum_ort_avx512_vnni_plain", "optimum-onnx ORTQuantizer avx512_vnni (dynamic, per-tensor) on "
                    "the plain export, no ORTOptimizer (sentence-transformers' export)", None))
