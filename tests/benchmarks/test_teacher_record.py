"""``compresslab.pipeline.teacher_of`` (the :class:`Teacher` record benchmarks use) against the run state the
benchmarks held before it (``teacher_state``'s: :meth:`RunState.prepare`, ``load_initial``, the teacher pass through
``apply_torch_pass``), on one tiny task config: the same teacher weights, the same suite cell keys (so every
cached cell is found again), the same pass contexts (the finetune cache key compound_seeds/ziplm look the teacher
up by), calibration batches, validation predictions and pass record; ``task_data`` is the task the run reads.

A tiny random BERT and a generic CSV task; the finetune pass is a fake (one deterministic "training" step), so
nothing is trained."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from compresslab.config import compose
from compresslab.manifest import examples_sha256, state_dict_sha256, tokenizer_sha256
from compresslab.testing import tiny_generic_run

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is run as a package from the repo root
    sys.path.insert(0, str(REPO))
suite = importlib.import_module("benchmarks.suite")
suite_plan = importlib.import_module("benchmarks.suite_plan")
store = importlib.import_module("benchmarks.store")


def _fake_finetune(self: Any, model: torch.nn.Module, ctx: Any) -> Any:
    """The pass's record as the real one writes it (its content key), after a deterministic "training" step."""
    from compresslab.types import PassResult

    with torch.no_grad():
        model.classifier.bias.add_(0.5)
    return PassResult(metrics={"trained": True, "cached": False, "cache_key": self.cache_key(ctx, model),
                               "recipe": self.recipe()})


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """(old, new, cfg, overrides): the state ``teacher_state`` returned, and ``teacher_of``'s record, of one config."""
    from compresslab.passes.finetune import Finetune
    from compresslab.pipeline import build_steps, teacher_of
    from compresslab.pipeline.state import RunState
    from compresslab.pipeline.steps import apply_torch_pass

    root = tmp_path_factory.mktemp("teacher record")
    overrides = (*tiny_generic_run(root, "int8"), "task.val_size=16", "run.threads=1")
    cfg = compose(["+pipeline=int8", *overrides])
    work = root / "work"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Finetune, "apply", _fake_finetune)
        # before: teacher_state's body, verbatim
        makers = [s for s in build_steps(cfg) if s.pass_.makes_teacher]
        old = RunState.prepare(cfg, makers)
        old.load_initial()
        old_metrics = dict(apply_torch_pass(old, makers[0], work / "step", work).metrics)
        # after
        new = teacher_of(cfg, work)
    return SimpleNamespace(old=old, old_metrics=old_metrics, new=new, cfg=cfg, overrides=overrides, work=work)


def test_the_record_holds_the_states_teacher_data_and_pass_record(both) -> None:
    old, new = both.old, both.new
    assert state_dict_sha256(new.model) == state_dict_sha256(old.teacher)
    assert not new.model.training and not any(p.requires_grad for p in new.model.parameters())
    assert tokenizer_sha256(new.tokenizer) == tokenizer_sha256(old.tokenizer)
    for split in ("train", "validation", "dev"):
        assert examples_sha256(getattr(new.task, split)) == examples_sha256(getattr(old.task, split)), split
    assert new.task.spec == old.task.spec and new.task.info == old.task.info
    assert new.max_length == old.settings.max_length == 32
    assert dict(new.metrics) == both.old_metrics and new.cache_key == both.old_metrics["cache_key"]
    assert new.given is old.input_is_teacher is False and new.source == old.model_source
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.max_length = 64  # type: ignore[misc]


def test_the_suites_cell_keys_are_unchanged(both, tmp_path) -> None:
    """``build_cells``' keys: from the state as the suite read it before (``state.settings.max_length``,
    ``state.task``) and from the suite's Teacher over the record now; pipelines, OpenVINO cells and peers."""
    old, new = both.old, both.new
    plan = suite_plan.TaskPlan("tiny", "smoke", both.overrides, ("int8", "magnitude_int8"),
                               ("dense_ort_fp32", "ort_quantize_dynamic"), 1, 16, {}, None, None, True)
    before = suite_plan.cell_specs(plan, teacher_sha=state_dict_sha256(old.teacher), dev=list(old.task.dev),
                                   max_length=int(old.settings.max_length), validation=old.task.validation)
    t = suite.Teacher(new, state_dict_sha256(new.model), tmp_path, np.zeros(1), 0.0, [])
    after = suite_plan.cell_specs(plan, teacher_sha=t.sha, dev=t.dev, max_length=t.max_length,
                                  validation=t.task.validation)
    keys = [(name, store.cell_key(spec)) for name, _, spec in after]
    assert keys == [(name, store.cell_key(spec)) for name, _, spec in before]
    assert {n for n, _ in keys} >= {"int8", "int8_openvino", "magnitude_int8", "dense_ort_fp32", "ort_quantize_dynamic"}


def test_pass_contexts_calibration_and_the_finetune_key_are_the_states(both) -> None:
    from hydra.utils import instantiate

    old, new, work = both.old, both.new, both.work
    a, b = old.context(work, work / "x"), new.context(work, work / "x")
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if f.name == "tokenizer":
            assert tokenizer_sha256(va) == tokenizer_sha256(vb)
        elif f.name == "task":
            assert examples_sha256(va.train, va.validation, va.dev) == examples_sha256(vb.train, vb.validation, vb.dev)
        elif f.name == "teacher":
            assert state_dict_sha256(va) == state_dict_sha256(vb)
        else:
            assert va == vb, f.name
    ft = instantiate(both.cfg.pipeline.passes.finetune)  # compound_seeds / ziplm find the cached teacher by it
    assert ft.cache_key(b) == ft.cache_key(a) == new.cache_key
    # the suite's calibration feeds: state.context(work, work / "calibration").calibration_batches(n, 32) before
    got = list(new.calibration_batches(24, 32))
    want = list(old.context(work, work / "calibration").calibration_batches(24, 32))
    assert len(got) == len(want) == 1
    for g, w in zip(got, want):
        assert g.keys() == w.keys() and all(torch.equal(g[k], w[k]) for k in g)


def test_validation_agreement_and_task_data_are_the_runs(both) -> None:
    from compresslab.pipeline import build_steps, task_data
    from compresslab.pipeline.state import RunState
    from compresslab.pipeline.validation import ValidationAgreement

    old, new = both.old, both.new
    ref = ValidationAgreement.of_run(old)  # what the suite built from the state before
    assert new.validation.key == ref.key and examples_sha256(new.validation.examples) == examples_sha256(ref.examples)
    np.testing.assert_array_equal(new.validation.teacher().predictions, ref.teacher().predictions)
    assert new.validation.precision == ref.precision and new.validation._kw() == ref._kw()
    # compound_long / compound_seeds: RunState.prepare(cfg, build_steps(cfg)).task before
    task, prepared = task_data(both.cfg), RunState.prepare(both.cfg, build_steps(both.cfg)).task
    for split in ("train", "validation", "dev"):
        assert examples_sha256(getattr(task, split)) == examples_sha256(getattr(prepared, split)), split
