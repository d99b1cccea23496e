"""The peers of the suite (issue 14): other tools, each run as its documentation recommends, on the same
cached ``bench`` teacher, the same calibration examples and the same machine as our pipelines.

One module per tool; each exposes peers that follow :class:`Peer`: a ``name`` (the cell's name in
``suite_<task>.json``), the ``tool`` in words, ``settings()`` (what is hashed into the cell's cache key:
change a setting and the cell is built again) and ``build(inputs) -> Artifact``. ``build`` may raise
anything: the suite records ``"<ExceptionType>: <message>"`` as the cell's ``error`` and goes on with
the other cells. Tools whose pins conflict with ours run in their own venv through
``compresslab.bench.external`` (``venvs``): optimum-onnx writes an ONNX file the suite runs itself;
Intel Neural Compressor and torchao (``torch_venv``) give an ``external`` artifact, scored and timed
in its worker (a peer with a ``time`` method), so their timing is "alternating processes".

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
    exporter writes; its directory is in the layout optimum's ORTModel classes load); ``fused_onnx``:
    the same after ORT's transformer fusion; ``checkpoint``: the teacher's torch directory;
    ``calibration``: feeds from train (name -> (batch, seq) int64), the same examples for every peer
    that calibrates; ``work_dir``: an empty directory of the cell's own; ``dev_batches``: the dev
    batches exactly as the suite scores them (for peers scored in their own process); ``head``:
    ``classification`` (logits) or ``encoder`` (last hidden state, embedding tasks); ``threads``."""

    plain_onnx: Path
    fused_onnx: Path
    checkpoint: Path
    calibration: Sequence[Mapping[str, np.ndarray]]
    work_dir: Path
    dev_batches: Sequence[Mapping[str, np.ndarray]] = ()
    head: str = "classification"
    threads: int = 1


class Peer(Protocol):
    name: str
    tool: str

    def settings(self) -> dict[str, Any]:
        """The settings the artifact depends on (JSON-able; tool versions included)."""
        ...

    def build(self, inputs: PeerInputs) -> Artifact:
        """Make the artifact under ``inputs.work_dir``."""
        ...


def _registry() -> dict[str, Peer]:
    from . import dense, nncf_ptq, nncf_weights, optimum_ort, ort_dynamic, ort_nbits, torch_dynamic, torch_venv

    peers: list[Peer] = [*dense.PEERS, ort_dynamic.PEER, ort_dynamic.FUSED, torch_dynamic.PEER, nncf_ptq.PEER,
                         ort_nbits.PEER, nncf_weights.PEER, *optimum_ort.PEERS, *torch_venv.PEERS]
    return {p.name: p for p in peers}


PEERS: dict[str, Peer] = _registry()
