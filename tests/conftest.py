"""Shared fixtures: tiny local models and tokenizers, the real data root, single-threaded torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


# Process-wide numeric settings a test must leave as it found them. Under xdist a worker's tests share
# one interpreter, and module fixtures (the bit-for-bit references of test_loop_resume) are built by
# whichever test needs them first: one test leaving torch at 2 threads made a later reference differ by
# one float ulp from a child process pinned to 1 (a resume "mismatch" that depended on test order).
_NUMERIC_SETTINGS = {  # name shown on failure: (read it, put it back)
    "torch.get_num_threads()": (torch.get_num_threads, torch.set_num_threads),
    "torch.get_default_dtype()": (torch.get_default_dtype, torch.set_default_dtype),
    "torch.get_float32_matmul_precision()": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    "torch.are_deterministic_algorithms_enabled()": (torch.are_deterministic_algorithms_enabled,
                                                     torch.use_deterministic_algorithms),
    "torch.is_grad_enabled()": (torch.is_grad_enabled, torch.set_grad_enabled),
    "torch.backends.mkldnn.enabled": (lambda: torch.backends.mkldnn.enabled,
                                      lambda v: setattr(torch.backends.mkldnn, "enabled", v))}


def _numerics() -> dict[str, object]:
    return {k: get() for k, (get, _) in _NUMERIC_SETTINGS.items()}


_NUMERICS = _numerics()  # as this file set them up: what every test starts from


@pytest.fixture(autouse=True)
def _numerics_left_as_found(request: pytest.FixtureRequest):
    """Fails the test that leaves a process-wide numeric setting changed, by itself or through one of
    its fixtures (a module fixture runs before this check's start, so the baseline is this file's),
    after putting it back: the leak is fixed where it happens, not met as a flaky comparison elsewhere."""
    yield
    after = _numerics()
    changed = {k: (v, after[k]) for k, v in _NUMERICS.items() if after[k] != v}
    if changed:
        for k, (before, _) in changed.items():
            _NUMERIC_SETTINGS[k][1](before)
        pytest.fail(f"{request.node.nodeid} (or one of its fixtures) left process-wide numerics changed: "
                    + "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
                    + ". Pin them only in a child process, or use compresslab.testing.process_state_restored()",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _cwd_left_as_found(request: pytest.FixtureRequest):
    """Fails the test that leaves the working directory changed, after putting it back. The benchmarks' mains
    chdir to the repo (their paths are the repo's); a test that patched the repo to tmp_path and called one left
    every later test in a deleted temp folder, where the data root is looked for relative to cwd (a test of an
    unknown task then failed with "no data root found", depending on the order)."""
    before = os.getcwd()
    yield
    try:
        after = os.getcwd()
    except FileNotFoundError:  # the folder it moved into is gone already
        after = "<deleted>"
    if after != before:
        os.chdir(before)
        pytest.fail(f"{request.node.nodeid} left the working directory changed: {before} -> {after}. Use "
                    "monkeypatch.chdir(...) before calling code that chdirs.", pytrace=False)


def _data_root() -> Path | None:
    for cand in (os.environ.get("COMPRESSLAB_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "glue" / "SST-2" / "dev.tsv").is_file():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip("real GLUE data not found (set COMPRESSLAB_DATA or put ../shared/data beside the repo)")
    return root


@pytest.fixture(scope="session")
def tiny_tok(tmp_path_factory: pytest.TempPathFactory):
    from compresslab.models.tiny import tiny_tokenizer

    return tiny_tokenizer(tmp_path_factory.mktemp("tiny_tok"))


@pytest.fixture(scope="session")
def tiny_model():
    """A 2-layer, hidden-32 BertForSequenceClassification in eval mode with eager attention (the bench tests and
    the benchmarks/ script tests export and time it)."""
    from compresslab.testing import tiny_bert_classifier

    return tiny_bert_classifier(seed=0)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    """The tiny model exported with input_ids, attention_mask and token_type_ids."""
    from compresslab.testing import export_tiny_onnx

    return export_tiny_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "tiny.onnx",
                            ["input_ids", "attention_mask", "token_type_ids"])


@pytest.fixture(scope="session")
def tiny_qdq_onnx(tiny_onnx, tmp_path_factory) -> Path:
    """The tiny model as a static int8 QDQ graph (DeepSparse's QDQ path, calibrated on two random sentences)."""
    import numpy as np

    from compresslab.bench.deepsparse_backend import quantize_qdq_for_deepsparse

    rng = np.random.default_rng(0)
    batches = [{"input_ids": rng.integers(1, 128, size=(2, 8)).astype(np.int64),
                "attention_mask": np.ones((2, 8), np.int64), "token_type_ids": np.zeros((2, 8), np.int64)}]
    dst = tmp_path_factory.mktemp("qdq") / "tiny_qdq.onnx"
    quantize_qdq_for_deepsparse(tiny_onnx, dst, batches)
    return dst


@pytest.fixture(scope="session")
def tiny_onnx_no_segments(tiny_model, tmp_path_factory) -> Path:
    """The tiny model exported without token_type_ids, as DistilBERT/RoBERTa graphs are."""
    from compresslab.testing import export_tiny_onnx

    return export_tiny_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "tiny_no_tt.onnx",
                            ["input_ids", "attention_mask"])


@pytest.fixture
def tiny_ctx(tiny_tok, tmp_path):
    """``tiny_ctx(teacher=None, task=None)`` builds a PassContext over a toy task."""
    from compresslab.testing import tiny_context

    def make(**kw):
        return tiny_context(tiny_tok, tmp_path, **kw)

    return make



# The machine-wide training lock (compresslab/runlock.py). `make test` passes --wait-for-training:
# it waits for a running training (or refuses, naming it) and holds the tests lock, so benchmarks
# elsewhere wait for the tests. A plain pytest run only reports a running training. Either way the
# tests get a private lock directory (they never wait on the machine's), and the end of the run
# prints the machine's load (timings taken in tests are not benchmarks).
_MACHINE = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--wait-for-training", type=float, default=None, metavar="SECONDS",
                     help="wait up to SECONDS for a running compresslab training (then refuse; COMPRESSLAB_TIME_BUSY=1 "
                          "runs anyway) and hold the tests lock so benchmarks wait for the tests (make test)")


