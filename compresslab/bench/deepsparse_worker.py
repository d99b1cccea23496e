"""DeepSparse bench worker: runs inside its OWN virtualenv (deepsparse==1.8.0 pins numpy<2 and an old
onnx), so it imports nothing from compresslab, only numpy, onnxruntime and deepsparse.

One process times every model interleaved (A B A B ...) at each static shape, DeepSparse engines and
the ``ort_fp32`` denominator alike (MEASURE.md: ratios from one process), then scores the same
compiled engines on the padded dev inputs it is given, so speed and score come from one artifact.

    python deepsparse_worker.py SPEC.json     # writes spec["out"] (json) and spec["logits"] (npz)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np


def _ort_session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle spinners steal the cores
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _private_copy(path: str) -> str:
    import atexit
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="deepsparse-model-")
    atexit.register(shutil.rmtree, tmp, True)
    dst = os.path.join(tmp, os.path.basename(path))
    shutil.copyfile(path, dst)
    for extra in os.listdir(os.path.dirname(path) or "."):  # external data files, if any
        if extra.endswith(".onnx_data") or extra.endswith(".data"):
            shutil.copyfile(os.path.join(os.path.dirname(path), extra), os.path.join(tmp, extra))
    return dst


class _Model:
    """One file compiled for one batch size: ``run(arrays)`` returns the first output (logits)."""

    def __init__(self, path: str, engine: str, batch: int, seq: int, threads: int) -> None:
        import onnx

        graph = onnx.load(path, load_external_data=False).graph
        init = {i.name for i in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in init]
        self.engine = engine
        t0 = time.perf_counter()
        if engine == "deepsparse":
            from deepsparse import Engine

            # DeepSparse rewrites the input shapes IN the file it is given: hand it a private copy
            path = _private_copy(path)

            # static shapes: with a dynamic sequence axis DeepSparse silently leaves its optimized runtime
            self._impl = Engine(model=path, batch_size=batch, num_cores=threads,
                                input_shapes=[[batch, seq]] * len(self.input_names))
        elif engine == "ort":
            self._impl = _ort_session(path, threads)
        else:
            raise ValueError(f"unknown engine {engine!r} (deepsparse | ort)")
        self.compile_s = time.perf_counter() - t0

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        arrays = [np.ascontiguousarray(feeds[n]) for n in self.input_names]
        if self.engine == "deepsparse":
            return self._impl.run(arrays)[0]
        return self._impl.run(None, dict(zip(self.input_names, arrays)))[0]


def _random_feeds(batch: int, seq: int, vocab: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(1, vocab, size=(batch, seq), dtype=np.int64),
            "attention_mask": np.ones((batch, seq), dtype=np.int64),
            "token_type_ids": np.zeros((batch, seq), dtype=np.int64)}


def _summary(times: list[float], batch: int) -> dict[str, Any]:
    ms = sorted(t * 1e3 for t in times)
    p50 = statistics.median(ms)
    return {"p50_ms": p50, "p90_ms": ms[min(len(ms) - 1, int(0.9 * len(ms)))], "runs": len(ms),
            "throughput_per_s": batch / (p50 / 1e3)}


def time_shape(models: dict[str, _Model], feeds: dict[str, np.ndarray], batch: int, *, warmup: int, runs: int,
               min_time_s: float, max_runs: int) -> dict[str, Any]:
    """Interleaved rounds after warm-up until ``runs`` rounds and ``min_time_s`` have passed."""
    for m in models.values():
        for _ in range(warmup):
            m.run(feeds)
    times: dict[str, list[float]] = {n: [] for n in models}
    start = time.perf_counter()
    rounds = 0
    while rounds < runs or (time.perf_counter() - start < min_time_s and rounds < max_runs):
        for name, m in models.items():
            t0 = time.perf_counter()
            m.run(feeds)
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {n: _summary(t, batch) for n, t in times.items()}


def score(model: _Model, data: dict[str, np.ndarray], batch: int) -> np.ndarray:
    """Logits for every row of ``data`` (static [N, seq]); the last batch is padded with row 0 copies."""
    n = len(data["input_ids"])
    out = []
    for i in range(0, n, batch):
        chunk = {k: v[i:i + batch] for k, v in data.items()}
        real = len(chunk["input_ids"])
        if real < batch:
            chunk = {k: np.concatenate([v, np.repeat(v[:1], batch - real, axis=0)]) for k, v in chunk.items()}
        out.append(np.asarray(model.run(chunk))[:real])
    return np.concatenate(out)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for name in ("deepsparse", "onnxruntime", "onnx", "numpy"):
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing package is recorded, not fatal
            out[name] = "missing"
    return out


def main(argv: list[str]) -> None:
    spec = json.loads(open(argv[0]).read())
    threads, seq, vocab = int(spec["threads"]), int(spec["seq"]), int(spec["vocab_size"])
    result: dict[str, Any] = {"versions": versions(), "threads": threads, "latency": {}, "compile_s": {}}
    logits: dict[str, np.ndarray] = {}
    score_batch = int(spec.get("score_batch_size", 32))
    data = dict(np.load(spec["inputs"])) if spec.get("inputs") else None
    for batch in sorted({int(b) for b in spec["batches"]} | ({score_batch} if data is not None else set())):
        models = {name: _Model(m["path"], m["engine"], batch, seq, threads) for name, m in spec["models"].items()}
        result["compile_s"][str(batch)] = {n: m.compile_s for n, m in models.items()}
        if batch in {int(b) for b in spec["batches"]}:
            print(f"deepsparse worker: timing {list(models)} at {batch}x{seq}", file=sys.stderr, flush=True)
            result["latency"][f"b{batch}xs{seq}"] = time_shape(
                models, _random_feeds(batch, seq, vocab, int(spec.get("seed", 0))), batch,
                warmup=int(spec.get("warmup", 5)), runs=int(spec.get("runs", 20)),
                min_time_s=float(spec.get("min_time_s", 2.0)), max_runs=int(spec.get("max_runs", 200)))
        if data is not None and batch == score_batch:
            for name in spec.get("score", []):
                print(f"deepsparse worker: scoring {name} on {len(data['input_ids'])} rows", file=sys.stderr,
                      flush=True)
                logits[name] = score(models[name], data, batch)
        del models
    if logits:
        np.savez(spec["logits"], **logits)
    with open(spec["out"], "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
