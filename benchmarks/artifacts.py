"""A deployed artifact of the peer suite (one file, the runtime that runs it, the precision asked) and
the two ways the suite runs it: scored on dev (:func:`forward`) and timed (:func:`timing_runner`).

Speed and score of a cell come from the same file (MEASURE.md "Speed"): both functions open
``Artifact.file`` with the runtime ``Artifact.backend`` names, nothing else. Backends:

* ``ort``: an ONNX file on ONNX Runtime's CPU provider (full graph optimization);
* ``openvino``: an ONNX file or an IR (``.xml``) on OpenVINO's CPU plugin, compiled at ``precision``
  (``default``, ``f32``, ``bf16``; the precision as compiled is recorded by the runner);
* ``torch``: eager PyTorch; ``file`` is a checkpoint directory (``compresslab.load``) or a ``.pt``
  file holding a whole pickled module (torch.ao dynamic int8: its packed weights have no
  safetensors form). Only files the suite wrote itself are unpickled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BACKENDS = ("ort", "openvino", "torch")


@dataclass(frozen=True)
class Artifact:
    """What a cell deploys. ``info`` carries what the tool recorded (settings, versions, wall time)."""

    file: Path
    backend: str
    precision: str
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; allowed: {list(BACKENDS)}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "file": str(self.file)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Artifact":
        return cls(Path(d["file"]), d["backend"], d["precision"], dict(d.get("info") or {}))


def size_bytes(path: str | Path) -> int | None:
    """Deployed bytes on disk: an ONNX file plus its external data, an IR's ``.xml`` plus ``.bin``, a
    ``.pt`` file, or a checkpoint directory's weight files. None when nothing is there."""
    p = Path(path)
    if p.is_dir():
        files = [f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".pt")]
        return sum(f.stat().st_size for f in files) or None
    if not p.is_file():
        return None
    extra = {p.with_suffix(".bin")} if p.suffix == ".xml" else {p.with_name(p.name + "_data"),
                                                                 p.with_suffix(".onnx_data"), p.with_name(p.name + ".data")}
    return p.stat().st_size + sum(e.stat().st_size for e in extra if e.is_file() and e != p)


def load_torch(file: str | Path) -> Any:
    """The torch module of a ``torch`` artifact, in eval mode (see the module docstring)."""
    import torch

    p = Path(file)
    if p.is_dir():
        from compresslab.checkpoint import load

        return load(p).eval()
    # a whole module pickled by this suite (benchmarks/peers/torch_dynamic.py); never a downloaded file
    return torch.load(p, weights_only=False).eval()


def forward(a: Artifact, threads: int) -> Any:
    """A scoring forward (``compresslab.eval.evaluate.Forward``) over the artifact's own file."""
    from compresslab.eval.evaluate import onnx_forward, torch_forward

    if a.backend == "ort":
        from compresslab.eval.onnx_runner import OnnxRunner

        return onnx_forward(OnnxRunner(a.file, threads=threads))
    if a.backend == "openvino":
        from compresslab.bench.openvino_runner import OpenVinoRunner

        return onnx_forward(OpenVinoRunner(a.file, threads, a.precision))
    return torch_forward(load_torch(a.file))


def timing_runner(a: Artifact, threads: int, vocab_size: int | None) -> Any:
    """A runner for ``compresslab.bench.measure_latency`` over the artifact's own file."""
    if a.backend == "ort":
        from compresslab.bench import OrtRunner

        return OrtRunner(a.file, threads, vocab_size=vocab_size)
    if a.backend == "openvino":
        from compresslab.bench.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(a.file, threads, a.precision, vocab_size=vocab_size)
    from compresslab.bench import TorchRunner

    return TorchRunner(load_torch(a.file), threads)
