"""How the report writes numbers and manifest values as text, in one place.

Scores are in %, deltas in pt (0.01), sizes in MB (10^6 bytes), latency in ms. The run report
and the cross-run comparison both format through here, so a figure reads the same in both.
Nothing here ever writes a Python ``repr``: lists become ``a, b``, mappings ``k: v`` pairs
(a dumped ``{'model': ...}`` in a table cell is unreadable).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DASH = "—"


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage without the sign: 0.91055 -> '91.06'."""
    return DASH if x is None else f"{x * 100:.{digits}f}"


def agreement_cell(x: float | None, r: bool = False) -> str:
    """An agreement with the teacher: a share of labels in % (``98.44``), or for a regression task Pearson r of the
    predictions with the teacher's (``0.9963``), never a correlation written as if it were a share."""
    return DASH if x is None else (f"{x:.4f}" if r else pct(x))


def pt(delta: float | None) -> str:
    """A score difference in points (0.01), always signed so a drop cannot be misread."""
    return DASH if delta is None else f"{delta * 100:+.2f}"


def mb(b: float | None) -> str:
    """Bytes as decimal MB; tiny test models keep three decimals so they do not read 0.0."""
    if b is None:
        return DASH
    v = b / 1e6
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def ms(x: float | None) -> str:
    """Milliseconds with about three significant digits."""
    if x is None:
        return DASH
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def times(x: float | None) -> str:
    """A speedup or size ratio, e.g. '2.41x'."""
    return DASH if x is None else f"{x:.2f}x"


def secs(x: float | None) -> str:
    """A wall time in the unit a person would say it in."""
    if x is None:
        return DASH
    if x < 90:
        return f"{x:.1f} s"
    if x < 5400:
        return f"{int(x // 60)} min {int(x % 60):02d} s"
    return f"{int(x // 3600)} h {int(x % 3600 // 60):02d} min"


def count(x: float | None) -> str:
    """A parameter count in millions/thousands: 22713602 -> '22.71M'."""
    if x is None:
        return DASH
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def rate(x: float | None) -> str:
    """A throughput (sentences or sequences per second) with about three significant digits."""
    if x is None:
        return DASH
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def plain(x: Any) -> str:
    """Any JSON value as text: floats to 4 significant digits, lists as ``a, b``, mappings as
    ``k: v`` pairs (nested ones in parentheses), ``None`` as a dash."""
    if x is None:
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, Mapping):
        return "; ".join(f"{k}: {_nested(v)}" for k, v in x.items()) if x else DASH
    if isinstance(x, list | tuple):
        return ", ".join(_nested(v) for v in x) if x else DASH
    return str(x)


def _nested(x: Any) -> str:
    """``plain`` of a value inside a list or mapping: containers keep their bounds visible."""
    if isinstance(x, list | tuple):
        return "(" + ", ".join(_nested(v) for v in x) + ")"
    if isinstance(x, Mapping):
        return "(" + plain(x) + ")"
    return plain(x)
