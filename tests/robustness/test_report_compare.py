"""Issue #12, the cross-run view (``python -m compresslab.report --compare outputs/*/*``): the runs
table, Pareto plots, the sweep summary, and which runs are ranked together.

Runs are the real smoke manifest with their figures set (``_report_runs.sweep_run``); plots are
drawn once (the first case) and elsewhere recorded (the ``drawn`` fixture) or left out (``no_plots``).
"""

from __future__ import annotations

import copy
import json
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _report_runs import manifest, sweep_run
from compresslab.report import plots
from compresslab.report.__main__ import main
from compresslab.report.compare import compare
from compresslab.report.render import Bullets, Document, Para, to_html, to_markdown

case = pytest.mark.case


@dataclass
class Drawing:
    """One call of ``plots.pareto_plot``: its title, the cost on the x axis and the runs plotted."""

    title: str
    cost: str
    points: list[Any]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Drawing]:
    """``plots.pareto_plot`` replaced by a recorder (each call a :class:`Drawing`; fake PNG bytes
    back, so the plot files are written): which plots a comparison draws, without drawing."""
    calls: list[Drawing] = []

    def record(points: Any, front: Any, cost: str, ref_cost: str, xlabel: str, title: str, **k: Any) -> bytes:
        calls.append(Drawing(title, cost, list(points)))
        return b"\x89PNG fake"

    monkeypatch.setattr(plots, "pareto_plot", record)
    return calls


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Pareto plot is drawn (``pareto_plot`` returns None): drawing is the first case's."""
    monkeypatch.setattr(plots, "pareto_plot", lambda *a, **k: None)


@case(name="cross-run view: --compare outputs/*/* with Pareto plots of score vs latency and vs size", kind="first",
      bad_input=False, expected="compare.md/html with every run against its own teacher and export, Pareto plots "
                                "(PNG) of score vs latency and vs size; other files and the comparison's own output "
                                "passed over")
def test_compare_writes_table_and_pareto_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str], observe) -> None:
    out = tmp_path / "outputs"
    sweep_run(out, 0.5, 0.900, 30.0, 30.0)
    sweep_run(out, 0.7, 0.880, 31.0, 25.0)  # dominated on latency by 0.5 (worse and slower)
    sweep_run(out, 0.9, 0.850, 20.0, 20.0)
    (out / "obert_int8" / "run.log").write_text("a log beside the runs")
    args = sorted(str(p) for p in out.glob("*/*"))
    assert main(["--compare", *args]) == 0
    written = sorted(Path(p).name for p in capsys.readouterr().out.split())
    assert written == ["compare.html", "compare.md", "pareto_latency.png", "pareto_size.png"]
    cmp = out / "obert_int8" / "compare"
    for png in (cmp / "plots").iterdir():
        assert png.read_bytes().startswith(b"\x89PNG")
    md = (cmp / "compare.md").read_text()
    assert "| obert_int8/sweep070b4xs32 | obert.sparsity=0.7 | 90.50 | 88.00 | -2.50 ⚠ |" in md
    assert "Not compared" not in md  # the log file is passed over silently
    assert main(["--compare", *sorted(str(p) for p in out.glob("*/*"))]) == 0  # again, with compare/ among them
    assert "Not compared" not in (cmp / "compare.md").read_text()
    observe(md.split("## Runs")[1].split("###")[0].strip()[:480])


@case(name="multirun sweep summary", kind="first", bad_input=False,
      expected="per pipeline, the swept settings with each run's score and speed, the Pareto fronts, and the fastest "
               "run within eval.max_drop; busy timings left out of speed picks")
def test_sweep_summary(tmp_path: Path, observe, no_plots: None) -> None:
    out = tmp_path / "outputs"
    runs = [sweep_run(out, 0.5, 0.900, 30.0, 30.0), sweep_run(out, 0.7, 0.880, 31.0, 25.0),
            sweep_run(out, 0.9, 0.850, 20.0, 20.0), sweep_run(out, 0.8, 0.904, 10.0, 22.0, busy=True)]
    md = compare(runs)["compare.md"].read_text()
    sweep = md.split("### Sweep: obert_int8 on sst2")[1]
    assert "4 runs; settings that differ between them: obert.sparsity." in sweep
    assert [line.split("|")[1].strip() for line in sweep.splitlines() if line.startswith("| 0.")] == \
        ["0.5", "0.7", "0.8", "0.9"]
    assert "Pareto front, score vs latency: obert.sparsity=0.5; obert.sparsity=0.9." in sweep
    assert "Fastest within the tolerance (1.00 pt, eval.max_drop): obert.sparsity=0.5: 2.00x at -0.50 pt" in sweep
    assert "Timed on a busy machine, so left out of the speed comparisons: obert_int8/sweep080bb4xs32." in sweep
    observe(" / ".join(line for line in sweep.splitlines() if line.startswith("- ")))


