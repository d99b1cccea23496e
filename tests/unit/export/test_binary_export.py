"""ONNX export of frozen binarized (BiBERT) tiny models: ORT runs them, Bi-Attention survives the
export, sign ties map 0 -> +1 in the graph, and parity tolerates sign-flip cascades on a few
examples (binary models only) while still catching a wrong graph."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from compresslab.eval.onnx_runner import OnnxRunner
from compresslab.export import ParityError, check_parity, count_ops, eager_attention, export_model
from compresslab.export import onnx as export_onnx_mod
from compresslab.models.binary import BI_ATTENTION, BinaryLinear, SignInput, binarize_model, freeze_binary
from compresslab.models.tiny import tiny_model

ARCHS = ["bert", "roberta", "distilbert"]


def _frozen(arch: str, attention: str = "bool") -> nn.Module:
    m = tiny_model(arch, initializer_range=0.3)
    binarize_model(m, attention=attention)
    freeze_binary(m)
    return m


def _feeds(model: nn.Module, batch: dict) -> dict:
    drop = {"labels"} | ({"token_type_ids"} if model.config.model_type == "distilbert" else set())
    return {k: v for k, v in batch.items() if k not in drop}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tok, make_batches):
    """arch -> (frozen model, ExportResult), each exported once (fused, parity-checked)."""
    out = {}
    for arch in ARCHS:
        model = _frozen(arch)
        res = export_model(model, tok, tmp_path_factory.mktemp(arch), make_batches(seed=1), threads=1)
        out[arch] = (model, res)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_binary_export_runs_in_ort_with_bi_attention(arch, exported, make_batches, torch_out):
    model, res = exported[arch]
    assert res.binary and res.parity["passed"] and res.parity["argmax_agreement"] == 1.0
    assert res.parity["graph"] == "fused" and res.parity["n_examples"] == 12
    assert res.fused_attention_nodes == 0  # ORT has no fused form of Bi-Attention
    assert any("no 1-bit kernels" in n for n in res.notes)
    assert json.loads((res.dir / "parity.json").read_text())["notes"] == res.notes
    assert model.config._attn_implementation == BI_ATTENTION  # restored (and never switched)
    for path in (res.onnx_path, res.unfused_path):
        ops = count_ops(path)
        assert ops["Softmax"] == 0, f"{path.name}: softmax attention was exported instead of Bi-Attention"
        assert ops["Sign"] == 0 and ops["GreaterOrEqual"] > 0 and ops["Where"] > 0  # ties 0 -> +1
        assert ops["Greater"] > 0  # bool(S) = 1[S > 0]
        assert ops["Erf"] == 0  # the FFN activation before a binary ffn_out is elided (SignInput)
    # the graph computes the torch model as it runs (Bi-Attention), on a batch of another shape:
    # had the export swapped in eager softmax attention, parity (which swaps torch too) would not
    # notice, but this comparison would
    new = make_batches(n=1, bs=3, seed=7)[0]
    got = OnnxRunner(res.onnx_path, threads=1).run(new)
    np.testing.assert_allclose(got, torch_out(model, _feeds(model, new)), atol=1e-4)


def test_softmax_ablation_keeps_its_softmax(tmp_path, tok, batches, torch_out):
    model = _frozen("bert", attention="softmax")
    res = export_model(model, tok, tmp_path, batches, threads=1, optimize=False)
    assert count_ops(res.onnx_path)["Softmax"] == 2 and res.parity["argmax_agreement"] == 1.0
    np.testing.assert_allclose(OnnxRunner(res.onnx_path, threads=1).run(batches[0]),
                               torch_out(model, batches[0]), atol=1e-4)


def test_eager_attention_switches_only_fused_kernels():
    from transformers import AttentionInterface
    from transformers.models.bert.modeling_bert import eager_attention_forward

    def my_attention(*args, **kwargs):  # a user's own attention function (not transformers' kernels)
        return eager_attention_forward(*args, **kwargs)

    AttentionInterface.register("my_custom_attention", my_attention)
    cases = {"sdpa": "eager", "flash_attention_2": "eager", "eager": "eager", BI_ATTENTION: BI_ATTENTION,
             "my_custom_attention": "my_custom_attention"}
    for impl, inside in cases.items():
        model = tiny_model("bert")
        model.config._attn_implementation = impl
        model.train()
        with eager_attention(model):
            assert model.config._attn_implementation == inside, impl
            assert not model.training
        assert model.config._attn_implementation == impl and model.training


class _OneLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = BinaryLinear.from_linear(nn.Linear(6, 3))
        self.lin.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_sign_ties_map_zero_to_plus_one_in_the_graph(tmp_path):
    import warnings

    mod = _OneLinear().eval()
    path = tmp_path / "lin.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mod, (torch.randn(2, 6),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}}, opset_version=17, dynamo=False)
    ops = count_ops(path)
    assert ops["Sign"] == 0 and ops["GreaterOrEqual"] == 1 and ops["Where"] == 1
    x = torch.tensor([[0.0, -0.0, 0.5, -0.5, 0.0, 2.0], [0.0] * 6])
    signs = torch.tensor([[1.0, 1.0, 1.0, -1.0, 1.0, 1.0], [1.0] * 6])  # 0 and -0 -> +1
    expected = signs @ mod.lin.weight.detach().T + mod.lin.bias.detach()
    import onnxruntime as ort

    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        ref = mod(x).numpy()
    np.testing.assert_allclose(ref, expected.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-6)


def test_frozen_ffn_activation_is_elided_only_before_a_binary_ffn_out():
    m = tiny_model("bert")
    binarize_model(m)
    assert not any(isinstance(x, SignInput) for x in m.modules())  # dynamic: GELU stays (its STE gradient)
    freeze_binary(m)
    assert sum(isinstance(x, SignInput) for x in m.modules()) == 2
    # ffn_out kept full precision: its input is real-valued, the activation stays
    m2 = tiny_model("distilbert")
    linears = [n for n, x in m2.named_modules() if isinstance(x, nn.Linear) and "lin2" not in n
               and "classifier" not in n]
    binarize_model(m2, linears=linears)
    freeze_binary(m2)
    assert not any(isinstance(x, SignInput) for x in m2.modules())
    # a ReLU FFN (sign(relu(h)) is +1 everywhere, not sign(h)) keeps its activation
    m3 = tiny_model("bert", hidden_act="relu")
    binarize_model(m3)
    freeze_binary(m3)
    assert not any(isinstance(x, SignInput) for x in m3.modules())


# ------------------------------------------------------------------------------------- parity rule
def _one_token_batches(tok) -> tuple[list[dict], int]:
    """12 examples; only the 5th contains the token w40."""
    texts = [f"the movie was {'good' if i % 2 else 'bad'} and fun" for i in range(12)]
    texts[4] = "the w40 movie was good"
    enc = [dict(tok(texts[i:i + 4], padding=True, return_tensors="pt")) for i in range(0, 12, 4)]
    return enc, tok.convert_tokens_to_ids("w40")


def _perturb(src, dst, name_part: str, fn) -> None:
    graph = onnx.load(str(src))
    init = next(t for t in graph.graph.initializer if name_part in t.name)
    init.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(init).copy()), init.name))
    onnx.save(graph, str(dst))


def _negate_row(row: int):
    def fn(w: np.ndarray) -> np.ndarray:
        w[row] = -w[row]
        return w
    return fn


def test_binary_parity_reports_a_few_diverging_examples_but_fails_a_wrong_graph(tmp_path, tok):
    batches, row = _one_token_batches(tok)
    model = _frozen("bert")
    res = export_model(model, tok, tmp_path / "e", batches, threads=1, optimize=False)
    assert res.parity["examples_over_atol"] == 0
    # one example's input changes (as a cascade of sign flips changes one example): reported, not failed
    _perturb(res.onnx_path, tmp_path / "one.onnx", "word_embeddings", _negate_row(row))
    rep = check_parity(model, tmp_path / "one.onnx", batches, threads=1)
    assert rep["passed"] and rep["examples_over_atol"] == 1 and rep["max_abs_diff"] > 1e-4
    assert "sign flips" in rep["rule"]
    # every example moves: the graph computes something else
    _perturb(res.onnx_path, tmp_path / "all.onnx", "classifier.bias", lambda b: b + 0.01)
    with pytest.raises(ParityError, match="12 of 12 examples past atol") as err:
        check_parity(model, tmp_path / "all.onnx", batches, threads=1)
    assert err.value.report["passed"] is False


def test_dense_parity_keeps_the_strict_rule(tmp_path, tok):
    batches, row = _one_token_batches(tok)
    model = tiny_model("bert", initializer_range=0.3)
    res = export_model(model, tok, tmp_path / "e", batches, threads=1, optimize=False)
    assert res.parity["passed"] is True and "rule" not in res.parity and not res.binary and res.notes == []
    _perturb(res.onnx_path, tmp_path / "one.onnx", "word_embeddings", _negate_row(row))
    with pytest.raises(ParityError, match="max \\|diff\\|"):
        check_parity(model, tmp_path / "one.onnx", batches, threads=1)


def test_a_fused_graph_failing_parity_is_not_deployed_for_a_binary_model(tmp_path, tok, batches, monkeypatch):
    real = export_onnx_mod.optimize_graph

    def broken(src, dst, **kw):
        rep = real(src, dst, **kw)
        _perturb(dst, dst, "classifier.bias", lambda b: b + 0.01)
        return rep

    monkeypatch.setattr(export_onnx_mod, "optimize_graph", broken)
    model = _frozen("bert")
    res = export_model(model, tok, tmp_path / "b", batches, threads=1)
    assert res.parity["graph"] == "unfused (fusion skipped)" and res.fused_attention_nodes == 0
    assert any("unfused export is deployed" in n for n in res.notes)
    assert (tmp_path / "b" / "model.onnx").read_bytes() == (tmp_path / "b" / "model_unfused.onnx").read_bytes()
    with pytest.raises(ParityError):  # a dense model's broken fusion still fails the export
        export_model(tiny_model("bert", initializer_range=0.3), tok, tmp_path / "d", batches, threads=1)


# ---------------------------------------------------------------------------------- other runtimes
def test_frozen_bi_attention_compares_integer_scores_exactly_like_the_scaled_form(make_batches):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    from compresslab.ops.binary import bi_attention

    def scaled(module, q, k, v, mask, scaling=None, dropout=0.0, **kw):  # S·c + M, as in training
        return bi_attention(q, k, v, mask, scaling=scaling, dropout=dropout, training=module.training,
                            mode=module.binary_attention, ties=module.binary_ties)

    AttentionInterface.register("test_scaled_bi", scaled)
    AttentionMaskInterface.register("test_scaled_bi", eager_mask)
    model = _frozen("bert")
    batch = _feeds(model, make_batches(n=1, bs=8, seed=3)[0])
    with torch.no_grad():
        new = model(**batch).logits
        model.config._attn_implementation = "test_scaled_bi"
        old = model(**batch).logits
    assert torch.equal(new, old)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_openvino_runs_the_binary_graph_like_torch(arch, exported, make_batches, torch_out):
    # OpenVINO folds a constant scale into an operand of the score MatMul: had the graph compared
    # the scaled scores, S = 0 would round to ±1e-8 and Bi-Attention would flip on every example
    pytest.importorskip("openvino")
    from compresslab.bench.openvino_runner import OpenVinoRunner

    model, res = exported[arch]
    runner = OpenVinoRunner(res.unfused_path, threads=1, precision="f32")
    for b in make_batches(n=2, bs=6, seed=11):
        feeds = _feeds(model, b)
        np.testing.assert_allclose(runner.run({k: v.numpy() for k, v in feeds.items()}), torch_out(model, feeds),
                                   atol=1e-4)


def test_qdq_parity_allows_a_few_flipped_examples_but_fails_a_wrong_graph(tmp_path, tok):
    """An int8 QDQ model is judged by the same few-examples rule: rounding-boundary flips of its uint8
    activations cascade on a few examples (seen on MiniLM after QAT: max |diff| 0.09, mean 0.004)."""
    from compresslab.models.qdq import freeze_qdq, quantize_qdq
    from compresslab.targets import select_modules

    batches, row = _one_token_batches(tok)
    model = tiny_model("bert", initializer_range=0.3)
    quantize_qdq(model, list(select_modules(model)), per_channel=False)
    model.eval()
    with torch.no_grad():
        for b in batches:
            model(**b)  # observe
    freeze_qdq(model)
    res = export_model(model, tok, tmp_path / "e", batches, threads=1, optimize=False)
    assert res.parity["passed"] and "rounding-boundary" in res.parity["rule"]
    _perturb(res.onnx_path, tmp_path / "one.onnx", "word_embeddings", _negate_row(row))
    rep = check_parity(model, tmp_path / "one.onnx", batches, atol=export_onnx_mod.QDQ_ATOL, threads=1,
                       optimization="basic")
    assert rep["passed"] and rep["examples_over_atol"] == 1 and rep["max_abs_diff"] > export_onnx_mod.QDQ_ATOL
    _perturb(res.onnx_path, tmp_path / "all.onnx", "classifier.bias", lambda b: b + 1.0)
    with pytest.raises(ParityError, match="QDQ model .*12 of 12 examples past atol"):
        check_parity(model, tmp_path / "all.onnx", batches, atol=export_onnx_mod.QDQ_ATOL, threads=1,
                     optimization="basic")
