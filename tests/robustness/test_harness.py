"""The case harness sorts outcomes the way issue #12 counts bad inputs."""

from __future__ import annotations

import pytest
from _cases import CLEAR_ERRORS, classify


def _raise(exc: BaseException):
    def f():
        raise exc
    return f


@pytest.mark.parametrize(("fn", "match", "category"), [
    (_raise(ValueError("seed='abc' is not an integer")), "seed", "clear"),
    (_raise(ValueError("invalid literal for int()")), "seed", "unclear"),
    (_raise(TypeError("unsupported operand")), "seed", "traceback"),
    (_raise(SystemExit(2)), None, "clear"),
    (_raise(SystemExit(1)), None, "traceback"),
    (lambda: None, "seed", "silently wrong"),
])
def testclassify(fn, match, category):
    assert classify(fn, match, CLEAR_ERRORS)[0] == category
