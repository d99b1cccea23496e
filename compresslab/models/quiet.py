"""transformers' own output quieted while compresslab loads or saves a model: its progress bars and its LOAD
REPORT table (a run logs its own progress and one line per load)."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


class _DropLoadReport(logging.Filter):
    """Drops transformers' multi-line LOAD REPORT table; compresslab logs one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers' progress bars ("Loading weights", "Writing model shards") off while compresslab's
    own load or save runs, with transformers' own switch (``disable_progress_bar``): a run logs its
    own progress, and a bar per checkpoint drowns it. Switched back on after only if they were on, so a
    user's setting (``HF_HUB_DISABLE_PROGRESS_BARS=1``, their own ``disable_progress_bar()``) stands
    and their own loads outside compresslab show bars as before."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if bars:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_load() -> Iterator[None]:
    """Quiet one ``from_pretrained`` call: transformers' LOAD REPORT table is dropped (compresslab logs
    one line of its own; the filter is removed after) and its progress bar is off (:func:`no_progress_bars`)."""
    logger = logging.getLogger("transformers.modeling_utils")
    f = _DropLoadReport()
    logger.addFilter(f)
    try:
        with no_progress_bars():
            yield
    finally:
        logger.removeFilter(f)
