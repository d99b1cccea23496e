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
