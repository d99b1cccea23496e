"""ONNX Runtime ``quantize_dynamic``: with its defaults on the plain export, what most users do (per-tensor int8
weights, no reduce_range, every op type ORT quantizes dynamically); and per-channel on ORT's fused graph (its
transformers optimizer, as ORT's BERT quantization docs run it), the recipe our ``+pipeline=int8`` starts from
before our own rewrites (block-wise word embeddings): the strongest ORT-only baseline, and on AVX2 without VNNI
the fastest dense runtime."""

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


@dataclass(frozen=True)
class OrtDynamicFused:
    name: str = "ort_quantize_dynamic_fused"
    tool: str = "ONNX Runtime transformers optimizer + quantize_dynamic (per_channel=True)"

    def settings(self) -> dict[str, Any]:
        import onnxruntime

        return {"call": "quantize_dynamic(fused_model, out, per_channel=True, weight_type=QInt8, "
                        "extra_options={'DefaultTensorType': FLOAT})", "onnxruntime": onnxruntime.__version__}

    def build(self, inputs: PeerInputs) -> Artifact:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from compresslab.export.ort_quant import atomic_output, scratch_cwd

        dst = inputs.work_dir / "model.onnx"
        src = inputs.fused_onnx.resolve()
        # DefaultTensorType: the fused graph's com.microsoft outputs have no inferred type; ORT's quantizer asks
        # for a default rather than guess (its own log says so)
        with atomic_output(dst) as out, scratch_cwd():
            quantize_dynamic(src, out, per_channel=True, weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return Artifact(dst, "ort", "int8", {"per_channel": True, "source": "fused_onnx"})


PEER = OrtDynamic()
FUSED = OrtDynamicFused()
