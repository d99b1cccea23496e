"""What a deployer takes from a run dir without reading compresslab's code (trial 48, findings 2, 8, 11).

2. Every deployable folder a run writes (the ONNX step folder, ``export/``, ``export/openvino/``, the API's
   ``result.export(dir)``) carries a tokenizer whose ``tok(x, truncation=True)`` cuts at the length the run scored
   at; the tokenizer's own ``model_max_length`` is kept in the folder's ``compresslab_eval.json``.
8. The manifest's ``deploy`` entry names the deployed file and folder, and ``DEPLOYED.txt`` in the run dir says
   the same in words, for ORT int8 and for ``deploy=openvino``.
11. ``eval/rows.json`` names the dev rows a seeded ``task.max_dev`` subset scored: a reader rebuilds the subset
   from the file alone and scores the run's number.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import compresslab
from compresslab.eval.scoring_settings import SCORING_FILE
from compresslab.manifest import read_json
from compresslab.testing import tiny_generic_run, tiny_sentiment, trained_tiny, write_csv

ORIGINAL_LENGTH = "tokenizer_model_max_length"  # the record's key for the tokenizer's own limit

LONG = "word " * 700  # far past any length a run scores at, and past BERT's 512


def _run(root: Path, max_length: int, *extra: str) -> Path:
    from compresslab.config import compose
    from compresslab.pipeline import run

    over = ["+pipeline=int8", *tiny_generic_run(root, "int8"), "bench=off", "run.threads=1",
            f"task.max_length={max_length}", *extra]
    return run(compose(over), overrides=over)


@pytest.fixture(scope="module")
def ort_run(tmp_path_factory) -> Path:
    """A tiny int8 run deployed on ORT, scored at max_length 8 (some rows are longer) on a seeded 10-row dev
    subset."""
    return _run(tmp_path_factory.mktemp("ort"), 8, "deploy=ort", "task.max_dev=10")


@pytest.fixture(scope="module")
def ov_run(tmp_path_factory) -> Path:
    pytest.importorskip("openvino")
    return _run(tmp_path_factory.mktemp("ov"), 24, "deploy=openvino")


def _truncates_at(folder: Path) -> int:
    tok = AutoTokenizer.from_pretrained(folder)
    return len(tok(LONG, truncation=True)["input_ids"])


def _check_folder(folder: Path, max_length: int) -> None:
    assert _truncates_at(folder) == max_length, folder
    recorded = json.loads((folder / SCORING_FILE).read_text())
    assert recorded["max_length"] == max_length and ORIGINAL_LENGTH in recorded, folder


def test_every_folder_of_an_ort_run_truncates_at_the_scored_length(ort_run):
    m = read_json(ort_run / "manifest.json")
    length = m["config"]["task"]["max_length"]
    assert length == 8
    for folder in (ort_run / "steps" / "01_int8", ort_run / "export"):
        _check_folder(folder, length)


def test_the_openvino_folder_truncates_at_the_scored_length(ov_run):
    m = read_json(ov_run / "manifest.json")
    assert m["export"]["deployed"]["runtime"] == "openvino"
    for folder in (ov_run / m["export"]["deployed"]["path"]).parent, ov_run / "steps" / "01_int8", ov_run / "export":
        _check_folder(folder, 24)


@pytest.mark.parametrize("passes", [["ort_int8_dynamic"], ["magnitude"]], ids=["onnx_pass", "torch_only"])
def test_the_apis_export_truncates_at_compress_max_length(tiny_tok, tmp_path, passes):
    pairs = [(e.text_a, ["neg", "pos"][e.label]) for e in tiny_sentiment(48, 0)]
    r = compresslab.compress(trained_tiny(), tiny_tok, passes, data=pairs, eval_data=pairs[:16], max_length=20,
                             batch_size=8, progress=False)
    try:
        out = r.export(tmp_path / "onnx")
    finally:
        r.close()
    _check_folder(out, 20)


def test_a_bert_tokenizer_keeps_its_own_limit_in_the_record(tmp_path):
    """The pin replaces a real limit (BERT's 512) and a saved backend truncation (``max_length``), and the
    record keeps the 512; writing the record again (the deploy stage adds the IR's precision) keeps it."""
    from compresslab.eval.scoring_settings import add_scoring_settings, scoring_settings, write_scoring_settings
    from compresslab.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer(tmp_path / "src")
    tok.model_max_length = 512
    tok.save_pretrained(tmp_path / "f")
    cfg = json.loads((tmp_path / "f" / "tokenizer_config.json").read_text())
    (tmp_path / "f" / "tokenizer_config.json").write_text(json.dumps({**cfg, "max_length": 128}))
    assert _truncates_at(tmp_path / "f") == 512
    write_scoring_settings(tmp_path / "f", scoring_settings(max_length=64, batch_size=8, kind="classification",
                                                            primary_metric="accuracy", task="t", split="dev"))
    add_scoring_settings(tmp_path / "f", openvino_precision="f32")
    assert _truncates_at(tmp_path / "f") == 64
    assert json.loads((tmp_path / "f" / "tokenizer_config.json").read_text())["max_length"] == 64
    assert json.loads((tmp_path / "f" / SCORING_FILE).read_text())[ORIGINAL_LENGTH] == 512


def test_an_ort_manifest_and_pointer_name_the_int8_step(ort_run):
    m = read_json(ort_run / "manifest.json")
    assert (m["deploy"]["path"], m["deploy"]["folder"]) == ("steps/01_int8/model.onnx", "steps/01_int8/")
    assert m["deploy"]["path"] == m["export"]["deployed"]["path"] == m["eval"]["deployed_path"]
    text = (ort_run / "DEPLOYED.txt").read_text()
    assert text.startswith("Deployed: steps/01_int8/model.onnx  (runtime ort") and "max_length=8" in text
    assert "Ship the whole folder steps/01_int8/" in text


def test_an_openvino_manifest_and_pointer_name_the_ir(ov_run):
    m = read_json(ov_run / "manifest.json")
    dep = m["export"]["deployed"]
    assert m["deploy"]["path"] == dep["path"] == m["eval"]["deployed_path"]
    assert m["deploy"]["path"].startswith("export/openvino") and m["deploy"]["path"].endswith("openvino_model.xml")
    assert m["deploy"]["folder"] == str(Path(dep["path"]).parent) + "/" and (ov_run / m["deploy"]["folder"]).is_dir()
    text = (ov_run / "DEPLOYED.txt").read_text()
    assert text.startswith(f"Deployed: {dep['path']}  (runtime openvino")
    assert f"Ship the whole folder {m['deploy']['folder']}" in text


def test_the_scored_dev_rows_rebuild_the_runs_score_from_the_file_alone(ort_run, tmp_path):
    m = read_json(ort_run / "manifest.json")
    assert m["eval"]["rows"] == "eval/rows.json"
    rows = read_json(ort_run / "eval" / "rows.json")
    assert rows["split"] == "dev" and rows["n"] == m["eval"]["n"] == 10 and rows["max_dev"] == 10
    assert len(rows["rows"]) == 10 and rows["rows"] == sorted(rows["rows"])
    assert rows["file"]["path"].endswith("dev.csv")
    with open(rows["file"]["path"], newline="") as f:
        every = list(csv.reader(f))
    header, data = every[0], every[1:]
    assert len(set(rows["rows"])) == 10 and max(rows["rows"]) < len(data)
    # the first 10 rows are not the subset (a reader taking them would score other examples)
    assert rows["rows"] != list(range(10))
    subset = write_csv(tmp_path / "subset.csv", header, [data[i] for i in rows["rows"]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = compresslab.evaluate(ort_run / "steps" / "01_int8", subset)
    assert res["score"] == m["eval"]["models"]["deployed"]["score"]


def test_a_whole_dev_split_is_named_all(ov_run):
    rows = read_json(ov_run / "eval" / "rows.json")
    assert rows["rows"] == "all" and rows["split"] == "dev"
