"""Toy tasks and pass contexts for tests and examples (tiny, local, deterministic)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from compresslab.data.schema import Example, TaskData
from compresslab.data.tasks import TASKS
from compresslab.types import PassContext

if TYPE_CHECKING:
    from compresslab.ops.spdy import FixedCostFit, LatencyTable

_POS = ["good", "great", "fun", "love"]
_NEG = ["bad", "awful", "boring", "hate"]
_FILL = ["the", "movie", "film", "plot", "actors", "is", "was", "very", "and", "it", "this"]


def tiny_sentiment(n: int, seed: int = 0) -> list[Example]:
    """Learnable toy sentiment: the label is which word list the sentence draws its cue from."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.choices(_FILL, k=rng.randrange(3, 9)) + [rng.choice(_POS if label else _NEG)]
        rng.shuffle(words)
        out.append(Example(" ".join(words), None, label))
    return out


def trained_head(model: torch.nn.Module, by: float = 0.01) -> torch.nn.Module:
    """``model`` (a sequence classifier) with its head marked as trained, in place: ``by`` added to the classifier's
    bias. transformers initialises a fresh head's bias to zero, which compresslab reads as an untrained head."""
    with torch.no_grad():
        model.classifier.bias.add_(by)
    return model


def trained_tiny(arch: str = "bert", **config: Any) -> torch.nn.Module:
    """A tiny classifier (:func:`~compresslab.models.tiny.tiny_model`) whose head counts as trained
    (:func:`trained_head`): it can be the teacher, or its own."""
    from compresslab.models.tiny import tiny_model

    return trained_head(tiny_model(arch, **config))


def api_kw(**over: Any) -> dict[str, Any]:
    """The keywords the API tests give ``compresslab.compress``: short sequences, small batches, no progress bars;
    ``over`` added."""
    return dict(max_length=32, batch_size=8, progress=False, **over)


def md_section(md: str, title: str) -> str:
    """The body of section ``## <title>`` of a Markdown report, up to the next ``## `` heading."""
    return md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def report_section(m: Any, title: str) -> str:
    """Section ``title`` (:func:`md_section`) of the Markdown report built from manifest ``m`` alone (no plots drawn,
    run dir ``outputs/x/y``)."""
    from compresslab.report.render import to_markdown
    from compresslab.report.sections import build_document

    return md_section(to_markdown(build_document(m, set(), {}, "outputs/x/y")), title)


def tiny_task(n_train: int = 96, n_val: int = 16, n_dev: int = 32, seed: int = 0) -> TaskData:
    """An SST-2-shaped TaskData over :func:`tiny_sentiment` sentences."""
    return TaskData(spec=TASKS["sst2"], train=tiny_sentiment(n_train, seed), validation=tiny_sentiment(n_val, seed + 1),
                    dev=tiny_sentiment(n_dev, seed + 2), info={"task": "tiny", "sizes": {"train": n_train}})


def tiny_pairs(n: int, seed: int = 0, max_words: int = 8) -> list[Example]:
    """Random sentence pairs (3 to ``max_words - 1`` words each) with a random similarity in [0, 5] (STS-B's
    scale): no signal to learn, just the shape of a pair regression or embedding task."""
    rng = random.Random(seed)
    words = [*_FILL, *_POS, *_NEG]
    return [Example(" ".join(rng.choices(words, k=rng.randrange(3, max_words))),
                    " ".join(rng.choices(words, k=rng.randrange(3, max_words))), round(rng.uniform(0, 5), 2))
            for _ in range(n)]


def tiny_embedding_task(n_train: int = 64, n_val: int = 16, n_dev: int = 40, seed: int = 1) -> TaskData:
    """A ``stsb_embedding``-shaped TaskData (label-free embedding task) over :func:`tiny_pairs`."""
    return TaskData(spec=TASKS["stsb_embedding"], train=tiny_pairs(n_train, seed), validation=tiny_pairs(n_val, seed + 1),
                    dev=tiny_pairs(n_dev, seed + 2))


def tiny_context(tokenizer: Any, tmp_path: str | Path, *, teacher: torch.nn.Module | None = None,
                 task: TaskData | None = None, batch_size: int = 8, max_length: int = 32) -> PassContext:
    """A PassContext over :func:`tiny_task` writing under ``tmp_path``."""
    tmp_path = Path(tmp_path)
    step = tmp_path / "step"
    step.mkdir(parents=True, exist_ok=True)
    return PassContext(tokenizer=tokenizer, task=task or tiny_task(), run_dir=tmp_path, step_dir=step,
                       device=torch.device("cpu"), seed=0, teacher=teacher, max_length=max_length,
                       batch_size=batch_size, cache_dir=tmp_path / "cache", model_source="")


