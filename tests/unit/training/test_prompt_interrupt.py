"""Ctrl-C is honoured within seconds inside a training step's long work, and the rerun is the run never stopped.

The training loop holds SIGINT/SIGTERM to the step's end so that checkpoints hold whole steps; a step that does
long work (a gradual oBERT event's Fisher rebuild, a validation check) used to make a Ctrl-C wait for all of it
(minutes on a real model). Long work now calls ``failure.raise_if_interrupted`` between its pieces: the step is
dropped at once, the run stops as a stop at a step's end does (KeyboardInterrupt from Python's handler), and a
rerun resumes from the last checkpoint to the weights of a run never stopped.

Real signals run in a fresh interpreter, as in test_deferred_signals.py (a signal at the pytest process itself
crashed a full run once).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compresslab.failure import stop_summary
from compresslab.models.tiny import tiny_model
from compresslab.passes import obert as obert_module
from compresslab.passes.obert import OBert
from compresslab.pruning import fisher
from compresslab.testing import StopRun, tiny_context
from compresslab.training import Recovery

# A run the signal stops must stop within STOP_S of it; the slowed work it lands in would take SLOW_S more.
STOP_S, SLOW_S = 5.0, 20.0

# ------------------------------------------------------------------ shared by the child scripts
_COMMON = r"""
import copy, json, os, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts with SIGINT ignored
import torch
torch.set_num_threads(1)
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.testing import tiny_context, tiny_task
from compresslab.training import Recovery

tmp = Path(sys.argv[1])
tok = tiny_tokenizer(tmp / "tok")
SLOW = float(sys.argv[2])  # seconds per slowed piece of work
report = {}


def same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def stopped_by_signal(run):
    # run() raises the signal inside slowed work at report["signalled"]; how long until the run stopped?
    try:
        run()
    except KeyboardInterrupt as e:
        report["stop_s"] = round(time.perf_counter() - report["signalled"], 3)
        report["stop"] = [type(e).__name__, str(e)]
    else:
        report["stop"] = None
"""

_OBERT_CHILD = _COMMON + r"""
from compresslab.passes import obert as ob
from compresslab.passes.obert import OBert

orig = ob.rank_batches
NUM_GRADS, SIGNAL_AT = 48, 50  # the second event (step 4) draws batches 49..96: the signal lands at its 2nd


def stream(slow):
    def rank_batches(loader, device):
        for i, batch in enumerate(orig(loader, device), 1):
            if slow and i > NUM_GRADS:
                time.sleep(SLOW)  # a slow Fisher batch: a busy machine, a real model
                if i == SIGNAL_AT:
                    report["signalled"] = time.perf_counter()
                    os.kill(os.getpid(), signal.SIGINT)
            yield batch
    return rank_batches


def run(name, slow=False):
    ob.rank_batches = stream(slow)
    model = tiny_model("bert", seed=0)
    ctx = tiny_context(tok, tmp / name, teacher=copy.deepcopy(model).eval())
    res = OBert(sparsity=0.6, init_sparsity=0.3, recovery=Recovery(steps=8), num_events=3, block_size=16,
                num_grads=NUM_GRADS, grad_batch_size=2, checkpoint_every=1).apply(model, ctx)
    return model, res


ref, _ = run("ref")
stopped_by_signal(lambda: run("stopped", slow=True))
ckpt = tmp / "stopped" / "step" / "train_checkpoint"
report["checkpoints"] = sorted(p.name for p in ckpt.iterdir())
model, res = run("stopped")
report["resumed_at"] = res.metrics.get("resumed_at")
report["prune_steps"] = res.metrics["prune_steps"]
report["identical"] = same(model, ref)
print("REPORT " + json.dumps(report))
"""

_SELECT_CHILD = _COMMON + r"""
from compresslab.data.loaders import make_loader
from compresslab.testing import tiny_sentiment
from compresslab.training import recover

VAL = 64 * 42  # 42 validation batches of predict()'s 64
CHECK = 4  # the validation check after step 4 is slowed and signalled (the checkpoint of step 4 is not written)


def run(name, slow=False):
    model = tiny_model("bert", seed=0)
    teacher = copy.deepcopy(model).eval()
    ctx = tiny_context(tok, tmp / name, task=tiny_task(n_train=48, n_val=VAL))
    slowed = {"on": False, "batches": 0}

    def slow_batch(module, args, kwargs):
        if slowed["on"]:
            time.sleep(SLOW)
            slowed["batches"] += 1
            if slowed["batches"] == 2:
                report["signalled"] = time.perf_counter()
                os.kill(os.getpid(), signal.SIGINT)

    model.register_forward_pre_hook(slow_batch, with_kwargs=True)
    checks = []

    def validate(m):
        checks.append(len(checks))
        slowed["on"] = slow and len(checks) == 1 + CHECK // 2  # checks at steps 0, 2, 4, ...
        try:
            return ctx.validation_score(m)
        finally:
            slowed["on"] = False

    res = recover(model, make_loader(tiny_sentiment(48, 0), tok, 8, 16, shuffle=True, seed=0),
                  Recovery(steps=8, lr=3e-3, select_every=2), teacher, batch_size=8, seed=0,
                  checkpoint_dir=tmp / name / "ckpt", checkpoint_every=2, validate=validate)
    return model, res


