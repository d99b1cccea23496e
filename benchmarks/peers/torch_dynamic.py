"""PyTorch ``torch.ao.quantization.quantize_dynamic`` (nn.Linear -> dynamic int8, qint8 weights) on the
teacher, run eagerly by torch: the one-line int8 of the PyTorch docs. The artifact is the whole quantized
module pickled (its packed int8 weights have no safetensors form); the file is what is sized and timed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..artifacts import Artifact
from . import PeerInputs


@dataclass(frozen=True)
class TorchDynamic:
    name: str = "torch_ao_dynamic_int8"
    tool: str = "PyTorch torch.ao quantize_dynamic (nn.Linear, qint8)"

    def settings(self) -> dict[str, Any]:
        import torch

        return {"call": "quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)", "torch": torch.__version__,
                "engine": torch.backends.quantized.engine}

    def build(self, inputs: PeerInputs) -> Artifact:
        import warnings

        import torch
        from torch import nn

        from compresslab.checkpoint import load

        model = load(inputs.checkpoint).eval()
        with warnings.catch_warnings():  # torch 2.13 warns that torch.ao quantization is deprecated: that is the peer
            warnings.simplefilter("ignore")
            q = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        dst = inputs.work_dir / "model.pt"
        tmp = dst.with_suffix(".pt.tmp")
        torch.save(q, tmp)
        tmp.replace(dst)
        return Artifact(dst, "torch", "int8", {"engine": torch.backends.quantized.engine})


PEER = TorchDynamic()
