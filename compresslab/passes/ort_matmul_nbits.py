"""``ort_matmul_nbits``: deploy a frozen n-bit model as ONNX Runtime ``MatMulNBits`` (Stage.ONNX).

Reads the ``compresslab_quant`` stamp from the export directory's ``config.json`` and the scales /
zero points from its ``quantization.safetensors`` (both written by the export stage for a model
whose fake-quant modules are frozen, e.g. after the ``hawq`` pass), rewrites the unfused export's
MatMuls (and a quantized word embedding's Gather) into ``com.microsoft.MatMulNBits`` /
``GatherBlockQuantized`` with the exact codes, and ends with a parity check of the new graph against
the incoming fp32 graph, which equals the fake-quant torch model (the export's own parity check).
The math lives in ``export/matmul_nbits.py`` (the graph rewrite) and ``export/nbits_pack.py`` (codes,
packing and the nodes in ORT's layout).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from compresslab.registry import register_pass
from compresslab.types import OnnxModel, PassContext, PassResult, Stage, capability, hook
from compresslab.validate import check_bools, check_int, is_int

log = logging.getLogger(__name__)

ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits' accuracy_level: 0 = fp32 activations ... 4 = int8 activations
PARITY_ATOL = 1e-3  # max |Δlogits| at accuracy_level 0: the codes are exact, so a larger gap is a bug
PARITY_BATCH = 16


def source_graph(model: OnnxModel) -> Path:
    """The unfused export beside ``model`` (:func:`compresslab.export.optimize.plain_graph`)."""
    from compresslab.export.optimize import plain_graph

    return plain_graph(model.dir, model.onnx_path, "MatMulNBits")


@register_pass("ort_matmul_nbits")
@dataclass
class OrtMatmulNBits:
    """Weight-only n-bit deployment of a frozen fake-quant model with ONNX Runtime's ``MatMulNBits``.

    ``accuracy_level``: MatMulNBits' attribute (0 fp32 activations, exact up to summation order; 4 int8
    activations, faster where MLAS has the kernel, reported by agreement rather than parity).
    ``check_parity``: compare the new graph with the incoming fp32 graph on ``parity_examples`` train
    examples (at level 0 a max |Δ| above 1e-3 raises ``ParityError``).
    """

    accuracy_level: int = 0
    check_parity: bool = True
    parity_examples: int = 32

    stage: ClassVar[Stage] = Stage.ONNX
    makes_teacher: ClassVar[bool] = False
    # its file has ORT-only n-bit ops (MatMulNBits): OpenVINO would run the fp32 model instead (pipeline/deploy.py)
    writes_nbits: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not is_int(self.accuracy_level) or self.accuracy_level not in ACCURACY_LEVELS:
            raise ValueError(f"{self.name} accuracy_level={self.accuracy_level!r} is not valid; "
                             f"allowed: {', '.join(map(str, ACCURACY_LEVELS))}")
        check_bools(self, "check_parity")
        self.parity_examples = check_int(self.parity_examples, f"{self.name} parity_examples")

    def check(self, task: Any) -> None:
        """Nothing to check up front: parity takes up to ``parity_examples`` train examples."""

    def check_after(self, earlier: list[Any]) -> None:
        """The pipeline before this step, checked before any work: a TORCH pass that freezes n-bit
        weights (``quantizes_weights``, e.g. ``hawq``) must come earlier, no ONNX pass in between (this
        pass reads the export's unfused fp32 graph), and that pass's layout must deploy as MatMulNBits
        (its ``check_deployable``), and a budget it priced on MatMulNBits must have been priced at this
        step's ``accuracy_level`` (its ``check_accuracy_level``). ValueError naming what to change."""
        quant = [p for p in earlier if capability(p, "quantizes_weights")]
        if not quant:
            raise ValueError(f"{self.name} deploys n-bit weights that a TORCH pass quantized and froze, and no "
                             f"earlier step does (steps before it: {[p.name for p in earlier] or 'none'}); put a "
                             f"quantizing pass such as 'hawq' (bits=4, or avg_bits=...) before it")
        onnx_before = [p.name for p in earlier if p.stage is Stage.ONNX]
        if onnx_before:
            raise ValueError(f"{self.name} must be the first ONNX step: it rewrites the export's unfused fp32 graph, "
                             f"which {onnx_before} would already have replaced; drop them or put them after it")
        for p in quant:
            check = hook(p, "check_deployable")
            if check is not None:
                check()
            # a budget priced on another accuracy_level than this step deploys would be met on paper only
            check_level = hook(p, "check_accuracy_level")
            if check_level is not None:
                check_level(self.accuracy_level)

    def apply(self, model: OnnxModel, ctx: PassContext) -> PassResult:
        from compresslab.export.matmul_nbits import (KERNEL_2BIT, compare_graphs, probe_kernel_path,
                                                     read_quant_sidecar, to_matmul_nbits)
        from compresslab.export.onnx import ParityError
        from compresslab.export.ort_quant import copy_model_files, read_export_config
        from compresslab.models.quantized import QUANT_KEY

        model = model if isinstance(model, OnnxModel) else OnnxModel(Path(model).parent, Path(model))
        stamp = read_export_config(model.dir).get(QUANT_KEY)
        if not stamp:
            raise ValueError(f"{model.dir / 'config.json'} names no quantized modules (no '{QUANT_KEY}'): "
                             f"{self.name} deploys n-bit weights a TORCH pass froze; run a quantizing pass such "
                             f"as 'hawq' (FakeQuantLinear swap + QAT + freeze) before it")
        params = read_quant_sidecar(model.dir)
        src = source_graph(model)
        ctx.step_dir.mkdir(parents=True, exist_ok=True)
        dst = ctx.step_dir / "model.onnx"
        metrics = to_matmul_nbits(src, dst, stamp, params, accuracy_level=self.accuracy_level)
        copy_model_files(model.dir, ctx.step_dir)
        metrics["source_graph"] = src.name
        if self.check_parity:
            batches = list(ctx.calibration_batches(self.parity_examples, batch_size=PARITY_BATCH,
                                                    setting=f"{self.name}.parity_examples"))
            parity = compare_graphs(src, dst, ctx.track(batches, desc="parity"))
            metrics["parity"] = {**parity, "reference": f"{src.name} (fp32 = the fake-quant torch model)",
                                 "atol": PARITY_ATOL if self.accuracy_level == 0 else None}
            if self.accuracy_level == 0 and (not parity["finite"] or parity["max_abs_diff"] > PARITY_ATOL):
                raise ParityError(f"{self.name}: MatMulNBits graph differs from the fp32 graph by max |Δ| "
                                  f"{parity['max_abs_diff']:.3g} > {PARITY_ATOL} at accuracy_level 0 over "
                                  f"{parity['n_examples']} examples: the codes are exact, so this is a packing bug",
                                  {**parity, "atol": PARITY_ATOL})
        configs = sorted({(m["deployed_bits"], m["deployed_block_size"]) for m in metrics["modules"].values()
                          if m["op"] == "MatMulNBits"})
        metrics["kernel_paths"] = {f"bits{b}_block{bs}_level{self.accuracy_level}":
                                   probe_kernel_path(b, bs, self.accuracy_level) for b, bs in configs}
        metrics["kernel_2bit"] = KERNEL_2BIT
        skipped = metrics.pop("skipped")
        for name, why in skipped.items():
            log.warning("%s: %s: %s", self.name, name, why)
        mods = metrics["modules"]
        return PassResult(metrics=metrics, skipped=skipped, onnx_path=str(dst),
                          structure={"scheme": "ort_matmul_nbits", "accuracy_level": self.accuracy_level,
                                     "weight_bits": {n: m["bits"] for n, m in mods.items()},
                                     "deployed_bits": {n: m["deployed_bits"] for n, m in mods.items()}})
