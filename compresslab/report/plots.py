"""Draw the report's plots from a manifest, as PNG bytes.

Figures are built with matplotlib's object API on an explicit Agg canvas rather than through
``pyplot``: that needs no display, and it leaves the process-wide backend alone, so building a
report from a notebook or a GUI session does not switch the caller's plotting backend (STYLE.md
lists "process-wide state changed inside a helper" as a harm). Each plot returns ``None`` when
the manifest lacks its data; the caller skips it.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text

from compresslab.failure import error_text
from compresslab.report import facts as F

DPI = 100
_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")
MAX_SPARSITY_STEPS = 4  # more groups of bars per layer stop being readable
TITLE_MARGIN = 0.05  # of the room a title has, kept free at the figure's edge


def new_figure(width: float = 7.0, height: float = 4.2) -> Figure:
    """A figure bound to an Agg canvas: renders headless, touches no global backend."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_for(n_points: int) -> Figure:
    """A figure that grows with its labelled points: 7 x 4.2 in up to 8, up to 10 x 7 in for a crowded plot,
    so the labels have room to stand apart (:func:`label_points`)."""
    grow = min(max(n_points - 8, 0) / 24, 1.0)  # 0 at <= 8 points, 1 at >= 32
    return new_figure(7.0 + 3.0 * grow, 4.2 + 2.8 * grow)


def label_points(ax: Any, points: Sequence[tuple[float, float, str]], fontsize: float = 8) -> None:
    """Name each ``(x, y, text)`` point with a label placed off the others and off the markers (adjustText's
    repulsion; a thin grey leader line where a label had to move away from its point). Deterministic for the
    same points: a fixed iteration limit, no time limit, so the same manifest gives the same PNG bytes."""
    from adjustText import adjust_text

    if not points:
        return
    texts = [ax.text(x, y, text, fontsize=fontsize, zorder=4) for x, y, text in points]
    adjust_text(texts, x=[p[0] for p in points], y=[p[1] for p in points], ax=ax, iter_lim=500,
                expand=(1.1, 1.4), force_text=(0.2, 0.4), min_arrow_len=8,
                arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5, "alpha": 0.8})


def set_title(target: Axes | Figure, text: str) -> Text:
    """Title an axes (or a figure: its suptitle) with ``text`` wrapped at word breaks into lines that fit
    the figure, measured as laid out: a comparison group's name ("sst2 · dev.tsv · 54a9c12c · dev, 64 of 872
    examples (task.max_dev=64, seed 42): score vs size") ran off both edges on one line. Call it once the
    axes' ticks and labels are set: they decide where the axes, and so its centred title, sit."""
    fig = target if isinstance(target, Figure) else target.figure
    title = target.suptitle(text) if isinstance(target, Figure) else target.set_title(text)
    fig.draw_without_rendering()  # runs the layout: an axes title is centred over its axes, not the figure
    renderer = fig.canvas.get_renderer()
    box, page = title.get_window_extent(renderer), fig.bbox
    centre = (box.x0 + box.x1) / 2
    room = 2 * min(centre - page.x0, page.x1 - centre) * (1 - TITLE_MARGIN)
    width = len(text)  # characters a line may hold
    while (drawn := title.get_window_extent(renderer).width) > room and width > 1:
        # Narrow by the overshoot, at least one character a round: a few rounds, and the last one fits.
        width = max(1, min(width - 1, int(width * room / drawn)))
        title.set_text(textwrap.fill(text, width, break_on_hyphens=False))
    return title


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No "Software" metadata: the same manifest then gives byte-identical PNGs across versions.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _natural(key: str) -> list[Any]:
    """Sort ``layer.10`` after ``layer.9``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def score_vs_latency(m: Mapping[str, Any]) -> bytes | None:
    """Score against large-batch p50: the trade-off a deployer picks a point on."""
    shape = F.big_shape(F.shape_keys(m))
    pts = [(r.p50_ms[shape], r.score * 100, r.label) for r in F.model_rows(m)
           if shape and r.score is not None and shape in r.p50_ms]
    if not pts:
        return None
    fig = figure_for(len(pts))
    ax = fig.add_subplot()
    for i, (x, y, _) in enumerate(pts):
        ax.scatter([x], [y], s=60, color=_COLORS[i % len(_COLORS)], zorder=3)
    if (teacher := F.teacher_score(m)) is not None:
        ax.axhline(teacher * 100, ls="--", lw=1, color="grey", label="teacher")
        ax.legend(loc="lower right", fontsize=8)
    metric = F.get(m, "eval", "primary_metric") or "score"
    ax.set_xlabel(f"p50 latency at {shape} (ms)  ← faster")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_xlim(left=0, right=max(p[0] for p in pts) * 1.25)
    ax.margins(y=0.25)
    ax.grid(alpha=0.3)
    set_title(ax, f"{metric} vs latency ({shape})")
    label_points(ax, pts, fontsize=9)  # last: it reads the final axes limits
    return _png(fig)


def export_kind(rec: Mapping[str, Any]) -> str:
    """``IR`` for an OpenVINO IR (``.xml`` + ``.bin``), ``onnx`` for an ONNX file: an ``export.*`` record's format."""
    return "IR" if str(rec.get("path") or "").endswith(".xml") else "onnx"


