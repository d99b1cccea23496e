"""The peer suite (issue 14, ``benchmarks/suite.py``) on a tiny random BERT and a generic CSV task.

One task is built once for the module (teacher, the ``int8`` pipeline with ``embeddings: per_tensor`` (one call
of ORT's quantizer on the teacher: a peer by the issue's rule; its default block-wise embeddings would make it
ours), our ``magnitude_int8`` pipeline, their OpenVINO cells, three peers,
one that fails and a fake of a peer scored and timed in its own venv), scores only; the timing phase is run against a fake CPU reader (quiet or busy), never judged. What must
hold: the JSON has the issue's shape; a failing peer keeps its exact error and the rest finish; a second
run builds nothing (every finished cell is found by its config hash) and a changed setting builds anew;
McNemar is paired on the same dev examples; timing is refused when the machine is busy or a training
holds its lock, and the scores are still written; a peer scored in its own process replays to exactly
the score it computed; verdicts and the ORT/OpenVINO comparison are written and reported.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from compresslab.manifest import read_json
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.testing import FakeCpu, tiny_sentiment, write_csv

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is run as a package from the repo root (python -m benchmarks.suite)
    sys.path.insert(0, str(REPO))
suite = importlib.import_module("benchmarks.suite")
suite_plan = importlib.import_module("benchmarks.suite_plan")
peers = importlib.import_module("benchmarks.peers")
store_mod = importlib.import_module("benchmarks.store")
OV = importlib.import_module("benchmarks.suite_openvino")

SYSTEM_KEYS = {"method", "tool", "score", "agreement", "latency_ms_b1", "latency_ms_b32", "throughput_real",
               "size_bytes", "backend", "precision", "file", "mcnemar_p_vs", "timing", "error",
               "mcnemar_discordant_vs", "file_sha256"}  # rule a's direction; what a kept timing belongs to
OURS = "magnitude_int8"  # our pass (pruning) changes the model before ORT quantizes it
PEERS = ["dense_ort_fp32", "dense_torch_fp32", "ort_quantize_dynamic", "ort_quantize_dynamic_fused",
         "torch_ao_dynamic_int8", "broken", "fake_venv"]
QUIET = {"reader": FakeCpu(other=0.0), "probe_s": 0.0, "sleep": lambda s: None, "allow_busy": False,
         "window": {"reader": FakeCpu(other=0.0), "probe_s": 0.0}}


class Broken:
    """A peer whose tool fails: its cell must say exactly this, and the others must finish."""

    name, tool = "broken", "a tool that fails"

    def settings(self) -> dict[str, Any]:
        return {"v": 1}

    def build(self, inputs: Any) -> Any:
        raise ValueError("boom: the tool said no (42)")


class FakeVenvPeer:
    """A peer scored and timed in "its own process": here the teacher in torch, run on the suite's recorded dev
    batches, logits written to a file as a worker would; timing returns fixed figures."""

    name, tool = "fake_venv", "the teacher, scored as a worker would"

    def settings(self) -> dict[str, Any]:
        return {"v": 1}

    def build(self, inputs: Any) -> Any:
        import torch

        from benchmarks.artifacts import Artifact
        from compresslab.checkpoint import load

        assert inputs.dev_batches and inputs.head == "classification"
        model = load(inputs.checkpoint).eval()
        with torch.inference_mode():
            logits = [model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.numpy()
                      for b in inputs.dev_batches]
        f = inputs.work_dir / "logits.npz"
        np.savez(f, **{f"b{i}": x for i, x in enumerate(logits)})
        return Artifact(f, "external", "fp32", {"logits": str(f), "size_bytes": 123})

    def time(self, artifact: Any, timing: Any, vocab_size: int) -> dict[str, Any]:
        return {"latency_ms_b1": 1.0, "latency_ms_b32": 1e6, "throughput_real": 5.0,
                "timing": "alternating processes (fake)", "reference": {"dense_torch_fp32": {"latency_ms_b32": 2e6}}}


def _config(root: Path) -> dict[str, Any]:
    task = ["model=local", f"model.source={root / 'model'}", "task=generic", f"task.generic.train={root / 'train.csv'}",
            f"task.generic.dev={root / 'dev.csv'}", "task.max_length=32"]
    return {"threads": 1, "pipelines": ["int8", OURS], "peers": PEERS, "calibration_examples": 16,
            "pipeline_overrides": {"int8": ["pipeline.passes.int8.embeddings=per_tensor"]},
            "openvino_keep_fp32": ["ffn_out"], "openvino_smooth_alpha": [0.5, 0.8],
            "timing": {"shapes": [[1, 16], [32, 16]], "warmup": 0, "runs": 1, "rounds": 1},
            "budgets": {"smoke": {"overrides": ["debug=smoke"], "teacher": "smoke", "cell_cpu_hours": 1.0}},
            "tasks": {"tiny": {"overrides": task}}}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("suite")
    tiny_tokenizer(root / "model").save_pretrained(root / "model")
    tiny_model("bert").save_pretrained(root / "model")
    for name, n, seed in (("train", 96, 0), ("dev", 32, 1)):
        write_csv(root / f"{name}.csv", ["text", "label"], [[e.text_a, str(e.label)] for e in tiny_sentiment(n, seed)])
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(peers.PEERS, "broken", Broken())
        mp.setitem(peers.PEERS, "fake_venv", FakeVenvPeer())
        cfg = _config(root)
        p = suite_plan.plan(cfg, "tiny", "smoke", None,
                            [f"paths.output_dir={root / 'out'}", f"paths.cache_dir={root / 'cache'}"])
        code = suite.run_task(p, work=root / "work", results_dir=root / "results", timing=False)
        data = suite.ResultsFile(root / "results" / "suite_tiny.json").load()
    return SimpleNamespace(root=root, cfg=cfg, plan=p, code=code, data=data)


def test_json_has_the_issue_shape(built) -> None:
    d = built.data
    assert built.code == 0 and set(d) == {"teacher_score", "systems", "meta", "verdicts", "runtimes"}
    # NNCF beside our int8 pipeline only (on the teacher it would be the nncf_ptq_int8 peer again)
    assert set(d["systems"]) == {"int8", "int8_openvino", OURS, f"{OURS}_openvino", f"{OURS}_openvino_nncf", *PEERS}
    for name, s in d["systems"].items():
        assert set(s) == SYSTEM_KEYS, name
    ours = d["systems"][OURS]
    assert ours["method"] == "compresslab" and ours["backend"] == "ort" and ours["size_bytes"] > 0
    assert len(ours["file_sha256"]) == 64 and d["systems"]["broken"]["file_sha256"] is None
    for peer, (b, c) in ours["mcnemar_discordant_vs"].items():  # only ours right, only the peer right
        assert b >= 0 and c >= 0 and (b + c > 0 or ours["mcnemar_p_vs"][peer] == 1.0), peer
    # +pipeline=int8 at embeddings=per_tensor runs ORT's quantize_dynamic on the unchanged teacher: a peer's tool
    # on our model is a peer
    assert d["systems"]["int8"]["method"] == "peer" and d["systems"]["int8"]["mcnemar_p_vs"] == {}
    # ...but its OpenVINO cell is our int8 recipe: SmoothQuant (our pass) changed the weights first
    assert d["systems"]["int8_openvino"]["method"] == "compresslab" and f"{OURS}_openvino" in d["systems"]
    assert d["systems"][f"{OURS}_openvino"]["method"] == "compresslab"
    # NNCF on our pruned model: ours by the issue's rule (our pass changed the model first), like OURS itself
    assert d["systems"][f"{OURS}_openvino_nncf"]["method"] == "compresslab"
    assert set(ours["mcnemar_p_vs"]) == {n for n, s in d["systems"].items()
                                         if s["method"] == "peer" and s["score"] is not None}
    assert 0.0 <= ours["score"] <= 1.0 and 0.0 <= ours["agreement"] <= 1.0
    assert d["systems"]["dense_torch_fp32"]["agreement"] == 1.0  # the teacher agrees with itself
    assert d["systems"]["dense_torch_fp32"]["score"] == pytest.approx(d["teacher_score"])
    assert d["meta"]["timing"]["status"].startswith("skipped") and ours["latency_ms_b32"] is None
    assert "machine_load" in d["meta"] and d["meta"]["cpu_isa"] is not None
    tb = d["meta"]["teacher_build"]  # trained in this process: its CPU time is the training's
    assert tb["cpu_s"] > 0 and tb["prepare_s"] > 0 and tb["cpu_hours_budget"] is None and tb["over_budget"] is None


def test_failing_peer_keeps_its_exact_error_and_the_rest_finish(built) -> None:
    s = built.data["systems"]
    assert s["broken"]["error"] == "ValueError: boom: the tool said no (42)"
    assert s["broken"]["score"] is None and s["broken"]["file"] is None
    assert all(s[n]["error"] is None and s[n]["score"] is not None for n in ("int8", OURS, "dense_ort_fp32",
                                                                               "ort_quantize_dynamic",
                                                                               "ort_quantize_dynamic_fused"))
    # ORT's one-call per-channel int8 of the fused teacher: byte for byte what int8 at per_tensor deploys
    assert s["ort_quantize_dynamic_fused"]["score"] == s["int8"]["score"]
    assert "broken" not in s[OURS]["mcnemar_p_vs"]  # no predictions, no paired test


def test_venv_peers_are_registered_with_pinned_venvs() -> None:
    from compresslab.bench.external import VenvSpec

    for name in ("optimum_ort_avx512_vnni", "optimum_ort_avx512_vnni_plain", "inc_ptq_dynamic_int8",
                 "torchao_int8_dynamic"):
        s = peers.PEERS[name].settings()
        assert all("==" in r for r in s["venv"]["requirements"]) and s["venv"]["key"], name
    assert isinstance(importlib.import_module("benchmarks.peers.venvs").INC, VenvSpec)


def test_a_peer_scored_in_its_own_process_replays_to_its_exact_score(built) -> None:
    s = built.data["systems"]
    fake = s["fake_venv"]
    assert fake["error"] is None and fake["backend"] == "external" and fake["size_bytes"] == 123
    assert fake["score"] == pytest.approx(built.data["teacher_score"]) and fake["agreement"] == 1.0


def test_openvino_cell_of_int8_is_our_qdq_of_the_plain_export(built) -> None:
    s = built.data["systems"]["int8_openvino"]
    assert s["error"] is None and s["method"] == "compresslab" and s["backend"] == "openvino"
    assert s["file"].endswith(".xml") and s["score"] is not None
    cell = store_mod.CellStore(built.root / "work" / "tiny" / "smoke" / "cells").finished(
        "int8_openvino", built.data["meta"]["cell_keys"]["int8_openvino"])
    assert "MatMulInteger" in cell["artifact"]["info"]["source"]  # why not the deployed file itself
    # suite.yaml's openvino_keep_fp32 (ffn_out): every layer's FFN output MatMul left fp32, named
    keep = cell["artifact"]["info"]["quantization"]["keep_fp32"]
    assert keep["patterns"] == ["ffn_out"] and len(keep["matmuls"]) == 2  # the tiny BERT's two layers
    assert all(m.endswith("/output/dense/MatMul") for m in keep["matmuls"])
    # suite.yaml's openvino_smooth_alpha: one IR per strength, the highest validation agreement kept
    q = cell["artifact"]["info"]["quantization"]
    choice = q["smooth_choice"]
    assert choice["grid"] == [0.5, 0.8] and choice["scored"] and choice["alpha"] in (0.5, 0.8)
    assert set(choice["scores"]) == {"alpha_0.5", "alpha_0.8"} and q["smoothquant"]["alpha"] == choice["alpha"]
    assert q["recipe"] == OV.RECIPE and "validation agreement" in cell["artifact"]["info"]["source"]
    assert cell["spec"]["smooth_alpha"] == [0.5, 0.8] and cell["spec"]["recipe"] == OV.RECIPE  # in the cell key
    # and the choice reaches the results file (the cell record stays in the work dir)
    r = built.data["meta"]["cells"]["int8_openvino"]["int8_recipe"]
    assert r["recipe"] == OV.RECIPE and r["smooth_alpha"] == choice["alpha"] and r["smooth_grid"] == [0.5, 0.8]
    assert set(r["validation_scores"]) == {"alpha_0.5", "alpha_0.8"} and r["keep_fp32"] == ["ffn_out"]
    assert "int8_recipe" not in built.data["meta"]["cells"][f"{OURS}_openvino_nncf"]


def test_nncf_cell_quantizes_our_pipelines_model(built) -> None:
    s = built.data["systems"][f"{OURS}_openvino_nncf"]
    assert s["error"] is None and s["backend"] == "openvino" and s["score"] is not None
    cell = store_mod.CellStore(built.root / "work" / "tiny" / "smoke" / "cells").finished(
        f"{OURS}_openvino_nncf", built.data["meta"]["cell_keys"][f"{OURS}_openvino_nncf"])
    assert cell["artifact"]["info"]["quantization"]["method"] == "nncf" and "NNCF" in cell["tool"]
    assert "magnitude_int8" in cell["run_dir"] and "+pipeline=magnitude_int8" in cell["command"]  # its pipeline's run


def test_second_run_builds_nothing_and_a_changed_setting_builds_anew(built, monkeypatch) -> None:
    built_now: list[str] = []
    real = suite._build_one

    def spy(name, *a, **k):
        built_now.append(name)
        return real(name, *a, **k)

    monkeypatch.setattr(suite, "_build_one", spy)
    monkeypatch.setitem(peers.PEERS, "broken", Broken())
    monkeypatch.setitem(peers.PEERS, "fake_venv", FakeVenvPeer())
    # a cell cached under an older rule says "compresslab": the rule of today decides, not the cache
    cells = built.root / "work" / "tiny" / "smoke" / "cells"
    cell = cells / "int8" / built.data["meta"]["cell_keys"]["int8"] / "cell.json"
    suite.write_aside(cell, {**read_json(cell), "method": "compresslab"})
    code = suite.run_task(built.plan, work=built.root / "work", results_dir=built.root / "results", timing=False)
    assert code == 0
    assert built_now == ["broken"]  # finished cells are found by their key; a failed one is tried again
    again = suite.ResultsFile(built.root / "results" / "suite_tiny.json").load()
    assert again["systems"]["int8"]["score"] == built.data["systems"]["int8"]["score"]
    assert again["systems"]["int8"]["method"] == "peer"
    # and a cached OpenVINO cell of our recipe is ours again, read back from its record (suite_openvino.method_of)
    assert again["systems"]["int8_openvino"]["method"] == "compresslab"
    assert again["meta"]["cell_keys"] == built.data["meta"]["cell_keys"]

    class Broken2(Broken):
        def settings(self) -> dict[str, Any]:
            return {"v": 2}

    monkeypatch.setitem(peers.PEERS, "broken", Broken2())
    built_now.clear()
    suite.run_task(built.plan, work=built.root / "work", results_dir=built.root / "results", timing=False)
    assert built_now == ["broken"]
    keys = suite.ResultsFile(built.root / "results" / "suite_tiny.json").load()["meta"]["cell_keys"]
    assert "broken" not in keys and keys == built.data["meta"]["cell_keys"]


def test_cell_key_follows_settings() -> None:
    a = store_mod.cell_key({"kind": "peer", "settings": {"ratio": 0.8}, "teacher": "abc"})
    assert a == store_mod.cell_key({"teacher": "abc", "settings": {"ratio": 0.8}, "kind": "peer"})  # order-free
    assert a != store_mod.cell_key({"kind": "peer", "settings": {"ratio": 0.9}, "teacher": "abc"})
    assert a != store_mod.cell_key({"kind": "peer", "settings": {"ratio": 0.8}, "teacher": "abd"})


def test_mcnemar_is_paired_on_the_same_dev_examples(built) -> None:
    from compresslab.data.metrics import mcnemar_pvalue

    labels = np.array([0, 1] * 20)
    ours = labels.copy()
    peer = labels.copy()
    peer[:12] = 1 - peer[:12]  # the peer is wrong on 12 examples ours gets right
    teacher = SimpleNamespace(task=SimpleNamespace(spec=SimpleNamespace(kind=_kind())),
                              dev=[SimpleNamespace(label=int(y)) for y in labels], preds=labels.copy())
    fake = _FakeStore({"ours": ours, "peer": peer})
    cells = {"ours": {"method": "compresslab", "tool": "x", "status": "finished", "key": "ours"},
             "peer": {"method": "peer", "tool": "y", "status": "finished", "key": "peer"}}
    s = suite.systems(cells, fake, teacher)
    p = s["ours"]["mcnemar_p_vs"]["peer"]
    assert p == pytest.approx(mcnemar_pvalue(ours == labels, peer == labels)) and p < 0.01
    assert p == pytest.approx(2 * 0.5 ** 12)  # 12 discordant pairs, all one way: exact binomial
    assert s["peer"]["mcnemar_p_vs"] == {} and s["peer"]["agreement"] == pytest.approx(28 / 40)
    # unpaired (shuffled) predictions would give another p: the pairing is what is tested
    shuffled = _FakeStore({"ours": ours, "peer": np.roll(peer, 7)})
    assert suite.systems(cells, shuffled, teacher)["ours"]["mcnemar_p_vs"]["peer"] != pytest.approx(p)


def test_timing_refused_when_busy_and_scores_still_written(built) -> None:
    busy = {**QUIET, "reader": FakeCpu(other=1.0)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(peers.PEERS, "broken", Broken())
        mp.setitem(peers.PEERS, "fake_venv", FakeVenvPeer())
        code = suite.run_task(built.plan, work=built.root / "work", results_dir=built.root / "results", timing=True,
                              quiet=busy)
    d = suite.ResultsFile(built.root / "results" / "suite_tiny.json").load()
    assert code == suite.EXIT_TIMING_REFUSED
    assert d["meta"]["timing"]["status"] == "refused"
    assert "not quiet" in d["meta"]["timing"]["reason"] and "1.00 CPU s per s" in d["meta"]["timing"]["reason"]
    assert d["systems"]["int8"]["score"] is not None and d["systems"]["int8"]["latency_ms_b32"] is None


def test_timing_refused_while_a_training_holds_its_lock(built) -> None:
    from compresslab import runlock
    from compresslab.bench.quiet import require_quiet

    with runlock.hold(runlock.Role.TRAINING, "a test training"):
        with pytest.raises(runlock.MachineBusyError, match="training"):
            require_quiet("suite test", reader=FakeCpu(other=0.0), probe_s=0.0, sleep=lambda s: None, allow_busy=False)


def test_quiet_machine_times_every_cell_once_interleaved(built, monkeypatch) -> None:
    monkeypatch.setitem(peers.PEERS, "broken", Broken())
    monkeypatch.setitem(peers.PEERS, "fake_venv", FakeVenvPeer())
    code = suite.run_task(built.plan, work=built.root / "work", results_dir=built.root / "results", timing=True,
                          quiet=QUIET)
    d = suite.ResultsFile(built.root / "results" / "suite_tiny.json").load()
    assert code == 0 and d["meta"]["timing"]["status"] == "timed"
    timed = set(d["meta"]["timing"]["timed"])
    assert timed == {"int8", "int8_openvino", OURS, f"{OURS}_openvino", f"{OURS}_openvino_nncf", "dense_ort_fp32",
                     "dense_torch_fp32",
                     "ort_quantize_dynamic", "ort_quantize_dynamic_fused",
                     "torch_ao_dynamic_int8", "fake_venv"}
    for n in timed:
        s = d["systems"][n]
        assert s["latency_ms_b1"] > 0 and s["latency_ms_b32"] > 0 and s["throughput_real"] > 0
        assert s["timing"] == ("alternating processes (fake)" if n == "fake_venv" else "interleaved in one process")
    assert d["systems"]["broken"]["latency_ms_b32"] is None
    assert d["meta"]["timing"]["external"]["fake_venv"]["reference"]["dense_torch_fp32"]["latency_ms_b32"] == 2e6
    # the ORT/OpenVINO comparison and the verdicts come from these figures
    r = d["runtimes"]["int8"]
    assert r["faster"] in ("ort", "openvino", "tie") and r["ort_ms_b32"] == d["systems"]["int8"]["latency_ms_b32"]
    v = d["verdicts"]
    assert set(v) == {"int8", "dense_ort_fp32", "dense_torch_fp32", "ort_quantize_dynamic",
                      "ort_quantize_dynamic_fused", "torch_ao_dynamic_int8", "fake_venv"}
    assert all(h["system"] in (OURS, f"{OURS}_openvino", f"{OURS}_openvino_nncf", "int8_openvino") for x in v.values()
               for h in x["beaten_by"])
    assert v["fake_venv"]["status"] in ("beaten", "peer wins")  # timed: never undecided
    assert all(h["latency_ratio"] <= 1.0 for h in v["fake_venv"]["beaten_by"])
    # a later scoring-only run keeps those timings for the unchanged cells
    suite.run_task(built.plan, work=built.root / "work", results_dir=built.root / "results", timing=False)
    d2 = suite.ResultsFile(built.root / "results" / "suite_tiny.json").load()
    assert d2["systems"]["int8"]["latency_ms_b32"] == d["systems"]["int8"]["latency_ms_b32"]
    assert set(d2["meta"]["timing"]["kept_from_earlier_run"]) == timed
    phase = d2["meta"]["timing"]["earlier_phase"]  # the kept figures keep their own phase's record
    assert phase["status"] == "timed" and set(phase["timed"]) == timed
    suite.run_task(built.plan, work=built.root / "work", results_dir=built.root / "results", timing=False)
    d3 = suite.ResultsFile(built.root / "results" / "suite_tiny.json").load()
    assert d3["meta"]["timing"]["earlier_phase"] == phase  # and through a second scoring-only run


def test_report_has_a_table_per_task_and_the_isa(built, tmp_path) -> None:
    from benchmarks.suite_report import write_report

    out = write_report(built.root / "results", tmp_path / "REPORT.md")
    md = out["md"].read_text()
    assert "## tiny" in md and "| int8 | peer |" in md and "boom: the tool said no (42)" in md
    assert f"| {OURS} | compresslab |" in md and "| int8_openvino | compresslab |" in md and "Verdicts (issue 14)" in md and "OpenVINO b32 ms" in md
    isa = built.data["meta"]["cpu_isa"]
    if isa:
        assert f"b32 ms [{', '.join(isa)}]" in md
    assert out["html"].read_text().startswith("<!DOCTYPE html>") or "<h1>" in out["html"].read_text()


def test_bad_settings_are_refused_before_any_work(built, monkeypatch) -> None:
    with pytest.raises(suite_plan.SuiteError, match=r"unknown peer\(s\) \['broken', 'fake_venv'\] in the suite config"):
        suite_plan.plan(built.cfg, "tiny", "smoke", None)  # not registered outside the fixture
    monkeypatch.setitem(peers.PEERS, "broken", Broken())
    monkeypatch.setitem(peers.PEERS, "fake_venv", FakeVenvPeer())
    with pytest.raises(suite_plan.SuiteError, match="unknown task 'nope'"):
        suite_plan.plan(built.cfg, "nope", "smoke", None)
    with pytest.raises(suite_plan.SuiteError, match="unknown budget 'huge'.*smoke"):
        suite_plan.plan(built.cfg, "tiny", "huge", None)
    with pytest.raises(suite_plan.SuiteError, match=r"unknown cell\(s\) \['int9'\]"):
        suite_plan.plan(built.cfg, "tiny", "smoke", ["int9"])
    assert suite.main(["--task", "nope", "--config", str(REPO / "benchmarks" / "suite.yaml")]) == 2
    with pytest.raises(suite_plan.SuiteError,
                       match=r"unknown backend\(s\) \['tensorrt'\].*allowed: \['ort', 'openvino'\]"):
        suite_plan.backends({**built.cfg, "backends": ["ort", "tensorrt"]})


class _FakeStore:
    def __init__(self, preds: dict[str, np.ndarray]) -> None:
        self._p = preds

    def preds(self, name: str, key: str) -> np.ndarray:
        return self._p[key]


def _kind() -> Any:
    from compresslab.data.tasks import TaskKind

    return TaskKind.CLASSIFICATION
