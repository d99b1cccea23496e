"""ONNX Runtime's ``MatMulNBitsQuantizer`` with RTN (round to nearest, no data): 4-bit weight-only blocks
of 64, asymmetric, on the plain export; ORT runs it with its MatMulNBits kernels. The weight-only peer of
our Hessian mixed precision (``hawq_w4``); :func:`rtn_nbits` is the one copy of this call (the suite's
cell, and ``hessian_mp.py baselines`` in benchmarks/hessian_mp_baselines.py for the same file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifacts import Artifact
from . import PeerInputs


def rtn_nbits(plain_onnx: Path, dst: Path, *, bits: int = 4, block_size: int = 64, symmetric: bool = False) -> Path:
    """``MatMulNBitsQuantizer(RTN)`` of ``plain_onnx`` into ``dst`` (written whole, then renamed).

    It quantizes every MatMul with a constant weight it finds (the classifier and pooler included)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer, RTNWeightOnlyQuantConfig

    q = MatMulNBitsQuantizer(onnx.load(str(plain_onnx)), bits=bits, block_size=block_size,
                             is_symmetric=symmetric, algo_config=RTNWeightOnlyQuantConfig())
    q.process()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    q.model.save_model_to_file(str(tmp), False)
    tmp.replace(dst)
    return dst


@dataclass(frozen=True)
class OrtNBits:
    name: str = "ort_matmul_nbits_rtn4"
    tool: str = "ONNX Runtime MatMulNBitsQuantizer RTN 4-bit (block 64, asym)"
    bits: int = 4
    block_size: int = 64

    def settings(self) -> dict[str, Any]:
        import onnxruntime

        return {"algo": "RTN", "bits": self.bits, "block_size": self.block_size, "symmetric": False,
                "onnxruntime": onnxruntime.__version__}

    def build(self, inputs: PeerInputs) -> Artifact:
        dst = rtn_nbits(inputs.plain_onnx, inputs.work_dir / "model.onnx", bits=self.bits, block_size=self.block_size)
        return Artifact(dst, "ort", f"w{self.bits} (MatMulNBits), fp32 activations", self.settings())


PEER = OrtNBits()
