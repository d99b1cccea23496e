"""Read facts out of a run manifest without trusting its shape.

A manifest can be partial (a run still going, a stage switched off, an older schema), so every
accessor here returns ``None`` or an empty container instead of raising. Tables and plots both
read through these helpers, so they agree on which number belongs to which model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compresslab.manifest import shape_key
from compresslab.report.fmt import plain

# Rows in the headline table, in reading order: reference first, deployed last.
MODEL_ORDER = ("teacher_torch", "torch_fp32", "torch_final", "ort_fp32", "deployed")
_SHAPE_RE = re.compile(r"^b(\d+)xs(\d+)$")


def get(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...`` or ``None`` as soon as a level is missing or not a mapping."""
    for k in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(k)
    return obj


def as_dict(obj: Any) -> dict[str, Any]:
    """``obj`` if it is a mapping, else ``{}`` (so callers can iterate without checks)."""
    return dict(obj) if isinstance(obj, Mapping) else {}


def num(x: Any) -> float | None:
    """A finite-or-not float from an int/float, rejecting bools and strings (JSON mistakes)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x)


def _parse_shape(key: str) -> tuple[int, int] | None:
    m = _SHAPE_RE.match(key)
    return (int(m.group(1)), int(m.group(2))) if m else None


def runner_major(table: Mapping[str, Any]) -> dict[str, Any]:
    """A latency/speedup table keyed runner -> shape; manifests of schema 1 stored the DeepSparse
    section shape -> runner, recognised by shape-like top-level keys and swapped."""
    table = as_dict(table)
    if table and all(_parse_shape(k) is not None for k in table):
        out: dict[str, Any] = {}
        for shape, row in table.items():
            for runner, v in as_dict(row).items():
                out.setdefault(runner, {})[shape] = v
        return out
    return table


def shape_keys(m: Mapping[str, Any]) -> list[str]:
    """Bench shapes in the configured order, plus any extra shape found in the latencies."""
    keys: list[str] = []
    for s in get(m, "bench", "shapes") or []:
        if isinstance(s, list | tuple) and len(s) == 2 and all(isinstance(v, int) for v in s):
            keys.append(shape_key(s[0], s[1]))
    for per_model in as_dict(get(m, "bench", "latency")).values():
        for k in as_dict(per_model):
            if k not in keys:
                keys.append(k)
    return keys


def big_shape(keys: list[str]) -> str | None:
    """The largest-batch shape: the throughput regime where int8 and sparsity pay off."""
    parsed = [(p, k) for k in keys if (p := _parse_shape(k)) is not None]
    return max(parsed)[1] if parsed else (keys[-1] if keys else None)


def steps(m: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The step records that are mappings, ordered by their index."""
    raw = get(m, "steps")
    items = [as_dict(s) for s in raw if isinstance(s, Mapping)] if isinstance(raw, list) else []
    return sorted(items, key=lambda s: num(s.get("index")) or 0.0)


def step_label(s: Mapping[str, Any]) -> str:
    """``00 finetune`` style label; pass name added when it differs from the step name."""
    idx, name = s.get("index"), str(s.get("name", "?"))
    pname = get(s, "pass", "name")
    label = f"{idx:02d} {name}" if isinstance(idx, int) else name
    return f"{label} ({pname})" if pname and pname != name else label


# what a torch step's model.safetensors holds when the pass also wrote a smaller format of the model
_CHECKPOINT_KIND = {"packed_nbits": "fp32 fake-quant", "packed_binary": "fp32 fake-quant", "sparse_int8": "fp32"}


def step_formats(s: Mapping[str, Any]) -> dict[str, float]:
    """``{format: total bytes}`` of the checkpoint formats a step wrote beside its dense file (``result.formats``
    with a size in the pass's ``result.metrics.size``: hawq's ``packed_nbits``, oBERT's ``sparse_int8``)."""
    size = as_dict(get(s, "result", "metrics", "size"))
    formats = get(s, "result", "formats")
    return {f: b for f in (formats if isinstance(formats, list) else [])
            if isinstance(f, str) and (b := num(get(size, f, "total"))) is not None}