ref, ref_res = run("ref")
stopped_by_signal(lambda: run("stopped", slow=True))
report["checkpoints"] = sorted(p.name for p in (tmp / "stopped" / "ckpt").iterdir())
model, res = run("stopped")
report["resumed_at"] = res.resumed_at
report["identical"] = same(model, ref) and res.selection == ref_res.selection and res.losses == ref_res.losses
print("REPORT " + json.dumps(report))
"""


def _child(script: str, tmp_path: Path) -> dict:
    slow = SLOW_S / 40  # both scripts slow 40 or more pieces after the signal's
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(slow)], capture_output=True, text=True,
                         timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("REPORT ")]
    assert out.returncode == 0 and lines, out.stdout[-2000:] + out.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("REPORT "))


def test_ctrl_c_during_a_fisher_rebuild_stops_at_once_and_resumes_bit_identical(tmp_path):
    """A SIGINT at the 2nd gradient of a gradual oBERT event's 48 (each slowed to 0.5 s: 23 s more of rebuild,
    then the inverse and the step) stops the run within seconds, as a KeyboardInterrupt, leaving the checkpoint of
    the last finished step (4); the rerun redoes the event from there and ends on the uninterrupted run's weights."""
    r = _child(_OBERT_CHILD, tmp_path)
    assert r["stop"] == ["KeyboardInterrupt", ""], r  # what Python's handler raises, as at a step's end
    # ... so the run's record and the CLI say what they said of a stop at a step's end (and exit 130)
    assert stop_summary({"type": r["stop"][0], "message": r["stop"][1], "step": "obert"}) == (
        "Interrupted by Ctrl-C (SIGINT) in step obert. Rerun the same command to resume after the last finished step.")
    assert r["stop_s"] < STOP_S, f"stopped {r['stop_s']} s after the signal; the rebuild had {SLOW_S} s more"
    assert r["checkpoints"] == ["step-00000004"], r  # the dropped step 4 (its event) was never written
    assert r["resumed_at"] == 4 and [s for s, _ in r["prune_steps"]] == [2, 4, 6], r
    assert r["identical"], "the resumed run's weights differ from the uninterrupted run's"


def test_ctrl_c_during_a_validation_check_stops_at_once_and_resumes_bit_identical(tmp_path):
    """The same for another kind of long work inside a step: recovery's validation check (select_every) over 40
    batches of the validation split, slowed to 0.5 s each, signalled at the 2nd."""
    r = _child(_SELECT_CHILD, tmp_path)
    assert r["stop"] == ["KeyboardInterrupt", ""], r
    assert r["stop_s"] < STOP_S, f"stopped {r['stop_s']} s after the signal; the check had {SLOW_S} s more"
    assert r["checkpoints"] == ["step-00000002"], r  # step 4's check was under way: its checkpoint never started
    assert r["resumed_at"] == 2, r
    assert r["identical"], "the resumed run (weights, selection, losses) differs from the uninterrupted run"


# ------------------------------------------------------------------ in process, no signal
def test_a_resumed_gradual_obert_run_continues_the_fisher_batch_stream(tiny_tok, tmp_path, monkeypatch):
    """Stopped inside the second pruning event (an error, no signal), the rerun resumes at its checkpoint and must
    give that event the batches the stopped run would have drawn: before, it drew from a fresh stream (the first
    event's batches again) and ended on other weights."""
    orig = obert_module.rank_batches

    def run(name, stop_at=None):
        def rank_batches(loader, device):
            for i, batch in enumerate(orig(loader, device), 1):
                if i == stop_at:
                    raise StopRun(i)
                yield batch

        monkeypatch.setattr(obert_module, "rank_batches", rank_batches)
        model = tiny_model("bert", seed=0)
        ctx = tiny_context(tiny_tok, tmp_path / name, teacher=copy.deepcopy(model).eval())
        res = OBert(sparsity=0.6, init_sparsity=0.3, recovery=Recovery(steps=8), num_events=3, block_size=16,
                    num_grads=8, grad_batch_size=4, checkpoint_every=1).apply(model, ctx)
        return model, res

    ref, _ = run("ref")
    with pytest.raises(StopRun):
        run("stopped", stop_at=12)  # the event at step 4 draws batches 9..16
    model, res = run("stopped")
    assert res.metrics["resumed_at"] == 4
    diff = [k for k, v in ref.state_dict().items() if not torch.equal(v, model.state_dict()[k])]
    assert not diff, f"the resumed run differs in {len(diff)} tensors, e.g. {diff[:3]}"


def test_a_resume_refuses_a_fisher_stream_already_past_the_checkpoint():
    scorer = fisher.OBSScorer(iter(range(10)), num_grads=2, block_size=4, damp=1e-4)
    scorer.load_state_dict({"batches_drawn": 3})
    assert next(scorer.batches) == 3 and scorer.state_dict() == {"batches_drawn": 4}
    with pytest.raises(fisher.ResumeError, match="batch 2, this run's at 4"):
        scorer.load_state_dict({"batches_drawn": 2})


def test_block_inverses_chunked_for_interrupts_are_the_whole_call_bit_for_bit(monkeypatch):
    """invert_sums checks for a held signal between chunks of blocks (one call on a large weight took 17 s on a
    busy machine): each chunk is its own call, and the result is the one-call result exactly."""
    from compresslab.ops.fisher import fisher_inverse_from_outer_sums

    torch.manual_seed(0)
    g = torch.randn(10, 8, 12)
    sums = torch.bmm(g, g.transpose(1, 2))
    checks = []
    monkeypatch.setattr(fisher, "INVERT_CHUNK", 3)
    monkeypatch.setattr(fisher, "raise_if_interrupted", lambda: checks.append(1))
    out = fisher.invert_sums({"w": sums.clone()}, 12, 1e-3, consume=True)["w"]
    assert len(checks) == 4  # blocks 0-2, 3-5, 6-8, 9
    assert torch.equal(out, fisher_inverse_from_outer_sums(sums, 12, 1e-3))