@case(name="cross-run view: runs timed at other shapes", kind="own", bad_input=False,
      expected="absolute latencies plotted only for runs at one shape and machine; the others named as left out")
def test_compare_leaves_out_other_shapes(tmp_path: Path, drawn: list[Drawing]) -> None:
    out = tmp_path / "outputs"
    runs = [sweep_run(out, 0.5, 0.9, 30.0, 30.0), sweep_run(out, 0.7, 0.89, 25.0, 25.0),
            sweep_run(out, 0.9, 0.85, 200.0, 20.0, shape="b32xs128")]
    md = compare(runs)["compare.md"].read_text()
    assert [f"{p.name}:{drawn[0].cost}" for p in drawn[0].points] == ["obert_int8/sweep050b4xs32:p50_ms",
                                                                      "obert_int8/sweep070b4xs32:p50_ms"]
    assert len(drawn[1].points) == 3  # size compares across shapes
    assert "Not in the latency plot" in md and "obert_int8/sweep090b32xs128 (timed at b32xs128" in md


@case(name="--compare given no run directory", kind="own",
      expected="a one-line error saying what a run directory is, exit code 2, no traceback")
def test_compare_without_runs(tmp_path: Path, expect_clear) -> None:
    (tmp_path / "notes.txt").write_text("x")
    expect_clear(lambda: compare([tmp_path / "outputs" / "*" / "*", tmp_path / "notes.txt"]),
                 match=r"None of the 2 paths.*is a run directory.*--compare outputs/\*/\*")


@case(name="--compare on the real CLI with no runs", kind="own",
      expected="exit code 2, the message on stderr, no traceback")
def test_compare_cli_entry_point(tmp_path: Path, expect_clear, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m compresslab.report --compare ...`` as the shell runs it, in process (runpy): a
    subprocess would pay the package's torch import for nothing."""
    monkeypatch.setattr(sys, "argv", ["compresslab.report", "--compare", str(tmp_path / "nope")])
    monkeypatch.delitem(sys.modules, "compresslab.report.__main__", raising=False)
    expect_clear(lambda: runpy.run_module("compresslab.report", run_name="__main__"))
    err = capsys.readouterr().err
    assert err.startswith("error: None of the 1 paths") and "is a run directory with a manifest.json" in err
    assert "Traceback" not in err


@case(name="cross-run view: runs of different tasks", kind="own", bad_input=False,
      expected="one pair of Pareto plots per task (scores of different tasks never share an axis)")
def test_compare_plots_per_task(tmp_path: Path, drawn: list[Drawing]) -> None:
    out = tmp_path / "outputs"
    runs = [sweep_run(out, 0.5, 0.9, 30.0, 30.0), sweep_run(out, 0.7, 0.89, 25.0, 25.0)]
    m = json.loads((runs[1] / "manifest.json").read_text())
    m["task"], m["config_hash"] = "mrpc", "mrpc070"
    other = out / "obert_int8" / "mrpc070"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps(m))
    written = compare([*runs, other])
    assert {"plots/pareto_latency_sst2.png", "plots/pareto_size_sst2.png", "plots/pareto_latency_mrpc.png",
            "plots/pareto_size_mrpc.png"} <= set(written)
    assert all(len({p.task for p in d.points}) == 1 for d in drawn)


@case(name="cross-run view: a run moved aside by run.overwrite=true", kind="own", bad_input=False,
      expected="outputs/*/* passes over <hash>.replaced-<time> beside its live run and says how many; given "
               "alone, it is compared under a label of its own (never two rows named alike)")
