"""SIGTERM inside ``compresslab.compress()`` (the in-process API, where the CLI's handler is not installed) is
recorded as the CLI records it: status ``interrupted`` at the stage, with the resume sentence; the caller's own
SIGTERM handler is compresslab's only while compress() runs, is put back however it ends, and is then given the
signal (the default one ends the process, after the record is written).

Real signals (``os.kill`` of the process itself) in a fresh interpreter: a signal at the pytest process crashed a
full run once (test_deferred_signals, test_run_status).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

_CHILD = r"""
import json, os, signal, sys, threading
from pathlib import Path

import torch
torch.set_num_threads(1)
import compresslab
import compresslab.pipeline.steps as steps
from compresslab.failure import Terminated
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.testing import tiny_sentiment

tmp, cases = Path(sys.argv[1]), sys.argv[2:]
tok = tiny_tokenizer(tmp / "tok")
data = [(e.text_a, ["neg", "pos"][e.label]) for e in tiny_sentiment(32, 0)]
real_export, seen = steps.export, {}


def compress(out, kill=False):
    def export(*a, **k):  # the stage before the ONNX step: what handles SIGTERM here, and a real one sent
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        if kill:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before os.kill returns
        return real_export(*a, **k)

    steps.export = export
    try:
        return compresslab.compress(tiny_model("bert", seed=0), tok, ["ort_int8_dynamic"], data=data,
                                    output_dir=tmp / out, max_length=32, batch_size=8, progress=False)
    finally:
        steps.export = real_export


def status(out):
    return json.loads((tmp / out / "manifest.json").read_text())["status"]


def default_handler():  # nothing of the caller's: the kill ends the process once the manifest says interrupted
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    compress("default", kill=True)
    raise AssertionError("compress() returned after a SIGTERM whose handler is the default")


def callers_handler():  # the caller's handler gets the signal, after the record; compress() raises Terminated
    calls = []

    def on_term(signum, frame):
        calls.append(status("callers"))

    signal.signal(signal.SIGTERM, on_term)
    try:
        compress("callers", kill=True)
    except Terminated:
        pass
    else:
        raise AssertionError("compress() ran on after a SIGTERM")
    assert calls == ["interrupted"], calls  # called once, the manifest already written
    assert seen["handler"] is not on_term, "compress() did not handle SIGTERM while it ran"
    assert signal.getsignal(signal.SIGTERM) is on_term, "the caller's SIGTERM handler was not put back"
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def normal_return():  # a run that ends normally puts the caller's handler back, each call
    def on_term(signum, frame):
        raise AssertionError("no SIGTERM was sent")

    for name, previous in (("normal-callers", on_term), ("normal-default", signal.SIG_DFL)):
        signal.signal(signal.SIGTERM, previous)
        r = compress(name)
        assert r.run_dir.is_dir() and status(r.run_dir.name) == "finished"
        assert seen.pop("handler") not in (on_term, signal.SIG_DFL), "compress() did not handle SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is previous, f"{previous} not put back after a normal return"


def other_thread():  # no handler can be set there: the process's stays, untouched
    def on_term(signum, frame):
        raise AssertionError("no SIGTERM was sent")

    signal.signal(signal.SIGTERM, on_term)
    done = []
    t = threading.Thread(target=lambda: done.append(compress("thread")))
    t.start()
    t.join()
    assert done and seen.pop("handler") is on_term and signal.getsignal(signal.SIGTERM) is on_term
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


for case in cases:
    globals()[case]()
    print("ok", case, flush=True)
"""

BY = "SIGTERM (a kill, or a scheduler's time limit)"
STAGE = "export (before step ort_int8_dynamic)"


def _child(tmp_path, *cases: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path), *cases], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.case(name="SIGTERM inside compresslab.compress() (no handler of the caller's)", kind=1,
                  bad_input=False, expected="the manifest reads interrupted at the stage with the resume sentence; "
                                            "the process then ends by SIGTERM, as it would have")
def test_sigterm_in_compress_is_recorded_as_interrupted_at_its_stage(tmp_path, observe):
    out = _child(tmp_path, "default_handler")
    assert out.returncode == -signal.SIGTERM, out.stdout[-2000:] + out.stderr[-4000:]
    m = json.loads((tmp_path / "default" / "manifest.json").read_text())
    err = m["error"]
    assert m["status"] == "interrupted" and err["type"] == "Terminated" and err["step"] is None
    assert err["stage"] == STAGE and err["summary"] == (
        f"Interrupted by {BY} during {STAGE}. Call compresslab.compress again with the same output_dir to resume "
        "after the last finished step.")
    observe(f"exit {out.returncode}; {err['summary']}")


def test_compress_hands_the_callers_sigterm_handler_back(tmp_path):
    """The caller's handler: given the signal after the record, put back after a stop and after a normal return
    (each call), and never replaced from a thread other than the main one."""
    cases = ["callers_handler", "normal_return", "other_thread"]
    out = _child(tmp_path, *cases)
    done = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("ok ")]
    assert out.returncode == 0 and done == cases, out.stdout[-2000:] + out.stderr[-4000:]
