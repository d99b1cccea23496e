"""The in-process API on tiny models: every data kind, the same passes as the CLI, exports that
load and score, and bad input refused before any training with nothing written."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch

import compresslab
from compresslab.models.tiny import tiny_model
from compresslab.testing import api_kw as _kw  # short local names: dozens of calls below
from compresslab.testing import tiny_sentiment
from compresslab.testing import trained_tiny as _trained

NAMES = ["neg", "pos"]
FAST_MAGNITUDE = {"name": "magnitude", "sparsity": 0.5, "recovery": {"steps": 2}}


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    return [(e.text_a, NAMES[e.label]) for e in tiny_sentiment(n, seed)]


def test_compress_tuples_with_string_labels_runs_the_passes_and_exports(tiny_tok, tmp_path):
    model = _trained()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = compresslab.compress(model, tiny_tok, [FAST_MAGNITUDE, "ort_int8_dynamic"], data=_pairs(96, 0),
                             eval_data=_pairs(32, 1), **_kw())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model untouched
    lin = r.model.bert.encoder.layer[0].attention.self.query.weight
    assert (lin == 0).float().mean().item() == pytest.approx(0.5, abs=0.1)
    names = [s["name"] for s in r.metrics["steps"]]
    assert names == ["magnitude", "ort_int8_dynamic"]
    assert r.metrics["steps"][0]["metrics"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert r.metrics["eval"]["n"] == 32 and 0 <= r.metrics["eval"]["score"] <= 1
    assert r.metrics["data"]["label2id"] == {"neg": 0, "pos": 1}
    out = r.export(tmp_path / "onnx")
    assert (out / "model.onnx").is_file() and (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    onnx_score = compresslab.evaluate(out, _pairs(32, 1))
    torch_score = compresslab.evaluate(r.model, _pairs(32, 1), tiny_tok, max_length=32)
    assert onnx_score["n"] == torch_score["n"] == 32
    assert abs(onnx_score["score"] - torch_score["score"]) <= 2 / 32  # int8 may flip a near-tie or two
    work = r.run_dir
    assert work.is_dir()
    r.close()
    assert not work.exists()  # no run dir unless asked


def test_compress_without_onnx_pass_exports_fp32_with_parity_and_reloads(tiny_tok, tmp_path):
    r = compresslab.compress(_trained(), tiny_tok, ["magnitude"], data=_pairs(64, 0), **_kw())
    assert "eval" not in r.metrics  # no eval_data: nothing scored, nothing claimed
    out = r.export(tmp_path / "fp32")
    assert (out / "model.onnx").is_file() and json.loads((out / "parity.json").read_text())
    ck = r.save(tmp_path / "ck")
    again = compresslab.load(ck)
    x = {"input_ids": torch.tensor([[2, 5, 6, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        assert torch.allclose(again(**x).logits, r.model(**x).logits, atol=1e-5)


def test_pair_tuples_dataset_csv_and_jsonl_all_feed_compress(tiny_tok, tmp_path):
    datasets = pytest.importorskip("datasets")
    ex = tiny_sentiment(48, 0)
    pairs = [(e.text_a, "the movie", NAMES[e.label]) for e in ex]
    ds = datasets.Dataset.from_dict({"sentence": [e.text_a for e in ex], "label": [e.label for e in ex]})
    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows((e.text_a, NAMES[e.label]) for e in ex)
    with open(tmp_path / "d.jsonl", "w") as f:
        f.writelines(json.dumps({"text": e.text_a, "label": NAMES[e.label]}) + "\n" for e in ex)
    for data in (pairs, ds, str(tmp_path / "d.csv"), tmp_path / "d.jsonl"):
        r = compresslab.compress(_trained(), tiny_tok, ["ort_int8_dynamic"], data=data, eval_data=data, **_kw())
        assert r.metrics["eval"]["n"] == 48 and r.onnx_path is not None and r.onnx_path.is_file()
        r.close()


def test_output_dir_is_a_resumable_run_dir_with_pass_json(tiny_tok, tmp_path):
    kw = _kw(data=_pairs(64, 0), output_dir=tmp_path / "run")
    r = compresslab.compress(_trained(), tiny_tok, [FAST_MAGNITUDE], **kw)
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["status"] == "finished" and m["pipeline"] == "compress"
    pj = json.loads((tmp_path / "run" / "steps" / "00_magnitude" / "pass.json").read_text())
    assert pj["pass"]["sparsity"] == 0.5
    assert (tmp_path / "run" / "steps" / "00_magnitude" / "model.sparse.safetensors").is_file()
    again = compresslab.compress(_trained(), tiny_tok, [FAST_MAGNITUDE], **kw)  # finished steps are restored
    assert torch.equal(again.model.bert.encoder.layer[0].output.dense.weight,
                       r.model.bert.encoder.layer[0].output.dense.weight)
    # another call's run: refused, naming what differs (recorded -> given now) and the argument that sets it
    # in the CLI's words for the same refusal (pipeline.rundir.another_run_refusal)
    with pytest.raises(compresslab.pipeline.RunDirConflictError,
                       match=r"settings that differ \(recorded -> given now\):\n  passes\[0\]\.sparsity \(passes\): "
                             r"0\.5 -> 0\.3\.\nIts steps cannot be reused: give the recorded values to resume it, or "):
        compresslab.compress(_trained(), tiny_tok, [{**FAST_MAGNITUDE, "sparsity": 0.3}], **kw)
    with pytest.raises(compresslab.pipeline.RunDirConflictError, match=r"data\.sizes\.dev \(eval_data\): 0 -> 16"):
        compresslab.compress(_trained(), tiny_tok, [FAST_MAGNITUDE], eval_data=_pairs(16, 1), **kw)
    # its manifest gone, its steps cannot be checked: refused, saying so, never reused or removed
    (tmp_path / "run" / "manifest.json").unlink()
    with pytest.raises(compresslab.pipeline.RunDirConflictError,
                       match=r"steps/00_magnitude/pass\.json\) but no manifest\.json.*delete .*another output_dir"):
        compresslab.compress(_trained(), tiny_tok, [FAST_MAGNITUDE], **kw)
    assert (tmp_path / "run" / "steps" / "00_magnitude" / "pass.json").is_file()


def test_benchmark_returns_plain_dicts(tiny_tok, tmp_path):
    r = compresslab.compress(_trained(), tiny_tok, ["ort_int8_dynamic"], data=_pairs(48, 0), **_kw())
    out = r.export(tmp_path / "int8")
    res = compresslab.benchmark({"int8": out, "torch": r.model}, shapes=[(1, 16), (2, 16)], warmup=1, runs=2,
                                min_time_s=0.0, threads=1)
    assert set(res["latency"]) == {"int8", "torch"} and set(res["latency"]["int8"]) == {"b1xs16", "b2xs16"}
    assert res["speedups"]["int8"]["b1xs16"] == 1.0 and res["denominator"] == "int8"
    json.dumps(res)


def _no_training(monkeypatch):
    """Running any step fails the test: bad input must be refused before the first pass starts."""
    import compresslab.api as api

    def boom(*a, **k):
        raise AssertionError("the passes started before the bad input was refused")

    monkeypatch.setattr(api, "_run", boom)


@pytest.mark.parametrize("data,match", [
    ([], "empty"),
    ([("good movie", "pos"), (None, "neg")], "text"),
    ([("good movie", "pos"), ("", "neg")], "empty|blank"),
    ([("good movie", "pos"), (3.5, "neg")], "text"),
])
def test_bad_data_is_refused_before_training_and_nothing_is_written(tiny_tok, tmp_path, monkeypatch, data, match):
    _no_training(monkeypatch)
    with pytest.raises(ValueError, match=match):
        compresslab.compress(_trained(), tiny_tok, [FAST_MAGNITUDE], data=data, output_dir=tmp_path / "run", **_kw())
    assert not (tmp_path / "run").exists()


def test_val_carve_is_checked_before_training_and_grouped_carves_whole_texts(tiny_tok, tmp_path, monkeypatch):
    _no_training(monkeypatch)
    with pytest.raises(ValueError, match="val_carve='sentences'.*random, grouped"):
        compresslab.compress(_trained(), tiny_tok, [FAST_MAGNITUDE], data=_pairs(60, 0), val_carve="sentences",
                             output_dir=tmp_path / "run", **_kw())
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()
    # each review and a phrase of it: the grouped carve's validation holds whole reviews only
    data = [x for t, lab in _pairs(60, 0) for x in ((t + " indeed", lab), (t, lab))]
    res = compresslab.compress(_trained(), tiny_tok, [{"name": "magnitude", "sparsity": 0.5, "recovery": {"steps": 0}}],
                               data=data, val_carve="grouped", val_size=5, **_kw())
    try:
        info = res.metrics["data"]
        assert info["val_carve"] == "grouped" and info["val_size"] == 5 and info["val_dropped_from_train"] == 5
    finally:
        res.close()


def test_untokenizable_text_is_named(tiny_tok, tmp_path, monkeypatch):
    _no_training(monkeypatch)
    data = _pairs(40, 0) + [("\u200b\u200b", "pos")]  # only zero-width characters: no tokens at all
    with pytest.raises(ValueError, match="token|empty|blank"):
        compresslab.compress(_trained(), tiny_tok, [FAST_MAGNITUDE], data=data, output_dir=tmp_path / "run", **_kw())
    assert not (tmp_path / "run").exists()


def test_labels_that_do_not_match_the_head(tiny_tok, tmp_path, monkeypatch):
    _no_training(monkeypatch)
    three = [(t, lab) for t, lab in _pairs(60, 0)] + [("it was fine", "meh")]
    with pytest.raises(ValueError, match="3|labels"):
        compresslab.compress(_trained(), tiny_tok, [FAST_MAGNITUDE], data=three, output_dir=tmp_path / "r", **_kw())
    named = _trained()
    named.config.id2label, named.config.label2id = {0: "NEGATIVE", 1: "POSITIVE"}, {"NEGATIVE": 0, "POSITIVE": 1}
    with pytest.raises(ValueError, match="neg|NEGATIVE"):
        compresslab.compress(named, tiny_tok, [FAST_MAGNITUDE], data=_pairs(60, 0), **_kw())
    assert not (tmp_path / "r").exists()


def test_distilling_pass_without_a_buildable_teacher(tiny_tok, tmp_path, monkeypatch):
    _no_training(monkeypatch)
    fresh = tiny_model("bert")  # transformers' fresh head: zero bias, it would teach noise
    with pytest.raises(ValueError, match="none can be built.*finetune"):
        compresslab.compress(fresh, tiny_tok, [FAST_MAGNITUDE], data=_pairs(60, 0), output_dir=tmp_path / "r",
                             **_kw())
    assert not (tmp_path / "r").exists()


def test_fresh_head_is_fine_without_kd_or_with_a_teacher(tiny_tok):
    fresh = tiny_model("bert")
    compresslab.compress(fresh, tiny_tok, [{"name": "magnitude", "sparsity": 0.5, "recovery": {"steps": 0}}],
                         data=_pairs(40, 0), **_kw()).close()
    compresslab.compress(fresh, tiny_tok, [FAST_MAGNITUDE], data=_pairs(40, 0), teacher=_trained(), **_kw()).close()


def test_bad_passes_are_refused_up_front(tiny_tok):
    from compresslab.pipeline import PipelineError
    from compresslab.registry import UnknownPassError

    with pytest.raises(UnknownPassError, match="known passes"):
        compresslab.compress(_trained(), tiny_tok, ["nope"], data=_pairs(40, 0), **_kw())
    with pytest.raises(PipelineError, match="TORCH pass after the ONNX pass"):
        compresslab.compress(_trained(), tiny_tok, ["ort_int8_dynamic", "magnitude"], data=_pairs(40, 0), **_kw())
    with pytest.raises(ValueError, match="sparsity"):
        compresslab.compress(_trained(), tiny_tok, [compresslab.passes.Magnitude(sparsity=0.5), {"name": "magnitude",
                             "sparsity": 1.5}], data=_pairs(40, 0), **_kw())
    with pytest.raises(PipelineError, match="empty"):
        compresslab.compress(_trained(), tiny_tok, [], data=_pairs(40, 0), **_kw())


def test_label_names_travel_with_the_model_and_its_exports(tiny_tok, tmp_path):
    """A user-chosen mapping (here: reversed) is written into config.id2label, so a later evaluate
    of the export or the checkpoint reads the same classes instead of re-deriving them."""
    dev = _pairs(32, 1)
    r = compresslab.compress(_trained(), tiny_tok, ["ort_int8_dynamic"], data=_pairs(64, 0), eval_data=dev,
                             label2id={"pos": 0, "neg": 1}, **_kw())
    assert r.model.config.id2label == {0: "pos", 1: "neg"}
    out = r.export(tmp_path / "onnx")
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "pos", "1": "neg"}
    deployed = r.metrics["eval"]["models"]["deployed"]["score"]
    assert compresslab.evaluate(out, dev, max_length=32)["score"] == pytest.approx(deployed)
    ck = r.save(tmp_path / "ck")
    torch_score = r.metrics["eval"]["models"]["torch_final"]["score"]
    assert compresslab.evaluate(compresslab.load(ck), dev, tiny_tok, max_length=32)["score"] == pytest.approx(torch_score)


def test_explicit_label2id_overrides_the_models_own_names(tiny_tok):
    named = _trained()
    named.config.id2label, named.config.label2id = {0: "NEG", 1: "POS"}, {"NEG": 0, "POS": 1}
    data = [(t, {"neg": "negative", "pos": "positive"}[lab]) for t, lab in _pairs(48, 0)]
    r = compresslab.compress(named, tiny_tok, ["ort_int8_dynamic"], data=data,
                             label2id={"negative": 0, "positive": 1}, **_kw())
    assert r.model.config.label2id == {"negative": 0, "positive": 1}
    r.close()


def test_export_never_mixes_files_and_refuses_after_close(tiny_tok, tmp_path):
    fp32 = compresslab.compress(_trained(), tiny_tok, ["magnitude"], data=_pairs(48, 0), **_kw())
    int8 = compresslab.compress(_trained(), tiny_tok, ["ort_int8_dynamic"], data=_pairs(48, 0), **_kw())
    out = fp32.export(tmp_path / "x")
    assert (out / "model_unfused.onnx").is_file()
    with pytest.raises(FileExistsError, match="overwrite"):
        int8.export(out)
    int8.export(out, overwrite=True)  # replaced whole: nothing of the fp32 export stays
    assert not (out / "model_unfused.onnx").exists() and not (out / "parity.json").exists()
    int8.close()
    with pytest.raises(RuntimeError, match="closed"):
        int8.export(tmp_path / "after_close")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no temp dir left behind


def test_evaluate_an_export_against_a_torch_reference(tiny_tok, tmp_path):
    r = compresslab.compress(_trained(), tiny_tok, ["ort_int8_dynamic"], data=_pairs(48, 0), **_kw())
    out = r.export(tmp_path / "int8")
    res = compresslab.evaluate(out, _pairs(32, 1), reference=r.model, max_length=32)
    assert res["n"] == 32 and 0.9 <= res["agreement"] <= 1.0


def test_teacher_may_be_a_checkpoint_dir_and_nothing_else(tiny_tok, tmp_path):
    ck = compresslab.save(_trained(seed=3), tmp_path / "teacher", tiny_tok)
    compresslab.compress(tiny_model("bert"), tiny_tok, [FAST_MAGNITUDE], data=_pairs(40, 0), teacher=ck,
                         **_kw()).close()
    with pytest.raises(TypeError, match="teacher must be"):
        compresslab.compress(_trained(), tiny_tok, [FAST_MAGNITUDE], data=_pairs(40, 0), teacher=42, **_kw())


@pytest.mark.parametrize("over,exc,match", [
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"max_length": 100}, ValueError, "max_position_embeddings=72"),
    ({"device": "tpu"}, ValueError, "device='tpu' is not valid"),
])
def test_run_settings_are_checked_before_any_step(tiny_tok, monkeypatch, over, exc, match):
    _no_training(monkeypatch)
    kw = {**_kw(), **over}
    with pytest.raises(exc, match=match):
        compresslab.compress(_trained(), tiny_tok, ["ort_int8_dynamic"], data=_pairs(40, 0), **kw)


def test_benchmark_checks_its_inputs(tiny_tok, tmp_path):
    r = compresslab.compress(_trained(), tiny_tok, ["ort_int8_dynamic"], data=_pairs(48, 0), **_kw())
    out = r.export(tmp_path / "int8")
    with pytest.raises(ValueError, match="share a name"):
        compresslab.benchmark([out, out], shapes=[(1, 8)])
    with pytest.raises(ValueError, match="batch, seq"):
        compresslab.benchmark([out], shapes=[(1,)])
    with pytest.raises(ValueError, match="empty"):
        compresslab.benchmark([out], shapes=[])
    with pytest.raises(ValueError, match="max_position_embeddings"):
        compresslab.benchmark([out], shapes=[(1, 1000)])


def test_static_int8_with_fewer_train_examples_than_calibration_asks(tiny_tok, caplog):
    with caplog.at_level(logging.WARNING, logger="compresslab"):
        r = compresslab.compress(_trained(), tiny_tok, [{"name": "ort_int8_static", "num_calibration": 256}],
                                 data=_pairs(40, 0), **_kw())
    used = r.metrics["steps"][0]["metrics"]["n_calibration_examples"]
    assert used == len(r._state.task.train) < 256  # all of the (carved) train split, not a crash
    # the warning names the setting that asked, so the user knows what to lower (session 47)
    assert f"ort_int8_static.num_calibration=256 asks for more examples than the train split has ({used})" \
        in caplog.text
    r.close()


@pytest.mark.parametrize("with_eval", [False, True])
@pytest.mark.parametrize("passes", [["ort_int8_dynamic"], [FAST_MAGNITUDE, "ort_int8_dynamic"]], ids=["int8", "kd"])
def test_compress_leaves_the_callers_random_streams_where_they_were(tiny_tok, with_eval, passes):
    """Checks, training and the final eval's loaders (they draw a base seed) leave torch's, Python's and numpy's
    global random streams as the caller had them."""
    import random

    import numpy as np

    def state():
        key, pos, *rest = np.random.get_state()[1:]
        return torch.get_rng_state(), random.getstate(), (key.copy(), pos, *rest)

    def same(a, b):
        return torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2][0], b[2][0]) and a[2][1:] == b[2][1:]

    data, model = _pairs(48, 0), _trained()
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    np.random.rand(3)  # a position inside the key, not only a fresh seed
    before = state()
    r = compresslab.compress(model, tiny_tok, passes, data=data, **_kw(eval_data=data if with_eval else None))
    assert same(state(), before)
    compresslab.evaluate(r.model, data, tiny_tok, max_length=32)  # its DataLoader draws a base seed too
    compresslab.benchmark({"torch": r.model}, shapes=[(1, 8)], warmup=1, runs=2, min_time_s=0.0)
    r.close()
    assert same(state(), before)


def test_evaluate_and_benchmark_take_an_openvino_ir_and_point_a_checkpoint_to_load(tiny_tok, tmp_path):
    """The deployed artifact of deploy.runtime=openvino is an IR dir (openvino_model.xml): it is scored and timed as
    an ONNX export is; a torch checkpoint dir is pointed to compresslab.load."""
    pytest.importorskip("openvino")
    from compresslab.pipeline.deploy import convert_to_ir

    data = _pairs(32, 1)
    r = compresslab.compress(_trained(), tiny_tok, [FAST_MAGNITUDE], data=_pairs(48, 0), **_kw())
    exported = r.export(tmp_path / "export")
    plain = exported / "model_unfused.onnx"
    ir_dir = convert_to_ir(plain if plain.is_file() else exported / "model.onnx", tmp_path / "ir").parent
    assert not (ir_dir / "model.onnx").exists()
    on_ort = compresslab.evaluate(exported, data, max_length=32)
    on_ov = compresslab.evaluate(ir_dir, data, max_length=32, reference=exported)
    assert on_ov["score"] == on_ort["score"] and on_ov["agreement"] == 1.0
    out = compresslab.benchmark({"ort": exported, "ov": ir_dir / "openvino_model.xml"}, shapes=[(1, 16)], runs=3,
                                warmup=1, min_time_s=0.0)
    assert set(out["latency"]) == {"ort", "ov"}
    with pytest.raises(FileNotFoundError, match=r"torch checkpoint; load it with compresslab.load"):
        compresslab.evaluate(r.save(tmp_path / "ckpt"), data)


def test_evaluate_refuses_a_max_length_the_model_cannot_embed_before_scoring(tiny_tok, tmp_path):
    # a review found evaluate() went straight to scoring: ORT's embedding kernel failed partway through
    model = _trained()
    out = compresslab.compress(model, tiny_tok, ["ort_int8_dynamic"], data=_pairs(48, 0), **_kw()).export(tmp_path / "x")
    long_text = [(" ".join(["good"] * 90), "pos"), ("bad", "neg")]
    for m in (model, out):
        with pytest.raises(ValueError, match=r"max_length=100: an input is \d+ tokens long .* at most 72"):
            compresslab.evaluate(m, long_text, tiny_tok, max_length=100)
        assert compresslab.evaluate(m, _pairs(8, 1), tiny_tok, max_length=100)["n"] == 8  # short inputs fit


@pytest.mark.parametrize("entry", ["compress", "evaluate"])
def test_a_cli_column_key_or_a_typo_names_the_api_keyword_in_every_entry_taking_data(entry, tiny_tok):
    """Trial 47: evaluate(dir, csv, text_a=...) raised task_from_user_data()'s raw TypeError where compress() named
    the API's keyword; every entry taking user data gives one message (data.user.check_column_keywords)."""
    def call(**columns):
        if entry == "compress":
            return compresslab.compress(_trained(), tiny_tok, ["ort_int8_dynamic"], data=_pairs(8, 0), **_kw(),
                                        **columns)
        return compresslab.evaluate(_trained(), _pairs(8, 0), tiny_tok, max_length=32, **columns)

    with pytest.raises(TypeError, match=rf"^{entry}\(\) got unexpected keyword\(s\) \['label', 'text_a'\] "
                                        r"\(label: the API's keyword is label_column=; "
                                        r"text_a: the API's keyword is text_column=\)$"):
        call(text_a="sentence", label="label")
    with pytest.raises(TypeError, match=r"\['label_colum'\] \('label_colum': did you mean 'label_column'\?\)"):
        call(label_colum="label")
    with pytest.raises(TypeError, match=r"\['max_lenght'\] \('max_lenght': did you mean 'max_length'\?\)"):
        call(max_lenght=32)  # a typo of the entry's own keyword lands in **columns too


