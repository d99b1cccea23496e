"""Typed settings of the fixed stages (export, eval, bench, DeepSparse), validated once at start.

The YAML in ``conf/`` is the one source of defaults: these dataclasses have none for the keys the
YAML sets, so a missing, misspelled or mistyped key fails in :func:`RunSettings.from_config`
before any model is loaded, with the key's name. The in-process API reads the same YAML files
(:func:`default_settings`) and applies the caller's overrides on top.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TypeVar

from compresslab.validate import check_choice, check_int, check_positive, check_positive_int

T = TypeVar("T")

EVAL_SPLITS = ("dev", "validation")
GPU_MODES = ("auto", "off", "ort_cuda", "torch_cuda")
DEEPSPARSE_ENABLED = (False, "auto", True)
INT8_FORMATS = ("qdq", "qoperator")
BACKENDS = ("ort", "openvino", "torch")
OPENVINO_PRECISIONS = ("default", "f32", "bf16")
DEPLOY_RUNTIMES = ("ort", "openvino", "auto")
DEPLOY_INT8 = ("ours", "nncf", "auto")


class SettingsError(ValueError):
    """A stage setting that is missing, unknown or out of range."""


def _build(cls: type[T], section: str, raw: Mapping[str, Any] | None) -> T:
    """``cls(**raw)`` with errors that name the section, the unknown keys and the allowed ones."""
    raw = dict(raw or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - names)
    if unknown:
        raise SettingsError(f"{section}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    try:
        return cls(**raw)
    except TypeError as e:  # a required key is missing
        raise SettingsError(f"{section}: {e}") from None
    except ValueError as e:
        raise SettingsError(f"{section}: {e}") from None


@dataclass(frozen=True)
class ExportSettings:
    """``conf/export``: torch -> ONNX with ORT fusion, parity-checked on real padded inputs."""

    opset: int
    optimize: bool
    atol: float
    parity_examples: int

    def __post_init__(self) -> None:
        check_positive_int(self.opset, "opset")
        check_positive(self.atol, "atol")
        check_positive_int(self.parity_examples, "parity_examples")


@dataclass(frozen=True)
class EvalSettings:
    """``conf/eval``: which split the eval stage scores (``dev`` is reported, ``validation`` selected on)."""

    enabled: bool
    split: str
    batch_size: int

    def __post_init__(self) -> None:
        check_choice(self.split, EVAL_SPLITS, "split")
        check_positive_int(self.batch_size, "batch_size")


@dataclass(frozen=True)
class DeepSparseSettings:
    """``bench.deepsparse``: the optional DeepSparse backend (see ``bench/deepsparse_backend.py``)."""

    enabled: bool | str
    python: str | None
    batches: tuple[int, ...]
    seq: int
    int8: bool
    int8_formats: tuple[str, ...]
    per_channel: bool
    op_types: tuple[str, ...]
    num_calibration: int
    score: bool
    warmup: int
    runs: int
    min_time_s: float
    max_runs: int

    def __post_init__(self) -> None:
        check_choice(self.enabled, DEEPSPARSE_ENABLED, "enabled")
        object.__setattr__(self, "batches", tuple(check_positive_int(b, "batches") for b in self.batches))
        fmts = tuple(check_choice(f, INT8_FORMATS, "int8_formats") for f in self.int8_formats)
        object.__setattr__(self, "int8_formats", fmts)
        object.__setattr__(self, "op_types", tuple(str(o) for o in self.op_types))
        for name in ("seq", "num_calibration", "runs", "max_runs"):
            check_positive_int(getattr(self, name), name)
        check_int(self.warmup, "warmup", minimum=0)


@dataclass(frozen=True)
class BenchSettings:
    """``conf/bench``: interleaved latency of the deployed file vs ``ort_fp32`` (MEASURE.md "Speed")."""

    enabled: bool
    threads: int | None
    shapes: tuple[tuple[int, int], ...]
    warmup: int
    runs: int
    min_time_s: float
    max_runs: int | None
    seed: int
    denominator: str
    backends: tuple[str, ...]
    openvino_precisions: tuple[str, ...]
    real_length: bool
    real_length_batch_size: int
    real_length_max_batches: int | None
    real_length_rounds: int
    load_probe: bool
    gpu: str
    deepsparse: DeepSparseSettings

    def __post_init__(self) -> None:
        shapes = []
        for s in self.shapes:
            if len(s) != 2:
                raise ValueError(f"shapes: each entry is [batch, seq], got {list(s)!r}")
            shapes.append((check_positive_int(s[0], "shapes batch"), check_positive_int(s[1], "shapes seq")))
        if not shapes:
            raise ValueError("shapes is empty: give at least one [batch, seq]")
        object.__setattr__(self, "shapes", tuple(shapes))
        if self.threads is not None:
            check_positive_int(self.threads, "threads")
        check_int(self.warmup, "warmup", minimum=0)
        check_positive_int(self.runs, "runs")
        check_choice(self.gpu, GPU_MODES, "gpu")
        if isinstance(self.backends, str) or not self.backends:
            raise ValueError(f"backends: a non-empty list of {list(BACKENDS)}, got {self.backends!r}")
        backends = tuple(dict.fromkeys(check_choice(x, BACKENDS, "backends") for x in self.backends))
        if "ort" not in backends:  # ort_fp32 is the canonical denominator and the deployed file's runtime
            raise ValueError(f"backends: 'ort' is required (it runs ort_fp32 and the deployed file), got {list(backends)}")
        object.__setattr__(self, "backends", backends)
        if isinstance(self.openvino_precisions, str) or not self.openvino_precisions:
            raise ValueError(f"openvino_precisions: a non-empty list of {list(OPENVINO_PRECISIONS)}, "
                             f"got {self.openvino_precisions!r}")
        precs = tuple(dict.fromkeys(check_choice(x, OPENVINO_PRECISIONS, "openvino_precisions")
                                    for x in self.openvino_precisions))
        object.__setattr__(self, "openvino_precisions", precs)
        if "openvino" in backends and "bf16" in precs:  # fail at start, not after training
            from compresslab.bench.openvino_runner import check_precision

            check_precision("bf16")
        # the denominator must be a runner that is always measured: ORT's dense teacher, or torch's
        # when that backend is on (OpenVINO may be skipped at run time when it is not installed)
        allowed = ("ort_fp32",) + (("torch_fp32",) if "torch" in backends else ())
        check_choice(self.denominator, allowed, "denominator")
        if not isinstance(self.deepsparse, DeepSparseSettings):
            object.__setattr__(self, "deepsparse", _build(DeepSparseSettings, "bench.deepsparse", self.deepsparse))
        # the timing lock reads these at bench time (and ZipLM's latency table): check them before training
        from compresslab.runlock import time_busy_allowed, wait_limit_s

        wait_limit_s()
        time_busy_allowed()


@dataclass(frozen=True)
class DeploySettings:
    """``conf/deploy``: which runtime's artifact is deployed (and scored): ``ort`` (the ONNX file),
    ``openvino`` (an IR converted from it) or ``auto`` (the faster at b32 among those whose
    validation agreement with the teacher is within ``tolerance`` of the ORT file's). For an int8
    pipeline on OpenVINO, ``int8`` says how its IR is made (ours | nncf | auto), on
    ``calibration_examples`` train examples; ``accuracy_control``/``max_drop`` drive NNCF's
    accuracy-aware mode; ``keep_fp32`` leaves the selected modules' MatMuls fp32 in our recipe."""

    runtime: str
    precision: str
    tolerance: float
    int8: str = "auto"  # ours | nncf | auto: how an int8 pipeline's OpenVINO IR is made
    calibration_examples: int = 300
    accuracy_control: bool = False
    max_drop: float = 0.01
    keep_fp32: tuple[str, ...] | None = None  # ours: module patterns (targets vocabulary) whose MatMuls stay fp32

    def __post_init__(self) -> None:
        check_choice(self.runtime, DEPLOY_RUNTIMES, "runtime")
        check_choice(self.precision, OPENVINO_PRECISIONS, "precision")
        check_choice(self.int8, DEPLOY_INT8, "int8")
        check_positive_int(self.calibration_examples, "calibration_examples")
        if self.keep_fp32 is not None:
            from compresslab.targets import check_patterns

            object.__setattr__(self, "keep_fp32", tuple(check_patterns(list(self.keep_fp32) if not isinstance(
                self.keep_fp32, str) else self.keep_fp32, "keep_fp32")))
        if not isinstance(self.accuracy_control, bool):
            raise ValueError(f"accuracy_control: true or false, got {self.accuracy_control!r}")
        for name in ("tolerance", "max_drop"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name}: a fraction of examples in [0, 1], got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.runtime == "openvino":  # fail at start, not after training
            from compresslab.bench.openvino_runner import openvino_missing_reason

            reason = openvino_missing_reason()
            if reason:
                raise ValueError(f"runtime 'openvino' requested but {reason}")
        if self.keep_fp32 and (self.runtime == "ort" or self.int8 == "nncf"):
            raise ValueError("keep_fp32 applies to our OpenVINO int8 recipe (runtime openvino|auto with int8 "
                             f"ours|auto); with runtime={self.runtime!r}, int8={self.int8!r} it would be ignored")
        if self.runtime != "ort" and self.int8 == "nncf":  # asked for by name: refuse now, not after training
            from compresslab.export.openvino_int8 import nncf_missing_reason

            reason = nncf_missing_reason()
            if reason:
                raise ValueError(f"int8 'nncf' requested but {reason}")
        if self.runtime != "ort" and self.precision == "bf16":
            from compresslab.bench.openvino_runner import check_precision

            check_precision("bf16")


@dataclass(frozen=True)
class RunSettings:
    """Everything the run engine reads from a composed config, typed (the passes have their own)."""

    seed: int
    max_length: int
    batch_size: int
    cache_dir: Path
    threads: int | None
    device: str
    report: bool
    export: ExportSettings
    eval: EvalSettings
    bench: BenchSettings
    # the in-process API builds RunSettings without a deploy group: it gets conf/deploy/ort.yaml
    deploy: DeploySettings = dataclasses.field(default_factory=lambda: default_deploy())

    @classmethod
    def from_config(cls, cfg: Any) -> "RunSettings":
        """Validate and type the run-engine part of a composed Hydra config; SettingsError on bad keys."""
        from omegaconf import OmegaConf

        c = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(c, dict)
        run = c["run"]
        try:
            check_int(c["seed"], "seed", minimum=0)
            check_positive_int(c["task"]["max_length"], "task.max_length")
            check_positive_int(c["budget"]["batch_size"], "budget.batch_size")
            if run.get("threads") is not None:
                check_positive_int(run["threads"], "run.threads")
            if run.get("stop_after") is not None:
                check_int(run["stop_after"], "run.stop_after", minimum=0)
        except ValueError as e:
            raise SettingsError(str(e)) from None
        return cls(seed=c["seed"], max_length=c["task"]["max_length"], batch_size=c["budget"]["batch_size"],
                   cache_dir=Path(c["paths"]["cache_dir"]), threads=run.get("threads"),
                   device=str(c.get("device", "auto")), report=bool(c.get("report", True)),
                   export=_build(ExportSettings, "export", c.get("export")),
                   eval=_build(EvalSettings, "eval", c.get("eval")),
                   bench=_build(BenchSettings, "bench", c.get("bench")),
                   deploy=_build(DeploySettings, "deploy", c.get("deploy")))


def _yaml(rel: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from compresslab.config import config_dir

    data = OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / rel), resolve=False)
    assert isinstance(data, dict)
    data.pop("defaults", None)
    return data


def _merged(base: dict[str, Any], over: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = _merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def default_deploy(over: Mapping[str, Any] | None = None) -> DeploySettings:
    """``conf/deploy/ort.yaml`` with ``over`` merged in; SettingsError on bad keys."""
    return _build(DeploySettings, "deploy", _merged(_yaml("deploy/ort.yaml"), over))


def default_settings(*, export: Mapping[str, Any] | None = None, eval: Mapping[str, Any] | None = None,
                     bench: Mapping[str, Any] | None = None) -> tuple[ExportSettings, EvalSettings, BenchSettings]:
    """The shipped defaults (``conf/export/default.yaml``, ``conf/eval/dev.yaml``,
    ``conf/bench/default.yaml``) with the caller's overrides merged in; SettingsError on bad keys."""
    return (_build(ExportSettings, "export", _merged(_yaml("export/default.yaml"), export)),
            _build(EvalSettings, "eval", _merged(_yaml("eval/dev.yaml"), eval)),
            _build(BenchSettings, "bench", _merged(_yaml("bench/default.yaml"), bench)))
