"""Step checkpoints in the training loop: a stopped and resumed run equals one never stopped, bit for bit."""

import logging
import signal
from pathlib import Path

import pytest
import torch

from compresslab.data.loaders import make_loader
from compresslab.models.tiny import tiny_model
from compresslab.testing import StopAt as _StopAt, StopRun as _Stop, tiny_sentiment
from compresslab.training import Recovery, TaskLoss, TrainConfig, recover, train
from compresslab.training import loop, resume
from compresslab.training.loop import ResumeError

STEPS = 13  # 40 examples / batch 8 = 5 batches an epoch: the run crosses two epoch boundaries


class _Seen:
    """A callback without state: records the step numbers the loop gives it."""

    def __init__(self):
        self.seen = []

    def on_step_end(self, step, model, optimizer):
        self.seen.append(step)


class _Counter(_Seen):
    """A callback with state: the steps it saw, restored on resume through state_dict()."""

    def state_dict(self):
        return {"seen": list(self.seen)}

    def load_state_dict(self, state):
        self.seen = list(state["seen"])


def _run(tok, ckpt=None, *, every=0, callbacks=(), group_by_length=False, arch_kw=None, **cfg_kw):
    """A fresh model and loader each call, as a new session would build them; dropout on, shuffling on."""
    model = tiny_model("bert", seed=0, **(arch_kw or {}))
    loader = make_loader(tiny_sentiment(40, 0), tok, 8, 16, shuffle=True, seed=0, group_by_length=group_by_length)
    kw = dict(lr=3e-3, steps=STEPS, batch_size=8, log_every=3, seed=0, warmup_ratio=0.2)
    kw.update(cfg_kw)
    cfg = TrainConfig(checkpoint_dir=str(ckpt) if ckpt else None, checkpoint_every=every, **kw)
    res = train(model, loader, cfg, [TaskLoss()], callbacks=list(callbacks))
    return model, res


def _assert_same(a, b):
    (ma, ra), (mb, rb) = a, b
    sa, sb = ma.state_dict(), mb.state_dict()
    assert sa.keys() == sb.keys()
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not diff, f"weights differ in {len(diff)} tensors, e.g. {diff[:3]}"
    assert ra.losses == rb.losses and ra.steps == rb.steps


def _steps_in(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.fixture(scope="module")
def reference(tiny_tok):
    return {g: _run(tiny_tok, group_by_length=g) for g in (False, True)}


@pytest.mark.parametrize("group_by_length", [False, True])
@pytest.mark.parametrize("every, stop, last", [
    (4, 6, 4),     # checkpoint in the first epoch (batch 4 of 5)
    (4, 11, 8),    # in a later epoch (batch 3 of epoch 1): its order must be replayed, not redrawn
    (5, 11, 10)])  # on an epoch boundary (all 5 batches of epoch 1 taken)
def test_stopped_and_resumed_equals_uninterrupted(tiny_tok, tmp_path, reference, group_by_length, every, stop, last):
    with pytest.raises(_Stop):
        _run(tiny_tok, tmp_path, every=every, callbacks=[_StopAt(stop)], group_by_length=group_by_length)
    assert _steps_in(tmp_path) == [f"step-{last:08d}"]
    torch.manual_seed(1234)  # whatever the next session's RNG holds must not matter
    seen = _Seen()
    resumed = _run(tiny_tok, tmp_path, every=every, callbacks=[seen],
                   group_by_length=group_by_length)
    _assert_same(resumed, reference[group_by_length])
    assert resumed[1].resumed_at == last and resumed[1].to_dict()["resumed_at"] == last
    assert seen.seen == list(range(last, STEPS))  # the true step numbers, and only the remaining steps
    assert _steps_in(tmp_path) == [f"step-{STEPS:08d}"]  # only the newest is kept


def test_callback_state_is_saved_and_restored(tiny_tok, tmp_path):
    with pytest.raises(_Stop):
        _run(tiny_tok, tmp_path, every=4, callbacks=[_Counter(), _StopAt(6)])
    counter = _Counter()
    _run(tiny_tok, tmp_path, every=4, callbacks=[counter, _StopAt(-1)])
    assert counter.seen == list(range(STEPS))


@pytest.mark.parametrize("broken", ["data position", "rng"])
def test_resume_check_has_teeth(tiny_tok, tmp_path, reference, monkeypatch, broken):
    """Without the data replay or the RNG restore the resumed weights differ: what the test above relies on."""
    with pytest.raises(_Stop):
        _run(tiny_tok, tmp_path, every=4, callbacks=[_StopAt(6)])
    if broken == "data position":
        monkeypatch.setattr(resume.DataCursor, "restore", lambda self, position, rng: None)
    else:  # the epoch replay still restores its RNG; the step's RNG state is not restored
        monkeypatch.setattr(loop, "set_rng_state", lambda state, generators: None)
    model, res = _run(tiny_tok, tmp_path, every=4)
    ref_model = reference[False][0]
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()))


