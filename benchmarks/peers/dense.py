"""The dense teacher as users run it without us: the fused fp32 export on ONNX Runtime (``ort_fp32``, the
canonical denominator), the plain export on OpenVINO at its default precision (bf16 on AMX / AVX512_BF16
CPUs: the precision as compiled is recorded at timing), and eager torch fp32 (whose dev predictions are
the reference every cell's ``agreement`` is measured against)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..artifacts import Artifact
from . import PeerInputs


@dataclass(frozen=True)
class Dense:
    name: str
    tool: str
    backend: str
    precision: str
    source: str  # which PeerInputs file: plain_onnx | fused_onnx | checkpoint

    def settings(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "source": self.source}

    def build(self, inputs: PeerInputs) -> Artifact:
        return Artifact(getattr(inputs, self.source), self.backend, self.precision, {"source": self.source})


TORCH = Dense("dense_torch_fp32", "PyTorch eager fp32 (the teacher)", "torch", "fp32", "checkpoint")
PEERS = (Dense("dense_ort_fp32", "ONNX Runtime fp32, fused export (the teacher)", "ort", "fp32", "fused_onnx"),
         Dense("dense_openvino", "OpenVINO, default precision, plain export (the teacher)", "openvino", "default",
               "plain_onnx"),
         TORCH)