def batches_context(tokenizer: Any, tmp_path: str | Path, batches: list[dict], step: str = "01_q") -> PassContext:
    """A PassContext without a task whose ``calibration_batches`` are ``batches`` (for ONNX passes;
    the data module is tested elsewhere); steps write under ``tmp_path/steps/<step>``."""

    class _Ctx(PassContext):
        def calibration_batches(self, n, batch_size=None, setting=None):
            return iter(batches)

    tmp_path = Path(tmp_path)
    return _Ctx(tokenizer=tokenizer, task=None, run_dir=tmp_path, step_dir=tmp_path / "steps" / step,
                device=torch.device("cpu"), seed=0)


def write_csv(path: str | Path, header: list[str], rows: list[list[str]]) -> Path:
    """A CSV file with ``header`` then ``rows`` (for data-reading tests); returns its path."""
    import csv

    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def tiny_generic_run(root: str | Path, pipeline: str | None = None) -> list[str]:
    """Overrides for a real pipeline run on a tiny random BERT and a tiny sentiment task written under ``root``
    (``model/``, ``train.csv`` 96 examples, ``dev.csv`` 32; outputs and caches under ``root`` too):
    ``debug=smoke model=local task=generic ...`` for benchmark scripts' smoke tests. They include
    ``pipeline.passes.obert.grad_batch_size=4`` unless ``pipeline`` names a shipped pipeline without an ``obert``
    step (that override would not compose there)."""
    from compresslab.models.tiny import tiny_model, tiny_tokenizer

    root = Path(root)
    tiny_tokenizer(root / "model").save_pretrained(root / "model")
    tiny_model("bert").save_pretrained(root / "model")
    for name, n, seed in (("train", 96, 0), ("dev", 32, 1)):
        write_csv(root / f"{name}.csv", ["text", "label"], [[e.text_a, str(e.label)] for e in tiny_sentiment(n, seed)])
    return ["debug=smoke", "model=local", f"model.source={root / 'model'}", "task=generic",
            f"task.generic.train={root / 'train.csv'}", f"task.generic.dev={root / 'dev.csv'}", "task.max_length=32",
            f"paths.output_dir={root / 'out'}", f"paths.cache_dir={root / 'cache'}", "report=false",
            *(["pipeline.passes.obert.grad_batch_size=4"] if pipeline is None or _has_step(pipeline, "obert") else [])]


def _has_step(pipeline: str, step: str) -> bool:
    """Whether the shipped pipeline ``conf/pipeline/<pipeline>.yaml`` lists ``step`` in its steps."""
    from compresslab.config import shipped_steps

    return step in (shipped_steps(pipeline) or [])


class StopRun(Exception):
    """Stands in for a session ending mid-training (raised by :class:`StopAt`)."""