def test_compare_skips_replaced_runs(tmp_path: Path, no_plots: None, observe) -> None:
    out = tmp_path / "outputs"
    live = sweep_run(out, 0.5, 0.9, 30.0, 30.0)
    old = sweep_run(tmp_path / "old", 0.5, 0.8, 30.0, 30.0)
    moved = live.with_name(f"{live.name}.replaced-1700000000")
    old.rename(moved)
    md = compare(sorted(out.glob("*/*")))["compare.md"].read_text()
    rows = [line for line in md.split("## Runs")[1].splitlines() if line.startswith("| obert_int8/")]
    assert len(rows) == 1 and "| 88.00 |" not in rows[0] and "90.00" in rows[0]
    assert "1 replaced run (" in md.split("### Not compared")[1]
    alone = compare([moved], tmp_path / "cmp")["compare.md"].read_text()
    assert "| obert_int8/sweep050b4xs32 (replaced 2023-11-" in alone
    observe(md.split("### Not compared")[1].strip()[:300])


@case(name="cross-run view: task=generic runs on different dev data", kind="own", bad_input=False,
      expected="runs grouped by task and by the sha256 of their dev data (manifest inputs): one sweep and one "
               "pair of Pareto plots per dev set, named task · dev file · short hash; never ranked together")
def test_compare_groups_generic_runs_by_dev_data(tmp_path: Path, drawn: list[Drawing], observe) -> None:
    out = tmp_path / "outputs"
    runs = [sweep_run(out, s, 0.9 - s / 10, 30.0, 30.0) for s in (0.5, 0.6, 0.7, 0.8)]
    busy_inputs = manifest("magnitude_int8_busy")["inputs"]
    for run, (name, sha, labels) in zip(runs, [("reviews.csv", "a" * 64, ["neg", "pos"])] * 2
                                         + [("tickets.csv", "b" * 64, ["a", "b", "c", "d"])] * 2):
        m = json.loads((run / "manifest.json").read_text())
        m["task"] = "generic"
        m["inputs"] = copy.deepcopy(busy_inputs)
        m["inputs"]["data"]["files"]["dev"] = {"path": f"/home/ada/{name}", "sha256": sha}
        m["inputs"]["data"]["labels"] = labels
        (run / "manifest.json").write_text(json.dumps(m))
    written = compare(runs)
    md = written["compare.md"].read_text()
    assert "### Sweep: obert_int8 on generic · reviews.csv · aaaaaaaa" in md
    assert "### Sweep: obert_int8 on generic · tickets.csv · bbbbbbbb" in md
    assert "Sweep: obert_int8 on generic\n" not in md
    assert {"plots/pareto_size_generic_reviews.csv_aaaaaaaa.png",
            "plots/pareto_size_generic_tickets.csv_bbbbbbbb.png"} <= set(written)
    assert all(len(d.points) == 2 for d in drawn) and len(drawn) == 4
    observe("; ".join(d.title for d in drawn))


@case(name="report.md and compare.md show HTML escapes such as '&gt; 1: faster'", kind="own", bad_input=False,
      expected="Markdown has the plain characters (> and <); only a '<' that could open a tag is backslash-escaped; "
               "the HTML keeps escaping")
def test_markdown_has_plain_characters(tmp_path: Path, no_plots: None, observe) -> None:
    written = compare([sweep_run(tmp_path / "outputs", 0.5, 0.9, 30.0, 30.0)])
    md, page = written["compare.md"].read_text(), written["compare.html"].read_text()
    assert "&gt;" not in md and "&lt;" not in md and "> 1: faster" in md
    assert "&gt; 1: faster" in page
    doc = Document("t", [Para("<script>x</script> and a < b > c"), Bullets(["> quoted?", "<!-- hidden -->"])])
    text = to_markdown(doc)
    assert "\\<script>x\\</script> and a < b > c" in text and "- \\> quoted?" in text and "- \\<!-- hidden" in text
    assert "&lt;script&gt;" in to_html(doc, {})
    observe(next(line for line in md.splitlines() if "faster" in line)[-120:])


def _edit(run: Path, change) -> Path:
    """Rewrite a run's manifest through ``change(m)``."""
    m = json.loads((run / "manifest.json").read_text())
    change(m)
    (run / "manifest.json").write_text(json.dumps(m))
    return run


def _bench_off(m: dict) -> None:
    """As a run made with bench.enabled=false records it: no bench section, the stage off in the config."""
    del m["bench"]
    m["config"]["bench"]["enabled"] = False


@case(name="cross-run view: a sweep made with bench.enabled=false says 'no run within tolerance'", kind="own",
      bad_input=False, expected="the summary says no latency was measured (bench.enabled=false) and ranks by score "
                                "and size: the size front, the smallest run within the tolerance, the best score; "
                                "'bench off' in the speed columns; never 'no run within tolerance'")