def size_bars(m: Mapping[str, Any]) -> list[tuple[str, float, str]]:
    """The bars of :func:`size_per_step`, ``(label, MB, colour)``: each step's file (named for what it is when the
    pass wrote a smaller format too, and that format beside it), then every exported file, labelled by its format
    (``onnx``, ``IR``) and its name in the tables (the deployed file as ``deployed_<label>``, never a name a dense
    baseline has)."""
    bars: list[tuple[str, float, str]] = []
    for s in F.steps(m):
        if (b := F.num(F.get(s, "metrics_after", "size_bytes"))) is not None:
            kind = F.step_file_kind(s)  # a 4-bit step's fp32 fake-quant file is no 4-bit size
            bars.append((F.step_label(s) + (f" ({kind})" if kind else ""), b / 1e6, _COLORS[0]))
        for fmt, b in F.step_formats(s).items():
            bars.append((f"{F.step_label(s)} {fmt}", b / 1e6, _COLORS[2]))
    for name, v in F.as_dict(F.get(m, "export")).items():
        if (b := F.num(F.get(v, "size_bytes"))) is not None:
            label = F.deployed_label(m) if name == "deployed" else str(F.get(v, "label") or name)
            bars.append((f"{export_kind(v)} {label}", b / 1e6, _COLORS[1]))
    return bars


