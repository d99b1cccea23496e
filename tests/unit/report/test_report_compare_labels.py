"""The comparison's plots name each point by what sets its run apart (trial 47b, B6): a sweep's Pareto plot
labelled points "magnitude_int8/b2b6fb77245d" while the runs table beside it said magnitude.sparsity=0.7.
``compare.assign_labels`` uses the table's facts (the settings swept between one pipeline's runs of a group),
adds the pipeline where a group holds several, and keeps the run's name where nothing sets it apart."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from matplotlib.figure import Figure

from compresslab.report import plots
from compresslab.report.compare import RunPoint, _runs_table, assign_labels, build_comparison

RUNS = Path(__file__).with_name("runs")
SPARSITY = "pipeline.passes.magnitude.sparsity"


def run(name: str, group: str = "sst2", **settings: object) -> RunPoint:
    return RunPoint(run_dir=Path(name), name=name, pipeline=name.split("/")[0], task="sst2", status="finished",
                    metric="accuracy", teacher=0.9, score=0.88, agreement=None, size_bytes=24e6,
                    ref_size_bytes=91e6, shape=None, p50_ms=None, ref_p50_ms=None, speedup=None, speedup_best=None,
                    busy=False, machine=("cpu", 2), tolerance=0.01, settings={"seed": 42, **settings}, group=group)


def labels(points: list[RunPoint]) -> list[str]:
    assign_labels(points)
    return [p.label for p in points]


def test_a_sweeps_points_are_named_by_the_swept_setting() -> None:
    points = [run("magnitude_int8/85464b2e354d", **{SPARSITY: 0.5}), run("magnitude_int8/b2b6fb77245d",
                                                                         **{SPARSITY: 0.7})]
    assert labels(points) == ["magnitude.sparsity=0.5", "magnitude.sparsity=0.7"]
    table = {r[0]: r[1] for r in _runs_table(points).rows}  # the same facts as the table's settings column
    assert [table[p.name] for p in points] == [p.label for p in points]


def test_several_pipelines_are_named_by_pipeline_then_setting() -> None:
    points = [run("magnitude_int8/aaa", **{SPARSITY: 0.5}), run("magnitude_int8/bbb", **{SPARSITY: 0.7}),
              run("obert_int8/ccc", **{"pipeline.passes.obert.sparsity": 0.8})]
    assert labels(points) == ["magnitude_int8: magnitude.sparsity=0.5", "magnitude_int8: magnitude.sparsity=0.7",
                              "obert_int8"]


@pytest.mark.parametrize("case", ["one run", "same settings", "same pipeline, other groups"])
def test_the_name_stays_where_nothing_differs(case: str) -> None:
    points = {"one run": [run("int8/aaa")],
              "same settings": [run("int8/aaa", **{SPARSITY: 0.5}), run("int8/aaa (replaced 2026-12-07 13:00)",
                                                                        **{SPARSITY: 0.5})],
              "same pipeline, other groups": [run("int8/aaa", "sst2 · dev64s42", **{SPARSITY: 0.5}),
                                              run("int8/bbb", "sst2 · val32s42", **{SPARSITY: 0.7})]}[case]
    assert labels(points) == [p.name for p in points]


def test_many_swept_settings_stay_short() -> None:
    swept = [{"a.x": 1, "a.y": 1, "a.z": 1}, {"a.x": 2, "a.y": 2, "a.z": 2}]
    assert labels([run(f"p/{i}", **s) for i, s in enumerate(swept)]) == ["a.x=1, a.y=1, …", "a.x=2, a.y=2, …"]


def test_a_long_value_keeps_its_end() -> None:
    points = [run("int8/aaa", **{"model.source": "/work/trial47/models/distilbert"}),
              run("int8/bbb", **{"model.source": "/work/trial47/models/minilm"})]
    assert labels(points) == ["model.source=…ial47/models/distilbert", "model.source=…k/trial47/models/minilm"]


def test_runs_alike_in_the_first_settings_show_them_all() -> None:
    swept = [{"a.x": 1, "a.y": 1, "a.z": 1}, {"a.x": 1, "a.y": 1, "a.z": 2}, {"a.x": 2, "a.y": 2, "a.z": 1},
             {"a.x": "/a/" + "z" * 30, "a.y": 0, "a.z": 0}, {"a.x": "/b/" + "z" * 30, "a.y": 0, "a.z": 0}]
    assert labels([run(f"p/{i}", **s) for i, s in enumerate(swept)]) == [
        "a.x=1, a.y=1, a.z=1", "a.x=1, a.y=1, a.z=2", "a.x=2, a.y=2, …",
        f"a.x=/a/{'z' * 30}, a.y=0, a.z=0", f"a.x=/b/{'z' * 30}, a.y=0, a.z=0"]  # alike in their values' ends


def test_the_plots_of_a_sweep_show_the_swept_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end from manifests: the Pareto plot's point labels are the setting, not the config hash."""
    figures: list[Figure] = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"png")
    runs = []
    for sparsity, h, score in ((0.5, "85464b2e354d", 0.80), (0.7, "b2b6fb77245d", 0.85)):
        m = json.loads((RUNS / "obert_int8_smoke.json").read_text())
        m["config_hash"] = h
        m["config"]["pipeline"]["passes"]["obert"]["sparsity"] = sparsity
        m["eval"]["models"]["deployed"]["score"] = score
        runs.append((Path("outputs/obert_int8") / h, m))
    _, pngs = build_comparison(runs, [])
    assert pngs and len(figures) == len(pngs)
    for fig in figures:
        assert sorted(t.get_text() for t in fig.axes[0].texts) == ["obert.sparsity=0.5", "obert.sparsity=0.7"]


@pytest.mark.parametrize("kind", ["run without a label", "suite system (benchmarks/suite_report.Point)"])
def test_a_point_without_label_is_named_by_its_run(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    figures: list[Figure] = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"png")
    p = dataclasses.replace(run("int8/aaa"), label="") if kind.startswith("run") else SimpleNamespace(
        name="int8/aaa", score=0.88, metric="accuracy", teacher=0.9, size_bytes=24e6, ref_size_bytes=91e6)
    assert plots.pareto_plot([p], [p], "size_bytes", "ref_size_bytes", "size", "t", scale=1e-6)
    assert [t.get_text() for t in figures[0].axes[0].texts] == ["int8/aaa"]
