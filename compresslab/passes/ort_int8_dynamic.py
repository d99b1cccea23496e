"""``ort_int8_dynamic``: ONNX Runtime dynamic int8 of the exported, fused graph (Stage.ONNX).

Weights become int8 offline; activations are quantized on the fly per call, so no calibration
data is needed. Works on the fused graph (``Attention`` -> ``QAttention``) so int8 keeps the
fused kernels; if the incoming graph is unfused and ``optimize`` is set, it is fused first with
the head counts from ``config.json``. The math lives in ``export/ort_quant.py``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from compresslab.export.ort_quant import check_op_types, read_export_config
from compresslab.registry import register_pass
from compresslab.types import OnnxModel, PassContext, PassResult, Stage
from compresslab.validate import check_bools


@register_pass("ort_int8_dynamic")
@dataclass
class OrtInt8Dynamic:
    """Dynamic int8 quantization with ONNX Runtime.

    ``per_channel`` scales each output channel (better accuracy, same speed on CPU kernels);
    ``reduce_range`` uses 7-bit weights for CPUs without VNNI (avoids int16 accumulation
    overflow); ``op_types`` restricts which ops are quantized (default: all ORT supports).
    """

    per_channel: bool = True
    reduce_range: bool = False
    optimize: bool = True
    op_types: list[str] | None = None

    stage: ClassVar[Stage] = Stage.ONNX
    makes_teacher: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_bools(self, "per_channel", "reduce_range", "optimize")
        self.op_types = check_op_types(self, "IntegerOpsRegistry")

    def check(self, task: Any) -> None:
        """Nothing to check: dynamic quantization uses no data."""

    def apply(self, model: OnnxModel, ctx: PassContext) -> PassResult:
        from compresslab.export.ort_quant import copy_model_files, ensure_fused, quantize_dynamic_int8

        model = model if isinstance(model, OnnxModel) else OnnxModel(Path(model).parent, Path(model))
        ctx.step_dir.mkdir(parents=True, exist_ok=True)
        dst = ctx.step_dir / "model.onnx"
        with tempfile.TemporaryDirectory(prefix="compresslab-fuse-") as work:
            src, fused_here = (ensure_fused(model.onnx_path, read_export_config(model.dir), work) if self.optimize
                               else (model.onnx_path, False))
            metrics = quantize_dynamic_int8(src, dst, per_channel=self.per_channel,
                                            reduce_range=self.reduce_range, op_types=self.op_types)
        copy_model_files(model.dir, ctx.step_dir)
        metrics["fused_before_quantization"] = fused_here
        return PassResult(metrics=metrics, onnx_path=str(dst),
                          structure={"weight_bits": 8, "activation_bits": 8, "scheme": "ort_dynamic"})
