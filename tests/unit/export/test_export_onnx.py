"""Export + parity + fusion on tiny BERT / RoBERTa / DistilBERT and on per-layer-shaped models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from transformers import AutoModel

from compresslab.eval.onnx_runner import OnnxRunner
from compresslab.export import ParityError, check_parity, count_ops, export_model
from compresslab.models.adapters import get_adapter
from compresslab.models.structure import shrink_ffn, shrink_heads
from compresslab.models.tiny import tiny_config, tiny_model


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_export_fuses_and_matches_torch(arch, tmp_path, tok, make_batches, torch_out):
    model = tiny_model(arch, initializer_range=0.3)
    res = export_model(model, tok, tmp_path, make_batches(seed=1), threads=1)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"model.onnx", "model_unfused.onnx", "config.json", "parity.json", "tokenizer.json"} <= names
    assert res.onnx_path == tmp_path / "model.onnx" and res.exporter == "torchscript"
    assert res.fused_attention_nodes == 2 and res.attention_heads == [4, 4]
    assert res.input_names == (["input_ids", "attention_mask"] if arch == "distilbert"
                               else ["input_ids", "attention_mask", "token_type_ids"])
    parity = json.loads((tmp_path / "parity.json").read_text())
    assert parity["graph"] == "fused" and parity["max_abs_diff"] <= 1e-4 and parity["argmax_agreement"] == 1.0
    assert parity["unfused"]["max_abs_diff"] <= 1e-4 and parity["n_examples"] == 12
    # dynamic axes: a batch of another size and length than the traced one
    new = make_batches(n=1, bs=3, seed=7)[0]
    np.testing.assert_allclose(OnnxRunner(res.onnx_path, threads=1).run(new), torch_out(model, new), atol=1e-4)


def test_bare_encoder_exports_last_hidden_state(tmp_path, tok, batches):
    torch.manual_seed(0)
    model = AutoModel.from_config(tiny_config("bert", initializer_range=0.3)).eval()
    res = export_model(model, tok, tmp_path, batches, threads=1)
    assert res.output_name == "last_hidden_state" and res.fused_attention_nodes == 2
    out = OnnxRunner(res.onnx_path, threads=1).run(batches[0])
    assert out.shape == (*batches[0]["input_ids"].shape, 32)
    assert res.parity["argmax_agreement"] is None


def test_left_padding_parity_on_fused_graph(exported_bert, bert_model, make_batches):
    # the fused graph keeps the raw 2-D mask, so left padding is as exact as right padding
    left = make_batches(seed=3, padding_side="left")
    assert left[0]["attention_mask"][:, 0].min() == 0  # some rows really are left-padded
    rep = check_parity(bert_model, exported_bert.onnx_path, left, threads=1)
    assert rep["max_abs_diff"] <= 1e-4


def test_export_restores_model_state(tmp_path, tok, batches):
    model = tiny_model("bert")
    model.config._attn_implementation = "sdpa"
    model.train()
    export_model(model, tok, tmp_path, batches[:1], optimize=False, threads=1)
    assert model.config._attn_implementation == "sdpa" and model.training
    assert {p.name for p in tmp_path.glob("*.onnx")} == {"model.onnx"}  # no unfused copy without fusion


def _per_layer_model(arch: str):
    layers = {"n_layers": 3} if arch == "distilbert" else {"num_hidden_layers": 3}
    model = tiny_model(arch, initializer_range=0.3, **layers)
    adapter = get_adapter(model)
    shrink_heads(adapter.layer(1), [0, 2, 3])
    shrink_heads(adapter.layer(2), [1])
    shrink_ffn(adapter.layer(2), list(range(0, 64, 3)))
    return model


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_per_layer_heads_fuse_and_match(arch, tmp_path, tok, batches):
    model = _per_layer_model(arch)
    res = export_model(model, tok, tmp_path, batches, threads=1)
    assert res.fused_attention_nodes == 3 and res.attention_heads == [4, 3, 1]
    assert res.parity["max_abs_diff"] <= 1e-4
    # the stock fuser stamps the dense head count on every node: that graph is measurably wrong
    wrong = onnx.load(str(res.onnx_path))
    for node in wrong.graph.node:
        if node.op_type == "Attention":
            next(a for a in node.attribute if a.name == "num_heads").i = 4
    onnx.save(wrong, str(tmp_path / "wrong.onnx"))
    with pytest.raises(ParityError) as err:
        check_parity(model, tmp_path / "wrong.onnx", batches, threads=1, graph="wrong")
    assert err.value.max_abs_diff > 1e-3 and err.value.atol == 1e-4


def test_zero_head_and_zero_ffn_layers_export(tmp_path, tok, batches):
    model = tiny_model("bert", num_hidden_layers=3, initializer_range=0.3)
    adapter = get_adapter(model)
    shrink_heads(adapter.layer(1), [])  # EmptySelfAttention + bias-only output projection
    shrink_ffn(adapter.layer(2), [])
    res = export_model(model, tok, tmp_path, batches, threads=1)
    assert res.fused_attention_nodes == 2 and res.parity["max_abs_diff"] <= 1e-4


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_zero_width_linear_attention_is_emptied(tmp_path, tok, batches):
    # a layer sliced to Linear(h, 0) fuses into an Attention node ORT refuses; it becomes a Slice
    model = tiny_model("bert", initializer_range=0.3)
    sa = model.bert.encoder.layer[1].attention.self
    for name in ("query", "key", "value"):
        setattr(sa, name, torch.nn.Linear(32, 0))
    out = model.bert.encoder.layer[1].attention.output
    bias = out.dense.bias.detach().clone()
    out.dense = torch.nn.Linear(0, 32)
    out.dense.bias.data = bias
    res = export_model(model, tok, tmp_path, batches, threads=1)
    assert res.fused_attention_nodes == 1 and res.parity["max_abs_diff"] <= 1e-4
    assert count_ops(res.onnx_path)["Attention"] == 1


def test_perturbed_graph_raises_parity_error(exported_bert, bert_model, batches, tmp_path):
    graph = onnx.load(str(exported_bert.unfused_path))
    init = next(t for t in graph.graph.initializer if "classifier.bias" in t.name)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.01, init.name))
    onnx.save(graph, str(tmp_path / "bad.onnx"))
    with pytest.raises(ParityError, match="max \\|diff\\|") as err:
        check_parity(bert_model, tmp_path / "bad.onnx", batches, threads=1)
    assert err.value.report["max_abs_diff"] == pytest.approx(0.01, rel=1e-3)
    assert isinstance(err.value, ValueError)
    # the same graph passes a tolerance that admits the perturbation
    assert check_parity(bert_model, tmp_path / "bad.onnx", batches, atol=0.02, threads=1)["n_examples"] == 12


def test_export_needs_a_batch(tmp_path, tok, bert_model):
    with pytest.raises(ValueError, match="at least one sample batch"):
        export_model(bert_model, tok, tmp_path, [])


def test_dynamo_fallback_is_recorded(monkeypatch, tmp_path, tok, batches, exported_bert, bert_model):
    # simulate a torch where the legacy exporter is gone; the stand-in dynamo export writes a known graph
    import shutil

    def fake_export(model, args, path, **kw):
        if not kw.get("dynamo", True):
            raise RuntimeError("TorchScript exporter removed")
        shutil.copy(exported_bert.unfused_path, path)

    monkeypatch.setattr(torch.onnx, "export", fake_export)
    res = export_model(bert_model, tok, tmp_path, batches, threads=1)
    assert res.exporter == "dynamo" and res.parity["exporter"] == "dynamo"
