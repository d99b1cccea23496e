"""OpenVINO on CPU as a bench backend (issue 9): the plain ONNX export, compiled once, per precision.

OpenVINO reads the *plain* export (``model_unfused.onnx``): ORT's fused graph holds
``com.microsoft`` ops (Attention, SkipLayerNormalization) and ORT's dynamic int8 graph holds
MatMulInteger/DynamicQuantizeLinear, neither of which OpenVINO reads. On CPUs with AVX512_BF16
or AMX OpenVINO runs an "fp32" model in bf16 by default, so every runner records the precision
the compiled model actually uses (``INFERENCE_PRECISION_HINT``). A binary (BiBERT) model is the
exception to "bf16 is a deployment choice": its sign activations turn bf16's rounding of small
pre-sign values into flipped signs, so :func:`resolve_precision` (the one place the precision is
decided, for every runner) compiles it as f32 and refuses bf16. ``openvino`` is imported inside
functions only: importing compresslab must not import it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from compresslab.bench.env import cpu_flags, resolve_threads
from compresslab.bench.load_probe import openvino_config, precision_name
from compresslab.failure import error_text

log = logging.getLogger(__name__)

# `default` lets OpenVINO pick (bf16 where the CPU has it); the others are forced by the hint.
PRECISIONS: tuple[str, ...] = ("default", "f32", "bf16")
# /proc/cpuinfo flags that give the CPU a native bf16 path (AVX512_BF16 on Cooper Lake / Zen 4, AMX).
BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")
# Ops OpenVINO's ONNX frontend does not read in our exports (ORT contrib and dynamic-int8 ops).
_ORT_ONLY_OPS = frozenset({"MatMulInteger", "DynamicQuantizeLinear", "ConvInteger"})
# A binary model's precisions: "default" is compiled as f32 (forced), bf16 is refused. bf16 keeps 8
# mantissa bits, so a small pre-sign activation can round across 0 and flip its sign, and the flip
# cascades through the later binary layers (the BiBERT smoke model on AMX: 40.6% in bf16, 50.0% in f32).
BINARY_PRECISIONS: tuple[str, ...] = ("default", "f32")
_BINARY_STAMP = "compresslab_binary"  # models.binary.BINARY_KEY (not imported: that module imports torch)


def openvino_missing_reason() -> str | None:
    """Why the OpenVINO backend cannot run here, or None when ``import openvino`` works."""
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        return f"openvino is not installed ({e}); install it with `pip install 'compresslab[openvino]'`"
    return None


def _check_known(precision: str) -> None:
    """ValueError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"OpenVINO precision must be one of {list(PRECISIONS)}, got {precision!r}")


def check_precision(precision: str, flags: set[str] | None = None) -> str:
    """Validate ``precision`` against :data:`PRECISIONS` and the CPU (bf16 needs a bf16 ISA:
    :func:`allowed_precisions`)."""
    _check_known(precision)
    if precision == "bf16" and precision not in allowed_precisions(False, flags):  # flags read for bf16 only
        raise ValueError(f"OpenVINO precision 'bf16' requested but this CPU has none of {list(BF16_FLAGS)}: "
                         "OpenVINO would emulate or silently fall back; use precision 'default' or 'f32'")
    return precision


def is_binary_artifact(model_path: str | Path) -> bool:
    """Does ``model_path`` (ONNX or IR) hold a binary model? The export and the IR conversion keep the
    model's config.json beside the file; a binary model's carries the ``compresslab_binary`` stamp."""
    cfg = Path(model_path).with_name("config.json")
    try:
        raw = json.loads(cfg.read_text())
    except (OSError, ValueError):  # no config (a hand-made graph), or an unreadable one: not ours to judge
        return False
    return isinstance(raw, dict) and bool(raw.get(_BINARY_STAMP))


def allowed_precisions(binary: bool, flags: set[str] | None = None) -> tuple[str, ...]:
    """The OpenVINO precisions a model may be compiled at on this CPU (``flags``: /proc/cpuinfo's, read
    when None): a binary model's are :data:`BINARY_PRECISIONS` (``default`` meaning f32 there); bf16
    needs one of :data:`BF16_FLAGS`. The one statement of both rules: :func:`check_precision` and
    :func:`resolve_precision` ask it."""
    if binary:
        return BINARY_PRECISIONS
    flags = cpu_flags() if flags is None else flags
    return tuple(p for p in PRECISIONS if p != "bf16" or any(f in flags for f in BF16_FLAGS))


def resolve_precision(precision: str, *, binary: bool, setting: str | None = None, what: str = "the model",
                      flags: set[str] | None = None) -> tuple[str, str | None]:
    """(the precision to compile with, a note when it differs from the one asked).

    A binary model: ``default`` -> ``f32`` with a note (OpenVINO would pick bf16 on a bf16 CPU),
    ``bf16`` -> ValueError naming ``setting`` (else ``deploy.precision`` / ``bench.openvino_precisions``).
    Other models: :func:`check_precision`, unchanged. ``what`` names the model in the messages."""
    if not binary:
        return check_precision(precision, flags), None
    _check_known(precision)
    if precision not in allowed_precisions(True):
        where = setting or "deploy.precision / bench.openvino_precisions"
        raise ValueError(f"{where}={precision!r} refused for {what}, a binary model (compresslab_binary): bf16 "
                         "rounds small pre-sign activations across 0 and flips their signs (BiBERT's smoke model "
                         f"on AMX: 40.6% in bf16, 50.0% in f32); set {where} to 'f32' or 'default' (a binary model's "
                         "default compiles as f32)")
    if precision == "default":
        return "f32", (f"{what} is a binary model: OpenVINO's default precision (bf16 on AVX512_BF16/AMX CPUs) is "
                       "forced to f32 (INFERENCE_PRECISION_HINT=f32), since bf16 flips the signs of small pre-sign "
                       "activations")
    return precision, None