def size_per_step(m: Mapping[str, Any]) -> bytes | None:
    """Model size after each step, then the exported artifacts, in MB (10^6 bytes)."""
    bars = size_bars(m)
    if not bars:
        return None
    fig = new_figure(max(6.0, 0.9 * len(bars) + 2), 4.2)
    ax = fig.add_subplot()
    cont = ax.bar(range(len(bars)), [b[1] for b in bars], color=[b[2] for b in bars])
    ax.bar_label(cont, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("size (MB)")
    set_title(ax, "Size after each step (blue), formats a step also wrote (green), exported files (orange)")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def layer_sparsity(m: Mapping[str, Any]) -> bytes | None:
    """Per-layer sparsity of the last few pruning steps, to see where the pruner cut."""
    series = [(F.step_label(s), F.as_dict(F.get(s, "result", "structure", "layer_sparsity")))
              for s in F.steps(m)]
    series = [(lbl, d) for lbl, d in series if d][-MAX_SPARSITY_STEPS:]
    if not series:
        return None
    layers = sorted({k for _, d in series for k in d}, key=_natural)
    fig = new_figure(max(6.0, 0.35 * len(layers) * len(series) + 2), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for i, (lbl, d) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(layers))]
        ys = [(F.num(d.get(k)) or 0.0) * 100 for k in layers]
        ax.bar(xs, ys, width, label=lbl, color=_COLORS[i % len(_COLORS)])
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("sparsity (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    set_title(ax, "Per-layer sparsity")
    return _png(fig)


def structure(m: Mapping[str, Any]) -> bytes | None:
    """:func:`structure_figure` as a PNG."""
    fig = structure_figure(m)
    return None if fig is None else _png(fig)


def structure_figure(m: Mapping[str, Any]) -> Figure | None:
    """Kept attention heads and FFN width per layer after the last structural step, each over a faint bar of the
    width that step started from (``result.metrics.structure_before``, where the pass recorded it), labelled
    ``kept/before``: the kept bars alone do not show what was removed (trial 47b, B11)."""
    last = None
    for s in F.steps(m):
        st = F.as_dict(F.get(s, "result", "structure"))
        if isinstance(st.get("heads"), list) or isinstance(st.get("ffn"), list):
            last = (F.step_label(s), st, F.as_dict(F.get(s, "result", "metrics", "structure_before")))
    if last is None:
        return None
    label, st, before = last
    panels = [(key, title, vals) for key, title in (("heads", "kept heads"), ("ffn", "FFN width"))
              if isinstance(vals := st.get(key), list) and vals
              and all(F.num(v) is not None for v in vals)]
    if not panels:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, shown = new_figure(7.0, 3.2 * len(panels)), False
    for i, (key, title, vals) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        x, color = range(len(vals)), _COLORS[2 + i]
        full = before.get(key)
        if not (isinstance(full, list) and len(full) == len(vals) and all(F.num(v) is not None for v in full)):
            full = None
        if full is not None:
            shown = True
            ax.bar(x, full, color=color, alpha=0.18, edgecolor=color, linewidth=0.8, label=f"before {label}")
        cont = ax.bar(x, vals, color=color, label="kept" if full is not None else None)
        ax.bar_label(cont, labels=[f"{v}/{f}" for v, f in zip(vals, full)] if full is not None else None,
                     fontsize=8)
        ax.set_xticks(x, [f"layer {j}" for j in x], fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.2-head ticks
        ax.set_ylim(bottom=0)
        ax.set_ylabel(title)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
        if full is not None:
            ax.legend(fontsize=8, loc="upper right", framealpha=0.8)
    set_title(fig, f"Structure after {label}" + (" (faint: the widths before it)" if shown else ""))
    return fig


PLOTS: dict[str, Callable[[Mapping[str, Any]], bytes | None]] = {
    "score_vs_latency.png": score_vs_latency,
    "size_per_step.png": size_per_step,
    "layer_sparsity.png": layer_sparsity,
    "structure.png": structure,
}


def draw_all(m: Mapping[str, Any]) -> tuple[dict[str, bytes], dict[str, str]]:
    """Every plot the manifest has data for, plus the error of any plot that failed.

    A malformed value in one section must not cost the whole report, so a failing plot is
    reported in the document instead of raised.
    """
    pngs: dict[str, bytes] = {}
    errors: dict[str, str] = {}
    for name, draw in PLOTS.items():
        try:
            png = draw(m)
        except Exception as exc:  # noqa: BLE001 - reported in the document, see docstring
            errors[name] = error_text(exc)
            continue
        if png is not None:
            pngs[name] = png
    return pngs, errors


def pareto_plot(points: Sequence[Any], front: Sequence[Any], cost: str, ref_cost: str, xlabel: str, title: str,
                scale: float = 1.0) -> bytes | None:
    """Score against a cost (latency or size) for the runs of a comparison (``compare.RunPoint``):
    the deployed models (filled when on ``front``, the Pareto front, also drawn as a step line), each
    named by its ``label`` (what sets it apart, else its name), and each run's dense teacher (its
    ``ref_cost``) as a grey cross."""
    pts = [p for p in points if p.score is not None and getattr(p, cost) is not None]
    if not pts:
        return None
    fig = figure_for(len({(getattr(p, cost), p.score) for p in pts}))
    ax = fig.add_subplot()
    refs = [(getattr(p, ref_cost) * scale, p.teacher * 100) for p in pts
            if getattr(p, ref_cost) is not None and p.teacher is not None]
    if refs:
        ax.scatter(*zip(*refs), marker="x", s=40, color="grey", zorder=2, label="dense teacher (ort_fp32)")
        ax.axhline(max(y for _, y in refs), ls="--", lw=1, color="grey")
    at: dict[tuple[float, float], list[str]] = {}  # runs at one point share one label
    for p in pts:
        xy = (getattr(p, cost) * scale, p.score * 100)
        at.setdefault(xy, []).append(getattr(p, "label", "") or p.name)  # a suite system (benchmarks) has no label
        ax.scatter([xy[0]], [xy[1]], s=60, zorder=3, facecolors=_COLORS[0] if p in front else "white",
                   edgecolors=_COLORS[0])
    labels = [(*xy, ", ".join(names[:2]) + (f" +{len(names) - 2}" if len(names) > 2 else ""))
              for xy, names in sorted(at.items())]
    line = sorted((getattr(p, cost) * scale, p.score * 100) for p in front)
    if len(line) > 1:
        ax.step([x for x, _ in line], [y for _, y in line], where="post", color=_COLORS[0], lw=1, alpha=0.6,
                label="Pareto front")
    metric = pts[0].metric
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} (%)")
    xs = [getattr(p, cost) * scale for p in pts] + [x for x, _ in refs]
    ax.set_xlim(left=0, right=max(xs) * 1.3)
    ax.margins(y=0.25)
    ax.grid(alpha=0.3)
    if refs or len(line) > 1:
        ax.legend(loc="lower right", fontsize=8)
    set_title(ax, title)
    label_points(ax, labels)  # last: it reads the final axes limits
    return _png(fig)
