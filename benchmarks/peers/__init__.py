"""The peers of the suite (issue 14): other tools, each run as its documentation recommends, on the same
cached ``bench`` teacher, the same calibration examples and the same machine as our pipelines.

One module per tool; each exposes peers that follow :class:`Peer`: a ``name`` (the cell's name in
``suite_<task>.json``), the ``tool`` in words, ``settings()`` (what is hashed into the cell's cache key:
change a setting and the cell is built again) and ``build(inputs) -> Artifact``. ``build`` may raise
anything: the suite records ``"<ExceptionType>: <message>"`` as the cell's ``error`` and goes on with
the other cells. A peer that cannot run in this process (pins that conflict with ours) is an
:class:`Unwired` peer: listed, never silent, its ``error`` says what it needs.

:data:`PEERS` is the registry, in the order cells are built and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from ..artifacts import Artifact


@dataclass(frozen=True)
class PeerInputs:
    """What every peer may start from. ``plain_onnx``: the teacher's unfused fp32 export (what a user's
    exporter writes); ``fused_onnx``: the same after ORT's transformer fusion; ``checkpoint``: the
    teacher's torch directory; ``calibration``: feeds from train (name -> (batch, seq) int64), the
    same examples for every peer that calibrates; ``work_dir``: an empty directory of the cell's own."""

    plain_onnx: Path
    fused_onnx: Path
    checkpoint: Path
    calibration: Sequence[Mapping[str, np.ndarray]]
    work_dir: Path


class Peer(Protocol):
    name: str
    tool: str

    def settings(self) -> dict[str, Any]:
        """The settings the artifact depends on (JSON-able; tool versions included)."""
        ...

    def build(self, inputs: PeerInputs) -> Artifact:
        """Make the artifact under ``inputs.work_dir``."""
        ...


class NotWiredError(RuntimeError):
    """A peer the suite lists but cannot run yet."""


@dataclass(frozen=True)
class Unwired:
    """A peer listed in the suite that needs what this process cannot give (its own venv)."""

    name: str
    tool: str
    needs: str

    def settings(self) -> dict[str, Any]:
        return {"needs": self.needs}

    def build(self, inputs: PeerInputs) -> Artifact:
        raise NotWiredError(f"not yet wired: needs its own venv ({self.needs})")


def _registry() -> dict[str, Peer]:
    from . import dense, nncf_ptq, nncf_weights, ort_dynamic, ort_nbits, torch_dynamic

    peers: list[Peer] = [*dense.PEERS, ort_dynamic.PEER, torch_dynamic.PEER, nncf_ptq.PEER, ort_nbits.PEER,
                         nncf_weights.PEER,
                         Unwired("optimum_ort_avx512_vnni", "optimum-onnx ORTOptimizer + ORTQuantizer (avx512_vnni)",
                                 "optimum-onnx pins transformers<4.58; to run through compresslab/bench/external.py"),
                         Unwired("inc_ptq", "Intel Neural Compressor 3.x PTQ (PyTorch path)",
                                 "neural-compressor 3.x and its torch pins; to run through compresslab/bench/external.py"),
                         Unwired("torchao_int8_dynamic", "torchao Int8DynamicActivationInt8WeightConfig",
                                 "a torchao build matching its torch; to run through compresslab/bench/external.py")]
    return {p.name: p for p in peers}


PEERS: dict[str, Peer] = _registry()
