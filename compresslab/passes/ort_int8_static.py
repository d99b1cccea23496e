"""``ort_int8_static``: ONNX Runtime static int8 in QDQ format, calibrated on train data (Stage.ONNX).

Activation ranges come from ``num_calibration`` seeded train examples (never validation or dev,
MEASURE.md), so no per-call quantization cost. Runs on the fused graph like the dynamic pass
(``graph: fused``), or on the plain export (``graph: plain``: standard ONNX ops only, the QDQ graph
OpenVINO reads and turns into an int8 IR with ``deploy=openvino``); the math lives in
``export/ort_quant.py``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from compresslab.export.ort_quant import CalibrateMethod, QuantDType, check_op_types, read_export_config
from compresslab.registry import register_pass
from compresslab.types import OnnxModel, PassContext, PassResult, Stage
from compresslab.validate import check_bools, check_choice, check_int, coerce_enum

GRAPHS = ("fused", "plain")


@register_pass("ort_int8_static")
@dataclass
class OrtInt8Static:
    """Static QDQ int8 quantization with ONNX Runtime.

    ``calibrate_method``: minmax (fast; sensitive to outliers), entropy or percentile (histogram
    based; slower, clip outliers). ``activation_type`` uint8 suits x86 int8 kernels (U8S8),
    int8 suits ARM/GPU. ``per_channel``/``reduce_range``/``op_types`` as in ``ort_int8_dynamic``.
    """

    num_calibration: int = 256
    per_channel: bool = True
    reduce_range: bool = False
    calibrate_method: CalibrateMethod = CalibrateMethod.MINMAX
    activation_type: QuantDType = QuantDType.UINT8
    weight_type: QuantDType = QuantDType.INT8
    batch_size: int | None = None
    optimize: bool = True
    op_types: list[str] | None = None
    graph: str = "fused"  # fused (ORT's fused graph) | plain (the unfused export: readable by OpenVINO)

    stage: ClassVar[Stage] = Stage.ONNX
    makes_teacher: ClassVar[bool] = False
    # a zero weight quantizes to its zero point, which dequantizes to exactly 0.0 (ORT ranges always
    # include 0; symmetric int8 weights have zero point 0): the zeros of a pruned model survive
    keeps_zeros: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.calibrate_method = coerce_enum(CalibrateMethod, self.calibrate_method, "calibrate_method")
        self.activation_type = coerce_enum(QuantDType, self.activation_type, "activation_type")
        self.weight_type = coerce_enum(QuantDType, self.weight_type, "weight_type")
        for n in ("num_calibration", "batch_size"):
            if getattr(self, n) is not None or n != "batch_size":
                check_int(getattr(self, n), f"{self.name} {n}")
        check_bools(self, "per_channel", "reduce_range", "optimize")
        check_choice(self.graph, GRAPHS, f"{self.name} graph")
        self.op_types = check_op_types(self, "QDQRegistry")

    def check(self, task: Any) -> None:
        """Nothing to check up front: calibration takes up to ``num_calibration`` train examples (all of a
        smaller train split, with a warning)."""

    def apply(self, model: OnnxModel, ctx: PassContext) -> PassResult:
        from compresslab.export.optimize import plain_graph
        from compresslab.export.ort_quant import copy_model_files, ensure_fused, quantize_static_qdq

        model = model if isinstance(model, OnnxModel) else OnnxModel(Path(model).parent, Path(model))
        ctx.step_dir.mkdir(parents=True, exist_ok=True)
        dst = ctx.step_dir / "model.onnx"
        # a train split smaller than num_calibration gives all of it; n_calibration_examples says how many
        batches = ctx.calibration_batches(self.num_calibration, batch_size=self.batch_size,
                                        setting=f"{self.name}.num_calibration")
        with tempfile.TemporaryDirectory(prefix="compresslab-fuse-") as work:
            if self.graph == "plain":  # model_unfused.onnx, or the export itself when export.optimize=false
                src, fused_here = plain_graph(model.dir, model.onnx_path, "graph=plain (a QDQ graph OpenVINO reads)"), False
            elif self.optimize:
                src, fused_here = ensure_fused(model.onnx_path, read_export_config(model.dir), work)
            else:
                src, fused_here = model.onnx_path, False
            metrics = quantize_static_qdq(
                src, dst, ctx.track(batches, desc="calibrate"), per_channel=self.per_channel,
                reduce_range=self.reduce_range, calibrate_method=self.calibrate_method,
                activation_type=self.activation_type, weight_type=self.weight_type, op_types=self.op_types)
        copy_model_files(model.dir, ctx.step_dir)
        metrics["fused_before_quantization"] = fused_here
        metrics["graph"] = self.graph
        return PassResult(metrics=metrics, onnx_path=str(dst),
                          structure={"weight_bits": 8, "activation_bits": 8, "scheme": "ort_static_qdq",
                                     "graph": self.graph,
                                     "weight_type": self.weight_type.value,
                                     "activation_type": self.activation_type.value})