def step_file_kind(s: Mapping[str, Any]) -> str | None:
    """What the step's ``size_bytes`` file is, when the pass wrote a smaller format beside it: a quantizing torch
    step's model.safetensors holds fp32 fake-quant weights (larger than the fp32 teacher: its scales come along),
    a pruning step's fp32 weights with the zeros stored; None for a step with no other format."""
    kinds = [_CHECKPOINT_KIND.get(f, "fp32") for f in step_formats(s)]
    return ("fp32 fake-quant" if "fp32 fake-quant" in kinds else kinds[0]) if kinds else None


def final_torch_kind(m: Mapping[str, Any]) -> str | None:
    """:func:`step_file_kind` of the last torch step with a size: what ``torch_final``'s size is the size of."""
    if num(get(m, "eval", "models", "torch_final", "size_bytes")) is not None:  # sized by eval: not a step's file
        return None
    done = [s for s in steps(m)
            if s.get("stage", "torch") == "torch" and num(get(s, "metrics_after", "size_bytes")) is not None]
    return step_file_kind(done[-1]) if done else None


def binary_model(m: Mapping[str, Any]) -> bool:
    """Whether the final model is binarized (a step left binary modules, or the export says so):
    drives the no-1-bit-kernels note."""
    return bool(get(m, "export", "fp32", "binary")) or any(get(s, "result", "structure", "binary")
                                                           for s in steps(m))


def step_sparsity(s: Mapping[str, Any]) -> float | None:
    """The sparsity a step left: the run engine's measurement after the step, else the pass's own
    record (``result.metrics.sparsity``, where oBERT and magnitude write it)."""
    after = num(get(s, "metrics_after", "sparsity"))
    return after if after is not None else num(get(s, "result", "metrics", "sparsity"))


def sparsity_steps(m: Mapping[str, Any]) -> bool:
    """Whether any step left non-zero sparsity (drives the dense-kernel note)."""
    return any((step_sparsity(s) or 0.0) > 0 for s in steps(m))


# The score drop below the teacher that the report flags when the config does not set eval.max_drop.
DEFAULT_MAX_DROP = 0.01


def is_classification(m: Mapping[str, Any]) -> bool:
    """Whether the run's task predicts class labels (``data.kind``; a manifest without it is read as classification,
    the only kind the first versions recorded)."""
    return (get(m, "data", "kind") or "classification") == "classification"


def max_drop(m: Mapping[str, Any]) -> float:
    """The user's tolerance: ``eval.max_drop`` of the run's resolved config (a fraction, 0.01 = 1 pt)."""
    x = num(get(m, "config", "eval", "max_drop"))
    return x if x is not None and x >= 0 else DEFAULT_MAX_DROP


def threads(m: Mapping[str, Any]) -> tuple[int | None, str]:
    """The intra-op thread count the run used and where that figure comes from.

    Recorded by bench (or deploy=auto's timing) when they ran; else resolved the way the run engine
    resolves it (``bench.threads``, then ``run.threads``, then all physical cores).
    """
    for keys in (("bench", "threads"), ("deploy", "auto", "threads"), ("hardware", "threads")):
        if isinstance(n := get(m, *keys), int) and not isinstance(n, bool):
            return n, ".".join(keys)
    for keys in (("config", "bench", "threads"), ("config", "run", "threads")):
        if isinstance(n := get(m, *keys), int) and not isinstance(n, bool):
            return n, ".".join(keys[1:])
    cores = get(m, "hardware", "cpu", "physical_cores") or get(m, "hardware", "physical_cores")
    if isinstance(cores, int) and not isinstance(cores, bool):
        return cores, "run.threads=null: all physical cores"
    return None, "not recorded"


