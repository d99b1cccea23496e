"""Who needs a teacher during recovery, and what happens when a pass forgets to fetch it.

The fault class: a pass fetched its KD teacher only when ``Recovery.uses_teacher`` (hardness or hidden KD),
but on an embedding task every recovery is embedding KD, which always reads the teacher. ``hawq`` with QAT
steps and ``hardness=0`` on ``stsb_embedding`` got ``None``. The rule now lives in one place
(``Recovery.needs_teacher``) and ``recover`` refuses, before any step, to run teacher-reading losses without
one. Every pass with a ``recovery`` runs here on a tiny embedding task with ``hardness=0``.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from compresslab.data.schema import TaskData
from compresslab.models.tiny import tiny_config
from compresslab.registry import build_pass
from compresslab.testing import tiny_embedding_task
from compresslab.training.recovery import Recovery, recover

def _embedding_task() -> TaskData:
    return tiny_embedding_task(32, 8, 8)


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModel.from_config(tiny_config("bert")).eval()


@pytest.mark.parametrize("steps, hardness, hidden, embedding, want", [
    (0, 1.0, 0.0, True, False),    # no steps: nothing trains
    (2, 0.0, 0.0, False, False),   # task loss only
    (2, 1.0, 0.0, False, True),    # logit KD
    (2, 0.0, 0.5, False, True),    # hidden-state KD
    (2, 0.0, 0.0, True, True),     # embedding KD reads the teacher whatever hardness says
])
def test_needs_teacher(steps, hardness, hidden, embedding, want) -> None:
    r = Recovery(steps=steps, hardness=hardness, hidden_weight=hidden)
    assert r.needs_teacher(embedding) is want


def test_recover_refuses_teacher_losses_without_a_teacher_before_any_step() -> None:
    class NoBatches:  # iterating it would mean a step started
        def __iter__(self):
            raise AssertionError("a training step started")

    with pytest.raises(ValueError, match="read a teacher and none was given"):
        recover(_encoder(), NoBatches(), Recovery(steps=2, hardness=0.0), None, embedding=True)


@pytest.mark.parametrize("name, kw", [
    ("hawq", {"bits": 4, "avg_bits": None, "block_size": 32}),
    ("int8_qat", {}),
    ("layer_drop", {"keep": [0]}),
    ("magnitude", {"sparsity": 0.5}),
])  # structured_l1, ziplm and bibert fetch their teacher unconditionally (their recovery always distils)
def test_every_recovering_pass_refuses_hardness_on_an_embedder_and_distils_it(name, kw, tiny_ctx) -> None:
    # hardness weighs logit KD against the task loss; an embedder has neither, so the setting is refused up front
    # (it would be ignored) and the recovery distils the embedding with its teacher fetched either way
    with pytest.raises(ValueError, match="recovery.hardness=0.0: on the embedding task"):
        build_pass(name, **kw, recovery={"steps": 2, "hardness": 0.0, "lr": 1e-4}).check(_embedding_task())
    p = build_pass(name, **kw, recovery={"steps": 2, "lr": 1e-4})
    model = _encoder()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = tiny_ctx(task=_embedding_task())  # no run teacher: the pass's frozen copy of the incoming model
    p.apply(model, ctx)
    changed = any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k in before)
    assert changed  # the recovery (or the compression) ran, no crash for a missing teacher


REQUIRED = {"layer_drop": {"num_layers": 1}}  # settings a pass cannot be built without


def test_every_pass_with_a_recovery_block_says_whether_it_distils() -> None:
    """A pass holding a ``Recovery`` block trains with KD from it, so the pipeline must be able to ask it
    (``recovery_settings`` hook, or ``needs_teacher`` declared): ``distils_before_teacher`` then refuses a
    distilling step before any teacher exists. Every shipped pass does (ziplm and structured_l1 through
    ``SpeedupSettings``); a new pass holding the block without the hook would distil from an untrained head
    unchecked, and fails here."""
    import dataclasses
    import typing

    from compresslab.pipeline.plan import needs_teacher
    from compresslab.registry import available_passes, get_pass
    from compresslab.types import capability, hook

    silent = []
    for name in available_passes():
        cls = get_pass(name)
        hints = typing.get_type_hints(cls)
        holds = [f.name for f in dataclasses.fields(cls) if Recovery in (hints[f.name], *typing.get_args(hints[f.name]))]
        if not holds:
            continue
        p = build_pass(name, **REQUIRED.get(name, {}))
        if hook(p, "recovery_settings") is None and not capability(p, "needs_teacher"):
            silent.append(name)
        elif p.recovery.steps and p.recovery.hardness > 0:  # the default KD recovery is seen as distilling
            assert needs_teacher(p), name
    assert not silent, f"passes with a Recovery block the pipeline cannot ask about KD: {silent}"
