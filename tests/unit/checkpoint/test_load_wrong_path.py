"""``compresslab.load``, ``load_pretrained`` and ``model.source`` given a path that is not a model directory: the
message says what the path is and which path to give instead (a trial found "cannot read <path>/config.json:
[Errno 2]" for a missing path, a run directory, its steps/ folder and its manifest.json alike, and
``load_pretrained`` of an ONNX step advising ``model.source``, a CLI setting)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import compresslab
from compresslab.checkpoint import check_source
from compresslab.models.loading import CheckpointError
from compresslab.models.tiny import tiny_model


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_tok) -> Path:
    """A run directory as a run leaves it: manifest.json, two torch steps, an ONNX step and export/."""
    run = tmp_path_factory.mktemp("run")
    (run / "manifest.json").write_text(json.dumps({"status": "finished"}))
    for step in ("00_finetune", "01_obert"):
        tiny_model().save_pretrained(run / "steps" / step)
        tiny_tok.save_pretrained(run / "steps" / step)
    for graph in (run / "steps" / "02_int8", run / "export"):
        graph.mkdir(parents=True)
        (graph / "config.json").write_text(json.dumps({"model_type": "bert"}))
        (graph / "model.onnx").write_bytes(b"")
        tiny_tok.save_pretrained(graph)
    (run / "plots").mkdir()
    unweighted = run / "steps" / "03_unweighted"  # a folder with config.json and a tokenizer, but no weights
    unweighted.mkdir()
    (unweighted / "config.json").write_text(json.dumps({"model_type": "bert"}))
    tiny_tok.save_pretrained(unweighted)
    return run


def _torch_steps(run: Path) -> str:
    return re.escape(f"use one of its torch steps: {run / 'steps' / '01_obert'} (the last; earlier: 00_finetune)")


CASES = {  # path under the run -> what the message must say
    "a path that does not exist": (lambda r: r / "nope", lambda r: re.escape(f"{r / 'nope'} does not exist")),
    "the run directory": (lambda r: r, lambda r: f"is a compresslab run directory, not a model: {_torch_steps(r)}; "
                          r"steps/02_int8/ and export/ are exported graphs \(score .* compresslab.evaluate"),
    "its steps folder": (lambda r: r / "steps", lambda r: f"the steps folder of the compresslab run {re.escape(str(r))}"
                         f", not a model: {_torch_steps(r)}"),
    "its manifest.json": (lambda r: r / "manifest.json",
                          lambda r: f"is a file of the compresslab run directory .*, not a model: {_torch_steps(r)}"),
    "a step's config.json": (lambda r: r / "steps" / "00_finetune" / "config.json",
                             lambda r: "is a file, not a model directory: give its folder, "
                             + re.escape(str(r / "steps" / "00_finetune")) + "$"),
    "a folder without config.json": (lambda r: r / "plots", lambda r: r"has no config.json, so it is not a model "
                                     r"directory \(it holds nothing\); .*model.save_pretrained\(DIR\)"),
    "an ONNX step": (lambda r: r / "steps" / "02_int8",
                     lambda r: r"holds an exported graph \(model.onnx\), not a torch checkpoint: score or time it with "
                     f"compresslab.evaluate .*; for a torch model of the run .*, {_torch_steps(r)}$"),
    # a trial: load(<ONNX step>/model.onnx) said "give its folder", and load(<that folder>) refused it as a graph
    "an ONNX step's model.onnx": (lambda r: r / "steps" / "02_int8" / "model.onnx",
                                  lambda r: r"02_int8/model.onnx is a file, not a model directory, and its folder is not "
                                  r"a torch checkpoint either: .*02_int8 holds an exported graph \(model.onnx\), not a "
                                  r"torch checkpoint: score or time it with compresslab.evaluate .*; for a torch model "
                                  f"of the run .*, {_torch_steps(r)}$"),
    "a file of a folder without weights": (lambda r: r / "steps" / "03_unweighted" / "config.json",
                                           lambda r: r"is a file, not a model directory, and its folder is not a torch "
                                           r"checkpoint either: no model.safetensors .* in .*03_unweighted"),
    "its export folder": (lambda r: r / "export",
                          lambda r: r"holds an exported graph \(model.onnx\), not a torch checkpoint: .*; for a torch "
                          f"model of the run {re.escape(str(r))}, {_torch_steps(r)}$"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("entry", ["load", "load_pretrained", "model.source"])
def test_a_path_that_is_no_model_dir_is_named_with_the_path_to_give(case, entry, run):
    path, match = CASES[case][0](run), CASES[case][1](run)
    call = {"load": compresslab.load, "load_pretrained": compresslab.load_pretrained, "model.source": check_source}
    with pytest.raises((CheckpointError, FileNotFoundError), match=match) as e:
        call[entry](path)
    assert "[Errno" not in str(e.value)
    assert "model.source" not in str(e.value) or entry == "model.source"  # no API advice in CLI terms


def test_a_folder_without_weights_names_what_the_caller_gave(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match=r"or give load_pretrained\(\) the directory that holds its weights"):
        compresslab.load_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"or give compresslab.load\(\) the directory that holds its weights"):
        compresslab.load(tmp_path)
    with pytest.raises(CheckpointError, match=r"or give model.source the directory that holds its weights"):
        check_source(tmp_path)


def test_a_hub_id_is_told_that_nothing_is_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="bert-base-uncased does not exist .*nothing is downloaded"):
        compresslab.load("bert-base-uncased")


ENTRIES = {"load": compresslab.load, "load_pretrained": compresslab.load_pretrained, "model.source": check_source}


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_a_path_the_message_advises_is_never_refused_in_turn(entry, run):
    """Every path under a run given to each entry: where the refusal advises another path ("give its folder, X", "use
    one of its torch steps: X"), X loads through the same entry (a trial was sent from model.onnx to its folder, which
    was then refused as an exported graph)."""
    call = ENTRIES[entry]
    advised: dict[Path, str] = {}
    for path in [run, *sorted(run.rglob("*"))]:
        try:
            call(path)
        except (CheckpointError, FileNotFoundError) as e:
            for m in re.finditer(r"(?:give its folder, |use one of its torch steps: )(\S+?)(?:[;,)]|$| \()", str(e)):
                advised[Path(m.group(1))] = f"{path}: {e}"
    assert advised, "no refusal advised a path: the cases above no longer reach this rule"
    for target, why in advised.items():
        try:
            call(target)
        except (CheckpointError, FileNotFoundError) as e:
            pytest.fail(f"{why}\n  advised {target}, which {entry} refuses: {e}")


def test_a_loose_graph_file_is_named_as_a_graph(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model.onnx is an exported graph, not a torch checkpoint: score or time it "
                                              r"with compresslab.evaluate .*optimum's ORTModel\* / OVModel\* need an "
                                              r"environment of their own with transformers<4.58"):
        compresslab.load(tmp_path / "model.onnx")