def run_relative(path: Any, m: Mapping[str, Any], run_dir: str | None = None) -> str | None:
    """``path`` relative to the run directory when it lies inside it (absolute paths recorded on
    another machine included, recognised by their ``<config_hash>/`` segment), else as recorded."""
    if not isinstance(path, str) or not path:
        return None
    p = path.replace("\\", "/")
    if run_dir:
        root = run_dir.rstrip("/") + "/"
        if p.startswith(root):
            return p[len(root):]
    h = m.get("config_hash")
    if isinstance(h, str) and h and f"/{h}/" in p:
        return p.split(f"/{h}/", 1)[1]
    return p


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys (``cpu.model``); lists stay values."""
    out: dict[str, Any] = {}
    if not isinstance(obj, Mapping):
        return {prefix: obj} if prefix else {}
    for k, v in obj.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def switched_off(m: Mapping[str, Any], section: str) -> bool:
    """Whether the run's config turned a stage off (``bench.enabled=false``): its section is absent
    on purpose, not missing."""
    return get(m, "config", section, "enabled") is False


def machine_load(m: Mapping[str, Any]) -> dict[str, Any]:
    """What the run recorded about other work on the machine while it timed (``machine_load`` at
    the top level or in ``bench``); empty when the manifest has none (older runs)."""
    return as_dict(m.get("machine_load")) or as_dict(get(m, "bench", "machine_load"))


def run_load(m: Mapping[str, Any]) -> dict[str, Any]:
    """One verdict over every ``machine_load`` record in the manifest (the bench stage's, a ZipLM
    latency table's, ``deploy=auto``'s, guided int8's: :func:`compresslab.manifest.find_records`):
    ``busy`` when any timing was, ``reasons`` of the busy ones each prefixed by what it timed,
    ``windows`` and ``busy_windows`` counts. The bench record alone misses a latency table or a
    runtime choice timed on a busy machine, whose results (the model, the runtime) the run kept."""
    from compresslab.manifest import find_records

    records = find_records(m)
    busy = [r for r in records if r.get("busy")]
    reasons = [f"{r.get('what') or 'timing'}: {why}" for r in busy for why in r.get("reasons") or []]
    return {"busy": bool(busy), "reasons": list(dict.fromkeys(reasons)), "windows": len(records),
            "busy_windows": len(busy)}


def isa(m: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded ISA flags, ``{flag: present}`` ({} when none were recorded)."""
    hw = as_dict(m.get("hardware"))
    return as_dict(hw.get("isa")) or as_dict(get(hw, "cpu", "isa"))


def isa_have(m: Mapping[str, Any]) -> str:
    """The ISA flags the CPU has (``avx2, avx512_vnni, ...``), "" when none were recorded: named beside a speed."""
    return ", ".join(k for k, v in isa(m).items() if v)


@dataclass
class ModelRow:
    """Everything the headline table and the score/latency plot show for one model."""

    key: str
    label: str
    score: float | None = None
    agreement: float | None = None
    mcnemar_p: float | None = None
    size_bytes: float | None = None
    p50_ms: dict[str, float] = field(default_factory=dict)
    speedup: dict[str, float] = field(default_factory=dict)
    speedup_best: dict[str, float] = field(default_factory=dict)  # vs bench.best_dense at each shape
    precision: str | None = None  # as compiled/run (bench.precision), e.g. fp32, int8, bf16
    metrics: dict[str, float] = field(default_factory=dict)  # the task's other metrics (secondary_metrics)


# The task metrics an eval records per model (data.metrics); the primary one is also its "score".
METRICS = ("accuracy", "f1", "matthews_corr", "pearson", "spearman")
# What "agreement with the teacher" is, by task kind (eval.evaluate): a classifier's share of examples given the
# teacher's label ("agreement"); a regression task has no labels to agree on (STS-B), so its agreement is the Pearson
# correlation of the model's predictions with the teacher's on the same examples ("agreement_pearson").
AGREEMENT_KEYS = ("agreement", "agreement_pearson")


def teacher_agreement(e: Mapping[str, Any]) -> float | None:
    """A scored cell's agreement with the teacher (:data:`AGREEMENT_KEYS`: a share of labels, or Pearson r)."""
    return next((x for k in AGREEMENT_KEYS if (x := num(e.get(k))) is not None), None)


def agreement_is_r(m: Mapping[str, Any]) -> bool:
    """Whether the run's agreement with the teacher is a correlation (a regression task: Pearson r of the
    predictions with the teacher's), not a share of identical labels: every table and verdict names it so."""
    cells = [as_dict(e) for e in as_dict(get(m, "eval", "models")).values()]
    return any("agreement_pearson" in e for e in cells) and not any("agreement" in e for e in cells)


def secondary_metrics(m: Mapping[str, Any]) -> list[str]:
    """The task's metrics the eval scored beside the primary one (STS-B's pearson beside spearman, MRPC's accuracy
    beside f1), in :data:`METRICS` order: the headline shows them too."""
    primary = get(m, "eval", "primary_metric")
    cells = [as_dict(e) for e in as_dict(get(m, "eval", "models")).values()]
    return [k for k in METRICS if k != primary and any(num(e.get(k)) is not None for e in cells)]


# what each bench.denominator times, in words (pipeline.settings allows these two)
_DENOMINATORS = {"ort_fp32": "the dense teacher's fp32 ONNX on ONNX Runtime",
                 "torch_fp32": "the dense teacher in eager PyTorch (fp32)"}


def denominator_text(denom: str) -> str:
    """``bench.denominator`` in words, for the report's speed sentences."""
    return _DENOMINATORS.get(denom, f"the {denom} cell")


def teacher_score(m: Mapping[str, Any]) -> float | None:
    """The dense teacher's dev score: the reference every delta in pt is taken against."""
    return num(get(m, "eval", "models", "teacher_torch", "score"))


def _size_of(m: Mapping[str, Any], key: str) -> float | None:
    """On-disk bytes of the artifact a model row stands for (see MEASURE.md, Size)."""
    explicit = num(get(m, "eval", "models", key, "size_bytes"))
    if explicit is not None:
        return explicit
    if key == "ort_fp32":  # the dense teacher's export when a pass changed the model, else the one export
        return num(get(m, "export", "teacher_fp32", "size_bytes")) or num(get(m, "export", "fp32", "size_bytes"))
    if key == "deployed":
        return num(get(m, "export", "deployed", "size_bytes"))
    done = [s for s in steps(m) if num(get(s, "metrics_after", "size_bytes")) is not None]
    if key in ("teacher_torch", "torch_fp32") and done:
        return num(get(done[0], "metrics_after", "size_bytes"))
    torch_done = [s for s in done if s.get("stage", "torch") == "torch"]
    if key == "torch_final" and torch_done:
        return num(get(torch_done[-1], "metrics_after", "size_bytes"))
    return num(get(m, "bench", "size_bytes", key))  # a file only bench ran (an IR: .xml + .bin)


def is_dense_teacher_cell(key: str) -> bool:
    """Whether a headline row is the dense teacher on a runtime (bench's baselines: ``ort_fp32``, ``ort_int8`` = ORT's
    one-call int8 of the teacher, ``torch_fp32``, ``openvino_<precision>``), not this run's model: labelled so, since
    the deploy label can be the same word (the deployed ``ort_int8`` file beside the teacher's ``ort_int8``)."""
    return key in ("ort_fp32", "ort_int8", "torch_fp32") or key.startswith("openvino_")


def deployed_label(m: Mapping[str, Any]) -> str:
    """The deployed artifact's name in every table and plot: ``deployed_`` + its deploy label (``deployed_ort_int8``,
    ``deployed_openvino_int8``), never the bare deploy label, which can be a dense baseline's name (an int8 pipeline's
    file is deployed as ``ort_int8``, and bench's ``ort_int8`` is the teacher's ORT int8). ``deployed`` when the
    manifest records no label; ``deployed (<label>)`` when the prefixed name is another cell's. The manifest keeps
    ``export.deployed.label`` as recorded (benchmarks read it)."""
    label = get(m, "export", "deployed", "label")
    if not isinstance(label, str) or not label:
        return "deployed"
    name = label if label.startswith("deployed") else f"deployed_{label}"
    cells = {*as_dict(get(m, "eval", "models")), *as_dict(get(m, "bench", "latency")),
             *as_dict(get(m, "bench", "scores"))}
    return f"deployed ({label})" if name in cells else name


def cell_label(m: Mapping[str, Any], key: str) -> str:
    """A scored or timed cell's name in tables: the deployed artifact's :func:`deployed_label`, every other cell
    its key."""
    return deployed_label(m) if key == "deployed" else key


def model_rows(m: Mapping[str, Any]) -> list[ModelRow]:
    """One row per model named in eval or bench, in :data:`MODEL_ORDER` then alphabetically."""
    evals = as_dict(get(m, "eval", "models"))
    lat = as_dict(get(m, "bench", "latency"))
    spd = as_dict(get(m, "bench", "speedups"))
    best = as_dict(get(m, "bench", "speedups_best_dense"))
    prec = as_dict(get(m, "bench", "precision"))
    bench_scores = as_dict(get(m, "bench", "scores"))  # OpenVINO cells and ort_int8, scored by bench on the same split
    keys = list(dict.fromkeys([*evals, *lat]))
    keys.sort(key=lambda k: (MODEL_ORDER.index(k) if k in MODEL_ORDER else len(MODEL_ORDER), k))
    rows = []
    for k in keys:
        label = f"{k} (dense teacher)" if is_dense_teacher_cell(k) else cell_label(m, k)
        e = as_dict(evals.get(k)) or as_dict(bench_scores.get(k))
        row = ModelRow(k, label, num(e.get("score")), teacher_agreement(e),
                       num(e.get("mcnemar_p")), _size_of(m, k))
        row.metrics = {name: x for name in METRICS if (x := num(e.get(name))) is not None}
        row.precision = str(prec[k]) if prec.get(k) is not None else None
        for shape, v in as_dict(best.get(k)).items():
            if (x := num(v)) is not None:
                row.speedup_best[shape] = x
        for shape, v in as_dict(lat.get(k)).items():
            if (p50 := num(get(v, "p50_ms"))) is not None:
                row.p50_ms[shape] = p50
        for shape, v in as_dict(spd.get(k)).items():
            if (x := num(v)) is not None:
                row.speedup[shape] = x
        rows.append(row)
    _fill_speedups(rows, get(m, "bench", "denominator") or "ort_fp32")
    return rows


def _fill_speedups(rows: list[ModelRow], denominator: str) -> None:
    """Complete speedups bench did not list from the p50s of the same bench run.

    Both medians come from one interleaved process (MEASURE.md), so their ratio is the same
    figure bench would have written; the denominator itself is 1.0 by definition.
    """
    base = next((r for r in rows if r.key == denominator), None)
    if base is None:
        return
    for r in rows:
        for shape, p50 in r.p50_ms.items():
            ref = base.p50_ms.get(shape)
            if shape not in r.speedup and ref is not None and p50 > 0:
                r.speedup[shape] = 1.0 if r is base else ref / p50


@dataclass(frozen=True)
class Serving:
    """A file's score in one serving mode the eval measured."""

    mode: str  # "at batch 32", "at batch 1 (one sentence per call)"; "" when the batch does not matter
    score: float
    agreement: float | None  # with the teacher, in this mode


def serving_scores(m: Mapping[str, Any], key: str = "deployed") -> list[Serving]:
    """The scores of the cell ``key`` in every serving mode the eval measured: one (mode "") for a file whose labels
    depend on each sentence alone; at the eval batch size and one sentence per call for a file whose labels depend
    on the batch (``eval.batch_dependence.<key>``). [] when the cell has no score."""
    e = as_dict(get(m, "eval", "models", key))
    score = num(e.get("score"))
    if score is None:
        return []
    bd = as_dict(get(m, "eval", "batch_dependence", key))
    b1 = num(bd.get("score_b1"))
    if b1 is None:
        return [Serving("", score, teacher_agreement(e))]
    batch = bd.get("batch_size") or get(m, "config", "eval", "batch_size")
    return [Serving(f"at batch {plain(batch)}", score, teacher_agreement(e)),
            Serving("at batch 1 (one sentence per call)", b1,
                    num(bd.get("agreement_b1")) if "agreement_b1" in bd else num(bd.get("agreement_pearson_b1")))]
