"""The virtualenvs of the peers that cannot share ours (``compresslab.bench.external``): each pinned, torch
always our CPU build. One place, so ``python -m benchmarks.peers.venvs`` can make them all ahead of a
suite run (installs are network and disk: better done before the machine must be quiet)."""

from __future__ import annotations

import sys

from compresslab.bench.external import ExternalError, VenvSpec, ensure_venv

# optimum-onnx 0.1.0 (its latest) pins transformers<4.58 and optimum~=2.1: ours is transformers 5.x
OPTIMUM = VenvSpec("optimum-onnx", ("optimum-onnx==0.1.0", "optimum==2.1.0", "transformers==4.57.6",
                                    "onnxruntime==1.32.0", "onnx==1.23.2"),
                   torch=True, imports=("optimum.onnxruntime", "onnxruntime", "transformers"))
# Intel Neural Compressor 3.x, PyTorch only (neural-compressor-pt: 3.x has no ONNX export); it needs torchao
INC = VenvSpec("inc", ("neural-compressor-pt==3.10", "torchao==0.18.0", "transformers==5.24.0"),
               torch=True, imports=("neural_compressor.torch.quantization", "torchao", "transformers"))
# torchao's wheel pins nothing, so it could join our venv; it gets its own so ours stays as constraints.txt
# says and the INC venv's torchao (the same pin) is not a second, drifting copy
TORCHAO = VenvSpec("torchao", ("torchao==0.18.0", "transformers==5.24.0"), torch=True,
                   imports=("torchao.quantization", "transformers"))
ALL = {"optimum-onnx": OPTIMUM, "inc": INC, "torchao": TORCHAO}


def main(argv: list[str]) -> int:
    """Make the named venvs (all by default); prints each one's python or its exact error."""
    code = 0
    for name in argv or list(ALL):
        try:
            print(f"{name}: {ensure_venv(ALL[name])}", flush=True)
        except ExternalError as e:
            print(f"{name}: {e}", flush=True)
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
