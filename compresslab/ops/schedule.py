"""Cubic sparsity schedule (Zhu & Gupta 2017; ALGORITHMS.md §5).

    x = clip((t - start) / (end - start), 0, 1)
    s(t) = init + (final - init) * (1 - (1 - x)^3)

Pruning fast early (when many redundant weights exist) and slowly near the end
(when the network has less slack to recover) is why the curve is cubic: it is
concave with zero slope at ``end``.
"""

from __future__ import annotations

from typing import NamedTuple


class PruningEvent(NamedTuple):
    """One mask update: at optimizer ``step`` the target sparsity is ``sparsity``."""

    step: int
    sparsity: float


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def cubic_sparsity(step: float, start: float, end: float, init: float, final: float) -> float:
    """Target sparsity at ``step``: ``init`` up to ``start``, ``final`` from ``end`` on.

    Before ``start`` this returns ``init``; whether to prune at all before the
    first event is the caller's decision. ``start == end`` is a one-shot jump.
    """
    _check_fraction("init", init)
    _check_fraction("final", final)
    if final < init:
        raise ValueError(f"final ({final}) must be >= init ({init}); sparsity never decreases")
    if end < start:
        raise ValueError(f"end ({end}) must be >= start ({start})")
    if end == start:
        return init if step < start else final
    x = min(max((step - start) / (end - start), 0.0), 1.0)
    return init + (final - init) * (1.0 - (1.0 - x) ** 3)


def gradual_pruning_events(
    total_steps: int,
    num_events: int,
    init: float,
    final: float,
    start_step: int = 0,
    end_step: int | None = None,
) -> list[PruningEvent]:
    """Evenly spaced pruning events on the cubic curve from ``start_step`` to ``end_step``.

    The first event prunes to ``init`` (one-shot jump from dense), the last to
    ``final``; steps after ``end_step`` (up to ``total_steps``) fine-tune with a
    fixed mask. ``end_step`` defaults to ``total_steps``. With ``num_events=1``
    the single event at ``start_step`` goes straight to ``final`` (one-shot).
    oBERT 30-epoch recipe: events at epochs 2, 6, ..., 26 is
    ``gradual_pruning_events(30*E, 7, 0.7, 0.9, start_step=2*E, end_step=26*E)``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if num_events < 1:
        raise ValueError(f"num_events must be >= 1, got {num_events}")
    end = total_steps if end_step is None else end_step
    if not 0 <= start_step <= end <= total_steps:
        raise ValueError(
            f"need 0 <= start_step <= end_step <= total_steps, got "
            f"start_step={start_step}, end_step={end}, total_steps={total_steps}"
        )
    _check_fraction("init", init)
    _check_fraction("final", final)
    if final < init:
        raise ValueError(f"final ({final}) must be >= init ({init}); sparsity never decreases")
    if num_events == 1:
        return [PruningEvent(start_step, final)]
    if num_events - 1 > end - start_step:
        raise ValueError(
            f"num_events={num_events} needs at least {num_events - 1} steps between "
            f"start_step and end_step, got {end - start_step}"
        )
    span = end - start_step
    steps = [start_step + (i * span) // (num_events - 1) for i in range(num_events)]
    return [PruningEvent(t, cubic_sparsity(t, start_step, end, init, final)) for t in steps]


def recomputation_targets(s_prev: float, s_target: float, num_recomputations: int) -> list[float]:
    """Split one step ``s_prev -> s_target`` into ``r`` linear sub-targets (oBERT §2.2).

    Gradients and the Fisher inverse are rebuilt before each sub-step; the last
    entry is exactly ``s_target``.
    """
    _check_fraction("s_prev", s_prev)
    _check_fraction("s_target", s_target)
    if s_target < s_prev:
        raise ValueError(f"s_target ({s_target}) must be >= s_prev ({s_prev})")
    if num_recomputations < 1:
        raise ValueError(f"num_recomputations must be >= 1, got {num_recomputations}")
    r = num_recomputations
    return [s_prev + (s_target - s_prev) * i / r for i in range(1, r)] + [s_target]
