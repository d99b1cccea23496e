"""NNCF ``nncf.quantize`` int8 PTQ (``model_type=TRANSFORMER``: SmoothQuant, fast bias correction, its
ignored attention patterns) on the IR of the plain export, run on OpenVINO at its default precision.
The same function the deploy stage uses for ``deploy.int8=nncf`` (``compresslab.export.openvino_int8``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..artifacts import Artifact
from . import PeerInputs


@dataclass(frozen=True)
class NncfPtq:
    name: str = "nncf_ptq_int8"
    tool: str = "NNCF nncf.quantize int8 (TRANSFORMER) on OpenVINO"

    def settings(self) -> dict[str, Any]:
        import nncf
        import openvino

        return {"api": "nncf.quantize", "model_type": "TRANSFORMER", "nncf": nncf.__version__,
                "openvino": openvino.__version__.split("-")[0]}

    def build(self, inputs: PeerInputs) -> Artifact:
        from compresslab.export.openvino_int8 import nncf_int8_ir, nncf_missing_reason

        if (why := nncf_missing_reason()) is not None:
            raise ImportError(why)
        xml, info = nncf_int8_ir(inputs.plain_onnx, inputs.work_dir, inputs.calibration)
        return Artifact(xml, "openvino", "default", info)


PEER = NncfPtq()
