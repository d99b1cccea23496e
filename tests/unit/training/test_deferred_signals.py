"""A SIGINT/SIGTERM held by DeferredSignals is never dropped: re-raised when the training loop has
written its step's checkpoint (a middle step or the last one) or when the deferral ends (normally,
nested, or on an exception), and not held at all outside training.

Real signals (``os.kill`` of the process itself, as Ctrl-C or ``kill`` sends them) in a fresh
interpreter, as test_loop_resume's: a signal at the pytest process itself crashed a full run once.
"""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

_UNIT_CHILD = r"""
import os, signal, sys
# a shell's background job starts with SIGINT ignored: give the child an interactive user's handler
signal.signal(signal.SIGINT, signal.default_int_handler)
from compresslab.failure import error_behind, raise_if_interrupted
from compresslab.training.resume import DeferredSignals


class Stop(Exception):
    pass


def on_term(signum, frame):  # the caller's own SIGTERM handler (the CLI's raises Terminated)
    raise Stop(signum)


signal.signal(signal.SIGTERM, on_term)
EXC = {signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Stop}


def kill(sig):
    os.kill(os.getpid(), sig)  # a real signal; Python runs the handler before os.kill returns


def restored():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "SIGINT handler not put back"
    assert signal.getsignal(signal.SIGTERM) is on_term, "SIGTERM handler not put back"


def re_raised_at_the_end(sig):
    # held while the block runs (the step finishes), then raised as it ends: after the last step there is no
    # step boundary left to deliver it at
    ran_on = False
    try:
        with DeferredSignals(True) as held:
            kill(sig)
            assert held.pending == sig
            ran_on = True
    except EXC[sig]:
        pass
    else:
        raise AssertionError(f"signal {sig} held to the end of the block and dropped")
    assert ran_on
    restored()


def deliver_mid_block(sig):
    # deliver() at a step boundary raises it there
    try:
        with DeferredSignals(True) as held:
            kill(sig)
            held.deliver()
            raise AssertionError("deliver() returned with a signal held")
    except EXC[sig]:
        pass
    restored()


def on_an_exception(sig):
    # the block fails with the signal held: the run stops as interrupted, the error is its context
    try:
        with DeferredSignals(True):
            kill(sig)
            raise RuntimeError("disk full")
    except EXC[sig] as e:
        assert isinstance(e.__context__, RuntimeError), repr(e.__context__)
        assert error_behind(e) is e.__context__, "the error is not kept for the run's record"
    else:
        raise AssertionError("the held signal was dropped on the exception path")
    restored()


def already_stopping():
    # a KeyboardInterrupt already on its way out is the stop the held SIGTERM asked for: not raised twice
    try:
        with DeferredSignals(True):
            kill(signal.SIGTERM)
            raise KeyboardInterrupt
    except KeyboardInterrupt as e:
        assert e.__context__ is None and error_behind(e) is None, repr(e.__context__)
    restored()


def nested_on_an_exception():
    # the inner block fails with the signal held: the outer one raises it, keeping the error for the record
    try:
        with DeferredSignals(True):
            with DeferredSignals(True):
                kill(signal.SIGINT)
                raise RuntimeError("disk full")
    except KeyboardInterrupt as e:
        assert isinstance(error_behind(e), RuntimeError), repr(e.__context__)
    else:
        raise AssertionError("the held signal was dropped on the exception path")
    restored()


def nested():
    # the inner block hands the signal to the outer one, which holds it to its own end
    after_inner = False
    try:
        with DeferredSignals(True) as outer:
            with DeferredSignals(True) as inner:
                kill(signal.SIGINT)
                assert inner.pending == signal.SIGINT
            assert outer.pending == signal.SIGINT and inner.pending is None
            after_inner = True
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("a signal held by a nested deferral was dropped")
    assert after_inner
    restored()


def nested_second_signal():
    # asked twice: through both deferrals at once, raised once
    try:
        with DeferredSignals(True) as outer:
            with DeferredSignals(True) as inner:
                kill(signal.SIGINT)
                kill(signal.SIGINT)
                raise AssertionError("the second signal was held")
    except KeyboardInterrupt as e:
        assert e.__context__ is None, repr(e.__context__)
    assert inner.pending is None and outer.pending is None
    restored()


def returning_handler():
    # a handler that returns (a flag setter) is called once per signal and deferral goes on
    seen = []
    signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    with DeferredSignals(True) as held:
        kill(signal.SIGTERM)
        held.deliver()
        assert seen == [signal.SIGTERM]
        kill(signal.SIGTERM)
        assert seen == [signal.SIGTERM] and held.pending == signal.SIGTERM  # held again
    assert seen == [signal.SIGTERM, signal.SIGTERM]  # the second one at the end
    signal.signal(signal.SIGTERM, on_term)


def interrupt_point(sig):
    # long work inside the block checks between its pieces: nothing held, it goes on; held, it stops there
    try:
        with DeferredSignals(True) as held:
            raise_if_interrupted()
            kill(sig)
            assert held.pending == sig
            raise_if_interrupted()
            raise AssertionError("raise_if_interrupted() returned with a signal held")
    except EXC[sig] as e:
        assert e.__context__ is None, repr(e.__context__)
    restored()


def interrupt_point_nested():
    # held by the inner deferral: handed to the outer one, which lets go too; handlers back in order
    try:
        with DeferredSignals(True) as outer:
            with DeferredSignals(True) as inner:
                kill(signal.SIGINT)
                raise_if_interrupted()
                raise AssertionError("raise_if_interrupted() returned with a signal held")
    except KeyboardInterrupt:
        pass
    assert inner.pending is None and outer.pending is None
    restored()


def interrupt_point_outer_held():
    # held by the outer deferral before the inner one began: the inner work stops too
    try:
        with DeferredSignals(True) as outer:
            kill(signal.SIGINT)
            with DeferredSignals(True):
                raise_if_interrupted()
                raise AssertionError("raise_if_interrupted() returned with a signal held outside")
    except KeyboardInterrupt:
        pass
    assert outer.pending is None
    restored()


def interrupt_point_returning_handler():
    # a handler that returns: called once, and the work goes on, deferred again
    seen = []
    signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    with DeferredSignals(True) as outer:
        with DeferredSignals(True) as held:
            kill(signal.SIGTERM)
            raise_if_interrupted()
            assert seen == [signal.SIGTERM] and held.pending is None and outer.pending is None
            kill(signal.SIGTERM)
            assert held.pending == signal.SIGTERM and seen == [signal.SIGTERM]  # held again
    assert seen == [signal.SIGTERM, signal.SIGTERM]
    signal.signal(signal.SIGTERM, on_term)


def disabled():
    # several processes (or no checkpoint): nothing is held, a signal goes through at once
    try:
        with DeferredSignals(False):
            kill(signal.SIGINT)
            raise AssertionError("held while disabled")
    except KeyboardInterrupt:
        pass
    restored()


for name in sys.argv[1:]:
    fn, *arg = name.split(":")
    globals()[fn](*(getattr(signal, a) for a in arg))
    print("ok", name, flush=True)
"""