def test_compare_sweep_without_latency(tmp_path: Path, drawn: list[Drawing], observe) -> None:
    out = tmp_path / "outputs"
    runs = [_edit(sweep_run(out, s, score, 30.0, size), _bench_off)
            for s, score, size in ((0.5, 0.903, 30.0), (0.7, 0.898, 25.0), (0.9, 0.850, 20.0))]
    written = compare(runs)
    md = written["compare.md"].read_text()
    sweep = md.split("### Sweep: obert_int8 on sst2")[1]
    assert "within its tolerance" not in md
    assert ("No latency was measured (bench.enabled=false in every run), so speed is not compared: the runs are "
            "ranked by score and size only.") in sweep
    assert "Pareto front, score vs size: obert.sparsity=0.5; obert.sparsity=0.7; obert.sparsity=0.9." in sweep
    assert "Smallest within the tolerance (1.00 pt, eval.max_drop): obert.sparsity=0.7: 25.0 MB at -0.70 pt" in sweep
    assert "Best score: obert.sparsity=0.5: 90.30 % (-0.20 pt" in sweep
    assert "Pareto front, score vs latency" not in sweep and "Fastest" not in sweep
    runs_table = md.split("## Runs")[1].split("###")[0]
    assert runs_table.count("| bench off |") == 3 and "bench off = bench.enabled=false: no latency measured" in md
    assert "Not in the latency plot: no run was timed (bench.enabled=false in every run)." in md
    assert set(written) == {"compare.md", "compare.html", "plots/pareto_size.png"}  # no latency plot to draw
    observe(" / ".join(line for line in sweep.splitlines() if line.startswith("- ")))


@case(name="cross-run view: a sweep where one run was made with bench.enabled=false", kind="own", bad_input=False,
      expected="speed picks among the timed runs; the untimed run named as left out of the speed comparisons "
               "(bench.enabled=false), still in the size ranking")
def test_compare_sweep_with_one_untimed_run(tmp_path: Path, no_plots: None) -> None:
    out = tmp_path / "outputs"
    runs = [sweep_run(out, 0.5, 0.900, 30.0, 30.0), sweep_run(out, 0.7, 0.898, 20.0, 25.0),
            _edit(sweep_run(out, 0.9, 0.899, 30.0, 18.0), _bench_off)]
    sweep = compare(runs)["compare.md"].read_text().split("### Sweep: obert_int8 on sst2")[1]
    assert "Fastest within the tolerance (1.00 pt, eval.max_drop): obert.sparsity=0.7: 3.00x" in sweep
    assert ("Not timed, so left out of the speed comparisons: obert_int8/sweep090b4xs32 (bench.enabled=false)."
            in sweep)
    assert "Smallest within the tolerance (1.00 pt, eval.max_drop): obert.sparsity=0.9: 18.0 MB" in sweep
    assert "No latency was measured" not in sweep


@case(name="cross-run view: a sweep without latency where no run is within the tolerance", kind="own",
      bad_input=False, expected="says no latency was measured and no run is within its tolerance (by score), "
                                "never that no run timed on a quiet machine is")
def test_compare_untimed_sweep_out_of_tolerance(tmp_path: Path, no_plots: None) -> None:
    out = tmp_path / "outputs"
    runs = [_edit(sweep_run(out, s, 0.85 - s / 10, 30.0, 30.0 - s), _bench_off) for s in (0.5, 0.9)]
    sweep = compare(runs)["compare.md"].read_text().split("### Sweep: obert_int8 on sst2")[1]
    assert "No latency was measured (bench.enabled=false in every run)" in sweep
    assert "No run is within its tolerance (eval.max_drop)." in sweep
    assert "timed on a quiet machine" not in sweep and "Smallest within" not in sweep


def _subset(n: int, seed: int = 42, split: str = "dev"):
    """Score the run on ``n`` examples of ``split`` drawn with ``seed`` (task.max_dev=n when a slice of dev)."""
    def change(m: dict) -> None:
        m["eval"]["n"], m["eval"]["split"], m["config"]["eval"]["split"] = n, split, split
        m["data"]["val_seed"] = m["seed"] = seed
        m["data"]["max_dev"] = m["config"]["task"]["max_dev"] = n if split == "dev" and n < 872 else None
        m["data"]["sizes"][split] = n
    return change


