"""Score and time models from Python: :func:`evaluate` (torch model or ONNX export dir on data) and
:func:`benchmark` (interleaved latency, MEASURE.md "Speed"); plain dicts out, no run directory."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from compresslab.eval.scoring_settings import SCORING_FILE
from compresslab.export.openvino_int8 import IR_NAME as IR_FILE  # optimum-intel's layout, as deploy writes it
from compresslab.rng import callers_rng_kept

if TYPE_CHECKING:
    from compresslab.data.tasks import TaskData


def _load_onnx_dir(path: Path) -> tuple[Path, Any]:
    """(the model file, the directory's tokenizer or None when it ships none). The file is an export dir's
    ``model.onnx``, an ``.onnx`` file, or an OpenVINO IR (an ``.xml`` file, or a dir with ``openvino_model.xml``
    and no ``model.onnx``: the deployed artifact of ``deploy.runtime=openvino``). FileNotFoundError otherwise,
    pointing a torch checkpoint dir to ``compresslab.load``."""
    from compresslab.models.loading import load_tokenizer

    if path.suffix in (".onnx", ".xml"):
        model = path
    else:  # an export dir's model.onnx wins; a dir with only the IR is the OpenVINO artifact
        model = path / IR_FILE if (path / IR_FILE).is_file() and not (path / "model.onnx").is_file() \
            else path / "model.onnx"
    if not model.is_file():
        hint = (": it holds a torch checkpoint; load it with compresslab.load(dir) and pass the model"
                if (path / "model.safetensors").is_file() else "")
        raise FileNotFoundError(f"{path}: no model.onnx or {IR_FILE} (expected an export directory, an .onnx file or "
                                f"an OpenVINO IR){hint}")
    has_tok = any((model.parent / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))
    return model, load_tokenizer(model.parent) if has_tok else None


def _file_runner(model: Path, threads: int | None, vocab_size: int | None = None, precision: str = "default") -> Any:
    """An ORT runner for an ``.onnx`` file, an OpenVINO one (CPU, at ``precision``) for an IR."""
    from compresslab.bench import OrtRunner, resolve_threads

    if model.suffix == ".xml":
        from compresslab.bench.openvino_runner import OpenVinoRunner, openvino_missing_reason

        if reason := openvino_missing_reason():
            raise ValueError(f"{model} is an OpenVINO IR, and {reason}")
        return OpenVinoRunner(model, resolve_threads(threads), precision, vocab_size=vocab_size)
    return OrtRunner(model, resolve_threads(threads), vocab_size=vocab_size)


def _check_inputs_fit(task: "TaskData", tokenizer: Any, max_length: int, config: Any) -> None:
    """ValueError, before scoring, when an input truncated at ``max_length`` is longer than the model's position
    table (ORT fails deep in its embedding kernel otherwise, partway through). The inputs' own lengths decide, not
    ``max_length`` alone: short texts score on a short-table model at the default ``max_length``."""
    from compresslab.models.loading import position_limit

    limit = position_limit(config)
    if limit is None or max_length <= limit:
        return
    longest = max((len(tokenizer(e.text_a, e.text_b, truncation=True, max_length=max_length)["input_ids"])
                   for e in task.dev), default=0)
    if longest > limit:
        raise ValueError(f"max_length={max_length}: an input is {longest} tokens long there, and the model's position "
                         f"table embeds at most {limit}; set max_length<={limit}")


# evaluate()'s settings where neither the caller nor the folder's compresslab_eval.json gives them
DEFAULT_MAX_LENGTH, DEFAULT_BATCH_SIZE = 128, 64


@callers_rng_kept
def evaluate(model: Any, data: Any, tokenizer: Any = None, *, reference: Any = None, reference_tokenizer: Any = None,
             label2id: Mapping[str, int] | None = None, kind: str | None = None, max_length: int | None = None,
             batch_size: int | None = None, threads: int | None = None, precision: str | None = None,
             **columns: str) -> dict[str, Any]:
    """Score a torch model, an exported ONNX dir (or ``.onnx`` file) or an OpenVINO IR (its dir or ``.xml``) on
    ``data``; a plain dict.

    ``data`` takes the same kinds as :func:`compress`. The tokenizer of an ONNX dir is read from the
    dir. With ``reference`` (another model or ONNX dir) the result adds agreement with it and
    McNemar's p-value (scored with the model's max_length and batch size; ``precision`` is the model's only).

    Settings: a folder a compresslab run or ``CompressResult.export`` wrote records how the run scored it
    (``compresslab_eval.json``: ``max_length``, the eval ``batch_size``, the task kind and primary metric,
    and for a deployed OpenVINO IR its ``precision``); those are the defaults here, so the score matches the
    run's report. Otherwise (a torch model, another folder): ``max_length=128``, ``batch_size=64``, accuracy
    (classification) or Spearman. Batches are padded to their longest sentence. ``precision`` (OpenVINO only:
    ``default``, ``f32``, ``bf16``): the compiled inference precision; ``default`` lets OpenVINO choose, which
    is bf16 on AVX512_BF16 / AMX CPUs, and labels can differ from f32.

    Returns ``{"n", "primary_metric", "score", <every metric>, "max_length", "batch_size", "runtime",
    "precision", "format", "settings_from", ...}``: ``score`` and every metric are fractions (0.82, where a
    report prints 82.00%); ``runtime`` is ``onnxruntime``, ``openvino`` or ``torch``; ``precision`` the
    precision it computed in (``f32``, or ``bf16`` where OpenVINO compiled so); ``format`` the model's
    numbers (``fp32``, ``int8``, ``int4``...); ``settings_from`` where the settings came from (per setting:
    ``given``, the folder's file, or ``default``). An ONNX file whose outputs depend on the batch (ORT dynamic
    int8: one activation scale per call) is also scored one sentence per call: ``batch_dependence``
    (``score_b1``, ``flips``), with a warning when the two differ. ValueError for labels that do not match
    the model's head.
    """
    from compresslab.data.user import check_column_keywords
    from compresslab.eval.evaluate import compare

    check_column_keywords(columns, evaluate)  # compress()'s message, before the model is read
    target = _Target.of(model, tokenizer, precision=precision, threads=threads)
    recorded = target.recorded
    given = {"max_length": max_length, "batch_size": batch_size, "kind": kind}
    settings: dict[str, Any] = {}
    source: dict[str, str] = {}
    defaults = {"max_length": DEFAULT_MAX_LENGTH, "batch_size": DEFAULT_BATCH_SIZE, "kind": None}
    for key, value in given.items():
        if value is not None:
            settings[key], source[key] = value, "given"
        elif key in recorded:
            settings[key], source[key] = recorded[key], str(target.folder / SCORING_FILE)
        else:
            settings[key], source[key] = defaults[key], "default"
    metric = recorded.get("primary_metric") if settings["kind"] == recorded.get("kind") else None
    kw = dict(label2id=label2id, max_length=settings["max_length"], batch_size=settings["batch_size"],
              columns=columns, primary_metric=metric)
    scored, task, tok = target.predict(data, kind=settings["kind"], **kw)
    ref = None
    if reference is not None:  # the reference reads its own tokenizer (an export dir's), else the model's
        # at the model's max_length and batch size (the same batches), at its own runtime's precision
        ref_target = _Target.of(reference, reference_tokenizer or tokenizer or tok, precision=None, threads=threads)
        ref = ref_target.predict(data, kind=settings["kind"], **kw)[0]
    out = {"n": len(task.dev), "primary_metric": task.spec.primary_metric, **compare(scored, ref, task.spec),
           "max_length": settings["max_length"], "batch_size": settings["batch_size"], **target.describe(),
           "settings_from": {**{k: source[k] for k in ("max_length", "batch_size")}, **target.precision_from}}
    if target.batch_dependent and settings["batch_size"] > 1:
        out["batch_dependence"] = _scored_one_per_call(target, task, tok, scored, ref, settings)
    return out


def _scored_one_per_call(target: "_Target", task: "TaskData", tok: Any, scored: Any, ref: Any,
                         settings: Mapping[str, Any]) -> dict[str, Any]:
    """The batch-1 scores of a batch-dependent file against the batched ones (eval/batch_dependence.py), warned
    about when they differ: a server answering one request at a time sees the batch-1 labels."""
    from compresslab.eval.batch_dependence import batch_dependence

    rec = {"ops": target.batch_dependent,
           **batch_dependence(target.forward, task.spec, task.dev, tok, scored, batch_size=settings["batch_size"],
                              max_length=settings["max_length"], reference=ref)}
    if rec.get("flips") or abs(rec["score_b1"] - rec["score_batched"]) >= 1e-4:
        warnings.warn(f"evaluate(): {target.path.name} depends on the batch ({', '.join(target.batch_dependent)}: one "
                      f"activation scale per call): score {rec['score_batched']:.4f} at batch {rec['batch_size']}, "
                      f"{rec['score_b1']:.4f} one sentence per call" +
                      (f"; {rec['flips']} of {rec['n']} labels differ" if rec.get("flips") else "") +
                      " (batch_dependence in the result)", RuntimeWarning, stacklevel=4)
    return rec


def _check_model_arg(model: Any, where: str) -> None:
    """TypeError before any work for what is neither a path (an export dir, ``model.onnx``, an IR ``.xml``) nor a
    torch model with a transformers ``config``."""
    if isinstance(model, (str, Path)) or (hasattr(model, "config") and callable(getattr(model, "eval", None))):
        return
    raise TypeError(f"{where}: {type(model).__name__} {model!r:.60} is neither a model (a transformers model, "
                    "e.g. from AutoModelForSequenceClassification) nor a path to an exported dir or file")


class _Target:
    """What :func:`evaluate` scores: its forward, tokenizer, config, the folder's recorded scoring settings, and
    what it runs on (runtime, precision, format)."""

    def __init__(self, forward: Any, tokenizer: Any, config: Any, kind: str | None, *, path: Path | None = None,
                 runtime: str, precision: str, fmt: str, batch_dependent: list[str] | None = None,
                 recorded: Mapping[str, Any] | None = None, precision_from: str | None = None) -> None:
        self.forward, self.tokenizer, self.config, self.kind = forward, tokenizer, config, kind
        self.path, self.runtime, self.precision, self.format = path, runtime, precision, fmt
        self.batch_dependent = batch_dependent or []
        self.recorded = dict(recorded or {})
        # where an OpenVINO IR's precision setting came from (given, the folder's file, default); {} elsewhere
        self.precision_from = {"precision": precision_from} if precision_from else {}

    @property
    def folder(self) -> Path:
        assert self.path is not None
        return self.path.parent

    @classmethod
    def of(cls, model: Any, tokenizer: Any, *, precision: str | None, threads: int | None) -> "_Target":
        """The target for ``model`` (a torch model, or a path read by :func:`_load_onnx_dir`). ``precision`` is
        OpenVINO's (ValueError for another runtime's file, or an unknown one)."""
        _check_model_arg(model, "evaluate()")
        if not isinstance(model, (str, Path)):
            if tokenizer is None:
                raise ValueError("evaluate(model, data) of a torch model needs its tokenizer: "
                                 "evaluate(model, data, tok)")
            if precision is not None:
                raise ValueError(f"precision={precision!r} is OpenVINO's compiled precision; a torch model is scored "
                                 "in its own dtype")
            from compresslab.eval.evaluate import torch_forward
            from compresslab.models.heads import task_kind_of

            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
            name = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(dtype, dtype)
            return cls(torch_forward(model.eval()), tokenizer, model.config, task_kind_of(model), runtime="torch",
                       precision=name, fmt=name.replace("f", "fp", 1) if name in ("f32", "f16") else name)
        return cls._of_file(Path(model), tokenizer, precision, threads)

    @classmethod
    def _of_file(cls, path: Path, tokenizer: Any, precision: str | None, threads: int | None) -> "_Target":
        from compresslab.eval.batch_dependence import batch_dependent_ops
        from compresslab.eval.evaluate import onnx_forward
        from compresslab.eval.scoring_settings import read_scoring_settings
        from compresslab.export.precision import precision_label

        file, own = _load_onnx_dir(path)
        tok = own or tokenizer
        if tok is None:
            raise ValueError(f"{path} ships no tokenizer files: pass tokenizer=")
        recorded = read_scoring_settings(file.parent)
        config = _read_export_config(file.parent)
        kind = "regression" if config is not None and int(getattr(config, "num_labels", 2)) == 1 else None
        if file.suffix == ".xml":
            asked, source = ((precision, "given") if precision is not None else
                             (recorded["openvino_precision"], str(file.parent / SCORING_FILE))
                             if "openvino_precision" in recorded else ("default", "default"))
            runner = _file_runner(file, threads, precision=asked)
            return cls(onnx_forward(runner), tok, config, kind, path=file, runtime="openvino",
                       precision=runner.compiled_precision, fmt=precision_label(file), recorded=recorded,
                       precision_from=f"{source} ({asked!r})")
        if precision is not None:
            raise ValueError(f"precision={precision!r} is OpenVINO's compiled precision; {file.name} runs on ONNX "
                             "Runtime, in its graph's own precision")
        from compresslab.eval.onnx_runner import OnnxRunner

        runner = OnnxRunner(file, threads=threads)
        return cls(onnx_forward(runner), tok, config, kind, path=file, runtime="onnxruntime", precision="f32",
                   fmt=precision_label(file), batch_dependent=batch_dependent_ops(file), recorded=recorded)

    def describe(self) -> dict[str, Any]:
        """``runtime``, ``precision`` and ``format`` for evaluate()'s result."""
        return {"runtime": self.runtime, "precision": self.precision, "format": self.format}

    def predict(self, data: Any, *, label2id: Any, kind: str | None, max_length: int, batch_size: int,
                columns: Mapping[str, str],
                primary_metric: str | None) -> tuple[Any, "TaskData", Any]:
        """(the scored predictions, the task ``data`` was read as, the tokenizer used)."""
        from compresslab.data.checks import check_labels_match_head, note_unnamed_head
        from compresslab.data.schema import DataFormatError
        from compresslab.data.user import task_from_user_data
        from compresslab.eval.evaluate import predict
        from compresslab.models.heads import config_label2id

        config = self.config
        kind = kind or self.kind
        head_names = config_label2id(config) if label2id is None and config is not None else None  # {} is "none"
        try:
            task = task_from_user_data(data, label2id=label2id if label2id is not None else head_names,
                                       label2id_from="the model's config.label2id" if head_names else None,
                                       kind=kind, val_size=0, primary_metric=primary_metric, scored=True, **columns)
        except DataFormatError:
            # the data-reading rules are compress()'s: a head must be learnable from the labels, so one class, or ids
            # with a gap, are refused. Scoring has a head already: read the ids against its outputs instead
            n = int(getattr(config, "num_labels", 0) or 0) if config is not None else 0
            if label2id is not None or head_names or kind not in (None, "classification") or n < 2:
                raise
            task = task_from_user_data(data, label2id={str(i): i for i in range(n)},
                                       label2id_from=f"the model's head ({n} outputs)", kind=kind, val_size=0,
                                       primary_metric=primary_metric, scored=True, **columns)
        if config is not None:
            check_labels_match_head(task, config)
            note_unnamed_head(task, config, f"evaluate(): {self.path or 'the model'}",
                              "pass label2id={name: id, ...} with the head's ids", order_given=label2id is not None,
                              saves=False)
            _check_inputs_fit(task, self.tokenizer, max_length, config)
        return (predict(self.forward, task.spec, task.dev, self.tokenizer, batch_size=batch_size,
                        max_length=max_length), task, self.tokenizer)


