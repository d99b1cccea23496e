"""``compresslab.evaluate(folder, data)`` scores a run's folder the way the run did, and says how it scored.

A trial: ``evaluate(run/steps/01_int8, dev)`` as the README shows it gave 53.12% where the run's report said
50.00%: evaluate's defaults (max_length 128, batch 64) were not the run's (64, 32), the folder did not record them,
the result did not say which it used, an OpenVINO IR was scored in bf16 without saying so, and the log counted the
one dataset twice ("data 32, eval_data 32"). Every exported folder now records the run's scoring settings
(``compresslab_eval.json``), evaluate() defaults to them and its result names its batch size, max_length, runtime
and precision, and where each setting came from.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import torch

import compresslab
from compresslab.eval.scoring_settings import SCORING_FILE
from compresslab.testing import tiny_generic_run, tiny_sentiment, trained_tiny

NAMES = ["neg", "pos"]


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    return [(e.text_a, NAMES[e.label]) for e in tiny_sentiment(n, seed)]


@pytest.fixture(scope="module")
def int8_export(tiny_tok, tmp_path_factory) -> tuple[Path, dict]:
    """An ORT dynamic-int8 export of compress() at max_length=24 (not evaluate's 128), and compress()'s metrics."""
    r = compresslab.compress(trained_tiny(), tiny_tok, ["ort_int8_dynamic"], data=_pairs(64, 0),
                             eval_data=_pairs(32, 1), max_length=24, batch_size=8, progress=False)
    out = r.export(tmp_path_factory.mktemp("int8") / "onnx")
    metrics = r.metrics
    r.close()
    return out, metrics


def test_an_export_records_how_it_was_scored_and_evaluate_scores_so(int8_export):
    out, metrics = int8_export
    recorded = json.loads((out / SCORING_FILE).read_text())
    assert (recorded["max_length"], recorded["batch_size"], recorded["kind"], recorded["primary_metric"]) == \
        (24, 64, "classification", "accuracy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a batch-dependence warning is the next test's
        res = compresslab.evaluate(out, _pairs(32, 1))
    assert res["score"] == metrics["eval"]["score"]  # the number compress() reported, as a fraction
    assert 0 <= res["score"] <= 1
    assert (res["max_length"], res["batch_size"]) == (24, 64)
    assert res["settings_from"] == {"max_length": str(out / SCORING_FILE), "batch_size": str(out / SCORING_FILE)}
    assert (res["runtime"], res["precision"], res["format"]) == ("onnxruntime", "f32", "int8")
    given = compresslab.evaluate(out, _pairs(32, 1), max_length=16, batch_size=4)
    assert (given["max_length"], given["batch_size"], given["settings_from"]["batch_size"]) == (16, 4, "given")


def test_a_batch_dependent_file_is_also_scored_one_sentence_per_call(int8_export):
    out, _ = int8_export
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = compresslab.evaluate(out, _pairs(32, 1), batch_size=32)
    dep = res["batch_dependence"]
    assert dep["ops"] and set(dep["ops"]) <= {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QAttention"}
    assert dep["batch_size"] == 32 and dep["score_batched"] == res["score"] and 0 <= dep["score_b1"] <= 1
    differs = dep["flips"] or dep["score_b1"] != dep["score_batched"]
    assert bool([w for w in caught if "depends on the batch" in str(w.message)]) == bool(differs)
    assert "batch_dependence" not in compresslab.evaluate(out, _pairs(8, 1), batch_size=1)  # b1 already


def test_a_folder_without_the_record_says_it_used_the_defaults(int8_export, tmp_path, tiny_tok):
    import shutil

    out, _ = int8_export
    bare = Path(shutil.copytree(out, tmp_path / "bare"))
    (bare / SCORING_FILE).unlink()
    res = compresslab.evaluate(bare, _pairs(8, 1), batch_size=1)
    assert (res["max_length"], res["settings_from"]["max_length"]) == (128, "default")
    torch_res = compresslab.evaluate(trained_tiny(), _pairs(8, 1), tiny_tok)
    assert (torch_res["runtime"], torch_res["precision"], torch_res["format"]) == ("torch", "f32", "fp32")
    assert (torch_res["max_length"], torch_res["batch_size"]) == (128, 64)
    with pytest.raises(ValueError, match="precision='f32' is OpenVINO's compiled precision"):
        compresslab.evaluate(bare, _pairs(8, 1), precision="f32")


def test_the_recorded_metric_is_the_score(int8_export, tmp_path):
    """A CoLA or MRPC run reports Matthews correlation or F1: evaluate() of its folder scores that, not accuracy."""
    import shutil

    out, _ = int8_export
    f1 = Path(shutil.copytree(out, tmp_path / "f1"))
    rec = json.loads((f1 / SCORING_FILE).read_text())
    (f1 / SCORING_FILE).write_text(json.dumps({**rec, "primary_metric": "f1"}))
    res = compresslab.evaluate(f1, _pairs(16, 1), batch_size=1)
    assert res["primary_metric"] == "f1" and res["score"] == res["f1"]
    assert compresslab.evaluate(f1, _pairs(16, 1), batch_size=1, kind="classification")["primary_metric"] == "f1"


def test_the_data_is_read_once_and_named_as_the_argument(int8_export, caplog):
    out, _ = int8_export
    with caplog.at_level(logging.INFO, logger="compresslab"):
        compresslab.evaluate(out, _pairs(32, 1), batch_size=1)
    line = next(r.getMessage() for r in caplog.records if "classes" in r.getMessage())
    assert "eval_data" not in line and "(data " in line, line
    with pytest.raises(ValueError, match=r"data\[3\]"):  # a bad example is named by evaluate's own argument
        compresslab.evaluate(out, [*_pairs(3, 1), ("", "pos")], batch_size=1)


def test_a_runs_folders_score_as_its_report_says(tmp_path):
    """A real tiny pipeline run (int8; on OpenVINO where installed): every folder a reader gives evaluate(), the
    ONNX step, the export and the deployed IR, scores what the run's eval section recorded, at its settings
    (debug=smoke: max_length 32, eval batch 32), the IR at the deploy precision the run compiled."""
    from compresslab.config import compose
    from compresslab.manifest import read_json
    from compresslab.pipeline import run

    try:
        import openvino  # noqa: F401
        deploy = "openvino"
    except ImportError:
        deploy = "ort"
    over = ["+pipeline=int8", *tiny_generic_run(tmp_path, "int8"), "bench=off", f"deploy={deploy}", "run.threads=1"]
    d = run(compose(over), overrides=over)
    m = read_json(d / "manifest.json")
    models = m["eval"]["models"]
    folders = {"ort_fp32": d / "export", ("deployed_onnx_ort" if deploy == "openvino" else "deployed"):
               d / "steps" / "01_int8", **({"deployed": (d / m["export"]["deployed"]["path"]).parent}
                                            if deploy == "openvino" else {})}
    for label, folder in folders.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = compresslab.evaluate(folder, tmp_path / "dev.csv")
        assert (res["max_length"], res["batch_size"]) == (32, 32), label
        assert res["score"] == models[label]["score"], label
        if res["runtime"] == "openvino":
            assert res["precision"] == m["eval"]["deployed_precision"]
            assert res["settings_from"]["precision"].startswith(str(folder / SCORING_FILE))
