"""A model given to ``compress()`` in memory may lack what one read from a directory has by construction: weights
(a meta-device model), a tokenizer that fits its embedding table, trainable parameters, attributes that copy.
Each case is refused before any step runs with nothing written (no weights, a tokenizer of another model), or
handled and said (every parameter frozen, an attribute deepcopy cannot copy); the caller's model is never changed.
"""

from __future__ import annotations

import logging
import threading

import pytest
import torch

import compresslab
from compresslab.models.tiny import tiny_model
from compresslab.registry import available_passes, get_pass
from compresslab.testing import api_kw, tiny_sentiment, trained_tiny

NAMES = ["neg", "pos"]
FT = {"name": "finetune", "steps": 2, "batch_size": 8}
KD = {"name": "magnitude", "sparsity": 0.5, "recovery": {"steps": 2}}  # distils: clones the teacher, trains


def _pairs(n: int = 32, seed: int = 0) -> list[tuple[str, str]]:
    return [(e.text_a, NAMES[e.label]) for e in tiny_sentiment(n, seed)]


@pytest.fixture
def no_step_runs(monkeypatch):
    for name in available_passes():
        monkeypatch.setattr(get_pass(name), "apply", lambda *a, **k: pytest.fail("a step ran before the check"))


def _meta() -> torch.nn.Module:
    with torch.device("meta"):
        return trained_tiny()


# --- refused up front, nothing written ----------------------------------------------------------------------------

REFUSED = {
    # a tokenizer of another model (64 tokens) on a 32-row embedding table: an IndexError in the first batch
    "tokenizer larger than the model's embedding table":
        (lambda: dict(model=trained_tiny(vocab_size=32)), r"model: its tokenizer has 64 tokens .* 32 rows"),
    "tokenizer larger than the teacher's embedding table":
        (lambda: dict(model=trained_tiny(), teacher=trained_tiny(vocab_size=32), passes=[KD]),
         r"teacher: its tokenizer has 64 tokens .* 32 rows"),
    # built under torch.device("meta"): NotImplementedError "Cannot copy out of meta tensor" while hashing it
    "model on the meta device": (lambda: dict(model=_meta()), r"model has no weights: .* meta device"),
    # the model as given is the teacher here (eval_data, no finetune): its head is read before anything else
    "model on the meta device as the teacher": (lambda: dict(model=_meta(), passes=["ort_int8_dynamic"]),
                                                r"model has no weights: .* meta device"),
    "teacher on the meta device": (lambda: dict(model=trained_tiny(), teacher=_meta(), passes=[KD]),
                                   r"teacher has no weights: .* meta device"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_model_compresslab_cannot_run_is_refused_before_any_step_with_nothing_written(case, tiny_tok, tmp_path,
                                                                                        no_step_runs):
    given, match = REFUSED[case]
    kw = {"passes": [FT, "ort_int8_dynamic"], **given()}
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        compresslab.compress(kw.pop("model"), tiny_tok, kw.pop("passes"), data=_pairs(), eval_data=_pairs(16, 1),
                             output_dir=out, **kw, **api_kw())
    assert not out.exists()


# --- every parameter frozen ---------------------------------------------------------------------------------------

def _frozen(model: torch.nn.Module, prefix: str = "") -> torch.nn.Module:
    for name, p in model.named_parameters():
        if name.startswith(prefix):
            p.requires_grad_(False)
    return model


@pytest.mark.parametrize("passes", [[FT], [FT, KD]], ids=["finetune", "finetune+kd"])
def test_a_fully_frozen_model_is_trained_as_a_copy_with_grads_on_and_said(passes, tiny_tok, caplog):
    # autograd used to fail mid-run ("element 0 of tensors does not require grad"), the run marked failed
    model = _frozen(tiny_model())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="compresslab.api"):
        r = compresslab.compress(model, tiny_tok, passes, data=_pairs(), **api_kw())
    assert "every parameter of the model has requires_grad=False" in caplog.text and "your model is unchanged" in \
        caplog.text
    assert all(p.requires_grad for p in r.model.parameters())
    assert not torch.equal(r.model.classifier.weight, before["classifier.weight"])  # it was trained
    assert not any(p.requires_grad for p in model.parameters())  # the caller's model is as it was
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    r.close()


def test_a_fully_frozen_model_given_inplace_is_made_trainable_and_said(tiny_tok, caplog):
    model = _frozen(tiny_model())
    with caplog.at_level(logging.WARNING, logger="compresslab.api"):
        r = compresslab.compress(model, tiny_tok, [FT], data=_pairs(), inplace=True, **api_kw())
    assert "the model itself (inplace=True)" in caplog.text
    assert r.model is model and all(p.requires_grad for p in model.parameters())
    r.close()


def test_a_partly_frozen_model_keeps_its_frozen_parts_and_a_frozen_model_with_no_torch_step_is_left(tiny_tok, caplog):
    model = _frozen(tiny_model(), "bert.embeddings.")
    emb = model.bert.embeddings.word_embeddings.weight.clone()
    with caplog.at_level(logging.WARNING, logger="compresslab.api"):
        r = compresslab.compress(model, tiny_tok, [FT], data=_pairs(), **api_kw())
        q = compresslab.compress(_frozen(trained_tiny()), tiny_tok, ["ort_int8_dynamic"], data=_pairs(), **api_kw())
    assert "requires_grad=False" not in caplog.text  # nothing to say: nothing was changed
    assert torch.equal(r.model.bert.embeddings.word_embeddings.weight, emb)
    assert not r.model.bert.embeddings.word_embeddings.weight.requires_grad
    assert not torch.equal(r.model.classifier.weight, model.classifier.weight)
    assert not any(p.requires_grad for p in q.model.parameters())
    r.close()
    q.close()


def test_which_parameters_are_frozen_is_part_of_the_run_identity(tiny_tok, tmp_path):
    """Two calls on the same weights that freeze different parameters train different models: a rerun into the
    output_dir of one with another frozen set is refused as another config, naming each parameter that differs;
    the same set resumes (its finished step restored). A model with every parameter frozen is trained whole
    (``_trainable``), as one with none frozen is: the two share a run."""
    import json
    import re

    kw = api_kw(data=_pairs(), output_dir=tmp_path / "run")
    emb, pos = "bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight"
    r = compresslab.compress(_frozen(trained_tiny(), emb), tiny_tok, [FT], **kw)
    config = json.loads((tmp_path / "run" / "manifest.json").read_text())["config"]
    assert config["requires_grad"] == {emb: False}
    again = compresslab.compress(_frozen(trained_tiny(), emb), tiny_tok, [FT], **kw)  # the same set: resumed
    assert torch.equal(again.model.classifier.weight, r.model.classifier.weight)
    for given, said in ((trained_tiny(), f"requires_grad.{emb} (model: its frozen parameters): false -> (unset)"),
                        (_frozen(_frozen(trained_tiny(), emb), pos), f"requires_grad.{pos} (model: its frozen "
                                                                  "parameters): (unset) -> false")):
        with pytest.raises(compresslab.pipeline.RunDirConflictError, match=re.escape(said)):
            compresslab.compress(given, tiny_tok, [FT], **kw)
    whole = api_kw(data=_pairs(), output_dir=tmp_path / "whole")
    compresslab.compress(_frozen(trained_tiny()), tiny_tok, [FT], **whole)  # every parameter frozen: trained whole
    assert "requires_grad" not in json.loads((tmp_path / "whole" / "manifest.json").read_text())["config"]
    compresslab.compress(trained_tiny(), tiny_tok, [FT], **whole).close()  # none frozen: the same run, resumed
    for res in (r, again):
        res.close()


# --- attributes deepcopy cannot copy ------------------------------------------------------------------------------

def _with_a_lock(model: torch.nn.Module) -> torch.nn.Module:
    model.my_lock = threading.Lock()
    model.bert.encoder.notes = {"owner": "me", "lock": threading.Lock()}
    return model


@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_an_attribute_deepcopy_cannot_copy_is_shared_and_named_and_every_copy_of_the_model_works(inplace, tiny_tok,
                                                                                                 caplog):
    # copy.deepcopy raised "cannot pickle '_thread.lock' object"; with inplace=True the teacher's copy and a pass's
    # own copies (magnitude's KD teacher, ziplm's trials) deep-copied the model too
    model = _with_a_lock(trained_tiny())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="compresslab.api"):
        r = compresslab.compress(model, tiny_tok, [FT, KD], data=_pairs(), inplace=inplace, **api_kw())
    assert r.model.my_lock is model.my_lock and r.model.bert.encoder.notes["lock"] is model.bert.encoder.notes["lock"]
    assert r.model.bert.encoder.notes["owner"] == "me"
    if not inplace:
        assert "model.my_lock (_thread.lock)" in caplog.text and "model.bert.encoder.notes['lock']" in caplog.text
        assert r.model.bert.encoder.notes is not model.bert.encoder.notes  # the dict itself is copied
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    r.close()


