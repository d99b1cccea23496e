"""ONNX Runtime ``quantize_dynamic`` with its defaults on the plain export: what most users do
(per-tensor int8 weights, no reduce_range, every op type ORT quantizes dynamically)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..artifacts import Artifact
from . import PeerInputs


@dataclass(frozen=True)
class OrtDynamic:
    name: str = "ort_quantize_dynamic"
    tool: str = "ONNX Runtime quantize_dynamic (defaults)"

    def settings(self) -> dict[str, Any]:
        import onnxruntime

        return {"call": "quantize_dynamic(model_input, model_output)", "onnxruntime": onnxruntime.__version__}

    def build(self, inputs: PeerInputs) -> Artifact:
        from onnxruntime.quantization import quantize_dynamic

        from compresslab.export.ort_quant import atomic_output, scratch_cwd

        dst = inputs.work_dir / "model.onnx"
        src = inputs.plain_onnx.resolve()
        # scratch_cwd: ORT writes its pre-processing temp files into the working directory
        with atomic_output(dst) as out, scratch_cwd():
            quantize_dynamic(src, out)
        return Artifact(dst, "ort", "int8", {"defaults": True, "source": "plain_onnx"})


PEER = OrtDynamic()
