"""Model runners with one call shape, `run(batch) -> None`, so the timer treats them alike.

A runner does its one-off work (session creation, reading the graph's input names and dtypes,
the forward signature) at construction and keeps `run` to what a deployment does per request,
plus negligible bookkeeping (selecting inputs, pinning torch threads). onnxruntime and
torch are imported inside the classes so importing `compresslab` stays light.
"""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from compresslab.bench.env import resolve_threads

if TYPE_CHECKING:
    import torch

# ORT reports input element types as strings; runners cast to what the graph declares so a
# graph exported with int32 ids is not fed int64 (ORT would raise).
_ORT_DTYPES: dict[str, type[np.generic]] = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(bool)": np.bool_,
}


class Runner(Protocol):
    """Anything `measure_latency` can time. Optional attributes: `threads`, `vocab_size`, `settle_s` (an untimed
    busy-wait after each call, for runtimes whose threads keep spinning: :func:`~compresslab.bench.latency.settle`)."""

    def run(self, batch: dict[str, np.ndarray]) -> None:
        """Run one forward pass on `batch` (name -> (batch, seq) array) and wait for it."""
        ...


class OrtRunner:
    """An ONNX Runtime session with pinned threads and full graph optimization.

    The session is built by `load_probe.make_session` (ORT_ENABLE_ALL, inter-op 1, intra-op
    `threads`), the same code the load probe uses, so both measure the same thing. `vocab_size`
    bounds the random ids when known (an ONNX file does not state it plainly).
    """

    def __init__(
        self,
        onnx_path: str | Path,
        threads: int | None,
        provider: str = "CPUExecutionProvider",
        *,
        vocab_size: int | None = None,
    ) -> None:
        from compresslab.bench.load_probe import make_session  # imports onnxruntime

        self.onnx_path = Path(onnx_path)
        self.threads = resolve_threads(threads)
        self.provider = provider
        self.vocab_size = vocab_size
        self.session, self.load_s = make_session(self.onnx_path, self.threads, provider)
        self.inputs: dict[str, type[np.generic] | None] = {
            i.name: _ORT_DTYPES.get(i.type) for i in self.session.get_inputs()
        }

    def feed(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Match `batch` to the graph's inputs: drop extras, cast dtypes, refuse missing ones."""
        missing = [n for n in self.inputs if n not in batch]
        if missing:
            raise ValueError(
                f"{self.onnx_path.name} needs inputs {missing}; batch has {sorted(batch)}"
            )
        return {
            name: batch[name] if dtype is None else batch[name].astype(dtype, copy=False)
            for name, dtype in self.inputs.items()
        }

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """One `session.run`; returns the first output, (batch, labels) logits (ORT returns it anyway, so the
        timer pays nothing for it and the same session can be scored)."""
        return self.session.run(None, self.feed(batch))[0]

    def info(self) -> dict[str, Any]:
        """What a results file records about this runner."""
        return {"kind": "onnxruntime", "provider": self.provider, "threads": self.threads,
                "model": str(self.onnx_path), "load_s": round(self.load_s, 4)}


# Untimed busy-wait after each CPU torch call in an interleaved timing (bench.latency.settle). libgomp's workers
# spin GOMP_SPINCOUNT (300k) pauses after a parallel region before they sleep: ~8 ms on Zen 3, up to ~20 ms where a
# pause costs ~140 cycles (recent Intel). 30 ms removed the bias on Zen 3 (results/slot_bias.json; 10 ms did too in an
# exploratory run) and covers the slower pause; a 40 ms spin did not slow the next cell there either.
TORCH_CPU_SETTLE_S = 0.03


class TorchRunner:
    """Eager PyTorch under `inference_mode`, threads pinned per call and restored after.

    The model is moved to `device` in place (as `nn.Module.to` does). On CUDA every call ends
    with a synchronize, otherwise the timer would measure only the kernel launch. On CPU, `settle_s`
    (:data:`TORCH_CPU_SETTLE_S`) lets its OpenMP workers stop spinning before the next timed cell.
    """

    def __init__(self, model: torch.nn.Module, threads: int | None, device: str = "cpu") -> None:
        import torch

        self.threads = resolve_threads(threads)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch.cuda.is_available() is False")
        self.model = model.eval().to(self.device)
        # one thread: no OpenMP workers to spin; CUDA: the CPU side only launches and synchronizes
        self.settle_s = TORCH_CPU_SETTLE_S if self.device.type == "cpu" and self.threads > 1 else 0.0
        config = getattr(model, "config", None)
        self.vocab_size: int | None = getattr(config, "vocab_size", None)
        # DistilBERT's forward has no token_type_ids; pass only what forward accepts.
        self.accepted = frozenset(inspect.signature(model.forward).parameters)

    def run(self, batch: dict[str, np.ndarray]) -> None:
        """One eager forward pass with `threads` intra-op threads."""
        import torch

        inputs = {k: torch.from_numpy(v).to(self.device)
                  for k, v in batch.items() if k in self.accepted}
        previous = torch.get_num_threads()
        if previous != self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                self.model(**inputs)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        finally:
            if previous != self.threads:
                torch.set_num_threads(previous)

    def info(self) -> dict[str, Any]:
        """What a results file records about this runner."""
        return {"kind": "torch_eager", "device": str(self.device), "threads": self.threads, "settle_s": self.settle_s,
                "dtype": str(next(self.model.parameters()).dtype)}


class GpuMode(str, Enum):
    """`bench.gpu` config values: auto-detect, off, or insist on one backend."""

    AUTO = "auto"
    OFF = "off"
    ORT_CUDA = "ort_cuda"
    TORCH_CUDA = "torch_cuda"


def cuda_available_backends() -> list[str]:
    """GPU backends usable here, preferred first: "ort_cuda", then "torch_cuda"."""
    from compresslab.bench.env import ort_providers

    backends = []
    if "CUDAExecutionProvider" in ort_providers():
        backends.append("ort_cuda")
    try:
        import torch

        if torch.cuda.is_available():
            backends.append("torch_cuda")
    except ImportError:
        pass
    return backends


def select_gpu_backend(mode: GpuMode | str = GpuMode.AUTO) -> dict[str, str | None]:
    """Pick the GPU backend for the bench stage and say why, for the results file.

    Returns {"backend": "ort_cuda" | "torch_cuda" | None, "reason": str}. ORT CUDA is preferred
    because it runs the same artifact that is scored; torch on CUDA is the stated fallback.
    Asking for a specific backend that is missing raises, since silently skipping would hide it.
    """
    try:
        mode = GpuMode(mode)
    except ValueError:
        allowed = [m.value for m in GpuMode]
        raise ValueError(f"bench.gpu must be one of {allowed}, got {mode!r}") from None
    if mode is GpuMode.OFF:
        return {"backend": None, "reason": "disabled by config (bench.gpu=off)"}
    found = cuda_available_backends()
    if mode is GpuMode.AUTO:
        if not found:
            return {"backend": None, "reason": "skipped: no CUDAExecutionProvider in onnxruntime "
                    "and torch.cuda.is_available() is False"}
        backend = found[0]
        reason = ("onnxruntime CUDAExecutionProvider" if backend == "ort_cuda" else
                  "onnxruntime has no CUDAExecutionProvider; using the torch model on CUDA")
        return {"backend": backend, "reason": reason}
    if mode.value not in found:
        raise RuntimeError(
            f"bench.gpu={mode.value} requested but available GPU backends are {found}"
        )
    return {"backend": mode.value, "reason": f"requested by config (bench.gpu={mode.value})"}
