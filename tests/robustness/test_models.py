"""Issue #12, kind 1 for models given as input, and "your own model".

Each case saves a tiny model directory (float16, another head, shrunk, truncated, ...) and loads it
the way the CLI's ``model=local model.source=DIR`` does: the composed config through
``RunState.prepare`` (the up-front checks) and ``load_initial`` (the loader), which is also what
``compresslab.load`` / ``compresslab.load_pretrained`` run. One case runs the real CLI.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import compresslab
from compresslab.checkpoint import load, load_pretrained, save
from compresslab.models.adapters import UnsupportedArchitectureError, get_adapter
from compresslab.models.loading import CheckpointError
from compresslab.models.structure import layer_structure, shrink_ffn, shrink_heads
from compresslab.models.tiny import tiny_model
from compresslab.testing import tiny_sentiment, write_csv
from compresslab.training.loop import NonFiniteLossError

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- helpers
def _save(model: torch.nn.Module, tok, d: Path) -> Path:
    """A plain Hugging Face directory, as a user's ``save_pretrained`` writes it."""
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _trained_head(model: torch.nn.Module) -> torch.nn.Module:
    """Mark the head as trained (transformers initialises a fresh head's bias to zero)."""
    with torch.no_grad():
        model.classifier.bias.add_(0.05)
    return model


def _data(tmp_path: Path, names: tuple[str, str] | None = None) -> list[str]:
    """Overrides for a tiny generic CSV task (integer labels, or the class ``names``)."""
    def rows(n, seed):
        return [[e.text_a, names[e.label] if names else str(e.label)] for e in tiny_sentiment(n, seed)]

    train = write_csv(tmp_path / "train.csv", ["text", "label"], rows(96, 0))
    dev = write_csv(tmp_path / "dev.csv", ["text", "label"], rows(32, 1))
    return ["task=generic", f"task.generic.train={train}", f"task.generic.dev={dev}", "task.max_length=32"]


def _compose(tmp_path: Path, source: Path, *extra: str, names: tuple[str, str] | None = None):
    from compresslab.config import compose

    return compose(["+pipeline=int8", "debug=smoke", "model=local", f"model.source={source}",
                    f"paths.output_dir={tmp_path}/out", f"paths.cache_dir={tmp_path}/cache",
                    *_data(tmp_path, names), "task.max_length=32", *extra])


def _prepare(cfg):
    """The CLI's up-front checks (no model weights read): config, source files, data."""
    from compresslab.pipeline.plan import build_steps
    from compresslab.pipeline.state import RunState

    steps = build_steps(cfg)
    return RunState.prepare(cfg, steps), steps


def _cli_model(cfg):
    """What the CLI trains: the checks, then the source model loaded with the task's head."""
    state, steps = _prepare(cfg)
    state.load_initial()
    return state, steps


def _inputs(tok) -> dict[str, torch.Tensor]:
    return dict(tok(["a good film", "the plot was boring and bad"], padding=True, return_tensors="pt"))


def _encode(model, tok) -> torch.Tensor:
    with torch.no_grad():
        return model.base_model(**_inputs(tok)).last_hidden_state


def _finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


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


# ----------------------------------------------------------------------------- files
@pytest.mark.case(name="a truncated model.safetensors", kind=1,
                  expected="CheckpointError naming the file, before any data is read or model built")
def test_truncated_safetensors(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "trunc")
    w = src / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"trunc/model\.safetensors.*truncated")
    with pytest.raises(CheckpointError, match="truncated"):
        load(src)


@pytest.mark.case(name="a truncated pytorch_model.bin", kind=1, expected="CheckpointError naming the file")
def test_truncated_torch_bin(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "trunc")
    (src / "model.safetensors").unlink()
    torch.save(tiny_model().state_dict(), src / "pytorch_model.bin")
    w = src / "pytorch_model.bin"
    w.write_bytes(w.read_bytes()[: w.stat().st_size - 200])
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"pytorch_model\.bin.*truncated")


@pytest.mark.case(name="a checkpoint with only pytorch_model.bin", kind=1, bad_input=False,
                  expected="loaded (weights_only=True) like a safetensors one")
def test_torch_bin_only_checkpoint(tiny_tok, tmp_path, observe):
    m = tiny_model()
    src = _save(m, tiny_tok, tmp_path / "bin")
    (src / "model.safetensors").unlink()
    torch.save(m.state_dict(), src / "pytorch_model.bin")
    state, _ = _cli_model(_compose(tmp_path, src))
    torch.testing.assert_close(_encode(state.model, tiny_tok), _encode(m, tiny_tok))
    observe("loaded; encoder outputs equal to the saved model")


class _Payload:
    """Anything but tensors in a pickle: weights_only=True must refuse to build it."""


@pytest.mark.case(name="a pytorch_model.bin that pickles more than tensors", kind=1,
                  expected="refused (weights_only=True) with an error naming the file; nothing executed")
def test_torch_bin_with_objects_is_refused(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "pickle")
    (src / "model.safetensors").unlink()
    torch.save({**tiny_model().state_dict(), "extra": _Payload()}, src / "pytorch_model.bin")
    expect_clear(lambda: load_pretrained(src), match=r"pytorch_model\.bin")


@pytest.mark.case(name="a directory in an unknown weights format (e.g. flax/TF only)", kind=1,
                  expected="an error naming the files found and the formats compresslab reads")
def test_unknown_weights_format_is_named(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "flax")
    (src / "model.safetensors").rename(src / "flax_model.msgpack")
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"no model\.safetensors.*pytorch_model\.bin.*flax_model")