@case(name="cross-run view: runs scored on different dev subsets (task.max_dev, debug=smoke, seed)", kind="own",
      bad_input=False, expected="runs grouped by the examples scored (split, count, seed of the slice): one sweep "
                                "and one pair of plots per group, each named with its subset; never ranked together")
def test_compare_groups_runs_by_scored_subset(tmp_path: Path, drawn: list[Drawing], observe) -> None:
    out = tmp_path / "outputs"
    smoke = [_edit(sweep_run(out, s, 0.9 - s / 20, 30.0, 30.0 - s), _subset(64)) for s in (0.5, 0.6)]
    full = [_edit(sweep_run(out, s, 0.9 - s / 20, 30.0, 30.0 - s), _subset(872)) for s in (0.7, 0.8)]
    other_seed = [_edit(sweep_run(out, s, 0.9 - s / 20, 30.0, 30.0 - s), _subset(64, seed=7)) for s in (0.85, 0.9)]
    written = compare(smoke + full + other_seed)
    md = written["compare.md"].read_text()
    groups = ["sst2 · dev, 64 of 872 examples (task.max_dev=64, seed 42)", "sst2 · dev, all 872 examples",
              "sst2 · dev, 64 of 872 examples (task.max_dev=64, seed 7)"]
    for g in groups:
        assert f"### Sweep: obert_int8 on {g}\n" in md and f"### Pareto plots: {g}\n" in md
    assert md.count("### Sweep: ") == 3 and "2 runs; settings that differ" in md and "4 runs" not in md
    assert "never ranked together: " + "; ".join(groups) + "." in md
    assert {"plots/pareto_size_sst2_dev64s42.png", "plots/pareto_size_sst2_dev872.png",
            "plots/pareto_latency_sst2_dev64s7.png"} <= set(written)
    assert all(len(d.points) == 2 for d in drawn) and len(drawn) == 6
    observe("groups: " + "; ".join(groups))


@case(name="cross-run view: runs scored on dev and on the validation split (eval.split)", kind="own",
      bad_input=False, expected="two groups, one named 'validation, N examples carved from train (seed S)'")
def test_compare_separates_eval_splits(tmp_path: Path, no_plots: None) -> None:
    out = tmp_path / "outputs"
    dev = [sweep_run(out, s, 0.9 - s / 20, 30.0, 30.0) for s in (0.5, 0.6)]
    val = [_edit(sweep_run(out, s, 0.9 - s / 20, 30.0, 30.0), _subset(32, split="validation")) for s in (0.7, 0.8)]
    md = compare(dev + val)["compare.md"].read_text()
    assert "### Sweep: obert_int8 on sst2 · dev, 64 of 872 examples (task.max_dev=64, seed 42)\n" in md
    assert "### Sweep: obert_int8 on sst2 · validation, 32 examples carved from train (seed 42)\n" in md


@case(name="cross-run view: runs scored on validation splits of different carves (task.val_carve)", kind="own",
      bad_input=False, expected="two groups: the random carve's name as before, the grouped carve's named by it")
def test_compare_separates_validation_carves(tmp_path: Path, no_plots: None) -> None:
    out = tmp_path / "outputs"

    def grouped(m: dict) -> None:
        m["data"]["val_carve"] = m["config"]["task"]["val_carve"] = "grouped"

    rand = [_edit(sweep_run(out, s, 0.9 - s / 20, 30.0, 30.0), _subset(32, split="validation")) for s in (0.5, 0.6)]
    grp = [_edit(_edit(sweep_run(out, s, 0.9 - s / 20, 30.0, 30.0), _subset(32, split="validation")), grouped)
           for s in (0.7, 0.8)]
    md = compare(rand + grp)["compare.md"].read_text()
    assert "### Sweep: obert_int8 on sst2 · validation, 32 examples carved from train (seed 42)\n" in md
    assert "### Sweep: obert_int8 on sst2 · validation, 32 examples carved from train (grouped, seed 42)\n" in md


@case(name="cross-run view: runs on one dev subset", kind="own", bad_input=False,
      expected="one group named by its task only (the subset is not spelled out when nothing differs)")
def test_compare_one_subset_is_one_group(tmp_path: Path, no_plots: None) -> None:
    out = tmp_path / "outputs"
    runs = [sweep_run(out, s, 0.9 - s / 20, 30.0, 30.0) for s in (0.5, 0.6, 0.7)]
    md = compare(runs)["compare.md"].read_text()
    assert "### Sweep: obert_int8 on sst2\n" in md and "3 runs; settings" in md and "never ranked together" not in md
