"""compresslab/pipeline/validation.py: the figure every deploy-time choice ranks by (agreement for
classification, Pearson r with the teacher otherwise), the teacher's predictions computed once, and IRs
compiled at the precision asked (the suite scores and times its OpenVINO cells at "default")."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import compresslab.bench.openvino_runner as ovr
import compresslab.eval.evaluate as ev
from compresslab.pipeline.validation import ValidationAgreement
from compresslab.data.schema import TaskKind


def _state(kind: TaskKind) -> SimpleNamespace:
    spec = SimpleNamespace(kind=kind)
    return SimpleNamespace(task=SimpleNamespace(validation=[1, 2, 3], spec=spec), tokenizer=None,
                           settings=SimpleNamespace(eval=SimpleNamespace(batch_size=2), max_length=8,
                                                    deploy=SimpleNamespace(precision="bf16")),
                           teacher_or_initial=lambda: "teacher")


@pytest.mark.parametrize("kind,key", [(TaskKind.CLASSIFICATION, "agreement"), (TaskKind.REGRESSION, "agreement_pearson"),
                                      (TaskKind.EMBEDDING, "agreement_pearson")])
def test_the_key_follows_the_task_kind(kind, key) -> None:
    assert ValidationAgreement.of_run(_state(kind)).key == key


def test_ir_scorer_compiles_at_the_precision_asked_and_predicts_the_teacher_once(monkeypatch) -> None:
    compiled, predicted = [], []
    monkeypatch.setattr(ovr, "OpenVinoRunner", lambda xml, threads, precision: compiled.append((xml, precision)) or xml)
    monkeypatch.setattr(ev, "onnx_forward", lambda runner: runner)
    monkeypatch.setattr(ev, "torch_forward", lambda model: model)
    monkeypatch.setattr(ev, "predict", lambda f, spec, examples, tok, **kw: predicted.append((f, kw)) or f)
    # a fake compare: the "agreement" of an IR is the length of its name, so the scorer's output is checkable
    monkeypatch.setattr(ev, "compare", lambda pred, ref, spec: {"agreement": float(len(pred)), "ref": ref})
    v = ValidationAgreement.of_run(_state(TaskKind.CLASSIFICATION))
    assert v.ir_scorer(1, "default")({"a": "x.xml", "b": "yy.xml"}) == {"a": 5.0, "b": 6.0}
    assert compiled == [("x.xml", "default"), ("yy.xml", "default")]
    v.ir_scorer(1)({"c": "z.xml"})  # no precision asked: deploy.precision
    assert compiled[-1] == ("z.xml", "bf16")
    assert [f for f, _ in predicted].count("teacher") == 1  # the teacher's validation predictions are computed once
    assert all(kw == {"batch_size": 2, "max_length": 8} for _, kw in predicted)  # eval.batch_size, task.max_length
