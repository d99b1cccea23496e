"""A deployed artifact of the peer suite (one file, the runtime that runs it, the precision asked) and
the two ways the suite runs it: scored on dev (:func:`score`, through :func:`forward`) and timed
(:func:`timing_runner`). :func:`record_batches` gives the exact dev batches :func:`score` feeds, for
peers scored in their own venv, whose logits :func:`replay_forward` plays back into the same scoring.

Speed and score of a cell come from the same file (MEASURE.md "Speed"): both functions open
``Artifact.file`` with the runtime ``Artifact.backend`` names, nothing else. Backends:

* ``ort``: an ONNX file on ONNX Runtime's CPU provider (full graph optimization);
* ``openvino``: an ONNX file or an IR (``.xml``) on OpenVINO's CPU plugin, compiled at ``precision``
  (``default``, ``f32``, ``bf16``; the precision as compiled is recorded by the runner);
* ``torch``: eager PyTorch; ``file`` is a checkpoint directory (``compresslab.load``) or a ``.pt``
  file holding a whole pickled module (torch.ao dynamic int8: its packed weights have no
  safetensors form). Only files the suite wrote itself are unpickled.
* ``external``: a file only a tool's own venv runs (``benchmarks/peers/torch_venv.py``): scored by
  replaying the logits its worker wrote for the suite's dev batches (``info["logits"]``), timed by the
  peer's worker; neither runs in this process, so :func:`timing_runner` refuses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("ort", "openvino", "torch", "external")
SCORE_BATCH = 64  # dev batches of the suite's scoring (the recorded batches follow it)


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


def deployed_files(path: str | Path) -> list[Path]:
    """The files a deployed artifact is made of: an ONNX file plus its external data, an IR's ``.xml`` plus
    ``.bin``, a ``.pt`` file, or a checkpoint directory's weight files ([] when nothing is there)."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".pt"))
    if not p.is_file():
        return []
    extra = {p.with_suffix(".bin")} if p.suffix == ".xml" else {p.with_name(p.name + "_data"),
                                                                 p.with_suffix(".onnx_data"), p.with_name(p.name + ".data")}
    return [p, *sorted(e for e in extra if e.is_file() and e != p)]


def size_bytes(path: str | Path) -> int | None:
    """Deployed bytes on disk (:func:`deployed_files`). None when nothing is there."""
    return sum(f.stat().st_size for f in deployed_files(path)) or None


def digest(path: str | Path) -> str | None:
    """One sha256 over the deployed files' own sha256 (:func:`deployed_files`), None when nothing is there: what
    a timing is of, so a timing kept from an earlier run is never pinned on a rebuilt file."""
    import hashlib

    from compresslab.manifest import sha256_file

    files = deployed_files(path)
    if not files:
        return None
    return hashlib.sha256("".join(f"{f.name}:{sha256_file(f)};" for f in files).encode()).hexdigest()


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
    if a.backend == "external":
        return replay_forward(a.info["logits"])
    return torch_forward(load_torch(a.file))


def replay_forward(logits_npz: str | Path) -> Any:
    """A scoring forward that returns, batch after batch, the logits a worker computed for the same dev
    batches in the same order (``b0``, ``b1``, ...). ValueError when a batch's size differs from the
    logits' (the batches are not the ones the worker saw) or when more batches come than it scored."""
    z = np.load(logits_npz)
    outs = [z[f"b{i}"] for i in range(len(z.files))]
    it = iter(range(len(outs)))

    def run(batch: dict[str, Any]) -> Any:
        i = next(it, None)
        if i is None:
            raise ValueError(f"{logits_npz}: more batches than the {len(outs)} the worker scored")
        n = len(batch["input_ids"])
        if outs[i].shape[0] != n or (outs[i].ndim == 3 and outs[i].shape[1] != batch["input_ids"].shape[1]):
            raise ValueError(f"{logits_npz}: batch {i} has shape {tuple(batch['input_ids'].shape)}, the worker's "
                             f"output {outs[i].shape}: not the batches it scored")
        return outs[i]

    return run


def timing_runner(a: Artifact, threads: int, vocab_size: int | None) -> Any:
    """A runner for ``compresslab.bench.measure_latency`` over the artifact's own file."""
    if a.backend == "ort":
        from compresslab.bench import OrtRunner

        return OrtRunner(a.file, threads, vocab_size=vocab_size)
    if a.backend == "openvino":
        from compresslab.bench.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(a.file, threads, a.precision, vocab_size=vocab_size)
    if a.backend == "external":
        raise ValueError(f"{a.file} runs only in its tool's venv: it is timed by its peer's worker")
    from compresslab.bench import TorchRunner

    return TorchRunner(load_torch(a.file), threads)


def score(a: Artifact, teacher: Any, threads: int) -> Any:
    """The artifact scored on the dev split of ``teacher``'s task (compresslab ``Scored``). ``teacher``: a
    :class:`compresslab.pipeline.Teacher` (its ``task``, ``tokenizer`` and ``max_length`` are read)."""
    return _predict(forward(a, threads), teacher)


def _predict(fwd: Any, teacher: Any) -> Any:
    from compresslab.eval.evaluate import predict

    return predict(fwd, teacher.task.spec, list(teacher.task.dev), teacher.tokenizer, batch_size=SCORE_BATCH,
                   max_length=int(teacher.max_length))


def record_batches(teacher: Any) -> list[dict[str, np.ndarray]]:
    """Run :func:`_predict` with a forward that records each batch (labels dropped) and answers random
    outputs of the right shape; the batches, in order. Its metrics are thrown away."""
    import warnings

    rng = np.random.default_rng(0)
    seen: list[dict[str, np.ndarray]] = []

    def fwd(b: dict[str, Any]) -> np.ndarray:
        feeds = {k: v.numpy() for k, v in b.items() if k != "labels"}
        seen.append(feeds)
        n, s = feeds["input_ids"].shape
        return rng.standard_normal((n, s, 4) if head_of(teacher) == "encoder" else (n, 2))

    with warnings.catch_warnings():  # metrics of random outputs warn (constant inputs and the like)
        warnings.simplefilter("ignore")
        _predict(fwd, teacher)
    return seen


def head_of(teacher: Any) -> str:
    """``encoder`` for embedding tasks (the last hidden state is scored), else ``classification``."""
    from compresslab.data.tasks import TaskKind

    return "encoder" if teacher.task.spec.kind is TaskKind.EMBEDDING else "classification"
