"""Plots render headless on Agg, skip cleanly without data, and never take the report down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from compresslab.report import plots

FIXTURE = Path(__file__).with_name("manifest_full.json")


def test_figures_use_the_agg_canvas() -> None:
    assert isinstance(plots.new_figure().canvas, FigureCanvasAgg)


def test_headless_with_interactive_backend_requested(tmp_path: Path) -> None:
    """No display, MPLBACKEND asking for Tk: plots still render on Agg, pyplot never loads,
    and the process-wide backend setting is left as the caller had it."""
    steps_only = {"steps": json.loads(FIXTURE.read_text())["steps"][:1]}  # one plot is enough
    (tmp_path / "manifest.json").write_text(json.dumps(steps_only))
    script = textwrap.dedent(f"""
        import sys, matplotlib
        from compresslab.report import build_report
        written = build_report({str(tmp_path)!r})
        assert list(written)[0] == "plots/size_per_step.png", written
        assert "matplotlib.pyplot" not in sys.modules
        assert matplotlib.rcParams._get("backend").lower() == "tkagg"
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(MPLBACKEND="TkAgg", PYTHONPATH=str(Path(__file__).parents[3]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("name", sorted(plots.PLOTS))
def test_each_plot_skips_without_data(name: str) -> None:
    assert plots.PLOTS[name]({}) is None


def test_plots_are_deterministic() -> None:
    """No timestamp/version metadata: an unchanged manifest rebuilds byte-identical PNGs."""
    m = json.loads(FIXTURE.read_text())
    assert plots.layer_sparsity(m) == plots.layer_sparsity(m)


def test_a_failing_plot_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(m: object) -> bytes:
        raise ValueError("bad structure")

    monkeypatch.setattr(plots, "PLOTS", {"structure.png": broken,
                                         "layer_sparsity.png": plots.layer_sparsity})
    pngs, errors = plots.draw_all(json.loads(FIXTURE.read_text()))
    assert list(pngs) == ["layer_sparsity.png"]
    assert errors == {"structure.png": "ValueError: bad structure"}


def test_structure_plot_needs_numeric_lists() -> None:
    m = {"steps": [{"index": 0, "name": "ziplm", "result": {"structure": {"heads": ["?"]}}}]}
    assert plots.structure(m) is None


def _ziplm_run(before: object = None) -> dict:
    """Trial 47's ziplm_int8 on a 2-layer, 4-head, 256-wide RoBERTa: one head per layer left, FFN 0 and 32."""
    metrics = {} if before is None else {"structure_before": before}
    return {"steps": [{"index": 1, "name": "ziplm", "pass": {"name": "ziplm"},
                       "result": {"structure": {"heads": [1, 1], "ffn": [0, 32]}, "metrics": metrics}}]}


def test_the_structure_plot_shows_the_widths_the_step_started_from() -> None:
    # trial 47b B11: the kept bars alone (1 head, an FFN of 0) did not say that 3 of 4 heads and all 256 neurons went
    fig = plots.structure_figure(_ziplm_run({"heads": [4, 4], "ffn": [256, 256]}))
    heads, ffn = fig.axes
    assert [p.get_height() for p in heads.patches] == [4, 4, 1, 1]  # the faint full bars, then the kept ones
    assert [p.get_height() for p in ffn.patches] == [256, 256, 0, 32]
    assert heads.patches[0].get_alpha() < 0.5 and heads.patches[2].get_alpha() is None
    assert [t.get_text() for t in ffn.texts] == ["0/256", "32/256"]
    assert [t.get_text() for t in heads.get_legend().get_texts()] == ["before 01 ziplm", "kept"]
    assert all(float(t).is_integer() for t in heads.get_yticks())  # head counts: no 0.2-head ticks
    assert " ".join(fig.get_suptitle().split()) == "Structure after 01 ziplm (faint: the widths before it)"
    assert plots.structure(_ziplm_run({"heads": [4, 4], "ffn": [256, 256]})).startswith(b"\x89PNG")


@pytest.mark.parametrize("before", [None, {"heads": [4], "ffn": "?"}])
def test_a_run_without_the_widths_before_plots_the_kept_ones_alone(before: object) -> None:
    # a manifest written before passes recorded structure_before, or one that does not fit the kept lists
    fig = plots.structure_figure(_ziplm_run(before))
    assert [p.get_height() for p in fig.axes[1].patches] == [0, 32]
    assert fig.axes[0].get_legend() is None and fig.get_suptitle() == "Structure after 01 ziplm"
