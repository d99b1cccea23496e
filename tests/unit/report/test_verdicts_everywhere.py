"""Every warning of the report's Summary that the tolerance does not give (report/verdicts.run_flags: a teacher no
better than chance, a deployed classifier that predicts one class, a low agreement with the teacher, a deployed file
slower than the dense teacher) reaches every place a run's result is summed up: the report's Headline (its table read
fine: trial 47/47b), the CLI's last lines after a run, the search's record of a candidate, and compress()'s result.
One rule set, so no place calls a run fine that another flags. Fabricated from a copied smoke manifest."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from compresslab.api import CompressResult, result_flags
from compresslab.cli import _print_run_dir, run_dir_flags
from compresslab.report.render import to_markdown
from compresslab.report.sections import build_document
from compresslab.report.verdicts import run_flags
from compresslab.search.objective import read_run

RUNS = Path(__file__).with_name("runs")


def _base() -> dict[str, Any]:
    """int8_smoke (64 dev examples) with a usable teacher (90% against a 50% majority share): no flag."""
    m = copy.deepcopy(json.loads((RUNS / "int8_smoke.json").read_text()))
    m["eval"]["majority_share"] = 0.5
    for key in ("teacher_torch", "torch_final", "ort_fp32", "deployed"):
        m["eval"]["models"][key].update(score=0.9, accuracy=0.9, predicted_classes=2, agreement=1.0)
    return m


def _weak(m: dict[str, Any]) -> None:
    m["eval"]["models"]["teacher_torch"].update(score=0.5, accuracy=0.5, predicted_classes=1)


def _one_class(m: dict[str, Any]) -> None:
    m["eval"]["models"]["deployed"].update(score=0.5, accuracy=0.5, predicted_classes=1, agreement=0.92)


def _low(m: dict[str, Any]) -> None:
    m["eval"]["models"]["deployed"].update(score=0.89, accuracy=0.89, agreement=0.8)


def _slower(m: dict[str, Any]) -> None:
    for table in ("speedups", "speedups_best_dense"):
        m["bench"][table]["deployed"] = {"b1xs32": 0.8, "b4xs32": 0.7}


CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    # case: (how, the flag's words, the Summary's words)
    "weak teacher": (_weak, "teacher no better than chance", "The teacher is no better than chance"),
    "one class": (_one_class, "predicts the same class for every example", "predicts the same class"),
    "low agreement": (_low, "low agreement with the teacher: 20.0% of the predictions changed (13 of 64)",
                      "low agreement: 20.0% of the predictions changed"),
    "slower": (_slower, "the deployed file is slower than the dense teacher: 0.70x ort_fp32",
               "The deployed file is slower than the dense teacher"),
}


def _sections(m: dict[str, Any]) -> dict[str, str]:
    md = to_markdown(build_document(m, set(), {}, "outputs/x/y"))
    return {part.split("\n", 1)[0]: part for part in md.split("\n## ")[1:]}


def test_a_clean_run_has_no_flag_anywhere(tmp_path, capsys):
    m = _base()
    assert run_flags(m) == []
    assert "Also flagged" not in _sections(m)["Headline"]
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    _print_run_dir(tmp_path)
    assert "warning:" not in capsys.readouterr().out


@pytest.mark.parametrize("case", CASES)
def test_each_summary_warning_reaches_the_headline_and_the_cli(case, tmp_path, capsys):
    how, flag, summary_words = CASES[case]
    m = _base()
    how(m)
    flags = run_flags(m)
    assert len(flags) == 1 and flag in flags[0], flags
    sections = _sections(m)
    assert summary_words in sections["Summary"]
    headline = sections["Headline"]
    assert "Also flagged (the Summary says why and what to do): " + flags[0] in headline
    if case == "low agreement":  # the table's own cell is marked by the same bar
        assert "| 80.00 ⚠ |" in headline
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert run_dir_flags(tmp_path) == flags
    _print_run_dir(tmp_path)
    assert f"warning: {flags[0]}" in capsys.readouterr().out.splitlines()


def test_the_cli_lines_survive_a_run_dir_without_a_readable_manifest(tmp_path):
    assert run_dir_flags(tmp_path) == []
    (tmp_path / "manifest.json").write_text("{not json")
    assert run_dir_flags(tmp_path) == []


@pytest.mark.parametrize("case", ["weak teacher", "one class"])
def test_the_search_reads_the_same_words(case):
    m = _base()
    CASES[case][0](m)
    m["eval"]["split"] = "validation"
    got = read_run(m, None)
    words = got["weak_teacher"] if case == "weak teacher" else got["one_class"]
    assert words and words in run_flags(m)[0]


def _api_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """compress()'s metrics["eval"] (pipeline/evaluate.final_eval) holding the records of ``m``'s eval."""
    ev, models = m["eval"], m["eval"]["models"]
    return {"eval": {"split": "eval_data", "n": ev["n"], "primary_metric": ev["primary_metric"],
                     "score": models["deployed"]["score"], "majority_share": ev["majority_share"],
                     "models": {"teacher": models["teacher_torch"], "torch_final": models["torch_final"],
                                "deployed": models["deployed"]}}}


@pytest.mark.parametrize("case", ["weak teacher", "one class", "low agreement"])  # compress() times nothing
def test_compress_results_carry_the_same_flags_and_show_them(case, tmp_path):
    m = _base()
    CASES[case][0](m)
    metrics = _api_metrics(m)
    flags = result_flags(metrics)
    assert flags == [f.replace("on dev", "on eval_data").replace("of dev", "of eval_data") for f in run_flags(m)]
    # with no ONNX pass the torch model is what compress() returns: it is judged in the deployed one's place
    metrics["eval"]["models"]["torch_final"] = metrics["eval"]["models"].pop("deployed")
    assert result_flags(metrics) == flags
    r = CompressResult(model=None, tokenizer=None, metrics=metrics, run_dir=tmp_path, warnings=flags)
    assert repr(r).startswith(f"CompressResult(run_dir={str(tmp_path)!r}, onnx_path=None, accuracy=")
    assert repr(r).endswith(f"warnings={flags!r})")
    assert result_flags({"steps": []}) == []


@pytest.mark.parametrize("case, column, mark", [("low agreement", 5, " ⚠ low"), ("slower", 9, " ⚠ slower")])
def test_compare_marks_the_same_runs(case, column, mark, tmp_path):
    # --compare ranks runs: a run the Summary flags must not sit there unmarked (chance and one class already were)
    import dataclasses

    from compresslab.report.compare import _runs_table, point

    m = _base()
    CASES[case][0](m)
    flagged = dataclasses.replace(point(tmp_path / "a", m), name="flagged")
    clean = dataclasses.replace(point(tmp_path / "b", _base()), name="clean")
    rows = {r[0]: r for r in _runs_table([flagged, clean]).rows}
    assert rows[flagged.name][column].endswith(mark) and mark not in rows[clean.name][column]
    assert mark.strip(" ⚠") in _runs_table([flagged]).caption
