"""The peer suite on the label-free task (issue 14: ``stsb_embedding``), on a tiny random encoder.

What must hold: an embedding cell is scored as an embedding (Spearman of cosine(mean-pooled last hidden
states), the peer told ``head="encoder"``), never through the classification path; a pipeline whose pass
refuses the task (oBERT's Fisher needs labels) is skipped up front with the pass's reason, its OpenVINO cell
too, and nothing is built for them; the per-pass statement of what replaces the task loss agrees with the
passes' own checks and reaches ``suite_<task>.json`` ``meta.label_free`` and the report; calibration feeds
hold only the model's inputs (an embedding batch also carries the pair's second sentence).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compresslab.data.schema import TaskData, TaskKind
from compresslab.models.tiny import tiny_config, tiny_tokenizer
from compresslab.testing import tiny_embedding_task

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is run as a package from the repo root
    sys.path.insert(0, str(REPO))
suite = importlib.import_module("benchmarks.suite")
suite_plan = importlib.import_module("benchmarks.suite_plan")
applies = importlib.import_module("benchmarks.suite_applies")
peers = importlib.import_module("benchmarks.peers")
report = importlib.import_module("benchmarks.suite_report")

MAX_LEN = 16


def _task() -> TaskData:
    return tiny_embedding_task()


# ----------------------------------------------------------------------------------------------- statements
def test_every_pass_of_the_suites_pipelines_states_what_replaces_the_task_loss() -> None:
    cfg = suite_plan.load_config(suite_plan.CONFIG)
    assert "stsb_embedding" in cfg["tasks"]
    passes = {n for p in cfg["pipelines"] for _, n in applies.pipeline_passes([f"+pipeline={p}"])}
    assert passes <= set(applies.EMBEDDING_LOSS), passes - set(applies.EMBEDDING_LOSS)
    for name in passes:
        s = applies.EMBEDDING_LOSS[name]
        assert s["applies"] in (applies.YES, applies.NO, applies.PARTLY) and s["replaces_task_loss"]


@pytest.mark.parametrize("pipeline, refused_step", [
    ("int8", None), ("qdq_int8", None), ("ziplm_int8", None), ("magnitude_int8", None), ("hawq_w4", None),
    ("obert_int8", "obert"), ("ziplm_obert_int8", "obert"),
    ("hawq_mp3", "hawq"),  # the Hessian-allocated widths: "partly" means this refusal
    ("bibert", "bibert"),
])
def test_the_statement_agrees_with_the_passes_own_checks(pipeline, refused_step) -> None:
    why = applies.refused_by([f"+pipeline={pipeline}", "task=stsb_embedding"], _task())
    names = [n for _, n in applies.pipeline_passes([f"+pipeline={pipeline}"])]
    if refused_step is None:
        assert why is None
        assert all(applies.EMBEDDING_LOSS[n]["applies"] != applies.NO for n in names)
    else:
        assert why is not None and f"({refused_step}) refuses it" in why and "embedding" in why
        assert applies.EMBEDDING_LOSS[refused_step]["applies"] in (applies.NO, applies.PARTLY)


def test_a_pipeline_with_a_bad_setting_is_not_skipped_but_left_to_fail_with_its_own_error() -> None:
    args = ["+pipeline=ziplm_int8", "task=stsb_embedding", "pipeline.passes.ziplm.damp=-1"]
    assert applies.refused_by(args, _task()) is None  # built, so the cell records the run's exact error
    lf = applies.loss_statement({"ziplm_int8": args, "int8": ["+pipeline=int8"]})
    assert "damp" in lf["pipelines_not_built"]["ziplm_int8"] and set(lf["passes"]) == {"finetune", "ort_int8_dynamic"}


@pytest.mark.parametrize("args", [
    ["+pipeline=bibert", "task=sst2", "pipeline.passes.bibert.batch_size=100000"],  # check() raises ValueError
    ["+pipeline=hawq_mp3", "task=sst2", "pipeline.passes.hawq.hessian.batch_size=1000"],
])
def test_a_bad_setting_caught_by_a_pass_check_is_a_failure_not_a_skip(args) -> None:
    from compresslab.testing import tiny_task

    task = tiny_task()  # labelled: only the setting is wrong
    assert applies.refused_by(args, task) is None  # built, so the cell records the run's exact error


def test_the_embedding_kd_is_what_recovery_trains_on_an_embedding_task() -> None:
    from compresslab.training.losses import EmbeddingKD, build_losses

    losses = build_losses(1.0, 2.0, 0.5, embedding=True)  # logit-KD settings are not read
    assert [type(l) for l in losses] == [EmbeddingKD] and losses[0].kind == "cosine"


def test_calibration_feeds_hold_only_the_models_inputs() -> None:
    import torch

    b = {k: torch.ones(2, 5, dtype=torch.long) for k in
         ("input_ids", "attention_mask", "token_type_ids", "input_ids_b", "attention_mask_b", "token_type_ids_b")}
    b["labels"] = torch.tensor([1.0, 2.0])
    (f,) = suite.calibration_feeds([b])
    assert set(f) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(isinstance(v, np.ndarray) for v in f.values())


# ----------------------------------------------------------------------------------------------- one task
class EncoderPeer:
    """A peer that deploys the teacher encoder itself (torch fp32): it must be told ``head="encoder"``."""

    name, tool = "fake_encoder", "the teacher encoder, as is"
    seen: list[str] = []

    def settings(self) -> dict[str, Any]:
        return {"v": 1}

    def build(self, inputs: Any) -> Any:
        from benchmarks.artifacts import Artifact

        self.seen.append(inputs.head)
        return Artifact(inputs.checkpoint, "torch", "fp32")


def _embeddings(model: Any, tok: Any, texts: list[str]) -> np.ndarray:
    import torch

    enc = tok(texts, padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
    with torch.inference_mode():
        h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                  token_type_ids=enc["token_type_ids"]).last_hidden_state.numpy()
    m = enc["attention_mask"].numpy()[..., None].astype(h.dtype)
    return (h * m).sum(1) / m.sum(1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A fake prepared teacher of the embedding task: a tiny random BertModel (no head) saved as the checkpoint,
    and the reference score and predictions computed here, independently of the suite's scoring."""
    from types import SimpleNamespace

    import torch
    from scipy.stats import spearmanr
    from transformers import BertModel

    d = tmp_path_factory.mktemp("teacher")
    tok = tiny_tokenizer(d / "tok")
    torch.manual_seed(0)
    model = BertModel(tiny_config("bert"), add_pooling_layer=False).eval()
    model.save_pretrained(d / "checkpoint")
    tok.save_pretrained(d / "checkpoint")
    task = _task()
    a = _embeddings(model, tok, [e.text_a for e in task.dev])
    b = _embeddings(model, tok, [e.text_b for e in task.dev])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    score = float(spearmanr(cos, [e.label for e in task.dev])[0])
    record = SimpleNamespace(task=task, tokenizer=tok, max_length=MAX_LEN)  # a compresslab.pipeline.Teacher's fields
    t = suite.Teacher(record, "0" * 64, d, cos.astype(np.float32), score, [])
    assert t.head == "encoder"
    return t