def test_benchmark_warns_when_the_machine_was_busy(monkeypatch, tiny_tok):
    """A notebook prints ``speedups``: a busy timing says so as a warning, not only in ``machine_load`` (trial 40)."""
    import warnings

    import compresslab.bench as bench

    def timed(runners, shapes, **kw):
        res = {name: {"b1xs16": {"p50_ms": 1.0}} for name in runners}
        return {"results": res, "machine_load": {"busy": True, "reasons": ["other CPU 1.2 s/s"]}}

    monkeypatch.setattr(bench, "measure_latency", timed)
    monkeypatch.setattr(bench, "speedups", lambda lat, denominator: {})
    with pytest.warns(RuntimeWarning, match="busy while timing .other CPU 1.2 s/s.*void"):
        compresslab.benchmark([_trained()], shapes=[(1, 16)], threads=1)
    monkeypatch.setattr(bench, "measure_latency",
                        lambda runners, shapes, **kw: {"results": {}, "machine_load": {"busy": False}})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        compresslab.benchmark([_trained()], shapes=[(1, 16)], threads=1)


@pytest.mark.parametrize("where,name", [("compresslab", "run"), ("compresslab", "compress"),
                                        ("compresslab", "evaluate"), ("compresslab", "benchmark"),
                                        ("compresslab.search", "run")])
def test_every_public_entry_that_runs_work_keeps_the_callers_random_streams(where, name):
    """run() seeded the caller's torch stream (its run seeds from cfg.seed): every entry that runs passes, scores or
    times is wrapped by rng.callers_rng_kept."""
    import importlib

    assert getattr(getattr(importlib.import_module(where), name), "__rng_kept__", False), f"{where}.{name}"


def test_run_leaves_the_callers_random_streams_where_they_were(monkeypatch, tmp_path):
    import random

    import numpy as np

    import compresslab.pipeline as pipeline

    def drawing_run(pipeline_name, overrides, **kw):  # what a run does to the streams: seeds them, draws
        torch.manual_seed(0), random.seed(0), np.random.seed(0)
        torch.rand(3), random.random(), np.random.rand(3)
        return tmp_path

    monkeypatch.setattr(pipeline, "run_pipeline", drawing_run)
    torch.manual_seed(123), random.seed(5), np.random.seed(7)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    assert compresslab.run("int8", ["debug=smoke"]) == tmp_path
    assert torch.equal(before[0], torch.get_rng_state()) and before[1] == random.getstate()
    assert np.array_equal(before[2], np.random.get_state()[1])
