"""Torch -> ONNX export with parity checks, ORT graph fusion, and ORT int8 quantization.

``export_model`` is what the pipeline calls once before the first ONNX-stage pass; the deployed
fp32 graph is the fused one (``model.onnx``). onnxruntime is imported inside functions only.
"""

from compresslab.export.onnx import (
    ExportError, ExportResult, ParityError, check_parity, eager_attention, export_model, export_onnx,
    input_names_for)
from compresslab.export.optimize import OptimizeReport, count_ops, fix_attention_heads, optimize_graph
from compresslab.export.ort_quant import (
    CalibrateMethod, QuantDType, copy_model_files, ensure_fused, quantize_dynamic_int8, quantize_static_qdq)

__all__ = ["ExportError", "ExportResult", "ParityError", "check_parity", "eager_attention", "export_model",
           "export_onnx", "input_names_for", "OptimizeReport", "count_ops", "fix_attention_heads",
           "optimize_graph", "CalibrateMethod", "QuantDType", "copy_model_files", "ensure_fused",
           "quantize_dynamic_int8", "quantize_static_qdq"]
