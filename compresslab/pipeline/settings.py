"""Typed settings of a run, validated once at start: the fixed stages' (export, eval, bench, DeepSparse,
deploy) here, the run engine's own (run, model, task, data) in :mod:`compresslab.pipeline.run_settings`.

The YAML in ``conf/`` is the one source of defaults: these dataclasses have none for the keys the
YAML sets, so a missing, misspelled or mistyped key fails in :func:`RunSettings.from_config`
before any model is loaded, with the key's name; the rest of the config (root, run, paths, model,
task, budget, pipeline) is checked there too, by :mod:`compresslab.pipeline.schema`. Limits of the
installed tools are checked here as well (the ONNX opsets the torch exporter writes, a CUDA backend
asked for by name). The in-process API reads the same YAML files (:func:`default_settings`) and
applies the caller's overrides on top.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from compresslab.pipeline.run_settings import DataSettings, ModelSettings, RunControl, TaskSettings
from compresslab.pipeline.schema import SettingsError, check_config
from compresslab.validate import (
    check_bool, check_choice, check_fraction, check_int, check_list, check_nonnegative, check_positive,
    check_positive_int, did_you_mean, is_int)

T = TypeVar("T")

EVAL_SPLITS = ("dev", "validation")
GPU_MODES = ("auto", "off", "ort_cuda", "torch_cuda")
DEEPSPARSE_ENABLED = (False, "auto", True)
INT8_FORMATS = ("qdq", "qoperator", "matmulinteger")
BACKENDS = ("ort", "openvino", "torch")
OPENVINO_PRECISIONS = ("default", "f32", "bf16")
DEPLOY_RUNTIMES = ("ort", "openvino", "auto")
DEPLOY_INT8 = ("ours", "nncf", "auto")
# deploy.smooth_alpha's default (conf/deploy/ort.yaml): SmoothQuant strengths our OpenVINO int8 recipe tries
DEFAULT_SMOOTH_GRID: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95)
# The lowest ONNX opset every pipeline can use: static int8 with per-channel weights needs
# QuantizeLinear's ``axis`` (opset 13: at 11 and 12 ORT's quantizer writes a graph ORT then refuses to
# load), and RoBERTa's position ids need CumSum (11). Measured on tiny bert, roberta and distilbert.
OPSET_MIN = 13
OPSET_MAX_FALLBACK = 20  # the TorchScript exporter's newest opset, if torch stops naming its range

__all__ = ["BenchSettings", "DataSettings", "DeepSparseSettings", "DeploySettings", "EvalSettings", "ExportSettings",
           "ModelSettings", "RunControl", "RunSettings", "SettingsError", "TaskSettings", "default_deploy",
           "default_settings", "deploy_settings", "opset_range"]


def opset_range() -> tuple[int, int]:
    """The ONNX opsets a run can export here: :data:`OPSET_MIN` up to the newest the installed torch
    exporter writes (``torch.onnx._constants.ONNX_MAX_OPSET``: torch names its range nowhere public)."""
    try:
        from torch.onnx import _constants

        return OPSET_MIN, int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        return OPSET_MIN, OPSET_MAX_FALLBACK


def _build(cls: type[T], section: str, raw: Mapping[str, Any] | None, *, prefix: bool = True) -> T:
    """``cls(**raw)`` with errors that name the section, the unknown keys and the allowed ones. ``prefix=False``
    for the blocks whose own messages name the whole dotted key (``run.keep=...``: the run engine's)."""
    raw = dict(raw or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - names)
    if unknown:
        raise SettingsError(f"{section}: unknown key(s) {unknown}{did_you_mean(unknown, names)}; "
                            f"allowed: {sorted(names)}")
    try:
        return cls(**raw)
    except TypeError as e:  # a required key is missing
        raise SettingsError(f"{section}: {e}") from None
    except SettingsError:  # a nested section's (bench.deepsparse), already named
        raise
    except ValueError as e:
        raise SettingsError(f"{section}: {e}" if prefix else str(e)) from None


@dataclass(frozen=True)
class ExportSettings:
    """``conf/export``: torch -> ONNX with ORT fusion, parity-checked on real padded inputs."""

    opset: int
    optimize: bool
    atol: float
    parity_examples: int

    def __post_init__(self) -> None:
        lo, hi = opset_range()
        if not is_int(self.opset) or not lo <= self.opset <= hi:
            import torch

            raise ValueError(f"opset={self.opset!r} cannot be used: compresslab exports and quantizes ONNX opsets "
                             f"{lo}..{hi} with this install (torch {torch.__version__}; below {lo} the int8 "
                             f"graphs are invalid); set export.opset to one of them (default 17)")
        check_bool(self.optimize, "optimize")
        check_positive(self.atol, "atol")
        check_positive_int(self.parity_examples, "parity_examples")


@dataclass(frozen=True)
class EvalSettings:
    """``conf/eval``: which split the eval stage scores (``dev`` is reported, ``validation`` selected on)."""

    enabled: bool
    split: str
    batch_size: int
    max_drop: float  # the report flags a score this far (a fraction) or more below the teacher's
    # files with a per-call dynamic activation scale (eval/batch_dependence.py) are scored at batch 1 too
    batch_dependence: bool = True

    def __post_init__(self) -> None:
        check_bool(self.enabled, "enabled")
        check_choice(self.split, EVAL_SPLITS, "split")
        check_positive_int(self.batch_size, "batch_size")
        check_fraction(self.max_drop, "max_drop")
        check_bool(self.batch_dependence, "batch_dependence")


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
        batches = check_list(self.batches, "batches", "batch sizes")
        object.__setattr__(self, "batches", tuple(check_positive_int(b, "batches") for b in batches))
        fmts = tuple(check_choice(f, INT8_FORMATS, "int8_formats")
                     for f in check_list(self.int8_formats, "int8_formats", "formats"))
        if self.int8 and not fmts:
            raise SettingsError("int8_formats is empty while int8 is true: name at least one of "
                                f"{', '.join(INT8_FORMATS)}, or set int8=false")
        if len(set(fmts)) < len(fmts):
            raise SettingsError(f"int8_formats names a format twice: {list(fmts)}")
        object.__setattr__(self, "int8_formats", fmts)
        object.__setattr__(self, "op_types", tuple(str(o) for o in check_list(self.op_types, "op_types", "op types")))
        for name in ("seq", "num_calibration", "runs", "max_runs"):
            check_positive_int(getattr(self, name), name)
        check_int(self.warmup, "warmup", minimum=0)
        check_nonnegative(self.min_time_s, "min_time_s")
        for name in ("int8", "per_channel", "score"):
            check_bool(getattr(self, name), name)


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
    dense_int8: bool
    real_length: bool
    real_length_batch_size: int
    real_length_max_batches: int | None
    real_length_rounds: int
    load_probe: bool
    gpu: str
    deepsparse: DeepSparseSettings

    def __post_init__(self) -> None:
        shapes = []
        for s in check_list(self.shapes, "shapes", "[batch, seq] pairs, e.g. [[1, 128], [32, 128]]"):
            if isinstance(s, (str, bytes)) or not isinstance(s, (list, tuple)) or len(s) != 2:
                raise ValueError(f"shapes: each entry is a [batch, seq] pair, e.g. [[1, 128], [32, 128]]; got {s!r}")
            shapes.append((check_positive_int(s[0], "shapes batch"), check_positive_int(s[1], "shapes seq")))
        if not shapes:
            raise ValueError("shapes is empty: give at least one [batch, seq]")
        object.__setattr__(self, "shapes", tuple(shapes))
        if self.threads is not None:
            check_positive_int(self.threads, "threads")
        check_int(self.warmup, "warmup", minimum=0)
        check_positive_int(self.runs, "runs")
        check_nonnegative(self.min_time_s, "min_time_s")
        if self.max_runs is not None and check_positive_int(self.max_runs, "max_runs") < self.runs:
            raise ValueError(f"max_runs={self.max_runs} is below runs={self.runs}; raise max_runs or lower runs")
        check_int(self.seed, "seed", minimum=0)
        for name in ("enabled", "dense_int8", "real_length", "load_probe"):
            check_bool(getattr(self, name), name)
        check_positive_int(self.real_length_batch_size, "real_length_batch_size")
        if self.real_length_max_batches is not None:
            check_positive_int(self.real_length_max_batches, "real_length_max_batches")
        check_positive_int(self.real_length_rounds, "real_length_rounds")
        check_choice(self.gpu, GPU_MODES, "gpu")
        if self.enabled and self.gpu in ("ort_cuda", "torch_cuda"):  # asked for by name: refuse now, not at bench
            from compresslab.bench.runners import cuda_available_backends

            found = cuda_available_backends()
            if self.gpu not in found:
                raise ValueError(f"gpu={self.gpu!r} requested but the GPU backends here are {found or 'none'}; "
                                 "set bench.gpu=auto (uses one when present) or bench.gpu=off")
        if isinstance(self.backends, str) or not self.backends:
            raise ValueError(f"backends: a non-empty list of {list(BACKENDS)}, got {self.backends!r}")
        backends = tuple(dict.fromkeys(check_choice(x, BACKENDS, "backends") for x in self.backends))
        if "ort" not in backends:  # ort_fp32 is the canonical denominator and the deployed file's runtime
            raise ValueError("backends: 'ort' is required (it runs ort_fp32 and the deployed file), "
                             f"got {list(backends)}")
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
        if self.denominator == "torch_fp32" and "torch" not in backends:
            raise ValueError(f"denominator='torch_fp32' needs the torch backend: add torch to bench.backends "
                             f"(got {list(backends)}) or use denominator=ort_fp32")
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
    accuracy-aware mode; ``keep_fp32`` leaves the selected modules' MatMuls fp32 in our recipe;
    ``smooth_alpha`` is our recipe's SmoothQuant strength: one value (``None``: no smoothing) or a
    grid, one IR per entry, the highest validation agreement with the teacher kept."""

    runtime: str
    precision: str
    tolerance: float
    int8: str = "auto"  # ours | nncf | auto: how an int8 pipeline's OpenVINO IR is made
    calibration_examples: int = 300
    accuracy_control: bool = False
    max_drop: float = 0.01
    keep_fp32: tuple[str, ...] | None = None  # ours: module patterns (targets vocabulary) whose MatMuls stay fp32
    smooth_alpha: tuple[float | None, ...] = DEFAULT_SMOOTH_GRID  # ours: SmoothQuant strengths (None: none)

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
        object.__setattr__(self, "smooth_alpha", smooth_grid(self.smooth_alpha))
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
        self._check_ignored()
        if self.smooth_alpha != DEFAULT_SMOOTH_GRID and (self.runtime == "ort" or self.int8 == "nncf"):
            raise ValueError("smooth_alpha applies to our OpenVINO int8 recipe (runtime openvino|auto with int8 "
                             f"ours|auto); with runtime={self.runtime!r}, int8={self.int8!r} it would be ignored")
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


    def _check_ignored(self) -> None:
        """ValueError for a setting changed from its default where this runtime / int8 method never reads it (a user
        would believe it took effect): the OpenVINO settings on ``runtime=ort``, ``tolerance`` outside ``auto``,
        NNCF's accuracy control with ``int8=ours`` or ``max_drop`` without it."""
        openvino, nncf = self.runtime != "ort", self.int8 != "ours"
        rules = (("precision", "default", openvino, "OpenVINO's inference precision (runtime openvino|auto)"),
                 ("int8", "auto", openvino, "how an int8 pipeline's OpenVINO IR is made (runtime openvino|auto)"),
                 ("calibration_examples", 300, openvino, "the OpenVINO int8 IR's calibration (runtime openvino|auto)"),
                 ("tolerance", 0.005, self.runtime == "auto", "runtime=auto's choice"),
                 ("accuracy_control", False, openvino and nncf, "NNCF's int8 IR (runtime openvino|auto, int8 nncf|auto)"),
                 ("max_drop", 0.01, openvino and nncf and self.accuracy_control,
                  "NNCF's accuracy control (accuracy_control=true, runtime openvino|auto, int8 nncf|auto)"))
        for name, default, read, what in rules:
            if not read and getattr(self, name) != default:
                raise ValueError(f"{name}={getattr(self, name)!r} applies to {what}; with runtime={self.runtime!r}, "
                                 f"int8={self.int8!r}, accuracy_control={self.accuracy_control} it would be ignored: "
                                 "leave it out, or change those")


def smooth_grid(value: Any) -> tuple[float | None, ...]:
    """``deploy.smooth_alpha`` as a tuple: a number or null is a one-entry grid; each entry in (0, 1] or null,
    no repeats (SmoothQuant's migration strength, Xiao et al. 2023 eq. 4)."""
    grid = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if not grid:
        raise ValueError("smooth_alpha: an empty list; give a strength in (0, 1], null, or a list of them")
    out: list[float | None] = []
    for v in grid:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) <= 1.0):
            raise ValueError(f"smooth_alpha: each entry is a SmoothQuant strength in (0, 1] or null, got {v!r}")
        v = None if v is None else float(v)
        if v in out:
            raise ValueError(f"smooth_alpha: {v} is listed twice in {grid}")
        if v is not None and f"{v:g}" in {f"{x:g}" for x in out if x is not None}:
            raise ValueError(f"smooth_alpha: {v} equals another entry of {grid} at 6 significant digits (the IRs are "
                             f"labelled alpha_{v:g}); give strengths that differ")
        out.append(v)
    return tuple(out)