def _plan() -> Any:
    return suite_plan.TaskPlan("stsb_embedding", "smoke", ("task=stsb_embedding",), ("obert_int8",),
                               ("fake_encoder",), 1, 4, {}, None, None, True)


def test_an_embedding_cell_is_scored_as_an_embedding_and_a_refused_pipeline_is_skipped(teacher, tmp_path,
                                                                                      monkeypatch) -> None:
    monkeypatch.setitem(peers.PEERS, "fake_encoder", EncoderPeer())
    # a refused pipeline must never reach its build (pytest's Failed is no Exception: the cell could not
    # swallow it as its error)
    monkeypatch.setattr(suite, "build_pipeline", lambda *a, **k: pytest.fail("built a refused pipeline"))
    monkeypatch.setattr(suite, "openvino_artifact", lambda *a, **k: pytest.fail("built a refused pipeline's twin"))
    monkeypatch.setattr(suite, "prepare_teacher", lambda p, work: teacher)
    EncoderPeer.seen.clear()
    res = tmp_path / "results"
    assert suite.run_task(_plan(), work=tmp_path / "work", results_dir=res, timing=False) == 0
    data = __import__("json").loads((res / "suite_stsb_embedding.json").read_text())
    sysd, meta = data["systems"], data["meta"]

    assert EncoderPeer.seen == ["encoder"]
    peer = sysd["fake_encoder"]
    assert peer["error"] is None and peer["score"] == pytest.approx(teacher.score, abs=1e-5)
    assert peer["agreement"] == pytest.approx(1.0, abs=1e-5)  # Pearson r with the teacher's cosines
    assert peer["mcnemar_p_vs"] == {} and meta["metric"] == "spearman"

    for name in ("obert_int8", "obert_int8_openvino"):
        s = sysd[name]
        assert s["score"] is None and s["error"].startswith("not run: ") and "obert" in s["skipped"]
        assert meta["cells"][name]["status"] == "skipped" and meta["skipped"][name] == s["skipped"]
    assert "embedding task" in sysd["obert_int8"]["skipped"]
    assert "its pipeline obert_int8 is not run" in sysd["obert_int8_openvino"]["skipped"]
    assert data["runtimes"]["obert_int8"]["faster"] is None

    lf = meta["label_free"]["passes"]
    assert lf["obert"]["applies"] == "no" and lf["obert"]["pipelines"] == ["obert_int8"]
    assert set(lf) == {"finetune", "obert", "ort_int8_dynamic"}

    md = report.write_report(res, tmp_path / "REPORT.md")["md"].read_text()
    assert "what replaces the task loss" in md and "does not apply (obert.check refuses" in md
    assert "not run: task 'stsb_embedding': step 'obert' (obert) refuses it" in md


