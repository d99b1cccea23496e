"""The cross-run view's pieces (Pareto front, swept settings, collecting runs) and the formatting helpers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from compresslab.report.compare import RunPoint, collect, default_out, pareto_front, point, varied
from compresslab.report.fmt import plain
from compresslab.report.sections import config_yaml

RUNS = Path(__file__).with_name("runs")


def pt(name: str, score: float | None, p50: float | None, **settings: object) -> RunPoint:
    return RunPoint(run_dir=Path(name), name=name, pipeline="p", task="t", status="finished", metric="accuracy",
                    teacher=0.9, score=score, agreement=None, size_bytes=None, ref_size_bytes=None, shape="b32xs128",
                    p50_ms=p50, ref_p50_ms=None, speedup=None, speedup_best=None, busy=False, machine=("cpu", 2),
                    tolerance=0.01, settings=dict(settings))


def test_pareto_front_keeps_the_undominated() -> None:
    a, b, c, d = pt("a", 0.90, 30), pt("b", 0.88, 31), pt("c", 0.85, 20), pt("d", 0.85, 20)
    none = pt("e", None, 10)  # no score: not compared
    assert [p.name for p in pareto_front([a, b, c, d, none], "p50_ms")] == ["a", "c", "d"]  # ties both stay
    assert pareto_front([], "p50_ms") == []


def test_varied_settings_ignore_keys_a_run_lacks() -> None:
    runs = [pt("a", 0.9, 1, **{"pipeline.passes.obert.sparsity": 0.5, "seed": 42}),
            pt("b", 0.9, 1, **{"pipeline.passes.obert.sparsity": 0.7, "seed": 42, "run.keep": "all"}),
            pt("c", 0.9, 1, **{"pipeline.passes.obert.sparsity": 0.7, "seed": 42})]
    assert varied(runs) == ["pipeline.passes.obert.sparsity"]


def test_point_reads_a_real_manifest() -> None:
    m = json.loads((RUNS / "obert_int8_smoke.json").read_text())
    p = point(Path("outputs/obert_int8/7aa5f2ac8c4f"), m)
    assert p.name == "obert_int8/7aa5f2ac8c4f" and p.shape == "b4xs32" and p.machine == ("AMD EPYC", 1)
    assert p.speedup == pytest.approx(m["bench"]["speedups"]["deployed"]["b4xs32"])
    assert p.size_bytes == m["size"]["deployed"]["total"] and not p.busy
    assert not any(k.startswith(("paths.", "run.dir")) or k.endswith("_target_") for k in p.settings)
    assert p.settings["pipeline.passes.obert.sparsity"] == 0.8


def test_collect_takes_run_dirs_and_manifest_paths(tmp_path: Path) -> None:
    run = tmp_path / "outputs" / "int8" / "abc"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text((RUNS / "int8_smoke.json").read_text())
    (tmp_path / "outputs" / "int8" / "notes.txt").write_text("x")
    (tmp_path / "outputs" / "int8" / "empty").mkdir()
    bad = tmp_path / "outputs" / "int8" / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{oops")
    paths = [run, run / "manifest.json", tmp_path / "outputs" / "int8" / "notes.txt",
             tmp_path / "outputs" / "int8" / "empty", bad]
    runs, skipped = collect(paths)
    assert [d for d, _ in runs] == [run]  # the manifest path stands for the same run: once
    assert len(skipped) == 2 and "empty: no manifest.json" in skipped[0] and "not readable JSON" in skipped[1]
    assert default_out([run]) == (tmp_path / "outputs" / "int8" / "compare").resolve()


def test_the_readme_says_where_a_comparison_goes(tmp_path: Path) -> None:
    """Each README line ``--compare GLOB  # -> DIR/compare.{md,html}`` names the folder default_out picks for
    those runs (trial 47b, B10: it said outputs/compare for one pipeline's runs, which go to
    outputs/obert_int8/compare)."""
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    examples = re.findall(r"--compare (\S+)\s+# -> (\S+)/compare\.\{md,html\}", readme)
    assert examples, "the README shows where a comparison goes"
    for run in ("outputs/obert_int8/aaa", "outputs/obert_int8/bbb", "outputs/int8/ccc"):
        (tmp_path / run).mkdir(parents=True)
    for glob, where in examples:
        runs = sorted(tmp_path.glob(glob))
        assert len(runs) >= 2, glob
        assert default_out(runs) == (tmp_path / where).resolve(), f"--compare {glob} -> {where}"


def test_plain_never_writes_a_repr() -> None:
    assert plain({"model": "AMD", "isa": {"avx2": True}}) == "model: AMD; isa: (avx2: yes)"
    assert plain([[1, 128], [32, 128]]) == "(1, 128), (32, 128)"
    assert plain([]) == "—" and plain(None) == "—" and plain(0.000123456) == "0.0001235"


def test_config_yaml_round_trips_in_order() -> None:
    cfg = {"model": {"source": "embedded"}, "bench": {"shapes": [[1, 128], [32, 128]], "backends": ["ort"]},
           "pipeline": {"passes": {"q": {"keep": None}}, "steps": ["finetune", "int8"]}}
    text = config_yaml(cfg)
    assert yaml.safe_load(text) == cfg
    assert text.splitlines()[0] == "model:" and "  shapes: [[1, 128], [32, 128]]" in text
    assert "  steps: [finetune, int8]" in text


def test_a_busy_runs_speedups_are_both_marked() -> None:
    """× ort_fp32 and × best_dense come from one timing: a busy one voids both (trial 40: only the first said so)."""
    import dataclasses

    from compresslab.report.compare import _runs_table

    quiet = dataclasses.replace(pt("q", 0.9, 20.0), speedup=2.0, speedup_best=1.5)
    busy = dataclasses.replace(pt("b", 0.9, 20.0), speedup=2.0, speedup_best=1.5, busy=True)
    rows = {r[0]: r for r in _runs_table([quiet, busy]).rows}
    assert rows["b"][-2].endswith("(busy)") and rows["b"][-1].endswith("(busy)")
    assert "busy" not in rows["q"][-2] and "busy" not in rows["q"][-1]
