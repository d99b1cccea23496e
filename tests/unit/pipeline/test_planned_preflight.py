"""A speedup target the runtime cannot reach is refused in the preflight, before any step runs (trial 47, finding
9: ZipLM's "not reachable" came only when its step started, after finetune, layer_drop and the latency table).

The preflight prices the floor on the architecture the step will be given (a dense model of random weights: the
table does not depend on weights), after the layers an earlier layer_drop removes; the table it reads or measures is
the step's own (cached; else kept on the pass), so a run that goes on times nothing twice.

The same plan runs each later step's check_model on the planned model after a layer_drop (the loaded model answers
only for the steps before it).

Timing is the synthetic table of the tiny BERT (1 ms base, 1 ms per head, 0.05 ms per FFN neuron; 4 heads and 64
neurons per layer): 2 layers reach at most 15.4 / 2 = 7.70x (one head kept), 1 layer 8.2 / 2 = 4.10x.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import compresslab
from compresslab.config import compose
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.registry import available_passes, get_pass
from compresslab.testing import synthetic_latency_table, tiny_sentiment, write_csv

TINY = dict(batch=2, seq=16, threads=1, ffn_grid=16, latency_warmup=0, latency_runs=2, check_runs=2,
            num_calibration=32, max_retries=0)
ZIPLM_TINY = [f"pipeline.passes.ziplm.{k}={v}" for k, v in TINY.items()]


def price_planned_synthetically(mp: pytest.MonkeyPatch) -> list[int]:
    """The preflight prices every planned model with the synthetic table of its depth, as if cached (no export, no
    timing); returns the list the layer counts it priced are appended to."""
    import compresslab.pruning.reachable as reachable
    from compresslab.models.adapters import get_adapter

    priced: list[int] = []

    def cached(model: Any, settings: Any, **kw: Any) -> Any:
        priced.append(get_adapter(model).num_layers)
        return synthetic_latency_table(layers=priced[-1])

    mp.setattr(reachable, "cached_latency_table", cached)
    return priced


@pytest.fixture
def no_step_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in available_passes():  # finetune first of all: the refusal must come before it
        monkeypatch.setattr(get_pass(name), "apply", lambda *a, **k: pytest.fail("a step ran before the check"))


def _cli_cfg(root: Path, pipeline: str, *extra: str) -> Any:
    model_dir = root / "model"
    tiny_tokenizer(model_dir).save_pretrained(model_dir)
    tiny_model("bert").save_pretrained(model_dir)
    for name, n, seed in (("train", 64, 0), ("dev", 16, 1)):
        write_csv(root / f"{name}.csv", ["text", "label"], [[e.text_a, str(e.label)] for e in tiny_sentiment(n, seed)])
    return compose([f"+pipeline={pipeline}", "debug=smoke", "model=local", f"model.source={model_dir}",
                    "task=generic", f"task.generic.train={root / 'train.csv'}", f"task.generic.dev={root / 'dev.csv'}",
                    "task.max_length=32", "run.threads=1", f"paths.output_dir={root / 'out'}",
                    f"paths.cache_dir={root / 'cache'}", "bench.enabled=false", "report=false", *ZIPLM_TINY, *extra])


@pytest.mark.parametrize("pipeline,extra,layers,top", [
    ("ziplm_int8", ["pipeline.passes.ziplm.speedup=10"], 2, "7.70"),
    # layer_drop to 1 layer first: 5x would be reachable from 2 layers (7.70x), not from the 1 the step is given
    ("layer_drop_ziplm_obert_int8", ["pipeline.passes.layer_drop.num_layers=1", "pipeline.passes.ziplm.speedup=5"],
     1, "4.10"),
])
def test_the_cli_refuses_an_unreachable_target_before_finetune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                no_step_runs: None, pipeline: str, extra: list[str],
                                                                layers: int, top: str) -> None:
    from compresslab.pipeline import run

    priced = price_planned_synthetically(monkeypatch)
    cfg = _cli_cfg(tmp_path, pipeline, *extra)
    with pytest.raises(ValueError, match=rf"step 'ziplm': speedup target\(s\) \[[\d.]+\] are not reachable .* for "
                                         rf"the {layers}-layer model .* largest reachable speedup is {top}x"):
        run(cfg)
    assert priced == [layers]
    assert not list((tmp_path / "out").rglob("manifest.json"))  # no run dir started


def test_the_api_refuses_an_unreachable_target_before_finetune(tiny_tok: Any, monkeypatch: pytest.MonkeyPatch,
                                                                no_step_runs: None, tmp_path: Path) -> None:
    priced = price_planned_synthetically(monkeypatch)
    data = [(e.text_a, ["neg", "pos"][e.label]) for e in tiny_sentiment(48, 0)]
    passes = [{"name": "finetune", "preset": "smoke"}, {"name": "layer_drop", "num_layers": 1},
              {"name": "ziplm", **TINY, "speedup": 5.0}]
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"step 'ziplm': .*\[5(\.0)?\] are not reachable .* 1-layer .* 4\.10x"):
        compresslab.compress(tiny_model("bert"), tiny_tok, passes, data=data, output_dir=out, max_length=32,
                             batch_size=8, progress=False)
    assert priced == [1] and not out.exists()
    # structured_l1 (uniform: a head per layer, 15.4 / 3 = 5.13x at 2 layers) goes through the same check
    with pytest.raises(ValueError, match=r"step 'structured_l1': .* largest reachable speedup is 5\.13x"):
        compresslab.compress(tiny_model("bert"), tiny_tok, [{"name": "structured_l1", **TINY, "speedup": 6.0}],
                             data=data, max_length=32, batch_size=8, progress=False)


def _plan(passes: list[Any], done: tuple[int, ...] = ()) -> None:
    from compresslab.api import build_steps
    from compresslab.pipeline.preflight import check_planned

    check_planned(SimpleNamespace(cache_dir=None), build_steps(passes), tiny_model("bert"), done)


def test_the_plan_prices_the_depth_each_step_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    priced = price_planned_synthetically(monkeypatch)
    zl = {"name": "ziplm", **TINY, "speedup": 4.0}
    _plan([{"name": "finetune"}, {"name": "layer_drop", "keep": [1]}, zl])  # 4x < 4.10x: reachable from 1 layer
    _plan([{"name": "finetune"}, zl])  # finetune keeps the architecture
    _plan([{"name": "finetune"}, {"name": "layer_drop", "num_layers": 1}, zl], done=(0, 1, 2))  # resumed past ziplm
    # after a structured step the architecture is not known in advance: the later step checks itself
    _plan([{"name": "ziplm", **TINY, "speedup": 1.5}, {**zl, "speedup": 50.0}])
    _plan([{**zl, "latency_runtime": ["ort", "ort_int8"]}])  # several runtimes: the step chooses, then checks
    assert priced == [1, 2, 2]


@pytest.mark.filterwarnings("ignore:only .* calibration tokens")
def test_a_table_the_preflight_measured_is_the_steps_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not cached (a busy machine; compress() has no cache dir): measured once, in the preflight; the step uses it."""
    import compresslab.bench.latency_probes as probes
    import compresslab.pruning.reachable as reachable
    import compresslab.pruning.speedup as st
    from compresslab.api import build_steps
    from compresslab.pipeline.preflight import check_planned
    from compresslab.testing import tiny_context, tiny_task

    measured: list[int] = []

    def build(model: Any, onnx: Any, settings: Any, **kw: Any) -> Any:
        measured.append(len(model.bert.encoder.layer))
        return synthetic_latency_table()

    monkeypatch.setattr(reachable, "cached_latency_table", lambda *a, **k: None)
    monkeypatch.setattr(reachable, "build_latency_table", build)
    monkeypatch.setattr(probes, "deploy_probe", lambda model, path, s, n: Path(path))  # no export of the random model
    monkeypatch.setattr(st, "build_latency_table", lambda *a, **k: pytest.fail("the step timed the table again"))
    monkeypatch.setattr(st, "measure_speedup", lambda *a, **k: {"speedup": 9.0, "dense_ms": 9.0, "candidate_ms": 1.0})
    steps = build_steps([{"name": "ziplm", **TINY, "speedup": 2.0}])
    check_planned(SimpleNamespace(cache_dir=None), steps, tiny_model("bert"))
    assert measured == [2]
    ctx = tiny_context(tiny_tokenizer(tmp_path / "tok"), tmp_path, task=tiny_task(32, 4, 4))
    torch.manual_seed(0)
    res = steps[0].pass_.apply(tiny_model("bert"), ctx)
    assert measured == [2] and res.metrics["met_target"]