class StopAt:
    """A training callback raising :class:`StopRun` when step ``step`` (0-based) begins; -1 never stops."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, step: int, model: Any) -> None:
        if step == self.step:
            raise StopRun(step)


class FakeCpu:
    """A CPU reader for timing tests (``timing_window(reader=FakeCpu(...))`` or in place of
    ``machine_load.read_cpu``), so a test never depends on how busy the real machine is.

    Every reading advances a virtual clock by ``step_s``, during which other processes use
    ``other`` cores and this process ``own`` cores; change ``other`` mid-test to simulate a burst.
    """

    def __init__(self, other: float = 0.0, own: float = 1.0, step_s: float = 1.0) -> None:
        self.other, self.own, self.step_s = other, own, step_s
        self.wall = self.busy = self.own_s = 0.0

    def __call__(self) -> Any:
        from compresslab.bench.machine_load import CpuReading

        self.wall += self.step_s
        self.busy += (self.other + self.own) * self.step_s
        self.own_s += self.own * self.step_s
        return CpuReading(self.wall, self.busy, self.own_s)


def import_benchmark(name: str, repo: str | Path) -> Any:
    """The module of the script ``benchmarks/<name>.py`` in the checkout ``repo`` (benchmark scripts import their
    siblings by bare name, so the folder is on ``sys.path`` only while it loads)."""
    import importlib
    import sys

    sys.path.insert(0, str(Path(repo) / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def import_benchmarks(name: str, repo: str | Path) -> Any:
    """The module ``benchmarks.<name>`` of the checkout ``repo``, imported as a package (its modules import each other
    as ``benchmarks.*``, so the repo root is put on ``sys.path`` and left there)."""
    import importlib
    import sys

    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    return importlib.import_module(f"benchmarks.{name}")


@contextlib.contextmanager
def process_state_restored() -> Iterator[None]:
    """Runs a script's ``main`` in this process and puts back what it pins for a whole process
    (``cli.setup_process``: torch's intra-op threads and the global seeds), so later tests in the same
    interpreter start from the same state (tests/conftest.py fails a test that leaves them changed)."""
    from compresslab.training.resume import rng_state, set_rng_state  # the step checkpoints' own RNG record

    threads = torch.get_num_threads()
    rng = rng_state([])
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        set_rng_state(rng, [])


def synthetic_latency_table(base_ms: float = 1.0, *, layers: int = 2, heads: int = 4, ffn: int = 64,
                            ffn_grid: int = 16, env: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """A latency table for the tiny models with no timing: ``(table, info)`` as ``build_latency_table`` returns.

    The table prices 1 ms per head and 0.05 ms per FFN neuron (sizes on ``ffn_grid``) plus
    ``base_ms``. ``info`` carries the whole-model calibration record the real build writes, with
    the table's own predictions as the "measured" times, so every ``latency_model``
    (one_layer, calibrated, linear) prices a structure the same: tests of the search and the
    checks do not depend on which model is the default.
    """
    from compresslab.bench.latency_table import calibration_points, calibration_record
    from compresslab.ops.spdy import LatencyTable

    env = env or {}
    times = {"attention": {h: h * 1e-3 for h in range(heads + 1)},
             "ffn": {n: n * 5e-5 for n in range(0, ffn + 1, ffn_grid)}}
    table = LatencyTable(base_ms * 1e-3, times, env)
    points = calibration_points(table, heads, ffn, layers, (0.5, 0.25, 0.125))
    _, record = calibration_record(table, points, [table.predict(c) for c in points.values()], fit_scale=True)
    arch = {**env.get("arch", {}), "layers": layers, "heads": heads, "ffn": ffn}
    one_layer = LatencyTable(table.base_time, times, {**env, "arch": arch})
    calibration = {**record, "one_layer_table": one_layer.to_dict()}
    return table, {"cached": False, "measure_s": 0.0, "raw": {"calibration": calibration}}


LATENCY_KINDS = ("attention", "ffn")  # the module types of a latency table


@dataclass
class LatencyTruth:
    """A synthetic runtime for ZipLM's latency model: one-layer module times ``t_kind`` and the whole-model law
    ``T(config) = t_0 + sum over present modules (c_kind + scale * t_kind(size))`` around them (the true ``t_0``, fixed
    costs and scale are ``fit``). Nothing is timed: tests check the fit, the DP and the table build against it."""

    heads: int
    ffn: int
    layers: int
    grid: int
    fit: FixedCostFit  # the true t_0, fixed costs and scale
    per_head: float = 3.6e-3  # s: ~ MiniLM-L6 at b32 x s128 on 2 cores (the bench teacher)
    per_neuron: float = 4.8e-5
    probe_base: float = 0.013  # the one-layer base probe (embeddings, LayerNorms, head)

    def t(self, kind: str, size: int) -> float:  # one-layer probe time of a module (tile bump off 128)
        if kind == "attention":
            return self.per_head * size
        return self.per_neuron * size + (3e-4 if size % 128 else 0.0) * (size > 0)

    def sizes(self, kind: str) -> list[int]:
        if kind == "attention":
            return list(range(self.heads + 1))
        return sorted({*range(0, self.ffn, self.grid), self.ffn})

    def one_layer(self) -> dict[str, dict[int, float]]:
        return {k: {s: self.t(k, s) for s in self.sizes(k)} for k in LATENCY_KINDS}

    def time(self, config: dict[str, list[int]]) -> float:
        """Whole-model time of ``config`` ({"attention": [per layer], "ffn": [per layer]})."""
        f = self.fit
        return f.base_time + sum(f.fixed[k] + f.scale * self.t(k, s) for k in LATENCY_KINDS for s in config[k] if s > 0)

    def uniform(self, h: int, n: int) -> dict[str, list[int]]:
        return {"attention": [h] * self.layers, "ffn": [n] * self.layers}

    @property
    def dense(self) -> dict[str, list[int]]:
        return self.uniform(self.heads, self.ffn)

    def table_alone(self) -> LatencyTable:
        """The one-layer table as the pipeline builds it: ``t_0 = T_dense - L (t_att(H) + t_ffn(F))``."""
        from compresslab.ops.spdy import LatencyTable

        layers = {k: self.layers for k in LATENCY_KINDS}
        return LatencyTable.from_dense(self.time(self.dense), self.one_layer(), layers, {})


TINY_ONNX_VOCAB = 128


def tiny_bert_classifier(seed: int = 0) -> torch.nn.Module:
    """A 2-layer, hidden-32 ``BertForSequenceClassification`` (vocab :data:`TINY_ONNX_VOCAB`, 160 positions) in
    eval mode with eager attention: the model the bench and benchmark-script tests export and time."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=TINY_ONNX_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=160, attn_implementation="eager")
    return BertForSequenceClassification(cfg).eval()


def export_tiny_onnx(model: torch.nn.Module, path: str | Path, names: list[str]) -> Path:
    """``model`` exported (TorchScript exporter, opset 17) with inputs ``names`` (of input_ids, attention_mask,
    token_type_ids), dynamic batch and sequence axes, output ``logits``."""
    import warnings

    path = Path(path)
    ids = torch.randint(0, TINY_ONNX_VOCAB, (2, 16))
    args = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(args[n] for n in names), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
    return path
