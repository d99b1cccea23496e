"""The eval stage's batch-dependence check says why labels move (new-user trial, session 45, F8).

A per-call dynamic activation range (``DynamicQuantizeLinear``) is taken over every token of the call, pad positions
included, so a dynamic-int8 file's labels depend on the other sentences of the batch AND on how far the batch is
padded (the trial: 50.00% at batch 32 padded to the longest sentence, 53.12% padded to max_length=64). The record says
how the batched score was padded, and the warning names both causes. The forward here stands in for such a file: its
label depends on whether the sentence's row carries padding, as a pad-widened range moves a label.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper

from compresslab.data.tasks import TaskKind, TaskSpec
from compresslab.eval.evaluate import predict
from compresslab.pipeline.evaluate import score_batch_dependence
from compresslab.testing import tiny_sentiment

SPEC = TaskSpec("t", TaskKind.CLASSIFICATION, 2, "accuracy")


def _dynamic_graph(path: Path) -> Path:
    """A graph holding the per-call op the check looks for (the forward below is what runs)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)]),
              path)
    return path


def _padding_moves_the_label(batch: dict) -> np.ndarray:
    """Class 1 for a row with pad positions, else class 0: the label moves with the padding its batch gives it."""
    padded = (batch["attention_mask"].numpy() == 0).any(axis=1)
    return np.stack([padded, ~padded], axis=1).astype(np.float32)


def test_the_record_says_how_the_batch_was_padded_and_the_warning_names_batchmates_and_padding(tmp_path, tiny_tok,
                                                                                               caplog):
    examples = tiny_sentiment(16, seed=3)
    state = SimpleNamespace(settings=SimpleNamespace(eval=SimpleNamespace(batch_dependence=True, batch_size=8),
                                                     max_length=32),
                            task=SimpleNamespace(spec=SPEC), eval_examples=examples, tokenizer=tiny_tok, scores={})
    batched = predict(_padding_moves_the_label, SPEC, examples, tiny_tok, batch_size=8, max_length=32)
    with caplog.at_level(logging.WARNING, logger="compresslab.pipeline.evaluate"):
        rec = score_batch_dependence(_padding_moves_the_label, _dynamic_graph(tmp_path / "m.onnx"), batched, state,
                                     "deployed")
    assert rec is not None and rec["flips"] > 0 and rec["padding"] == "longest"
    warning = caplog.text
    assert "one dynamic activation range per call" in warning and "padding included" in warning
    assert "depend on the other sentences of the batch and on how far it is padded" in warning
    assert "(padded to the longest sentence)" in warning


def _padding_moves_the_value(batch: dict) -> np.ndarray:
    """A regression output that a row's padding shifts (its length otherwise): the value moves with the padding."""
    mask = batch["attention_mask"].numpy()
    return (mask.sum(axis=1) + 10.0 * (mask == 0).any(axis=1))[:, None].astype(np.float32)


def test_a_regression_files_warning_speaks_of_outputs_not_labels(tmp_path, tiny_tok, caplog) -> None:
    # trial 47b B11: "its labels depend on the other sentences of the batch" for a Spearman-scored regression file
    spec = TaskSpec("r", TaskKind.REGRESSION, 1, "spearman", metrics=("spearman",))
    examples = tiny_sentiment(16, seed=3)
    state = SimpleNamespace(settings=SimpleNamespace(eval=SimpleNamespace(batch_dependence=True, batch_size=8),
                                                     max_length=32),
                            task=SimpleNamespace(spec=spec), eval_examples=examples, tokenizer=tiny_tok, scores={})
    batched = predict(_padding_moves_the_value, spec, examples, tiny_tok, batch_size=8, max_length=32)
    with caplog.at_level(logging.WARNING, logger="compresslab.pipeline.evaluate"):
        score_batch_dependence(_padding_moves_the_value, _dynamic_graph(tmp_path / "m.onnx"), batched, state,
                               "deployed")
    assert "so its outputs depend on the other sentences of the batch" in caplog.text
    assert "labels" not in caplog.text
