"""Issue #12, kind 1 for models given as input, and "your own model".

Each case saves a tiny model directory (float16, another head, shrunk, ...) and loads it the way the CLI's
``model=local model.source=DIR`` does: the composed config through ``RunState.prepare`` (the up-front checks) and
``load_initial`` (the loader), which is also what ``compresslab.load`` / ``compresslab.load_pretrained`` run. The
directories with broken or unusual files (truncated, sharded, pickled, another architecture) are in
test_model_files.py.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

import compresslab
from compresslab.checkpoint import load, load_pretrained, save
from compresslab.models.adapters import get_adapter
from compresslab.models.loading import CheckpointError
from compresslab.models.structure import layer_structure, shrink_ffn, shrink_heads
from compresslab.models.tiny import tiny_model
from compresslab.testing import tiny_sentiment
from compresslab.training.loop import NonFiniteLossError

from _models import _cli_model, _compose, _encode, _finite, _inputs, _prepare, _save, _trained_head


# ----------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.case(name="checkpoint saved in float16 / bfloat16 as model.source", kind=1, bad_input=False,
                  expected="loaded in float32 with a log line; fine-tuning gives finite weights")
def test_half_precision_checkpoint_is_loaded_in_float32(dtype, tiny_tok, tmp_path, observe, caplog):
    from compresslab.passes.finetune import Finetune
    from compresslab.testing import tiny_context

    src = _save(tiny_model().to(dtype), tiny_tok, tmp_path / "half")
    with caplog.at_level(logging.INFO, logger="compresslab"):
        state, _ = _cli_model(_compose(tmp_path, src))
    assert {p.dtype for p in state.model.parameters()} == {torch.float32}
    assert "loaded in float32" in caplog.text
    ctx = tiny_context(state.tokenizer, tmp_path / "ft")
    res = Finetune(preset="smoke", steps=3, cache=False).apply(state.model, ctx)
    assert _finite(state.model) and res.metrics["final_loss"] == res.metrics["final_loss"]  # not NaN
    observe(f"parameters {next(state.model.parameters()).dtype}, final loss {res.metrics['final_loss']:.3f}")


@pytest.mark.case(name="float16 model passed to compresslab.compress(model=...)", kind=1, bad_input=False,
                  expected="compressed in float32 (a copy; the caller's model untouched); finite weights")
def test_api_half_model_is_compressed_in_float32(tiny_tok, observe):
    model = _trained_head(tiny_model()).half()
    data = [(e.text_a, e.label) for e in tiny_sentiment(64, 0)]
    # a distilling step with the half teacher given (a finetune step would make its own teacher: refused with one)
    r = compresslab.compress(model, tiny_tok, [{"name": "magnitude", "sparsity": 0.5, "recovery": {"steps": 2}}],
                             data=data, teacher=model, max_length=32, batch_size=8, progress=False)
    try:
        assert {p.dtype for p in r.model.parameters()} == {torch.float32} and _finite(r.model)
        assert next(model.parameters()).dtype == torch.float16  # not inplace: the caller's model is as it was
        observe(f"result {next(r.model.parameters()).dtype}, finite; caller's model still float16")
    finally:
        r.close()


def test_api_half_model_loaded_from_a_directory_is_float32(tiny_tok, tmp_path):
    src = _save(tiny_model().half(), tiny_tok, tmp_path / "half")
    assert {p.dtype for p in load(src).parameters()} == {torch.float32}


# ----------------------------------------------------------------------------- non-finite training
@pytest.mark.case(name="NaN loss while fine-tuning the teacher", kind=1,
                  expected="NonFiniteLossError naming the step, before any weight update; nothing cached")
def test_nonfinite_loss_stops_before_anything_is_cached(tiny_ctx, expect_clear):
    from compresslab.passes.finetune import Finetune

    model = tiny_model()
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")  # every logit of class 0 NaN: the loss is NaN at step 1
    ctx = tiny_ctx()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expect_clear(lambda: Finetune(preset="smoke", steps=3).apply(model, ctx), match=r"finetune: the loss is nan at step 1/3",
                 errors=(NonFiniteLossError,))
    assert not (ctx.cache_dir / "teachers").exists() or not any((ctx.cache_dir / "teachers").iterdir())
    assert all(torch.equal(before[k], v, ) for k, v in model.state_dict().items() if k != "classifier.weight")


@pytest.mark.case(name="a cached teacher holding NaN weights (written before the fix)", kind=1, bad_input=False,
                  expected="not reused: a warning, and a new teacher is trained")
def test_nan_cached_teacher_is_not_reused(tiny_ctx, tiny_tok, observe, caplog):
    from compresslab.passes.finetune import Finetune

    p = Finetune(preset="smoke", steps=2)
    ctx = tiny_ctx()
    p.apply(tiny_model(), ctx)  # caches a teacher; then its weights are made NaN, as the bug left them
    (cached,) = (ctx.cache_dir / "teachers").iterdir()
    bad = load(cached)
    with torch.no_grad():
        bad.classifier.weight.fill_(float("nan"))
    save(bad, cached, tiny_tok)
    model = tiny_model()
    with caplog.at_level(logging.WARNING, logger="compresslab"):
        res = p.apply(model, ctx)
    assert res.metrics["cached"] is False and _finite(model) and "NaN/inf" in caplog.text
    assert _finite(load(cached))  # the entry now holds the new teacher
    observe("warning logged, teacher retrained with finite weights")


# ----------------------------------------------------------------------------- heads
@pytest.mark.case(name="checkpoint with a 3-label head on a 2-class task", kind=1, bad_input=False,
                  expected="the head replaced by a fresh 2-label one with one log line; encoder weights kept")
def test_head_of_another_size_is_replaced(tiny_tok, tmp_path, observe, caplog):
    m3 = _trained_head(tiny_model(num_labels=3))
    src = _save(m3, tiny_tok, tmp_path / "head3")
    with caplog.at_level(logging.INFO, logger="compresslab"):
        state, _ = _cli_model(_compose(tmp_path, src))
    assert state.model.config.num_labels == 2 and state.model.classifier.out_features == 2
    torch.testing.assert_close(_encode(state.model, tiny_tok), _encode(m3, tiny_tok))
    line = [r.getMessage() for r in caplog.records if "fresh" in r.getMessage()]
    assert len(line) == 1 and "3-label" in line[0] and "2-label" in line[0] and "replaces it" in line[0]
    observe(line[0])


@pytest.mark.parametrize(("labels", "task_kind", "want"), [(1, "classification", 2), (2, "regression", 1)],
                         ids=["regression-head-on-classes", "class-head-on-scores"])
@pytest.mark.case(name="checkpoint whose head is for another task kind (regression vs classification)", kind=1,
                  bad_input=False, expected="the head replaced by a fresh one of the task's kind, logged")
def test_head_of_another_kind_is_replaced(labels, task_kind, want, tiny_tok, tmp_path, observe, caplog):
    src = _save(tiny_model(num_labels=labels), tiny_tok, tmp_path / "other")
    with caplog.at_level(logging.INFO, logger="compresslab"):
        model, _ = load_pretrained(src, kind=task_kind, num_labels=want)
    assert model.config.num_labels == want
    assert (model.config.problem_type == "regression") == (task_kind == "regression")
    observe(caplog.records[-1].getMessage())


@pytest.mark.case(name="model.finetuned=true with a head of another size", kind="own",
                  expected="a clear error naming model.finetuned and both heads, before any training")
def test_finetuned_with_a_head_of_another_size_is_refused(tiny_tok, tmp_path, expect_clear):
    src = _save(_trained_head(tiny_model(num_labels=3)), tiny_tok, tmp_path / "head3")
    expect_clear(lambda: _cli_model(_compose(tmp_path, src, "model.finetuned=true")),
                 match=r"model\.finetuned=true.*3-label.*2-label")


@pytest.mark.case(name="model.finetuned=true with a head whose class order differs from the data's", kind="own",
                  expected="a clear error naming the ids whose class names disagree")
def test_finetuned_with_another_label_order_is_refused(tiny_tok, tmp_path, expect_clear):
    m = _trained_head(tiny_model())
    m.config.id2label, m.config.label2id = {0: "pos", 1: "neg"}, {"pos": 0, "neg": 1}
    src = _save(m, tiny_tok, tmp_path / "swapped")
    expect_clear(lambda: _cli_model(_compose(tmp_path, src, "model.finetuned=true", names=("neg", "pos"))),
                 match=r"model\.finetuned=true.*(id2label|class names).*task\.generic\.labels=\[pos,neg\]")


@pytest.mark.parametrize("declared", [None, "pos,neg"], ids=["sorted-names", "task.generic.labels"])
@pytest.mark.case(name="model.finetuned=true with a head without class names (LABEL_0..) and named data", kind="own",
                  bad_input=False, expected="taken as data class i = head id i (the only mapping), with a warning "
                                            "naming the mapping and task.generic.labels (trial 47)")
def test_finetuned_head_without_class_names_says_which_class_is_which_id(declared, tiny_tok, tmp_path, observe,
                                                                         caplog):
    src = _save(_trained_head(tiny_model()), tiny_tok, tmp_path / "unnamed")  # id2label LABEL_0, LABEL_1
    extra = [f"task.generic.labels=[{declared}]"] if declared else []
    with caplog.at_level(logging.INFO, logger="compresslab"):
        state, _ = _cli_model(_compose(tmp_path, src, "model.finetuned=true", *extra, names=("neg", "pos")))
    order = "0='pos', 1='neg'" if declared else "0='neg', 1='pos'"
    lines = [r.getMessage() for r in caplog.records
             if r.levelno == logging.WARNING and "no class names" in r.getMessage()]
    assert len(lines) == 1 and order in lines[0] and "task.generic.labels=" in lines[0] and str(src) in lines[0], lines
    # what the warning explains: every saved config.json now names the head's ids so
    assert state.model.config.id2label == ({0: "pos", 1: "neg"} if declared else {0: "neg", 1: "pos"})
    observe(lines[0])


@pytest.mark.case(name="model.finetuned=true with an unnamed head and integer labels, or a named head", kind="own",
                  bad_input=False, expected="no warning about class names: nothing is assumed")
@pytest.mark.parametrize("named", [False, True], ids=["integer-labels", "named-head"])
def test_finetuned_head_mapping_is_not_warned_about_when_nothing_is_assumed(named, tiny_tok, tmp_path, caplog):
    m = _trained_head(tiny_model())
    if named:
        m.config.id2label, m.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    src = _save(m, tiny_tok, tmp_path / "m")
    with caplog.at_level(logging.INFO, logger="compresslab"):
        _cli_model(_compose(tmp_path, src, "model.finetuned=true", names=("neg", "pos") if named else None))
    assert not [r for r in caplog.records if "no class names" in r.getMessage()]


@pytest.mark.case(name="model.finetuned=true on a model with no trained head (a plain encoder)", kind="own",
                  expected="refused before any work, as the API refuses it: a fresh head would teach noise")
def test_finetuned_without_a_trained_head_is_refused(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "plain")  # transformers' fresh head: bias all zero
    expect_clear(lambda: _cli_model(_compose(tmp_path, src, "model.finetuned=true")),
                 match=r"model\.finetuned=true.*no trained classification head.*model\.finetuned=false")


@pytest.mark.case(name="model.finetuned=yes (not a boolean)", kind="own",
                  expected="a clear error naming model.finetuned and its values")
def test_finetuned_must_be_a_boolean(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "m")
    expect_clear(lambda: _prepare(_compose(tmp_path, src, "model.finetuned=yes")), match=r"model\.finetuned.*true")


@pytest.mark.case(name="your own fine-tuned classifier with model.finetuned=true", kind="own", bad_input=False,
                  expected="the given model (its head) is the teacher; the finetune step trains nothing")
def test_own_finetuned_model_is_the_teacher(tiny_tok, tmp_path, observe):
    from compresslab.manifest import RunManifest
    from compresslab.pipeline.steps import run_steps

    own = _trained_head(tiny_model(seed=3))
    own.config.id2label, own.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    src = _save(own, tiny_tok, tmp_path / "own")
    state, steps = _cli_model(_compose(tmp_path, src, "model.finetuned=true", names=("neg", "pos")))
    makers = [s for s in steps if s.pass_.makes_teacher]
    run_dir = tmp_path / "run"
    manifest = RunManifest.create(run_dir, pipeline="int8", config_hash="h")
    run_steps(state, makers, run_dir, manifest)
    want = own.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in state.teacher.state_dict().items())  # head included
    rec = manifest.steps[0]
    assert rec.result["metrics"]["trained"] is False and rec.result["metrics"]["input_is_teacher"] is True
    observe(f"teacher == the given model; step {rec.name}: {rec.result['metrics']}")


@pytest.mark.case(name="a trained head of the task's size without model.finetuned", kind="own", bad_input=False,
                  expected="fine-tuned again as before, with a log line pointing at model.finetuned=true")
def test_trained_head_without_the_flag_gets_a_hint(tiny_tok, tmp_path, observe, caplog):
    src = _save(_trained_head(tiny_model()), tiny_tok, tmp_path / "own")
    with caplog.at_level(logging.INFO, logger="compresslab"):
        state, _ = _cli_model(_compose(tmp_path, src))
    assert not bool(state.model.classifier.bias.abs().sum())  # a fresh head, seeded
    again, _ = _cli_model(_compose(tmp_path, src))
    assert torch.equal(again.model.classifier.weight, state.model.classifier.weight)  # the same seed, the same head
    assert "model.finetuned=true" in caplog.text
    observe([r.getMessage() for r in caplog.records if "model.finetuned=true" in r.getMessage()][0])


# ----------------------------------------------------------------------------- shrunk checkpoints
@pytest.mark.parametrize("finetuned", [False, True], ids=["fresh-head", "finetuned"])
@pytest.mark.case(name="compresslab's own ZipLM (shrunk) output dir as model.source", kind=1, bad_input=False,
                  expected="the CLI loads what compresslab.load(DIR) loads: same shapes and outputs")
def test_shrunk_compresslab_checkpoint_as_source(finetuned, tiny_tok, tmp_path, observe):
    m = _trained_head(tiny_model())
    shrink_heads(get_adapter(m).layer(0), [0, 2])
    shrink_ffn(get_adapter(m).layer(1), range(40))
    save(m, tmp_path / "ziplm", tiny_tok)
    api = load(tmp_path / "ziplm")
    state, _ = _cli_model(_compose(tmp_path, tmp_path / "ziplm", f"model.finetuned={str(finetuned).lower()}"))
    assert layer_structure(state.model) == layer_structure(api) == [{"heads": 2, "ffn": 64}, {"heads": 4, "ffn": 40}]
    torch.testing.assert_close(_encode(state.model, tiny_tok), _encode(api, tiny_tok))
    if finetuned:
        torch.testing.assert_close(state.model(**_inputs(tiny_tok)).logits, api(**_inputs(tiny_tok)).logits)
    observe(f"structure {layer_structure(state.model)}, encoder outputs equal to compresslab.load")


@pytest.mark.parametrize("base", [False, True], ids=["classifier", "bare-encoder"])
@pytest.mark.case(name="a transformers-4 checkpoint with pruned_heads as model.source", kind=1, bad_input=False,
                  expected="rebuilt with the pruned shapes; outputs equal to the model that was saved")
def test_pruned_heads_checkpoint_as_source(base, tiny_tok, tmp_path, observe):
    m = tiny_model()
    ref_model = m.base_model if base else m
    shrink_heads(get_adapter(m).layer(0), [1, 3])
    shrink_heads(get_adapter(m).layer(1), [0, 1, 2])
    ref_model.config.pruned_heads = {"0": [0, 2], "1": [3]}  # what transformers 4 recorded
    src = _save(ref_model, tiny_tok, tmp_path / "t4")
    api = load(src)
    torch.testing.assert_close(_encode(api, tiny_tok), _encode(m, tiny_tok))
    state, _ = _cli_model(_compose(tmp_path, src))
    assert [s["heads"] for s in layer_structure(state.model)] == [2, 3]
    torch.testing.assert_close(_encode(state.model, tiny_tok), _encode(m, tiny_tok))
    # the compresslab_structure stamp describes the shapes now; pruned_heads is gone (not {}: saved, it would put a
    # key in every later config.json that a model never loaded back does not have)
    assert "pruned_heads" not in state.model.config.to_dict()
    observe(f"heads per layer {[s['heads'] for s in layer_structure(state.model)]}, outputs equal")


def test_pruned_heads_out_of_range_is_a_clear_error(tiny_tok, tmp_path):
    src = _save(tiny_model(), tiny_tok, tmp_path / "bad")
    cfg = json.loads((src / "config.json").read_text())
    cfg["pruned_heads"] = {"5": [0]}
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="pruned_heads"):
        load(src)
