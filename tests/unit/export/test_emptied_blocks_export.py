"""Every way ZipLM can empty a sub-block exports, passes parity, and loads in ORT and OpenVINO with
the dense export's input names (deploy consumers feed input_ids / attention_mask / token_type_ids).

The fault this guards: with every layer's attention emptied no node reads ``attention_mask``, and
torch's exporter and ORT's fuser dropped that graph input (parity then crashed with
``_ExportWrapper.forward() missing ... 'attention_mask'``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compresslab.export import export_model
from compresslab.models.adapters import get_adapter
from compresslab.models.structure import shrink_ffn, shrink_heads
from compresslab.models.tiny import tiny_model

LAYERS = 3
DENSE_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
# case -> {layer: which sub-blocks to empty}
CASES = {
    "attention_first": {0: ("heads",)},
    "attention_last": {LAYERS - 1: ("heads",)},
    "ffn_first": {0: ("ffn",)},
    "ffn_last": {LAYERS - 1: ("ffn",)},
    "both_in_first": {0: ("heads", "ffn")},
    "both_in_last": {LAYERS - 1: ("heads", "ffn")},
    "attention_every_layer": {i: ("heads",) for i in range(LAYERS)},  # the mask is read by no node
    "ffn_every_layer": {i: ("ffn",) for i in range(LAYERS)},
    "everything": {i: ("heads", "ffn") for i in range(LAYERS)},
}


def _emptied(case: str):
    model = tiny_model("bert", num_hidden_layers=LAYERS, initializer_range=0.3)
    adapter = get_adapter(model)
    for layer, blocks in CASES[case].items():
        if "heads" in blocks:
            shrink_heads(adapter.layer(layer), [])
        if "ffn" in blocks:
            shrink_ffn(adapter.layer(layer), [])
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_emptied_sub_blocks_export_with_the_dense_inputs(case, tok, make_batches, torch_out, tmp_path):
    model = _emptied(case)
    batches = make_batches(n=2, bs=4, seed=3)
    res = export_model(model, tok, tmp_path / "exp", batches, threads=1)  # raises on a parity failure
    assert res.input_names == DENSE_INPUTS and res.parity["passed"]
    for path in (res.onnx_path, res.unfused_path):
        assert [i.name for i in onnx.load(str(path)).graph.input] == DENSE_INPUTS, path
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == DENSE_INPUTS, path
        for b in batches:  # fed as a deploy consumer feeds it: every tokenizer tensor
            out = session.run(None, {k: b[k].numpy() for k in DENSE_INPUTS})[0]
            np.testing.assert_allclose(out, torch_out(model, b), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", ["attention_every_layer", "both_in_last", "everything"])
def test_emptied_sub_blocks_load_in_openvino_with_the_dense_inputs(case, tok, make_batches, torch_out, tmp_path):
    pytest.importorskip("openvino")
    import openvino as ov

    from compresslab.bench.openvino_runner import OpenVinoRunner
    from compresslab.pipeline.deploy import convert_to_ir, ir_source

    model = _emptied(case)
    batches = make_batches(n=2, bs=4, seed=4)
    res = export_model(model, tok, tmp_path / "exp", batches, threads=1)
    src, _ = ir_source(Path(res.onnx_path), Path(res.onnx_path))
    xml = convert_to_ir(src, tmp_path / "ir")
    assert [p.get_any_name() for p in ov.Core().read_model(str(xml)).inputs] == DENSE_INPUTS
    runner = OpenVinoRunner(xml, threads=1, precision="f32")
    for b in batches:
        np.testing.assert_allclose(runner.run({k: b[k].numpy() for k in DENSE_INPUTS}), torch_out(model, b),
                                   atol=1e-4, rtol=1e-4)


def test_restore_inputs_refuses_a_graph_input_that_was_not_exported(tmp_path):
    from onnx import TensorProto, helper

    from compresslab.export.graph_inputs import restore_inputs

    x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", "sequence"])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["input_ids"], ["y"])], "g", [x], [y])),
              str(path))
    assert restore_inputs(path, DENSE_INPUTS) == ["attention_mask", "token_type_ids"]
    assert [i.name for i in onnx.load(str(path)).graph.input] == DENSE_INPUTS
    assert restore_inputs(path, DENSE_INPUTS) == []
    with pytest.raises(ValueError, match="not exported"):
        restore_inputs(path, ["input_ids"])