UNIT_CASES = ["re_raised_at_the_end:SIGINT", "re_raised_at_the_end:SIGTERM", "deliver_mid_block:SIGINT",
              "deliver_mid_block:SIGTERM", "on_an_exception:SIGINT", "on_an_exception:SIGTERM", "already_stopping",
              "nested_on_an_exception", "nested", "nested_second_signal", "returning_handler", "disabled",
              "interrupt_point:SIGINT", "interrupt_point:SIGTERM", "interrupt_point_nested",
              "interrupt_point_outer_held", "interrupt_point_returning_handler"]


def _child(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600)


def test_deferred_signals_never_drop_a_held_signal():
    """Every case in one interpreter (each restores the handlers it found): one torch import, not eleven."""
    out = _child(_UNIT_CHILD, *UNIT_CASES)
    done = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("ok ")]
    assert out.returncode == 0 and done == UNIT_CASES, out.stdout[-2000:] + out.stderr[-4000:]


# The training loop with a real signal sent while a step checkpoint is being written (the window is the
# whole write: weights and optimizer state, seconds for a real model), or outside training.
_LOOP_CHILD = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
import test_loop_resume as t
from compresslab.models.tiny import tiny_tokenizer
from compresslab.training import resume

ckpt, case, sig = sys.argv[2], sys.argv[3], getattr(signal, sys.argv[4])
tok = tiny_tokenizer(sys.argv[5])


def on_term(signum, frame):
    raise t._Stop


signal.signal(signal.SIGTERM, on_term)
expected = KeyboardInterrupt if sig == signal.SIGINT else t._Stop
at = {"middle": 4, "last": t.STEPS}.get(case)
orig = resume.StepCheckpoints.save


def save(self, step, total, *a, **k):
    if step == at:
        os.kill(os.getpid(), sig)  # lands while this step's checkpoint is written
    return orig(self, step, total, *a, **k)


resume.StepCheckpoints.save = save
seen = t._Seen()
try:
    if case == "before":
        os.kill(os.getpid(), sig)  # outside training: nothing defers it
    t._run(tok, ckpt, every=4, callbacks=[seen])
    if case == "after":
        os.kill(os.getpid(), sig)  # training is over: the handlers are the caller's again
except expected:
    pass
else:
    sys.exit(f"{case}: the signal was dropped (training ran to step {seen.seen[-1] + 1 if seen.seen else 0})")
print("steps", len(seen.seen))
if case == "last":  # resumable: the same call finds the last step's checkpoint and trains no step again
    resume.StepCheckpoints.save = orig
    (model, res), (ref_model, ref) = t._run(tok, ckpt, every=4), t._run(tok)
    t._assert_same((model, res), (ref_model, ref))
    print("resumed as never stopped")
print("ok")
"""


@pytest.mark.parametrize("case, sig, steps, ckpts", [
    ("middle", "SIGINT", 4, ["step-00000004"]),    # stops at once: the step just written, not one step later
    ("middle", "SIGTERM", 4, ["step-00000004"]),
    ("last", "SIGINT", 13, ["step-00000013"]),     # no step follows: re-raised once the checkpoint is written
    ("last", "SIGTERM", 13, ["step-00000013"]),
    ("before", "SIGINT", 0, None),                 # not held outside training
    ("after", "SIGINT", 13, ["step-00000013"])])
def test_a_signal_during_a_checkpoint_write_stops_the_run(tmp_path, case, sig, steps, ckpts):
    ckpt = tmp_path / "ckpt"
    out = _child(_LOOP_CHILD, str(HERE), str(ckpt), case, sig, str(tmp_path / "tok"))
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout[-2000:] + out.stderr[-4000:]
    assert f"steps {steps}" in out.stdout
    assert (sorted(p.name for p in ckpt.iterdir()) if ckpt.is_dir() else None) == ckpts
    assert ("resumed as never stopped" in out.stdout) == (case == "last")
