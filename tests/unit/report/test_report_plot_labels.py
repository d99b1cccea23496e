"""Point labels on the score-vs-cost plots stand apart: the suite's SST-2 plot (33 systems, most between 50 and
350 ms) printed names over each other, unreadable. ``plots.label_points`` places them (adjustText) and the figure
grows with its points (``plots.figure_for``)."""

from __future__ import annotations

import numpy as np

from compresslab.report import plots


def _label_boxes(fig) -> list:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    return [t.get_window_extent(renderer) for t in ax.texts]


def _overlaps(boxes) -> int:
    return sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _crowd(n: int) -> list[tuple[float, float, str]]:
    rng = np.random.default_rng(0)  # a tight cluster, as the suite's int8 systems sit
    xs, ys = rng.uniform(100, 160, n), rng.uniform(89.0, 89.6, n)
    return [(float(x), float(y), f"system_{i}_int8_openvino") for i, (x, y) in enumerate(zip(xs, ys))]


def _draw(points, place: bool):
    fig = plots.figure_for(len(points))
    ax = fig.add_subplot()
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set_xlim(0, 200)
    ax.set_ylim(88.5, 90.0)
    if place:
        plots.label_points(ax, points)
    else:  # what the plots did before: every label at the same offset from its point
        for x, y, text in points:
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8)
    return fig


def test_crowded_labels_stand_apart() -> None:
    points = _crowd(20)
    before = _overlaps(_label_boxes(_draw(points, place=False)))
    after = _overlaps(_label_boxes(_draw(points, place=True)))
    assert before >= 10  # the case is really crowded
    assert after == 0, f"{after} label pairs still overlap (were {before})"


def test_the_figure_grows_with_its_points() -> None:
    small, crowded = plots.figure_for(5), plots.figure_for(40)
    assert tuple(small.get_size_inches()) == (7.0, 4.2)
    assert tuple(crowded.get_size_inches()) == (10.0, 7.0)


def test_no_points_draws_no_label() -> None:
    fig = plots.figure_for(0)
    ax = fig.add_subplot()
    plots.label_points(ax, [])
    assert not ax.texts