def _read_export_config(d: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(d, local_files_only=True) if (d / "config.json").is_file() else None


@callers_rng_kept
def benchmark(models: Sequence[Any] | Mapping[str, Any], *, shapes: Sequence[tuple[int, int]] = ((1, 128), (32, 128)),
              threads: int | None = None, denominator: str | None = None, warmup: int = 5, runs: int = 30,
              min_time_s: float = 2.0, max_runs: int = 300, seed: int = 0) -> dict[str, Any]:
    """Interleaved CPU latency of ONNX dirs/files, OpenVINO IRs and torch models (README, "Timing on a shared
    machine"); a plain dict.

    ``models``: a list (named by position: the dir name, or ``torch_<i>``) or ``{name: model}``.
    Every model runs at every ``(batch, seq)`` with random token ids, interleaved round by round,
    after ``warmup`` untimed calls. Returns ``{"latency": {name: {"b1xs128": {"p50_ms", "p90_ms",
    ...}}}, "speedups": {name: {shape: x}} (vs ``denominator``, default the first model),
    "threads", "hardware", "settings", "machine_load"}`` (``machine_load.busy``: other processes ran
    while timing, so the figures are void). Waits for a running training, then raises
    MachineBusyError (``COMPRESSLAB_TIME_BUSY=1`` times anyway, marked busy).
    """
    from compresslab.bench import TorchRunner, hardware_fingerprint, measure_latency, resolve_threads
    from compresslab.bench import speedups as speedup_table

    if isinstance(models, (str, Path)) or hasattr(models, "config"):
        models = [models]  # one model: timed alone (a str is not a list of one-letter paths)
    if isinstance(models, Mapping):
        items = dict(models)
    elif not isinstance(models, Iterable):
        raise TypeError(f"benchmark() takes a list of models or {{name: model}}, got {type(models).__name__}")
    else:
        names = [_name(m, i) for i, m in enumerate(models)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"benchmark(): models {dupes} would share a name; pass a dict {{name: model}}")
        items = dict(zip(names, models))
    if not items:
        raise ValueError("benchmark() needs at least one model")
    for name, m in items.items():
        _check_model_arg(m, f"benchmark(): model {name!r}")
    shapes = _check_shapes(shapes)
    n = resolve_threads(threads)
    runners: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    vocab = None
    for name, m in items.items():
        if isinstance(m, (str, Path)):
            onnx, _ = _load_onnx_dir(Path(m))
            cfg = configs[name] = _read_export_config(onnx.parent)
            vocab = vocab or (int(cfg.vocab_size) if cfg is not None else None)
            runners[name] = _file_runner(onnx, n, vocab_size=vocab)
        else:
            configs[name] = m.config
            vocab = vocab or int(m.config.vocab_size)
            runners[name] = TorchRunner(m.eval(), n)
    denominator = denominator or next(iter(items))
    if denominator not in runners:
        raise ValueError(f"denominator {denominator!r} is not one of {sorted(runners)}")
    from compresslab.models.loading import check_max_length

    for name, cfg in configs.items():  # before any timing: ORT fails deep in its embedding kernel otherwise
        if cfg is not None:
            try:
                check_max_length(max(s for _, s in shapes), cfg, "shapes seq")
            except ValueError as e:
                raise ValueError(f"benchmark(): model {name!r}: {e}") from None
    lat = measure_latency(runners, shapes, warmup=warmup, runs=runs,
                          min_time_s=min_time_s, seed=seed, vocab_size=vocab, max_runs=max_runs)
    if (lat.get("machine_load") or {}).get("busy"):  # a notebook prints "speedups": say it where they will see it
        reasons = "; ".join(str(r) for r in lat["machine_load"].get("reasons") or []) or "other processes ran"
        warnings.warn(f"benchmark(): the machine was busy while timing ({reasons}): these latencies and speedups "
                      "are void (machine_load.busy); rerun on an otherwise idle machine", RuntimeWarning,
                      stacklevel=3)  # 3: past the @callers_rng_kept wrapper, at the caller's line
    return {"latency": lat["results"], "speedups": speedup_table(lat, denominator), "denominator": denominator,
            "threads": n, "runners": lat.get("runners"), "hardware": hardware_fingerprint(),
            "machine_load": lat["machine_load"],
            "settings": {"shapes": [list(s) for s in shapes], "warmup": warmup, "runs": runs,
                         "min_time_s": min_time_s, "max_runs": max_runs, "seed": seed}}


def _check_shapes(shapes: Any) -> list[tuple[int, int]]:
    """``[(batch, seq), ...]``, non-empty, positive integers; ValueError naming the bad entry."""
    from compresslab.validate import check_positive_int

    out = []
    for s in shapes or ():
        if not isinstance(s, (tuple, list)) or len(s) != 2:
            raise ValueError(f"shapes: each entry is (batch, seq), got {s!r}")
        out.append((check_positive_int(s[0], "batch"), check_positive_int(s[1], "seq")))
    if not out:
        raise ValueError("shapes is empty: give at least one (batch, seq)")
    return out


def _name(m: Any, i: int) -> str:
    if isinstance(m, (str, Path)):
        p = Path(m)
        return p.parent.name if p.suffix in (".onnx", ".xml") else p.name
    return f"torch_{i}"
