"""Run an exported ONNX encoder on ONNX Runtime with the same batches the torch side uses.

Batches come from our loaders as dicts of torch tensors (``input_ids``, ``attention_mask``,
``token_type_ids`` when the tokenizer makes them, ``labels``); the graph decides which of them it
takes. Keeping that matching in one place means export parity, calibration, eval and bench feed a
graph identically. ``onnxruntime`` is imported here only, and this module is never imported by
``compresslab/__init__.py``, so ``import compresslab`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

# ONNX tensor element types our graphs use for inputs -> numpy dtypes
_ORT_TO_NUMPY = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}

# Inputs a graph may need that a batch may lack; filled with zeros (what HF does when omitted).
_ZERO_FILLABLE = ("token_type_ids",)


def to_numpy(value: Any) -> np.ndarray:
    """A numpy view of a torch tensor (moved to CPU) or anything array-like."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def make_feeds(batch: Mapping[str, Any], inputs: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    """Feeds for a graph whose inputs are ``{name: dtype}``, taken from ``batch``.

    Extra keys (``labels``) are dropped; a missing ``token_type_ids`` is filled with zeros; any
    other missing input is an error naming what the graph needs and what the batch has.
    """
    feeds: dict[str, np.ndarray] = {}
    for name, dtype in inputs.items():
        if name in batch:
            feeds[name] = to_numpy(batch[name]).astype(dtype, copy=False)
        elif name in _ZERO_FILLABLE and "input_ids" in batch:
            feeds[name] = np.zeros(to_numpy(batch["input_ids"]).shape, dtype=dtype)
        else:
            raise ValueError(f"the ONNX graph needs input {name!r}; the batch has {sorted(batch)} "
                             f"(graph inputs: {list(inputs)})")
    return feeds


# ORT graph optimization levels by name. "basic" runs a QDQ graph as ONNX defines it (Q/DQ in float,
# fp32 MatMul); "extended"/"all" fuse Q/DQ into ORT's int8 kernels (what deployment runs).
GRAPH_OPTIMIZATION = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class OnnxRunner:
    """An ONNX Runtime session over one ``.onnx`` file that runs our batch dicts.

    ``threads`` sets intra-op threads (``None`` = ORT's default, all cores); inter-op is 1 since
    an encoder graph is a chain. ``providers`` defaults to the CPU provider; asking for one that
    this onnxruntime build lacks is an error rather than ORT's silent fall-back to CPU, so a
    "CUDA" number is never secretly a CPU number. ``optimization`` is the graph optimization level
    (:data:`GRAPH_OPTIMIZATION`; ``all`` is ORT's default).
    """

    def __init__(self, path: str | Path, threads: int | None = None,
                 providers: Sequence[str] | None = None, optimization: str = "all") -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.path}")
        providers = list(providers or ["CPUExecutionProvider"])
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise ValueError(f"execution provider(s) {missing} not available; available: {available}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads={threads} must be >= 1 (or None for ORT's default)")
        options = ort.SessionOptions()
        if optimization not in GRAPH_OPTIMIZATION:
            raise ValueError(f"optimization={optimization!r}; allowed: {sorted(GRAPH_OPTIMIZATION)}")
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION[optimization])
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see bench/load_probe.py
        self.threads = threads
        self.providers = providers
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.inputs: dict[str, np.dtype] = {
            i.name: np.dtype(_ORT_TO_NUMPY.get(i.type, np.int64)) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        """The graph's input names, in graph order."""
        return list(self.inputs)

    def feeds(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The numpy feeds this graph takes from ``batch`` (see :func:`make_feeds`)."""
        return make_feeds(batch, self.inputs)

    def run(self, batch: Mapping[str, Any]) -> np.ndarray:
        """The first output (logits ``(B, C)`` or last hidden state ``(B, T, H)``) for one batch."""
        return self.session.run(self.output_names[:1], self.feeds(batch))[0]

    def predict(self, loader: Iterable[Mapping[str, Any]],
                postprocess: Callable[[np.ndarray, Mapping[str, Any]], np.ndarray] | None = None) -> np.ndarray:
        """Outputs of every batch, concatenated along the batch axis.

        ``postprocess(output, batch)`` maps each batch's output first, e.g. mean pooling of a
        ``(B, T, H)`` hidden state with the batch's attention mask (lengths differ per batch, so
        3-D outputs of dynamically padded batches cannot be concatenated raw).
        """
        outs = []
        for batch in loader:
            out = self.run(batch)
            outs.append(postprocess(out, batch) if postprocess is not None else out)
        if not outs:
            raise ValueError("predict() got an empty loader")
        return np.concatenate(outs, axis=0)