def test_embedding_predictions_are_cosines_not_class_ids(teacher, tmp_path) -> None:
    """The suite's scoring of an encoder artifact, directly: what a classification path (argmax over the
    hidden size) would turn into integers is a cosine per dev pair here."""
    from benchmarks.artifacts import Artifact
    from benchmarks.artifacts import score as score_artifact

    assert teacher.task.spec.kind is TaskKind.EMBEDDING
    s = score_artifact(Artifact(teacher.dir / "checkpoint", "torch", "fp32"), teacher.record, 1)
    assert s.predictions.shape == (len(teacher.dev),) and np.all(np.abs(s.predictions) <= 1 + 1e-6)
    assert not np.allclose(s.predictions, np.round(s.predictions))
    np.testing.assert_allclose(s.predictions, teacher.preds, atol=1e-5)


def test_the_torch_worker_drops_the_unused_pooler_of_an_encoder(teacher) -> None:
    """INC's X86InductorQuantizer fails (IndexError) on the pooler's Linear -> Tanh left dead in the traced graph
    of an encoder whose last hidden state is the output; the worker removes it, the output unchanged."""
    import importlib.util

    import torch
    from transformers import BertModel

    path = REPO / "benchmarks" / "peers" / "workers" / "torch_worker.py"
    spec = importlib.util.spec_from_file_location("peer_torch_worker", path)
    W = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(W)
    d = teacher.dir / "checkpoint"
    ref = BertModel.from_pretrained(d, attn_implementation="eager").eval()  # with a (random) pooler
    assert ref.pooler is not None
    m = W.load_dense({"input_names": list(W.NAMES), "head": "encoder", "checkpoint": str(d)})
    assert m.m.pooler is None
    ids = torch.randint(5, 60, (2, 7))
    mask, tt = torch.ones_like(ids), torch.zeros_like(ids)
    with torch.inference_mode():
        torch.testing.assert_close(m(ids, mask, tt), ref(input_ids=ids, attention_mask=mask, token_type_ids=tt)
                                   .last_hidden_state)


def test_cells_builds_only_those_and_the_results_keep_the_tasks_other_cells(teacher, tmp_path, monkeypatch) -> None:
    """``--cells X`` once wrote suite_<task>.json with X alone: every other system's score, timing and verdict
    of the task was gone from the file (and with it the timings a later untimed run keeps). Now it builds X
    only and the file holds every finished cell of the task; a cell never built stays out, and is not built."""
    import json

    class Other(EncoderPeer):
        name = "fake_encoder_b"

    for peer in (EncoderPeer(), Other()):
        monkeypatch.setitem(peers.PEERS, peer.name, peer)
    monkeypatch.setattr(suite, "prepare_teacher", lambda p, work: teacher)
    both = ("fake_encoder", "fake_encoder_b")
    def plan(cells: tuple[str, ...]) -> Any:  # obert_int8 is in the config, not in --cells (and refuses the task)
        return suite_plan.TaskPlan("stsb_embedding", "smoke", ("task=stsb_embedding",), (), cells, 1, 4, {}, None,
                                   None, True, config_pipelines=("obert_int8",), config_peers=both)

    per_runtime: list[tuple[str, ...]] = []  # `runtimes` is the whole task's too (the trial found it rebuilt
    real = suite.faster_runtime               # from the --cells pipelines alone, emptying the report's table)
    monkeypatch.setattr(suite, "faster_runtime", lambda sysd, pls: per_runtime.append(tuple(pls)) or real(sysd, pls))
    res, work = tmp_path / "results", tmp_path / "work"
    def systems() -> dict[str, Any]:  # the built ones (obert_int8's cells are there too, skipped with the reason)
        every = json.loads((res / "suite_stsb_embedding.json").read_text())["systems"]
        assert {n for n, s in every.items() if s.get("skipped")} == {"obert_int8", "obert_int8_openvino",
                                                                      "obert_int8_openvino_nncf"}
        return {n: s for n, s in every.items() if not s.get("skipped")}

    EncoderPeer.seen.clear()
    assert suite.run_task(plan(("fake_encoder",)), work=work, results_dir=res, timing=False) == 0
    assert set(systems()) == {"fake_encoder"} and len(EncoderPeer.seen) == 1  # the other is not built
    assert suite.run_task(plan(("fake_encoder_b",)), work=work, results_dir=res, timing=False) == 0
    assert set(systems()) == set(both) and len(EncoderPeer.seen) == 2  # only b built; a kept from its cell
    assert systems()["fake_encoder"]["score"] == pytest.approx(teacher.score, abs=1e-5)
    assert per_runtime == [("obert_int8",)] * 2
