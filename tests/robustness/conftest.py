"""Issue #12's robustness cases: each test is one case, marked with ``@pytest.mark.case``.

    @pytest.mark.case(name="seed=abc", kind=1, expected="a one-line error naming `seed`")
    def test_seed_not_int(expect_clear):
        expect_clear(lambda: compose_and_check(["seed=abc"]), match="seed")

``expect_clear(fn, match=...)`` runs ``fn`` and sorts what happened the way the issue counts bad
inputs: ``clear`` (a compresslab error whose message matches ``match``: the test passes),
``unclear`` (a compresslab error with another message), ``traceback`` (any other exception), or
``silently wrong`` (no error at all). Anything but ``clear`` fails the test with that label.

With ``COMPRESSLAB_CASES_OUT=FILE`` set, every case appends one JSON line to FILE (name, kind,
expected, observed, pass, bad_input); ``benchmarks/robustness.py`` turns them into
``benchmarks/results/robustness.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

import pytest

# --import-mode=importlib puts no test folder on sys.path; the cases' shared helpers live in _cases.py.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cases import CLEAR_ERRORS, classify  # noqa: E402


@pytest.fixture
def expect_clear(request: pytest.FixtureRequest) -> Callable[..., str]:
    """``expect_clear(fn, match=regex, errors=CLEAR_ERRORS) -> message``: fails unless ``fn``
    raises one of ``errors`` whose message matches ``match`` (case-insensitive)."""

    def run(fn: Callable[[], Any], match: str | None = None,
            errors: tuple[type[BaseException], ...] = CLEAR_ERRORS) -> str:
        observed, detail = classify(fn, match, errors)
        request.node.user_properties.append(("observed", f"{observed}: {detail}"[:500]))
        request.node.user_properties.append(("category", observed))
        if observed != "clear":
            pytest.fail(f"{observed}: {detail} (wanted an error matching {match!r})")
        return detail

    return run


@pytest.fixture
def observe(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``observe("what happened")``: the observed text for a case that is not a bad-input error
    (for example "config.json id2label = {0: 'neg', 1: 'pos'}")."""

    def note(text: str) -> None:
        request.node.user_properties.append(("observed", str(text)[:500]))

    return note


@pytest.fixture
def cli_refusal(capsys: pytest.CaptureFixture[str]) -> Callable[[Callable[[], Any]], Callable[[], None]]:
    """``cli_refusal(fn)``: ``fn`` (a CLI entry: ``cli.check_command_line``, ``cli.check_multirun``,
    ``cli._main``) as a thunk for ``expect_clear``: its refusal, exit status 2 with one
    ``compresslab: error:`` line on stderr and no traceback, is raised as a ValueError carrying that
    line; any other exit is re-raised (and counted as it is)."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], None]:
        def call() -> None:
            try:
                fn()
            except SystemExit as e:
                err = capsys.readouterr().err.strip()
                if e.code == 2 and err.startswith("compresslab: error:") and "\n" not in err and "Traceback" not in err:
                    raise ValueError(err) from None
                raise
        return call

    return wrap


@pytest.fixture
def unwritable(tmp_path: Path) -> Path:
    """A directory path nobody can create or write to: under a read-only dir for a normal user, under
    /proc for root (who may write anywhere else); skips where neither is possible."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        ro = tmp_path / "read-only"
        ro.mkdir()
        ro.chmod(0o500)
        return ro / "out"
    if not Path("/proc/self").is_dir():
        pytest.skip("needs a non-root user or Linux /proc")
    return Path("/proc/compresslab-test/out")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``_runs.make_inputs``: a tiny BERT folder and a two-label CSV task, in a folder with a space (a module may
    define its own)."""
    from _runs import make_inputs

    return make_inputs(tmp_path_factory.mktemp("api cli") / "in put")


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private lock directory, no override variables, a quiet fake CPU, no idle probe sleep and a short
    poll: the machine that runs the tests may be busy, and no test may wait on the machine's locks."""
    import compresslab.bench.machine_load as ml
    from compresslab import runlock
    from compresslab.testing import FakeCpu

    d = tmp_path / "locks"
    monkeypatch.setenv(runlock.LOCK_DIR_ENV, str(d))
    monkeypatch.delenv(runlock.BUSY_ENV, raising=False)
    monkeypatch.delenv(runlock.WAIT_ENV, raising=False)
    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=0.0))
    monkeypatch.setattr(ml, "PROBE_S", 0.0)
    monkeypatch.setattr(runlock, "POLL_S", 0.1)
    return d


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    out = os.environ.get("COMPRESSLAB_CASES_OUT")
    marker = item.get_closest_marker("case")
    if not out or marker is None or report.when != "call" and not (report.when == "setup" and report.failed):
        return
    props = dict(item.user_properties)
    observed = props.get("observed")
    if observed is None:
        observed = "as expected" if report.passed else (report.longreprtext or "").strip().splitlines()[-1:]
        observed = observed if isinstance(observed, str) else " ".join(observed)
    category = props.get("category") or ("clear" if report.passed else "failed")
    row = {"name": marker.kwargs["name"], "kind": str(marker.kwargs["kind"]), "expected": marker.kwargs["expected"],
           "observed": observed, "pass": bool(report.passed), "bad_input": bool(marker.kwargs.get("bad_input", True)),
           "category": category if marker.kwargs.get("bad_input", True) else None,
           "skipped": bool(report.skipped), "test": item.nodeid}
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