@pytest.mark.case(name="a shard index listing a missing shard", kind=1, expected="an error naming the missing shard")
def test_missing_shard_is_named(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "shards")
    (src / "model.safetensors").rename(src / "model-00001-of-00002.safetensors")
    weight_map = {"bert.pooler.dense.weight": "model-00002-of-00002.safetensors"}
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"model-00002-of-00002")


@pytest.mark.case(name="model dir without config.json", kind=1, expected="an error naming config.json")
def test_missing_config(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "noconfig")
    (src / "config.json").unlink()
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"config\.json")


@pytest.mark.case(name="model dir without tokenizer files", kind=1,
                  expected="an error naming the directory and tokenizer.save_pretrained")
def test_missing_tokenizer(tmp_path, expect_clear):
    src = tmp_path / "notok"
    tiny_model().save_pretrained(src)
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match=r"no tokenizer in .*notok.*save_pretrained")


@pytest.mark.case(name="a tokenizer with more tokens than the model's embedding table", kind=1,
                  expected="an error naming vocab_size, before training (else an index error mid-run)")
def test_tokenizer_of_another_model(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(vocab_size=32), tiny_tok, tmp_path / "smallvocab")
    expect_clear(lambda: _cli_model(_compose(tmp_path, src)), match=r"64 tokens.*32 rows.*vocab_size")


@pytest.mark.case(name="an architecture compresslab has no adapter for", kind=1,
                  expected="UnsupportedArchitectureError listing bert, roberta, distilbert")
def test_unsupported_architecture(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model(), tiny_tok, tmp_path / "gpt")
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (src / "config.json").write_text(json.dumps(cfg))
    expect_clear(lambda: _prepare(_compose(tmp_path, src)), match="supported: bert, roberta, distilbert",
                 errors=(UnsupportedArchitectureError,))


@pytest.mark.case(name="task.max_length past RoBERTa's usable positions (max_position_embeddings - 2)", kind=1,
                  expected="an error naming task.max_length and the limit, before any work")
def test_roberta_position_limit(tiny_tok, tmp_path, expect_clear):
    src = _save(tiny_model("roberta"), tiny_tok, tmp_path / "roberta")  # max_position_embeddings=72: 70 usable
    expect_clear(lambda: _prepare(_compose(tmp_path, src, "task.max_length=72")),
                 match=r"task\.max_length=72.*at most 70 tokens")


@pytest.mark.case(name="encoder weights from another model (names do not match config.json)", kind=1,
                  expected="an error listing the missing encoder weights, not a silently random encoder")
def test_weights_of_another_model(tiny_tok, tmp_path, expect_clear):
    from safetensors.torch import save_file

    src = _save(tiny_model(), tiny_tok, tmp_path / "renamed")
    state = {k.replace("encoder.layer.1.", "encoder.blocks.1."): v.contiguous() for k, v in tiny_model().state_dict().items()}
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    expect_clear(lambda: load_pretrained(src), match=r"lacks .* encoder weight.*encoder\.layer\.1")


# ----------------------------------------------------------------------------- quiet loading
@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
@pytest.mark.case(name="transformers' load table for an expected fresh head", kind="own", bad_input=False,
                  expected="no table; one compresslab line saying a fresh head is added; the encoder as saved")
def test_load_table_is_replaced_by_one_line(arch, tiny_tok, tmp_path, capfd, caplog, observe):
    encoder = tiny_model(arch).base_model  # a bare encoder, like the embedded default
    src = _save(encoder, tiny_tok, tmp_path / "encoder")
    with caplog.at_level(logging.INFO, logger="compresslab"):
        model, _ = load_pretrained(src, num_labels=3)
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "MISSING" not in err
    lines = [r.getMessage() for r in caplog.records if "fresh" in r.getMessage()]
    assert len(lines) == 1 and "pretrained encoder; a fresh 3-label classification head is added" in lines[0]
    torch.testing.assert_close(_encode(model, tiny_tok), _encode(encoder, tiny_tok))
    assert model(**_inputs(tiny_tok)).logits.shape == (2, 3)
    observe(lines[0])


@pytest.mark.case(name="ORT's 'image classification pre-processing' warning on int8", kind="own", bad_input=False,
                  expected="not printed")
def test_ort_preprocessing_warning_is_silenced(tmp_path, caplog, observe):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from compresslab.export.ort_quant import quantize_dynamic_int8

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    with caplog.at_level(logging.WARNING):
        quantize_dynamic_int8(tmp_path / "m.onnx", tmp_path / "q.onnx")
    assert (tmp_path / "q.onnx").is_file()
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    observe("no pre-processing warning logged")


# ----------------------------------------------------------------------------- the real CLI
@pytest.mark.case(name="CLI: model=local model.source=<dir with a truncated model.safetensors>", kind=1,
                  expected="exit code 2, one message naming the file on stderr, no traceback")
def test_cli_truncated_checkpoint(tiny_tok, tmp_path, observe):
    src = _save(tiny_model(), tiny_tok, tmp_path / "trunc")
    w = src / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    out = subprocess.run([sys.executable, "-m", "compresslab", "+pipeline=int8", "debug=smoke", "model=local",
                          f"model.source={src}", f"paths.output_dir={tmp_path}/out",
                          f"paths.cache_dir={tmp_path}/cache", *_data(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "model.safetensors" in out.stderr and "truncated" in out.stderr
    observe(f"exit 2: {[l for l in out.stderr.splitlines() if 'model.safetensors' in l][0][:300]}")
