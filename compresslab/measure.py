"""Score and time models from Python: :func:`evaluate` (torch model or ONNX export dir on data) and
:func:`benchmark` (interleaved latency, MEASURE.md "Speed"); plain dicts out, no run directory."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

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


def _file_runner(model: Path, threads: int | None, vocab_size: int | None = None) -> Any:
    """An ORT runner for an ``.onnx`` file, an OpenVINO one (CPU, its default precision) for an IR."""
    from compresslab.bench import OrtRunner, resolve_threads

    if model.suffix == ".xml":
        from compresslab.bench.openvino_runner import OpenVinoRunner, openvino_missing_reason

        if reason := openvino_missing_reason():
            raise ValueError(f"{model} is an OpenVINO IR, and {reason}")
        return OpenVinoRunner(model, resolve_threads(threads), vocab_size=vocab_size)
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


@callers_rng_kept
def evaluate(model: Any, data: Any, tokenizer: Any = None, *, reference: Any = None, reference_tokenizer: Any = None,
             label2id: Mapping[str, int] | None = None, kind: str | None = None, max_length: int = 128,
             batch_size: int = 64, threads: int | None = None, **columns: str) -> dict[str, Any]:
    """Score a torch model, an exported ONNX dir (or ``.onnx`` file) or an OpenVINO IR (its dir or ``.xml``) on
    ``data``; a plain dict.

    ``data`` takes the same kinds as :func:`compress`. The tokenizer of an ONNX dir is read from the
    dir. With ``reference`` (another model or ONNX dir) the result adds agreement with it and
    McNemar's p-value. Returns ``{"n", "primary_metric", "score", <every metric>, ...}``; ValueError
    for labels that do not match the model's head.
    """
    from compresslab.eval.evaluate import compare

    kw = dict(label2id=label2id, kind=kind, max_length=max_length, batch_size=batch_size, threads=threads,
              columns=columns)
    scored, task, tok = _predict(model, data, tokenizer, **kw)
    ref = None
    if reference is not None:  # the reference reads its own tokenizer (an export dir's), else the model's
        ref = _predict(reference, data, reference_tokenizer or tokenizer or tok, **kw)[0]
    return {"n": len(task.dev), "primary_metric": task.spec.primary_metric, **compare(scored, ref, task.spec)}


def _check_model_arg(model: Any, where: str) -> None:
    """TypeError before any work for what is neither a path (an export dir, ``model.onnx``, an IR ``.xml``) nor a
    torch model with a transformers ``config``."""
    if isinstance(model, (str, Path)) or (hasattr(model, "config") and callable(getattr(model, "eval", None))):
        return
    raise TypeError(f"{where}: {type(model).__name__} {model!r:.60} is neither a model (a transformers model, "
                    "e.g. from AutoModelForSequenceClassification) nor a path to an exported dir or file")


def _predict(model: Any, data: Any, tokenizer: Any, *, label2id: Any, kind: str | None, max_length: int,
             batch_size: int, threads: int | None, columns: Mapping[str, str]) -> tuple[Any, "TaskData", Any]:
    from compresslab.data.checks import check_labels_match_head
    from compresslab.data.schema import DataFormatError
    from compresslab.data.user import task_from_user_data
    from compresslab.eval.evaluate import onnx_forward, predict, torch_forward

    _check_model_arg(model, "evaluate()")
    if isinstance(model, (str, Path)):
        from compresslab.eval.onnx_runner import OnnxRunner

        onnx, own = _load_onnx_dir(Path(model))
        runner = _file_runner(onnx, threads) if onnx.suffix == ".xml" else OnnxRunner(onnx, threads=threads)
        forward, tok = onnx_forward(runner), own or tokenizer
        if tok is None:
            raise ValueError(f"{model} ships no tokenizer files: pass tokenizer=")
        config = _read_export_config(onnx.parent)
    else:
        if tokenizer is None:
            raise ValueError("evaluate(model, data) of a torch model needs its tokenizer: evaluate(model, data, tok)")
        forward, tok, config = torch_forward(model.eval()), tokenizer, model.config
        from compresslab.models.heads import task_kind_of

        kind = kind or task_kind_of(model)
    if config is not None and kind is None and int(getattr(config, "num_labels", 2)) == 1:
        kind = "regression"
    from compresslab.models.heads import config_label2id

    head_names = config_label2id(config) if label2id is None else None  # as compress(): {} is not "none given"
    try:
        task = task_from_user_data(data, data, label2id=label2id if label2id is not None else head_names,
                                   label2id_from="the model's config.label2id" if head_names else None,
                                   kind=kind, val_size=0, **columns)
    except DataFormatError:
        # the data-reading rules are compress()'s: a head must be learnable from the labels, so one class, or ids
        # with a gap, are refused. Scoring has a head already: read the ids against its outputs instead
        n = int(getattr(config, "num_labels", 0) or 0) if config is not None else 0
        if label2id is not None or head_names or kind is not None or n < 2:
            raise
        task = task_from_user_data(data, data, label2id={str(i): i for i in range(n)},
                                   label2id_from=f"the model's head ({n} outputs)", kind=kind, val_size=0, **columns)
    if config is not None:
        check_labels_match_head(task, config)
        _check_inputs_fit(task, tok, max_length, config)
    return predict(forward, task.spec, task.dev, tok, batch_size=batch_size, max_length=max_length), task, tok


def _read_export_config(d: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(d, local_files_only=True) if (d / "config.json").is_file() else None


@callers_rng_kept
def benchmark(models: Sequence[Any] | Mapping[str, Any], *, shapes: Sequence[tuple[int, int]] = ((1, 128), (32, 128)),
              threads: int | None = None, denominator: str | None = None, warmup: int = 5, runs: int = 30,
              min_time_s: float = 2.0, max_runs: int = 300, seed: int = 0) -> dict[str, Any]:
    """Interleaved CPU latency of ONNX dirs/files, OpenVINO IRs and torch models (MEASURE.md "Speed"); a plain dict.

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
