"""Accuracy-aware search across passes: the fastest (or smallest) model within a drop budget,
selected on the validation split, each candidate a normal run.

    python -m compresslab +search=auto search.max_drop=1.0 search.objective=latency search.time_budget_s=7200

    import compresslab.search
    result = compresslab.search.run(["task=sst2"], max_drop=1.0, objective="latency", time_budget_s=7200)

Homes: :mod:`~compresslab.search.space` (the candidates, as data), :mod:`~compresslab.search.objective`
(validation score, drop, objective, selection), :mod:`~compresslab.search.plan` (every check before
any work), :mod:`~compresslab.search.driver` (the loop, budget, resume, best-so-far), :mod:`~compresslab.search.dev_score` (dev scores of the chosen model).
Importing this package imports nothing heavy.
"""

from __future__ import annotations

from typing import Any, Sequence

from compresslab.rng import callers_rng_kept


@callers_rng_kept  # as compresslab.run: the caller's random streams are not the search's to move
def run(overrides: Sequence[str] | None = None, *, space: str = "auto", **settings: Any) -> dict[str, Any]:
    """Run the search ``conf/search/<space>.yaml`` with command-line ``overrides`` and ``search.*``
    settings as keywords; returns what ``search.json`` holds. See :func:`compresslab.search.driver.search`."""
    from compresslab.search.driver import search

    return search(overrides, space=space, **settings)


__all__ = ["run"]