def pytest_configure(config: pytest.Config) -> None:
    import sys
    import tempfile

    from compresslab import runlock
    from compresslab.bench.machine_load import read_cpu

    wait = config.getoption("--wait-for-training", None)
    held = None
    try:
        if wait is None:  # look only
            report = runlock.wait_for_training("pytest", wait_s=0, allow_busy=True)
        else:
            report = runlock.wait_for_training("make test", wait_s=wait,
                                               notify=lambda m: print(m, file=sys.stderr, flush=True))
            held = runlock.hold(runlock.Role.TESTS, "make test")
            held.__enter__()
    except (runlock.MachineBusyError, ValueError) as e:
        raise pytest.UsageError(str(e)) from None
    private = tempfile.mkdtemp(prefix="compresslab-test-locks-")
    config.stash[_MACHINE] = {"held": held, "report": report, "start": read_cpu(), "private": private,
                              "env": os.environ.get(runlock.LOCK_DIR_ENV)}
    os.environ[runlock.LOCK_DIR_ENV] = private


def pytest_report_header(config: pytest.Config) -> list[str]:
    m = config.stash.get(_MACHINE, None)
    if m is None or m["report"].free:
        return []
    return [f"compresslab: a training runs beside these tests: {m['report'].holders[0]} (the tests slow it down; "
            "make test waits for it)"]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    from compresslab.bench.machine_load import loadavg, other_cpu, read_cpu

    m = config.stash.get(_MACHINE, None)
    if m is None:
        return
    busy = other_cpu(m["start"], read_cpu())
    line = f"machine load during the tests: other processes used {busy:.2f} CPU s per s (loadavg {loadavg()})"
    if m["report"].waited_s >= 1:
        line += f"; waited {m['report'].waited_s:.0f} s for a training to finish"
    if not m["report"].free:
        line += f"; ran beside {m['report'].holders[0]}"
    terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    from compresslab import runlock

    m = config.stash.get(_MACHINE, None)
    if m is None:
        return
    if m["env"] is None:
        os.environ.pop(runlock.LOCK_DIR_ENV, None)
    else:
        os.environ[runlock.LOCK_DIR_ENV] = m["env"]
    if m["held"] is not None:
        m["held"].__exit__(None, None, None)
    shutil.rmtree(m["private"], ignore_errors=True)


# `make test` runs on two workers (pytest-xdist, --dist loadgroup). A module whose tests share a module-scoped
# fixture (a study run, a cached model) keeps them on one worker, so the fixture is built once; every other
# test goes wherever a worker is free. Integration tests are collected first, so the long ones start early.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d[-1].scope in ("module", "package", "class") for d in defs if d):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__ if item.module else item.nodeid))
