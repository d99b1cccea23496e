"""The deploy stage's OpenVINO IR: files in optimum-intel's layout, parity vs torch, int8 QDQ, fallbacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from compresslab.bench.openvino_runner import OpenVinoRunner  # noqa: E402
from compresslab.export.precision import is_int8 as _is_int8  # noqa: E402
from compresslab.pipeline.deploy import IR_NAME, convert_to_ir, ir_source  # noqa: E402


def _model_dir(exported, dst: Path) -> Path:
    """A dir holding only the config + tokenizer files of the export (as an ONNX pass's step dir does)."""
    from compresslab.export.ort_quant import copy_model_files

    copy_model_files(Path(exported.onnx_path).parent, dst)
    return dst


def test_plain_export_converts_to_ir_files_that_load_and_match_torch(exported_bert, bert_model, batches, torch_out,
                                                                      tmp_path):
    import openvino as ov

    src, notes = ir_source(Path(exported_bert.onnx_path), Path(exported_bert.onnx_path))
    assert src.name == "model_unfused.onnx" and notes == []  # the fused graph has com.microsoft ops
    xml = convert_to_ir(src, tmp_path / "openvino")
    assert xml.name == IR_NAME
    for f in (IR_NAME, "openvino_model.bin", "config.json", "tokenizer.json"):
        assert (tmp_path / "openvino" / f).is_file(), f
    assert not list((tmp_path / "openvino").glob("*.onnx"))
    model = ov.Core().read_model(str(xml))
    assert {p.get_any_name() for p in model.inputs} >= {"input_ids", "attention_mask"}
    runner = OpenVinoRunner(xml, threads=1, precision="f32")
    for b in batches:
        out = runner.run({k: v.numpy() for k, v in b.items()})
        assert np.abs(out - torch_out(bert_model, b)).max() < 1e-4
    assert not _is_int8(xml)


def test_qdq_int8_graph_deploys_as_an_int8_ir(exported_bert, batches, tmp_path):
    from compresslab.export.ort_quant import quantize_static_qdq

    qdq = _model_dir(exported_bert, tmp_path / "qdq") / "model.onnx"
    quantize_static_qdq(exported_bert.unfused_path, qdq, batches, op_types=["MatMul"])
    src, notes = ir_source(qdq, Path(exported_bert.onnx_path))
    assert src == qdq and notes == []
    xml = convert_to_ir(src, tmp_path / "ir")
    assert _is_int8(xml)
    out = OpenVinoRunner(xml, threads=1, precision="f32").run({k: v.numpy() for k, v in batches[0].items()})
    assert out.shape == (len(batches[0]["input_ids"]), 2) and np.isfinite(out).all()


def test_dynamic_int8_matmulinteger_falls_back_to_the_plain_fp32_export_with_a_note(exported_bert, tmp_path):
    from compresslab.export.ort_quant import quantize_dynamic_int8

    dyn = _model_dir(exported_bert, tmp_path / "dyn") / "model.onnx"
    quantize_dynamic_int8(exported_bert.unfused_path, dyn)
    src, notes = ir_source(dyn, Path(exported_bert.onnx_path))
    assert src == Path(exported_bert.unfused_path)
    assert len(notes) == 1 and "MatMulInteger" in notes[0] and str(dyn) in notes[0]


def test_a_graph_openvino_cannot_convert_names_the_op(exported_bert, tmp_path):
    import onnx
    from onnx import helper

    model = onnx.load(str(exported_bert.unfused_path))
    node = model.graph.node[-1]
    bogus = helper.make_node("NoSuchOp", list(node.output), [node.output[0] + "_x"], domain="example.bogus")
    model.graph.node.append(bogus)
    model.graph.output[0].name = node.output[0] + "_x"
    model.opset_import.append(helper.make_opsetid("example.bogus", 1))
    bad = tmp_path / "bad" / "model.onnx"
    bad.parent.mkdir()
    onnx.save(model, str(bad))
    with pytest.raises(ValueError, match=r"example\.bogus\.NoSuchOp"):
        convert_to_ir(bad, tmp_path / "ir")
    assert not (tmp_path / "ir" / IR_NAME).exists()


def _shrunk(kind: str):
    """Tiny models shaped as each compression leaves them: ZipLM (per-layer heads, an emptied
    attention block, an emptied FFN), oBERT (80% unstructured zeros), layer drop (fewer layers)."""
    import torch

    from compresslab.models.adapters import get_adapter
    from compresslab.models.tiny import tiny_model
    from compresslab.models.structure import shrink_ffn, shrink_heads

    if kind == "layer_drop":
        return tiny_model("bert", num_hidden_layers=1)
    model = tiny_model("bert", num_hidden_layers=3)
    adapter = get_adapter(model)
    if kind == "ziplm":
        shrink_heads(adapter.layer(0), [0, 2, 3])
        shrink_heads(adapter.layer(1), [])  # EmptySelfAttention + bias-only output projection
        shrink_ffn(adapter.layer(1), list(range(0, 64, 3)))
        shrink_ffn(adapter.layer(2), [])
    else:  # sparse: zero 80% of every encoder Linear's weights, as the pruning masks leave them
        g = torch.Generator().manual_seed(0)
        for mod in model.bert.encoder.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.data *= (torch.rand(mod.weight.shape, generator=g) > 0.8).float()
    return model


@pytest.mark.parametrize("kind", ["ziplm", "sparse", "layer_drop"])
def test_every_compressed_shape_converts_and_matches_torch_on_openvino(kind, tok, make_batches, torch_out,
                                                                        tmp_path):
    from compresslab.export import export_model

    model = _shrunk(kind)
    batches = make_batches(n=3, bs=4, seed=5)
    res = export_model(model, tok, tmp_path / "exp", batches, threads=1)
    src, notes = ir_source(Path(res.onnx_path), Path(res.onnx_path))
    assert notes == []
    xml = convert_to_ir(src, tmp_path / "ir")
    runner = OpenVinoRunner(xml, threads=1, precision="f32")
    for b in batches:
        np.testing.assert_allclose(runner.run({k: v.numpy() for k, v in b.items()}), torch_out(model, b),
                                   atol=1e-4, rtol=1e-4)
