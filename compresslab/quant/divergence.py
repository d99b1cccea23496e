"""How far a quantized graph's outputs are from a reference's: mean KL and argmax flips (guided int8 and the
outlier-split benchmark select on these, on validation batches)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["Divergence", "divergence", "run_outputs"]


@dataclass(frozen=True)
class Divergence:
    """How far a model's outputs are from the reference's on the same examples."""

    kl: float  # mean KL(p_ref || p) over examples; mean squared error for a one-output head
    flips: int  # examples whose argmax differs from the reference's (0 for a one-output head)
    n: int

    @property
    def agreement(self) -> float:
        return 1.0 - self.flips / self.n if self.n else float("nan")

    def to_dict(self) -> dict[str, float]:
        return {"kl": self.kl, "flips": self.flips, "n": self.n, "agreement": self.agreement}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def divergence(reference: np.ndarray, output: np.ndarray) -> Divergence:
    """Mean KL(softmax(reference) || softmax(output)) and argmax flips of ``(N, C)`` outputs;
    for ``C == 1`` (regression) the mean squared error and no flips."""
    ref, out = np.asarray(reference), np.asarray(output)
    if ref.shape != out.shape or ref.ndim != 2:
        raise ValueError(f"need two (N, C) outputs of one shape, got {ref.shape} and {out.shape}")
    if ref.shape[1] == 1:
        return Divergence(float(np.mean((ref.astype(np.float64) - out) ** 2)), 0, len(ref))
    lp, lq = _log_softmax(ref), _log_softmax(out)
    kl = float(np.mean((np.exp(lp) * (lp - lq)).sum(-1)))
    return Divergence(max(kl, 0.0), int((ref.argmax(-1) != out.argmax(-1)).sum()), len(ref))


def run_outputs(path: str | Path, feeds: Sequence[Mapping[str, Any]], threads: int | None = None) -> np.ndarray:
    """The graph's first output over ``feeds`` (our batch dicts), concatenated: ``(N, C)``."""
    from compresslab.eval.onnx_runner import OnnxRunner

    runner = OnnxRunner(path, threads=threads)
    outs = [runner.run(f) for f in feeds]
    if not outs or outs[0].ndim != 2:
        raise ValueError(f"guided int8 needs a (batch, classes) head; {Path(path).name} gives "
                         f"{outs[0].shape if outs else 'nothing'} (a bare encoder has no predictions to keep)")
    return np.concatenate(outs)
