"""Sorting what a bad input did into the categories issue #12 counts, and case tables."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

# The error types compresslab raises on purpose for bad input (each names the setting or file).
# SystemExit(2) is the CLI's way of saying "bad input, message already printed".
CLEAR_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError, KeyError, SystemExit)


def classify(fn: Callable[[], Any], match: str | None, errors: tuple[type[BaseException], ...]) -> tuple[str, str]:
    try:
        fn()
    except errors as e:  # noqa: PERF203
        msg = str(e)
        if isinstance(e, SystemExit) and e.code not in (None, 0, 2):
            return "traceback", f"SystemExit({e.code!r})"
        if match is None or re.search(match, msg, flags=re.IGNORECASE | re.DOTALL):
            return "clear", f"{type(e).__name__}: {msg}"
        return "unclear", f"{type(e).__name__}: {msg}"
    except Exception as e:  # noqa: BLE001 - the point is to classify it
        return "traceback", f"{type(e).__name__}: {e}"
    return "silently wrong", "no error raised"


def case_param(*values: Any, name: str, expected: str, kind: int | str, id: str | None = None) -> Any:
    """``pytest.param(*values)`` marked as one case (``@pytest.mark.case``): a row of a table of bad
    inputs that differ only in their data, checked by one parametrized test."""
    return pytest.param(*values, marks=pytest.mark.case(name=name, kind=kind, expected=expected), id=id)
