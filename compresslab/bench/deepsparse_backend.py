"""DeepSparse as an optional bench backend (the CPU engine the oBERT paper measured with).

DeepSparse 1.8.0 cannot share our virtualenv (it pins numpy<2 and onnx 1.14), so it lives in its own
(``make deepsparse`` creates ``.venv-deepsparse``) and runs :mod:`compresslab.bench.deepsparse_worker`
as a subprocess through :mod:`compresslab.bench.external` (the generic "tool in its own venv" protocol:
JSON spec in, JSON out, the worker's stderr tail in any error). The worker times every model interleaved in ONE process, the ``ort_fp32``
denominator included, and scores the very engines it timed (MEASURE.md: speed and score from one
artifact).

What DeepSparse needs, and why the files differ from the ORT deployment:
- static input shapes (``input_shapes=[[b, s]] * 3``): with a dynamic sequence axis it silently falls
  back to its slow path, so the worker compiles one engine per batch size at ``seq``;
- a plain (unfused) graph: ORT's fused ``Attention``/``SkipLayerNormalization`` are contrib ops it
  does not know, so the fp32 files are the ``model_unfused.onnx`` exports;
- for int8, a static QDQ graph of the same pruned model (calibrated on train, like ``ort_int8_static``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from compresslab.failure import clipped

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("deepsparse_worker.py")
ENV_VAR = "COMPRESSLAB_DEEPSPARSE_PYTHON"
DEFAULT_VENV = Path(".venv-deepsparse")


class DeepSparseUnavailable(RuntimeError):
    """No usable DeepSparse interpreter: the reason says what to install."""


def find_python(setting: str | os.PathLike | None = None) -> Path:
    """The interpreter of the DeepSparse venv: ``setting``, then $COMPRESSLAB_DEEPSPARSE_PYTHON,
    then ``.venv-deepsparse/bin/python`` in the working directory."""
    if setting:
        if not Path(setting).is_file():
            raise DeepSparseUnavailable(f"deepsparse python {setting} does not exist (`make deepsparse` creates one)")
        return Path(setting).absolute()  # not resolve(): a venv's python is a symlink out of the venv
    for cand in (os.environ.get(ENV_VAR), DEFAULT_VENV / "bin" / "python"):
        if cand and Path(cand).is_file():
            return Path(cand).absolute()
    raise DeepSparseUnavailable(f"no DeepSparse venv: run `make deepsparse` or set {ENV_VAR}")


def check_python(python: Path) -> str:
    """The DeepSparse version the interpreter imports; DeepSparseUnavailable (with the import's error) when
    it cannot."""
    from compresslab.bench.external import ExternalError, check_imports

    try:
        return str(check_imports(python, ["deepsparse"])["deepsparse"])
    except ExternalError as e:
        raise DeepSparseUnavailable(f"{python} cannot import deepsparse: {clipped(e.detail, 400)}") from None


def static_inputs(examples: Sequence[Any], tokenizer: Any, seq: int, kind: Any) -> dict[str, np.ndarray]:
    """Every example tokenized and padded to exactly ``seq`` tokens (DeepSparse compiles static shapes)."""
    from compresslab.data.loaders import make_loader

    loader = make_loader(list(examples), tokenizer, 256, seq, shuffle=False, pad_to=seq, kind=kind)
    parts: dict[str, list[np.ndarray]] = {}
    for b in loader:
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            if k in b:
                parts.setdefault(k, []).append(b[k].numpy().astype(np.int64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def quantize_qdq_for_deepsparse(unfused: str | Path, dst: str | Path, calibration: Iterable[Mapping[str, Any]],
                                *, per_channel: bool = False,
                                op_types: Sequence[str] = ("MatMul", "Gemm"), quant_format: str = "qdq") -> dict[str, Any]:
    """Static int8 QDQ of the plain graph: int8 weights, uint8 activations, around the matmuls only.

    Only matmuls, as SparseML's exports do: quantizing every op also quantizes the attention-mask
    ``Add`` (whose range spans the dtype's minimum) and wrecks the scores. Per-tensor weight scales by
    default (SparseML's layout); ``per_channel`` is kept for comparison. ``quant_format`` ``qoperator``
    writes QLinearMatMul nodes instead of QDQ pairs (the form SparseML's final exports take).
    """
    from compresslab.export.ort_quant import quantize_static_qdq

    metrics = quantize_static_qdq(unfused, dst, calibration, per_channel=per_channel, op_types=list(op_types),
                                  quant_format=quant_format)
    metrics["dropped_opset_imports"] = drop_unused_opsets(dst)
    return metrics


def drop_unused_opsets(path: str | Path) -> list[str]:
    """Remove opset imports no node uses (ORT's pre-processing stamps ``ai.onnx.ml`` v5 and friends,
    which the older ONNX Runtime inside DeepSparse refuses to load); rewrites ``path`` atomically."""
    import onnx

    from compresslab.manifest import atomic_write_bytes

    model = onnx.load(str(path))
    used = {n.domain for n in model.graph.node} | {""}
    for f in model.functions:
        used |= {n.domain for n in f.node}
    dropped = [o.domain for o in model.opset_import if o.domain not in used]
    if dropped:
        keep = [o for o in model.opset_import if o.domain in used]
        del model.opset_import[:]
        model.opset_import.extend(keep)
        atomic_write_bytes(path, model.SerializeToString())
    return dropped


@dataclass
class DeepSparseBench:
    """One worker call: ``models`` maps a label to ``(path, engine)`` with engine ``deepsparse`` or ``ort``."""

    models: dict[str, tuple[str, str]]
    score: list[str] = field(default_factory=list)
    batches: tuple[int, ...] = (1, 32)
    seq: int = 128
    threads: int = 2
    vocab_size: int = 30522
    warmup: int = 5
    runs: int = 20
    min_time_s: float = 2.0
    max_runs: int = 200
    score_batch_size: int = 32
    timeout_s: float = 3600.0

    def run(self, python: Path, inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Runs the worker; returns its JSON plus ``logits`` (label -> array) for the scored models.
        Raises ExternalError (a RuntimeError) with the worker's stderr tail when it fails."""
        from compresslab.bench.external import run_worker

        for label, (path, engine) in self.models.items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"{label}: {path} does not exist")
            if engine not in ("deepsparse", "ort"):
                raise ValueError(f"{label}: engine must be deepsparse or ort, got {engine!r}")
        unknown = set(self.score) - set(self.models)
        if unknown:
            raise ValueError(f"cannot score {sorted(unknown)}: not among the models {sorted(self.models)}")
        work = Path(tempfile.mkdtemp(prefix="compresslab-deepsparse-"))
        try:
            spec: dict[str, Any] = {
                "threads": self.threads, "seq": self.seq, "vocab_size": self.vocab_size, "batches": list(self.batches),
                "warmup": self.warmup, "runs": self.runs, "min_time_s": self.min_time_s, "max_runs": self.max_runs,
                "score_batch_size": self.score_batch_size, "score": list(self.score) if inputs is not None else [],
                "models": {k: {"path": str(Path(p).resolve()), "engine": e} for k, (p, e) in self.models.items()},
                "logits": str(work / "logits.npz")}
            if inputs is not None:
                np.savez(work / "inputs.npz", **inputs)
                spec["inputs"] = str(work / "inputs.npz")
            log.info("deepsparse: %s at batches %s x %d, %d threads (worker %s)", list(self.models), self.batches,
                     self.seq, self.threads, python)
            out = run_worker(python, WORKER, spec, work=work, timeout=self.timeout_s).out
            logits_file = work / "logits.npz"
            out["logits"] = dict(np.load(logits_file)) if logits_file.is_file() else {}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return out


def check_requested(enabled: bool | str, python: str | None) -> None:
    """Fail before any expensive work when DeepSparse is required (``enabled: true``) but missing;
    ``auto`` and ``false`` never fail here. Raises DeepSparseUnavailable."""
    if enabled is True:
        check_python(find_python(python))


def by_runner(latency: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The worker's shape -> runner table as runner -> shape, the layout every latency table uses."""
    out: dict[str, dict[str, Any]] = {}
    for shape, row in latency.items():
        for name, stats in row.items():
            out.setdefault(name, {})[shape] = stats
    return out


if __name__ == "__main__":  # pragma: no cover - convenience: print the interpreter found and its version
    py = find_python(sys.argv[1] if len(sys.argv) > 1 else None)
    print(py, check_python(py))
