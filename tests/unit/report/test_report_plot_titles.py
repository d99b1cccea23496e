"""Every plot's title fits its figure (trial 47b, B5): a comparison group's name made the Pareto plot's title
"sst2 · dev.tsv · 54a9c12c · dev, 64 of 872 examples (task.max_dev=64, seed 42): score vs size", which ran off
both edges on one line. ``plots.set_title`` wraps a title at word breaks into lines that fit, for every plot."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from compresslab.report import plots
from compresslab.report.compare import RunPoint, pareto_front

FIXTURE = Path(__file__).with_name("manifest_full.json")
GROUP = "sst2 · dev.tsv · 54a9c12c · dev, 64 of 872 examples (task.max_dev=64, seed 42)"
LONG = "_of_a_user_pipeline_with_a_long_descriptive_name"


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures the plots draw, kept (``plots._png`` still renders each, so the layout is the saved one)."""
    kept: list[Figure] = []
    png = plots._png

    def keep(fig: Figure) -> bytes:
        kept.append(fig)
        return png(fig)

    monkeypatch.setattr(plots, "_png", keep)
    return kept


def _titles(fig: Figure) -> list[Text]:
    texts = [t for ax in fig.axes for t in (ax.title, ax._left_title, ax._right_title)]
    return [t for t in [*texts, fig._suptitle] if t is not None and t.get_text()]


def _assert_titles_inside(fig: Figure, wanted: str | None = None) -> None:
    renderer = fig.canvas.get_renderer()
    titles = _titles(fig)
    assert titles, "the plot has a title"
    for t in titles:
        box, page = t.get_window_extent(renderer), fig.bbox
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, (
            f"title {t.get_text()!r} spans x {box.x0:.0f}..{box.x1:.0f}, y {box.y0:.0f}..{box.y1:.0f}; "
            f"the figure is {page.width:.0f} x {page.height:.0f} px")
    if wanted is not None:  # wrapped, not cut: every word is still there, in order
        assert [" ".join(t.get_text().split()) for t in titles] == [wanted]


def _long_names(m: dict) -> dict:
    """The full manifest with a long metric name and long step names, so each plot's title is long."""
    m = copy.deepcopy(m)
    m["eval"]["primary_metric"] = "accuracy" + LONG
    for s in m["steps"]:
        s["name"] = s["pass"]["name"] = s["name"] + LONG
    return m


@pytest.mark.parametrize("name", sorted(plots.PLOTS))
def test_each_report_plot_title_fits_the_figure(name: str, figures: list[Figure]) -> None:
    assert plots.PLOTS[name](_long_names(json.loads(FIXTURE.read_text()))) is not None
    _assert_titles_inside(figures[-1])


def _run(name: str, score: float, size: float) -> RunPoint:
    return RunPoint(run_dir=Path(name), name=name, pipeline=name.split("/")[0], task="sst2", status="finished",
                    metric="accuracy", teacher=0.5156, score=score, agreement=None, size_bytes=size,
                    ref_size_bytes=91e6, shape=None, p50_ms=None, ref_p50_ms=None, speedup=None, speedup_best=None,
                    busy=False, machine=("cpu", 2), tolerance=0.01)


@pytest.mark.parametrize("n_runs", [2, 40])  # the figure grows with its points (figure_for): both sizes
def test_a_comparison_groups_long_title_is_wrapped_inside(n_runs: int, figures: list[Figure]) -> None:
    runs = [_run(f"obert_int8/{i:012x}", 0.48 + 0.001 * i, 24e6 + 1e5 * i) for i in range(n_runs)]
    title = f"{GROUP}: score vs latency (AMD EPYC 7B13 64-Core Processor, 2 threads)"
    assert plots.pareto_plot(runs, pareto_front(runs, "size_bytes"), "size_bytes", "ref_size_bytes",
                             "deployed file size (MB)  ← smaller", title, scale=1e-6) is not None
    _assert_titles_inside(figures[-1], title)


def test_a_short_title_stays_on_one_line() -> None:
    fig = plots.new_figure()
    assert plots.set_title(fig.add_subplot(), "sst2: score vs size").get_text() == "sst2: score vs size"
