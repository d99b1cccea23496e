"""eval/batch_dependence.py: which files' outputs move with the batch, and the batch-1 vs batched record.

The premise is checked on ONNX Runtime itself: a sentence sent through ``DynamicQuantizeLinear`` beside a
batchmate with a wider range gets other outputs than sent alone, and through a static QuantizeLinear the same
ones, so the op list is the right test of "depends on the batch"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compresslab.data.tasks import TaskKind, TaskSpec
from compresslab.eval.batch_dependence import BATCH_DEPENDENT_OPS, batch_dependent_ops, summarize
from compresslab.eval.evaluate import Scored

CLS = TaskSpec("t", TaskKind.CLASSIFICATION, 2, "accuracy")
REG = TaskSpec("r", TaskKind.REGRESSION, 1, "pearson")


def _graph(path: Path, dynamic: bool) -> Path:
    """x [N, 4] -> int8 quantize (per call: DynamicQuantizeLinear; static: QuantizeLinear, fixed scale) ->
    dequantize -> y."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    if dynamic:
        nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
        inits = []
    else:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.05]),
                 helper.make_tensor("z", TensorProto.UINT8, [], [128])]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("dynamic", [True, False])
def test_the_op_list_matches_what_onnxruntime_does(tmp_path, dynamic):
    import onnxruntime as ort

    path = _graph(tmp_path / "m.onnx", dynamic)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    small = np.array([[0.11, -0.23, 0.37, 0.05]], np.float32)
    wide = np.array([[5.0, -6.0, 4.0, 3.0]], np.float32)
    alone = sess.run(None, {"x": small})[0][0]
    batched = sess.run(None, {"x": np.concatenate([small, wide])})[0][0]
    moved = not np.allclose(alone, batched)
    assert moved == dynamic
    assert (batch_dependent_ops(path) == ["DynamicQuantizeLinear"]) == dynamic
    assert batch_dependent_ops(path) == [] or dynamic


def test_ort_fusions_count_too():
    assert {"DynamicQuantizeMatMul", "QAttention"} <= BATCH_DEPENDENT_OPS
    assert not {"QuantizeLinear", "DequantizeLinear", "MatMulNBits", "MatMulInteger"} & BATCH_DEPENDENT_OPS


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        batch_dependent_ops(tmp_path / "absent.onnx")


def _scored(preds, labels) -> Scored:
    preds, labels = np.asarray(preds), np.asarray(labels)
    return Scored({"score": float(np.mean(preds == labels))}, preds, labels)


def test_flips_and_agreements_on_known_predictions():
    labels = [0, 1, 1, 0, 1]
    single = _scored([0, 1, 0, 0, 1], labels)    # batch 1: 4/5 right
    batched = _scored([0, 1, 1, 1, 1], labels)   # batch 64: 4/5 right, two labels differ from batch 1
    teacher = _scored([0, 1, 1, 0, 0], labels)
    rec = summarize(single, batched, CLS, 64, reference=teacher)
    assert rec["flips"] == 2 and rec["agreement_b1_vs_batched"] == pytest.approx(0.6)
    assert rec["agreement_b1"] == pytest.approx(0.6)  # [0,1,0,0,1] vs [0,1,1,0,0]
    assert (rec["score_b1"], rec["score_batched"], rec["batch_size"], rec["n"]) == (0.8, 0.8, 64, 5)


def test_regression_reports_the_largest_difference():
    labels = np.array([1.0, 2.0, 3.0])
    single = Scored({"score": 0.9}, np.array([1.0, 2.5, 3.0]), labels)
    batched = Scored({"score": 0.8}, np.array([1.25, 2.0, 3.0]), labels)
    rec = summarize(single, batched, REG, 32)
    assert rec["max_abs_diff"] == pytest.approx(0.5) and "flips" not in rec
    assert "agreement_pearson_b1" not in rec  # no teacher given


def test_regression_reports_the_batch_1_correlation_with_the_teacher():
    """Trial 48, 6: a regression file's batch-1 row had no agreement; it is Pearson r with the teacher's predictions."""
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    single = Scored({"score": 0.9}, np.array([1.0, 2.5, 2.9, 4.2]), labels)
    batched = Scored({"score": 0.8}, np.array([1.1, 2.0, 3.0, 4.0]), labels)
    teacher = Scored({"score": 0.95}, np.array([1.0, 2.0, 3.0, 4.0]), labels)
    rec = summarize(single, batched, REG, 32, teacher)
    assert rec["agreement_pearson_b1"] == pytest.approx(np.corrcoef(single.predictions, teacher.predictions)[0, 1])


def test_different_examples_are_refused():
    with pytest.raises(ValueError, match="different examples"):
        summarize(_scored([0, 1], [0, 1]), _scored([0, 1, 1], [0, 1, 1]), CLS, 8)


def test_empty_and_mismatched_references_are_refused():
    with pytest.raises(ValueError, match="no examples"):
        summarize(_scored([], []), _scored([], []), CLS, 8)
    with pytest.raises(ValueError, match="reference covers other examples"):
        summarize(_scored([0, 1], [0, 1]), _scored([0, 1], [0, 1]), CLS, 8, reference=_scored([0], [0]))
    with pytest.raises(ValueError, match="labels differ"):
        summarize(_scored([0, 1], [0, 1]), _scored([0, 1], [1, 1]), CLS, 8)
