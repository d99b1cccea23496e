"""PyTorch peers that need packages ours does not hold, each in its own venv (``venvs``) through
``compresslab.bench.external``, run as their documentation recommends on an x86 CPU (quantize, then
``torch.compile``):

* Intel Neural Compressor 3.x, its PyTorch path (3.x has no ONNX export): ``DynamicQuantConfig`` (W8A8
  dynamic through PT2E and the X86InductorQuantizer; PyTorch's x86 inductor guide recommends dynamic
  quantization for BERT-like NLP models, static for CNNs);
* torchao ``Int8DynamicActivationInt8WeightConfig`` (per-token int8 activations, per-channel int8 weights).

INC's other static path, through Intel Extension for PyTorch, is not run: IPEX stops at 2.8.0 (for torch
2.8), and every venv here runs the suite's torch 2.13.0+cpu.

The quantized module (pickled by the worker: the deployed file, sized here) runs only in its venv, so the
worker scores it there on the suite's own dev batches (the logits come back; predictions, agreement and
McNemar are derived here as for every cell) and times it there, interleaved with the dense teacher in
eager fp32 in that same process. Against our cells the timing is ``alternating processes``: the report
says so, and gives the in-worker ratio to the dense teacher that bridges the two processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from compresslab.bench.external import VenvSpec

from ..artifacts import Artifact
from . import PeerInputs
from .venvs import INC, TORCHAO
from .workers import worker_sha256

WORKER = Path(__file__).with_name("workers") / "torch_worker.py"
TIMING = "alternating processes (its own venv; interleaved there with the dense teacher, eager fp32)"


def save_batches(path: Path, batches: Sequence[Mapping[str, np.ndarray]]) -> Path:
    """The dev batches as the workers read them (``b<i>__<input name>``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"b{i}__{k}": np.asarray(v) for i, b in enumerate(batches) for k, v in b.items()})
    return path


@dataclass(frozen=True)
class TorchVenvPeer:
    name: str
    tool: str
    method: str  # the worker's method
    venv: VenvSpec
    compile: bool = True

    def settings(self) -> dict[str, Any]:
        return {"method": self.method, "compile": self.compile, "worker": worker_sha256(WORKER),
                "venv": {"requirements": list(self.venv.requirements), "key": self.venv.key()}}

    def build(self, inputs: PeerInputs) -> Artifact:
        from compresslab.bench.external import ensure_venv, run_worker

        if not inputs.dev_batches:
            raise ValueError(f"{self.name}: no dev batches to score in the worker")
        python = ensure_venv(self.venv)
        work = inputs.work_dir / "worker"
        batches = save_batches(inputs.work_dir / "dev_batches.npz", inputs.dev_batches)
        spec = {"method": self.method, "compile": self.compile, "mode": "build", "checkpoint": str(inputs.checkpoint),
                "head": inputs.head, "input_names": sorted(inputs.dev_batches[0], key=_input_order),
                "threads": inputs.threads, "batches": str(batches)}
        r = run_worker(python, WORKER, spec, work=work, env={"OMP_NUM_THREADS": str(inputs.threads)})
        file = Path(r.out["artifact"]) if r.out.get("artifact") else work / "logits.npz"
        return Artifact(file, "external", "int8", {**{k: v for k, v in r.out.items() if k != "mode"},
                                                    "logits": str(work / "logits.npz"), "worker_spec": spec,
                                                    "python": str(python), "peer": self.name})

    def time(self, artifact: Artifact, timing: Mapping[str, Any], vocab_size: int) -> dict[str, Any]:
        """Time the artifact in its worker (fixed shapes, then real lengths over the dev batches), interleaved
        there with the dense teacher; the suite's figures plus ``reference`` (the dense teacher's, same process)."""
        from compresslab.bench.external import run_worker

        spec = {**artifact.info["worker_spec"], "mode": "time", "artifact": str(artifact.file)
                if artifact.file.suffix == ".pt" else None, "shapes": [list(s) for s in timing["shapes"]],
                "warmup": int(timing["warmup"]), "runs": int(timing["runs"]), "rounds": int(timing["rounds"]),
                "vocab_size": int(vocab_size)}
        work = Path(artifact.info["logits"]).parent.with_name("timing")
        r = run_worker(artifact.info["python"], WORKER, spec, work=work,
                       env={"OMP_NUM_THREADS": str(spec["threads"])})
        return timing_figures(r.out, [tuple(s) for s in timing["shapes"]])


def timing_figures(out: Mapping[str, Any], shapes: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """The worker's ``time`` answer as the suite's timing figures (p50 ms at b1 and b32, real-length
    sentences/s) for the peer and, under ``reference``, for the dense teacher timed beside it."""
    def figs(who: str) -> dict[str, Any]:
        by_b = {int(b): out["latency"][f"b{b}xs{s}"][who]["p50_ms"] for b, s in shapes}
        return {"latency_ms_b1": by_b.get(1), "latency_ms_b32": by_b.get(32),
                "throughput_real": out["real_length"][who]["sentences_per_s"]}

    return {**figs("peer"), "reference": {"dense_torch_fp32": figs("dense_torch_fp32")}, "timing": TIMING,
            "order": out.get("order"), "source": out.get("source")}


def _input_order(name: str) -> int:
    order = ("input_ids", "attention_mask", "token_type_ids")
    return order.index(name) if name in order else len(order)


PEERS = (TorchVenvPeer("inc_ptq_dynamic_int8", "Intel Neural Compressor 3.x DynamicQuantConfig (PT2E, x86 inductor)",
                       "inc_dynamic", INC),
         TorchVenvPeer("torchao_int8_dynamic", "torchao Int8DynamicActivationInt8WeightConfig + torch.compile",
                       "torchao_int8_dynamic", TORCHAO))