# The stopped half runs in a fresh interpreter: raising a real SIGTERM at the pytest process itself,
# after earlier tests had loaded native runtimes (ONNX Runtime, OpenVINO thread pools), crashed the
# whole run with a segfault; alone, in its own process, the same code is what a user's process does.
_SIGNAL_CHILD = """
import signal, sys
# a shell's background job (`make test &`, nohup) starts with SIGINT ignored, and Python then keeps it
# ignored: give the child what an interactive user's process has
signal.signal(signal.SIGINT, signal.default_int_handler)
import torch
torch.set_num_threads(1)  # as tests/conftest.py: the resumed half runs in the test process
sys.path.insert(0, sys.argv[1])
import test_loop_resume as t
from compresslab.models.tiny import tiny_tokenizer

ckpt, sig, exc = sys.argv[2], int(sys.argv[3]), sys.argv[4]
tok = tiny_tokenizer(sys.argv[5])


class RaiseAt:
    def on_step_end(self, step, model, optimizer):
        if step == 5:
            signal.raise_signal(sig)  # held by the loop until step 5 has ended


def handler(signum, frame):
    raise t._Stop


signal.signal(signal.SIGTERM, handler)
expected = t._Stop if exc == "_Stop" else KeyboardInterrupt
try:
    t._run(tok, ckpt, every=4, callbacks=[RaiseAt()])
except expected:
    pass
else:
    sys.exit("no exception was re-raised")
assert signal.getsignal(signal.SIGTERM) is handler, "SIGTERM handler not put back"
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "SIGINT handler not put back"
print("ok")
"""