@pytest.mark.filterwarnings("ignore:only .* calibration tokens")
def test_a_resumed_run_does_not_plan_the_steps_it_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after ziplm, then rerun: the rerun's preflight prices nothing (the step is done; a table it needed
    would be read from the cache, never re-timed)."""
    import compresslab.pruning.speedup as st
    from compresslab.pipeline import run

    priced = price_planned_synthetically(monkeypatch)
    monkeypatch.setattr(st, "build_latency_table", lambda *a, **k: synthetic_latency_table())
    monkeypatch.setattr(st, "measure_speedup", lambda *a, **k: {"speedup": 9.0, "dense_ms": 9.0, "candidate_ms": 1.0})
    cfg = _cli_cfg(tmp_path, "ziplm_int8", "pipeline.passes.ziplm.speedup=2", "run.stop_after=2")
    run(cfg)
    assert priced == [2]
    run(cfg)
    assert priced == [2]


def test_structured_l1_on_a_non_uniform_model_is_refused_before_finetune(tiny_tok: Any, monkeypatch: pytest.MonkeyPatch,
                                                                          no_step_runs: None) -> None:
    """Its search shrinks every layer alike, so it starts from a uniform model only: refused in the preflight, before
    any timing (nothing priced), where its apply used to refuse after finetune."""
    from compresslab.models.structure import apply_structure

    priced = price_planned_synthetically(monkeypatch)
    model = tiny_model("bert")
    apply_structure(model, [{"heads": 2, "ffn": 64}, {"heads": 4, "ffn": 64}])
    data = [(e.text_a, ["neg", "pos"][e.label]) for e in tiny_sentiment(48, 0)]
    with pytest.raises(ValueError, match=r"step 'structured_l1': structured_l1 starts from a uniform model; got "
                                         r"per-layer structure \{'heads': \[2, 4\]"):
        compresslab.compress(model, tiny_tok, [{"name": "finetune", "preset": "smoke"},
                                               {"name": "structured_l1", **TINY, "speedup": 2.0}],
                             data=data, max_length=32, batch_size=8, progress=False)
    assert priced == []


def test_a_second_layer_drop_is_checked_against_the_depth_the_first_leaves(no_step_runs: None) -> None:
    """Its check_model saw the loaded model only up to the first layer_drop (a structure change); the plan knows the
    depth: 2 layers -> 1, then num_layers=2 cannot be kept."""
    with pytest.raises(ValueError, match=r"step 'layer_drop_2': num_layers=2 but the model has only 1 layer; a "
                                         r"1-layer model has no layer to drop"):
        _plan([{"name": "layer_drop", "num_layers": 1}, {"name": "layer_drop", "num_layers": 2}])


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_the_planned_model_has_the_steps_table_key(arch: str) -> None:
    """The preflight's table is the step's own only if the random model planned after layer_drop has every fact the
    cache is keyed on (architecture, depth, class, vocabulary) equal to the trained, layer-dropped model's."""
    from compresslab.bench.latency_table import TableSettings, environment
    from compresslab.models.structure import planned_model
    from compresslab.passes.layer_drop import LayerDrop, drop_layers_

    given, s, fp = tiny_model(arch), TableSettings(batch=2, seq=16, threads=1, ffn_grid=16), {"cpu": {"model": "x"}}
    planned = planned_model(type(given), LayerDrop(num_layers=1).planned_config(given.config))
    drop_layers_(given, [1])
    assert environment(planned, s, fp) == environment(given, s, fp)
    assert environment(planned, s, fp)["arch"]["layers"] == 1


@pytest.mark.parametrize("after,match", [
    ({"name": "obert", "num_grads": 2, "grad_batch_size": 8, "targets": ["qurey"]}, "qurey"),
    ({"name": "magnitude", "targets": ["qurey"]}, "qurey"),
    ({"name": "hawq", "bits": 4, "block_size": 24}, "block_size=24"),
    ({"name": "int8_qat", "ignore": ["clasifier"]}, "clasifier"),
])
def test_a_step_after_layer_drop_is_checked_on_the_planned_model_before_finetune(
        tiny_tok: Any, no_step_runs: None, tmp_path: Path, after: dict, match: str) -> None:
    """The loaded model answers for the steps up to layer_drop only (it changes the structure); the plan knows the
    depth it leaves, so each later step's check_model runs on that planned model, before finetune."""
    data = [(e.text_a, ["neg", "pos"][e.label]) for e in tiny_sentiment(48, 0)]
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=rf"step '{after['name']}': .*{match}"):
        compresslab.compress(tiny_model("bert"), tiny_tok, [{"name": "finetune", "preset": "smoke"},
                                                            {"name": "layer_drop", "num_layers": 1}, after],
                             data=data, output_dir=out, max_length=32, batch_size=8, progress=False)
    assert not out.exists()