@dataclass(frozen=True)
class RunSettings:
    """Everything the run engine reads from a composed config, typed (the passes have their own): the
    driver, the plan's run dir and ``RunState.prepare`` read these blocks, never the raw config.

    The in-process API builds one without a config: its model and data are in memory, so ``model``,
    ``task``, ``data`` and ``output_dir`` are None there (the caller names its run dir), and ``run`` is
    compress.yaml's (the API reads none of it)."""

    seed: int
    max_length: int  # task.max_length
    batch_size: int
    cache_dir: Path
    threads: int | None  # run.threads
    device: str
    report: bool
    export: ExportSettings
    eval: EvalSettings
    bench: BenchSettings
    # the in-process API builds RunSettings without a deploy group: it gets conf/deploy/ort.yaml
    deploy: DeploySettings = dataclasses.field(default_factory=lambda: default_deploy())
    output_dir: Path | None = None  # paths.output_dir: run dirs are <output_dir>/<pipeline>/<config hash>
    run: RunControl = dataclasses.field(default_factory=RunControl)
    model: ModelSettings | None = None
    task: TaskSettings | None = None
    data: DataSettings | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> "RunSettings":
        """Validate a whole composed Hydra config (every key and value outside the passes' own
        settings, see :func:`compresslab.pipeline.schema.check_config`) and type the run-engine part.

        Raises SettingsError naming the key to change: a value left ``???``, an unknown key, a
        value of the wrong type or out of range, an opset or GPU backend this install lacks.
        """
        c = check_config(cfg)
        run = dict(c["run"])
        task = dict(c["task"] or {})
        return cls(seed=c["seed"], max_length=task.pop("max_length"), batch_size=c["budget"]["batch_size"],
                   cache_dir=Path(c["paths"]["cache_dir"]), threads=run.pop("threads", None),
                   device=str(c.get("device", "auto")), report=c.get("report", True),
                   export=_build(ExportSettings, "export", c.get("export")),
                   eval=_build(EvalSettings, "eval", c.get("eval")),
                   bench=_build(BenchSettings, "bench", c.get("bench")),
                   deploy=_build(DeploySettings, "deploy", c.get("deploy")),
                   output_dir=Path(c["paths"]["output_dir"]),
                   run=_build(RunControl, "run", run, prefix=False),
                   model=_build(ModelSettings, "model", c["model"], prefix=False),
                   task=_build(TaskSettings, "task", task, prefix=False),
                   data=_build(DataSettings, "data", c.get("data"), prefix=False))


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


def deploy_settings(cfg: Any) -> DeploySettings:
    """A composed config's ``deploy`` block alone, built as :meth:`RunSettings.from_config` builds it (a search's
    candidates' deploy settings, the same for every pipeline); SettingsError naming ``deploy`` for a bad one."""
    from omegaconf import OmegaConf

    return _build(DeploySettings, "deploy", OmegaConf.to_container(cfg.deploy, resolve=True))  # type: ignore[arg-type]


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
