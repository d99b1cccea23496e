"""NNCF ``compress_weights``: INT4_ASYM groups of 64 for a ``ratio`` of the weights (0.8, NNCF's documented
starting point), the rest INT8_ASYM, layers ranked by its Hessian-input-activation sensitivity on 128
train examples; run on OpenVINO at its default precision. The other weight-only peer of ``hawq_w4``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..artifacts import Artifact
from . import PeerInputs


def single_examples(feeds: Any, n: int) -> list[dict[str, np.ndarray]]:
    """Up to ``n`` one-example feeds, padding cut off (NNCF's data-aware weight compression reads
    statistics per token: padded positions would count)."""
    out: list[dict[str, np.ndarray]] = []
    for f in feeds:
        mask = np.asarray(f["attention_mask"])
        for i in range(mask.shape[0]):
            length = int(mask[i].sum())
            out.append({k: np.asarray(v)[i: i + 1, :length] for k, v in f.items()})
            if len(out) == n:
                return out
    return out


@dataclass(frozen=True)
class NncfWeights:
    name: str = "nncf_compress_weights_int4_int8"
    tool: str = "NNCF compress_weights INT4_ASYM/INT8_ASYM ratio 0.8 on OpenVINO"
    ratio: float = 0.8
    group_size: int = 64
    n_examples: int = 128

    def settings(self) -> dict[str, Any]:
        import nncf

        return {"mode": "INT4_ASYM", "backup": "INT8_ASYM", "ratio": self.ratio, "group_size": self.group_size,
                "sensitivity": "HESSIAN_INPUT_ACTIVATION", "calibration_examples": self.n_examples,
                "nncf": nncf.__version__}

    def build(self, inputs: PeerInputs) -> Artifact:
        import nncf
        import openvino as ov

        from compresslab.export.openvino_int8 import save_ir

        model = ov.Core().read_model(str(inputs.plain_onnx))
        names = [i.get_any_name() for i in model.inputs]
        feeds = [{k: v for k, v in f.items() if k in names}
                 for f in single_examples(inputs.calibration, self.n_examples)]
        cm = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, ratio=self.ratio,
                                   group_size=self.group_size, dataset=nncf.Dataset(feeds),
                                   sensitivity_metric=nncf.SensitivityMetric.HESSIAN_INPUT_ACTIVATION)
        xml = save_ir(cm, inputs.work_dir, None)
        return Artifact(xml, "openvino", "default", {**self.settings(), "calibration_used": len(feeds)})


PEER = NncfWeights()