def test_clone_shares_only_the_objects_that_cannot_be_copied():
    from compresslab.models.inmemory import clone_sharing

    model = _with_a_lock(tiny_model())
    model.bert.register_forward_hook(lambda *a: None)
    copy_, shared = clone_sharing(model)
    assert sorted(shared) == ["model.bert.encoder.notes['lock']", "model.my_lock"]
    assert copy_.bert._forward_hooks is not model.bert._forward_hooks  # a hook added to the copy stays there
    assert copy_.bert.embeddings.word_embeddings.weight is not model.bert.embeddings.word_embeddings.weight
    assert clone_sharing(tiny_model())[1] == {}


def test_every_copy_of_a_model_goes_through_clone():
    # a pass that deep-copies the model itself fails on the attributes compress() shares (a lock): the copies are
    # made by models.inmemory.clone; the deepcopies left copy other things (listed)
    import re
    from pathlib import Path

    root = Path(compresslab.__file__).parent
    found = sorted((str(f.relative_to(root)), line.strip()) for f in root.rglob("*.py") if f.name != "inmemory.py"
                   for line in f.read_text().splitlines() if re.search(r"\bdeepcopy\(", line.split("#")[0]))
    # configs (the probes' architecture; the preflight's planned architecture: its copy of the loaded model's,
    # layer_drop's planned depth, the planned model built from one), a tokenizer, the selection history
    assert found == [("bench/latency_probes.py", "cfg = copy.deepcopy(model.config)"),
                     ("models/loading.py", "clean = copy.deepcopy(tokenizer)"),
                     ("models/structure.py", "cfg = copy.deepcopy(config)"),
                     ("passes/layer_drop.py", "out = copy.deepcopy(config)"),
                     ("pipeline/preflight.py", "config = copy.deepcopy(model.config)"),
                     ("training/select.py", found[-1][1])], found  # the selection history: a list of dicts
    assert "self.history" in found[-1][1]
