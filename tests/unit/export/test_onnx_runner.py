"""OnnxRunner: input matching, predict, provider errors; onnxruntime stays out of plain imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from compresslab.eval.onnx_runner import OnnxRunner, make_feeds


def test_run_matches_torch_and_fills_token_types(exported_bert, bert_model, batches, torch_out):
    runner = OnnxRunner(exported_bert.onnx_path, threads=1)
    assert runner.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    b = batches[0]
    np.testing.assert_allclose(runner.run(b), torch_out(bert_model, b), atol=1e-4)
    no_tt = {k: v.numpy() for k, v in b.items() if k != "token_type_ids"}  # numpy, labels kept
    np.testing.assert_allclose(runner.run(no_tt), runner.run(b), atol=0)


def test_predict_concatenates_and_postprocesses(exported_bert, batches):
    runner = OnnxRunner(exported_bert.onnx_path, threads=1)
    assert runner.predict(batches).shape == (12, 2)
    top = runner.predict(batches, postprocess=lambda out, batch: out.argmax(-1))
    assert top.shape == (12,)
    with pytest.raises(ValueError, match="empty loader"):
        runner.predict([])


def test_missing_input_and_bad_provider_are_clear(exported_bert):
    with pytest.raises(ValueError, match="needs input 'input_ids'"):
        make_feeds({"attention_mask": np.ones((1, 2))}, {"input_ids": np.dtype(np.int64)})
    with pytest.raises(ValueError, match="available: .*CPUExecutionProvider"):
        OnnxRunner(exported_bert.onnx_path, providers=["NoSuchExecutionProvider"])
    with pytest.raises(FileNotFoundError):
        OnnxRunner(exported_bert.dir / "missing.onnx")


def test_imports_stay_light():
    code = ("import sys, compresslab, compresslab.export, compresslab.passes.ort_int8_dynamic, "
            "compresslab.passes.ort_int8_static, compresslab.eval.onnx_runner; "
            "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True)