def unreadable_ops(onnx_path: str | Path) -> list[str]:
    """Op types in ``onnx_path`` that OpenVINO cannot read (non-standard domains, ORT dynamic int8)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    bad = {f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
           for n in graph.node if n.domain not in ("", "ai.onnx") or n.op_type in _ORT_ONLY_OPS}
    return sorted(bad)


def plain_export(onnx_path: str | Path) -> Path:
    """The plain (unfused) twin of an exported file: ``model_unfused.onnx`` beside it, else the file."""
    p = Path(onnx_path)
    twin = p.with_name("model_unfused.onnx")
    return twin if twin.is_file() else p


class OpenVinoRunner:
    """An OpenVINO CPU compiled model with pinned threads and an explicit precision.

    Compiled once with dynamic (batch, seq) dims: a new shape costs one slower first call (kernel
    selection), which the timer's warm-up absorbs; ``info()["first_call_ms"]`` records that cost
    per shape so a reader can see it is not inside the timed loop. ``run`` returns a copy of the
    first output (logits), so the same compiled model scores the eval split (``onnx_forward``).
    """

    def __init__(self, onnx_path: str | Path, threads: int | None, precision: str = "default", *,
                 vocab_size: int | None = None, sparse_rate: float | None = None, binary: bool | None = None) -> None:
        """``precision``: as asked; a binary model (``binary``, or when None the ``compresslab_binary``
        stamp in the config.json beside the file) compiles ``default`` as f32 and refuses bf16
        (:func:`resolve_precision`); ``precision_note`` then says what was forced.

        ``sparse_rate``: OpenVINO's ``CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE`` in (0, 1]: int8 fully
        connected layers whose weight sparsity is at least this run with sparse weight decompression
        (the CPU plugin does it with AMX only; elsewhere the setting is accepted and does nothing).

        Raises ValueError for a rate outside (0, 1], or a precision refused here."""
        import openvino as ov

        if sparse_rate is not None and not 0.0 < float(sparse_rate) <= 1.0:
            raise ValueError(f"sparse_rate must be in (0, 1] (OpenVINO's CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE), "
                             f"got {sparse_rate}")
        self.sparse_rate = None if sparse_rate is None else float(sparse_rate)

        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.onnx_path}")
        self.binary = is_binary_artifact(self.onnx_path) if binary is None else bool(binary)
        hint, self.precision_note = resolve_precision(precision, binary=self.binary,
                                                      what=f"{self.onnx_path.parent.name}/{self.onnx_path.name}")
        self.precision = precision
        if self.precision_note:
            log.info("openvino: %s", self.precision_note)
        self.threads = resolve_threads(threads)
        self.vocab_size = vocab_size
        t0 = time.perf_counter()
        core = ov.Core()
        try:
            model = core.read_model(str(self.onnx_path))
        except Exception as e:  # OpenVINO raises a bare RuntimeError; name the ops it cannot read
            bad = unreadable_ops(self.onnx_path)
            raise ValueError(f"OpenVINO cannot read {self.onnx_path.name}: ops {bad or '(none found)'}; "
                             f"use the plain export (model_unfused.onnx). OpenVINO said: {error_text(e, typed=False, limit=300)}") from e
        # the load probe's child compiles with the same properties (bench/load_probe.py, no compresslab there)
        self.hint = hint
        self.config = openvino_config(self.threads, hint, self.sparse_rate)
        self.compiled = core.compile_model(model, "CPU", self.config)
        self.request = self.compiled.create_infer_request()
        self.load_s = time.perf_counter() - t0
        self.inputs: dict[str, Any] = {p.get_any_name(): p.get_element_type().to_dtype() for p in model.inputs}
        # a quantized graph (a QDQ ONNX file or an int8 IR): OpenVINO reads both as FakeQuantize
        self.int8 = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        # "f32" / "bf16" as compiled, whatever was asked
        self.compiled_precision = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.first_call_ms: dict[str, float] = {}

    def feed(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Match ``batch`` to the graph's inputs: drop extras, cast dtypes, refuse missing ones."""
        missing = [n for n in self.inputs if n not in batch]
        if missing:
            raise ValueError(f"{self.onnx_path.name} needs inputs {missing}; batch has {sorted(batch)}")
        return {n: np.asarray(batch[n]).astype(dt, copy=False) for n, dt in self.inputs.items()}

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """One synchronous inference; returns a copy of the first output, (batch, labels) logits."""
        feed = self.feed(batch)
        key = "b{}xs{}".format(*np.shape(feed[next(iter(feed))])[:2])
        if key not in self.first_call_ms:
            t0 = time.perf_counter()
            self.request.infer(feed)
            self.first_call_ms[key] = (time.perf_counter() - t0) * 1e3
        else:
            self.request.infer(feed)
        return np.array(self.request.get_output_tensor(0).data)

    def info(self) -> dict[str, Any]:
        """What a results file records about this runner: the file it ran and the precision as compiled."""
        import openvino as ov

        return {"kind": "openvino", "device": "CPU", "threads": self.threads, "model": str(self.onnx_path),
                "precision_requested": self.precision, "precision": self.compiled_precision,
                "binary": self.binary, "precision_note": self.precision_note,
                "load_s": round(self.load_s, 4), "version": ov.__version__.split("-")[0],
                "sparse_weights_decompression_rate": self.sparse_rate,
                "first_call_ms": {k: round(v, 3) for k, v in self.first_call_ms.items()}}