@pytest.mark.parametrize("sig, exc", [(signal.SIGTERM, "_Stop"), (signal.SIGINT, "KeyboardInterrupt")])
def test_signal_finishes_the_step_checkpoints_and_is_re_raised(tiny_tok, tmp_path, reference, sig, exc):
    import subprocess
    import sys

    ckpt = tmp_path / "ckpt"
    out = subprocess.run([sys.executable, "-c", _SIGNAL_CHILD, str(Path(__file__).parent), str(ckpt), str(int(sig)),
                          exc, str(tmp_path / "tok")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout[-2000:] + out.stderr[-4000:]
    assert _steps_in(ckpt) == ["step-00000006"]
    _assert_same(_run(tiny_tok, ckpt, every=4), reference[False])


def test_finished_run_resumes_as_finished(tiny_tok, tmp_path, reference):
    first = _run(tiny_tok, tmp_path, every=4)
    _assert_same(first, reference[False])
    seen = _Seen()
    again = _run(tiny_tok, tmp_path, every=4, callbacks=[seen])
    _assert_same(again, reference[False])
    assert seen.seen == [] and again[1].resumed_at == STEPS


@pytest.mark.parametrize("change, field", [
    (dict(lr=1e-3), "lr"), (dict(steps=STEPS + 1), "steps"), (dict(batch_size=4), "batch_size"),
    (dict(schedule="constant"), "schedule"), (dict(seed=1), "seed"),
    (dict(arch_kw=dict(intermediate_size=48)), "parameters")])
def test_a_different_run_is_refused_naming_the_field(tiny_tok, tmp_path, change, field):
    with pytest.raises(_Stop):
        _run(tiny_tok, tmp_path, every=4, callbacks=[_StopAt(6)])
    with pytest.raises(ResumeError, match=rf"differing: (.*; )?{field}\b"):
        _run(tiny_tok, tmp_path, every=4, **change)
    assert _steps_in(tmp_path) == ["step-00000004"]  # nothing was overwritten


def test_parameter_mismatch_names_the_parameters(tiny_tok, tmp_path):
    with pytest.raises(_Stop):
        _run(tiny_tok, tmp_path, every=4, callbacks=[_StopAt(6)])
    with pytest.raises(ResumeError, match=r"intermediate\.dense\.weight \(48, 32\)"):
        _run(tiny_tok, tmp_path, every=4, arch_kw=dict(intermediate_size=48))


def test_partial_write_left_behind_is_ignored(tiny_tok, tmp_path, reference, caplog):
    with pytest.raises(_Stop):
        _run(tiny_tok, tmp_path, every=4, callbacks=[_StopAt(6)])
    junk = tmp_path / ".tmp-step-00000008-abc"  # a write the session's end cut short
    junk.mkdir()
    (junk / "model.pt").write_bytes(b"\x00" * 10)
    with caplog.at_level(logging.WARNING, logger="compresslab.training.resume"):
        resumed = _run(tiny_tok, tmp_path, every=4)
    assert "partial checkpoint" in caplog.text and ".tmp-step-00000008-abc" in caplog.text
    _assert_same(resumed, reference[False])
    assert _steps_in(tmp_path) == [f"step-{STEPS:08d}"]


def test_only_a_partial_write_starts_fresh(tiny_tok, tmp_path, reference):
    (tmp_path / ".tmp-step-00000004-abc").mkdir()
    model, res = _run(tiny_tok, tmp_path, every=4)
    assert res.resumed_at is None
    _assert_same((model, res), reference[False])


@pytest.mark.parametrize("damage", ["truncate state", "drop meta"])
def test_corrupt_checkpoint_is_reported(tiny_tok, tmp_path, damage):
    with pytest.raises(_Stop):
        _run(tiny_tok, tmp_path, every=4, callbacks=[_StopAt(6)])
    ck = tmp_path / "step-00000004"
    if damage == "truncate state":
        data = (ck / "state.pt").read_bytes()
        (ck / "state.pt").write_bytes(data[: len(data) // 2])
    else:
        (ck / "meta.json").unlink()
    with pytest.raises(ResumeError, match=r"step-00000004 is unreadable .*delete it"):
        _run(tiny_tok, tmp_path, every=4)


def test_a_failed_write_keeps_the_previous_checkpoint(tiny_tok, tmp_path, reference, monkeypatch):
    real = resume._save_file
    writes = []

    def dies_on_second_state(obj, path):
        writes.append(path.name)
        if writes.count("state.pt") == 2:
            raise _Stop("killed while writing")
        real(obj, path)

    monkeypatch.setattr(resume, "_save_file", dies_on_second_state)
    with pytest.raises(_Stop):
        _run(tiny_tok, tmp_path, every=4)
    assert _steps_in(tmp_path) == ["step-00000004"]  # the half-written step 8 never took its name
    monkeypatch.setattr(resume, "_save_file", real)
    _assert_same(_run(tiny_tok, tmp_path, every=4), reference[False])


def test_checkpoint_files_load_weights_only(tiny_tok, tmp_path):
    _run(tiny_tok, tmp_path, every=0)
    ck = tmp_path / f"step-{STEPS:08d}"
    assert sorted(p.name for p in ck.iterdir()) == ["meta.json", "model.pt", "state.pt"]
    sd = torch.load(ck / "model.pt", weights_only=True)
    state = torch.load(ck / "state.pt", weights_only=True)
    assert "classifier.weight" in sd and state["step"] == STEPS and state["data"] == {"epoch": 2, "taken": 3}


def test_config_validation():
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainConfig(checkpoint_every=-1, checkpoint_dir="x")
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainConfig(checkpoint_every=True, checkpoint_dir="x")
    with pytest.raises(ValueError, match="needs checkpoint_dir"):
        TrainConfig(checkpoint_every=5)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        TrainConfig(checkpoint_dir=3)
    assert TrainConfig(checkpoint_dir=Path("a/b")).checkpoint_dir == "a/b"


def test_recover_passes_checkpointing_through(tiny_tok, tmp_path):
    def run(callbacks=()):
        model = tiny_model("bert", seed=0)
        loader = make_loader(tiny_sentiment(40, 0), tiny_tok, 8, 16, shuffle=True, seed=0)
        recover(model, loader, Recovery(steps=7, lr=3e-3, hardness=0.0), None, batch_size=8, device="cpu",
                callbacks=callbacks, checkpoint_dir=tmp_path / "rec", checkpoint_every=3)
        return model

    with pytest.raises(_Stop):
        run([_StopAt(5)])
    assert _steps_in(tmp_path / "rec") == ["step-00000003"]
    resumed = run()
    model = tiny_model("bert", seed=0)
    loader = make_loader(tiny_sentiment(40, 0), tiny_tok, 8, 16, shuffle=True, seed=0)
    recover(model, loader, Recovery(steps=7, lr=3e-3, hardness=0.0), None, batch_size=8, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))


_SECOND_SIGNAL_CHILD = """
import signal
from compresslab.training import resume


class Stop(Exception):
    pass


def handler(signum, frame):
    raise Stop


signal.signal(signal.SIGTERM, handler)
with resume.DeferredSignals(True) as held:
    signal.raise_signal(signal.SIGTERM)
    assert held.pending == signal.SIGTERM  # held: the step may finish
    try:
        signal.raise_signal(signal.SIGTERM)  # asked again: through at once
    except Stop:
        pass
    else:
        raise SystemExit("the second signal was held too")
assert signal.getsignal(signal.SIGTERM) is handler
with resume.DeferredSignals(False):  # off (e.g. several processes): nothing installed
    assert signal.getsignal(signal.SIGTERM) is handler
print("ok")
"""


def test_a_second_signal_is_not_held():
    """In a fresh interpreter, as the other real-signal test (a SIGTERM at the pytest process crashed it)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _SECOND_SIGNAL_CHILD], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout[-2000:] + out.stderr[-4000:]
