"""MatMulNBits / GatherBlockQuantized deployment of a frozen fake-quant model: sidecar + stamp on export,
exact codes, ORT parity with torch, the pass contract, and the layouts checked by breaking them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from omegaconf import OmegaConf

import compresslab
from compresslab.config import config_dir
from compresslab.eval.onnx_runner import OnnxRunner
from compresslab.export import count_ops
from compresslab.export import matmul_nbits as mnb
from compresslab.export import nbits_pack as nbp
from compresslab.export.onnx import ParityError
from compresslab.models.tiny import tiny_model
from compresslab.ops.quant import dequantize, fake_quant, quant_params, quantize
from compresslab.passes.ort_matmul_nbits import OrtMatmulNBits
from compresslab.models.quantized import FakeQuantEmbedding, freeze_all, quantize_modules, quantized_modules
from compresslab.registry import build_pass, pass_from_dict, pass_to_dict
from compresslab.types import OnnxModel, PassContext, Stage

L = "bert.encoder.layer."
# tiny BERT: hidden 32, FFN 64. Bits {2, 3, 4, 8}; a row-bucket module; one Linear left fp32
# (layer 1 key); pooler + classifier exported as Gemm; the word embeddings through GatherBlockQuantized.
SPECS = {
    L + "0.attention.self.query": {"bits": 2, "block_size": 16},
    L + "0.attention.self.key": {"bits": 3, "block_size": 16},
    L + "0.attention.self.value": {"bits": 4, "block_size": 32},  # per row (block = K = 32)
    L + "0.attention.output.dense": {"bits": 8, "block_size": 16},
    L + "0.intermediate.dense": {"bits": 4, "block_size": 32, "group_rows": 8},  # Q-BERT row buckets
    L + "0.output.dense": {"bits": 3, "block_size": 64},
    L + "1.attention.self.query": {"bits": 4, "block_size": 16},
    L + "1.attention.self.value": {"bits": 8, "block_size": 32},
    L + "1.attention.output.dense": {"bits": 2, "block_size": 32},
    L + "1.intermediate.dense": {"bits": 2, "block_size": 16},
    L + "1.output.dense": {"bits": 4, "block_size": 16},
    "bert.pooler.dense": {"bits": 4, "block_size": 16},
    "classifier": {"bits": 8, "block_size": 32},
    "bert.embeddings.word_embeddings": {"bits": 4, "block_size": 16},
}
DEPLOYED = {2: 2, 3: 4, 4: 4, 8: 8}


def _ctx(tmp_path: Path, tok, batches) -> PassContext:
    from compresslab.testing import batches_context

    return batches_context(tok, tmp_path, batches, "02_nbits")


def _quantized(specs=SPECS, seed=0):
    model = tiny_model("bert", seed=seed, initializer_range=0.3)
    quantize_modules(model, specs)
    freeze_all(model)
    return model.eval()


@pytest.fixture(scope="module")
def qexport(tmp_path_factory, tok, batches):
    model = _quantized()
    res = mnb.export_quantized(model, tok, tmp_path_factory.mktemp("qexp") / "exp", batches, threads=1)
    return model, res


def _logits(path, batches):
    run = OnnxRunner(path, threads=1)
    return [run.session.run(None, run.feeds(b))[0] for b in batches]


def _torch_logits(model, batches):
    with torch.no_grad():
        return [model(**{k: v for k, v in b.items() if k != "labels"}).logits.numpy() for b in batches]


def _convert(qexport, dst, **kw):
    _, res = qexport
    stamp = json.loads((res.dir / "config.json").read_text())["compresslab_quant"]
    return mnb.to_matmul_nbits(res.dir / "model_unfused.onnx", dst, stamp, mnb.read_quant_sidecar(res.dir), **kw)


# ------------------------------------------------------------------ pure helpers

def test_pack_codes_low_bits_first_and_round_trip():
    assert nbp.pack_codes(np.array([1, 2, 3, 0], np.uint8), 2).tolist() == [0b00111001]
    assert nbp.pack_codes(np.array([0xA, 0x5, 0x3], np.uint8), 4).tolist() == [0x5A, 0x03]  # padded high nibble
    rng = np.random.default_rng(0)
    for bits in (2, 4, 8):
        q = rng.integers(0, 1 << bits, (3, 5, 37), dtype=np.uint8)
        assert np.array_equal(nbp.unpack_codes(nbp.pack_codes(q, bits), bits, 37), q)


def test_deployment_rules():
    assert [nbp.deployed_bits(b) for b in range(1, 9)] == [2, 2, 4, 4, 8, 8, 8, 8]
    assert [nbp.deployable_block(b) for b in (16, 32, 48, 96, 768, 1024, 8, 24)] == [16, 32, 16, 32, 256, 256, None,
                                                                                      None]
    assert mnb.onnx_module_path("bert.encoder.layer.10.attention.self.query") == \
        "bert/encoder/layer.10/attention/self/query"


def test_fake_quant_embedding_forward_freeze_and_reload(tmp_path):
    emb = torch.nn.Embedding(40, 32, padding_idx=0)
    fq = FakeQuantEmbedding.from_embedding(emb, 3, 16)
    ids = torch.randint(0, 40, (2, 7))
    ref = torch.nn.functional.embedding(ids, fake_quant(emb.weight, 3, 16))
    torch.testing.assert_close(fq(ids), ref, rtol=0, atol=0)
    fq.freeze()
    torch.testing.assert_close(fq(ids), ref, rtol=0, atol=0)
    p = quant_params(emb.weight, 3, 16)
    assert torch.equal(fq.codes(), quantize(emb.weight, p)) and fq.weight_scale.shape == (40, 2)
    with pytest.raises(ValueError, match="max_norm"):
        FakeQuantEmbedding.from_embedding(torch.nn.Embedding(4, 16, max_norm=1.0), 4, 16)
    model = _quantized({"bert.embeddings.word_embeddings": {"bits": 2, "block_size": 32},
                        L + "0.intermediate.dense": {"bits": 4, "block_size": 16}})
    x = {"input_ids": torch.randint(5, 60, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    compresslab.save(model, tmp_path / "ck")
    back = compresslab.load(tmp_path / "ck", attn_implementation="eager")
    assert isinstance(back.bert.embeddings.word_embeddings, FakeQuantEmbedding)
    torch.testing.assert_close(back(**x).logits, model(**x).logits, rtol=0, atol=1e-6)
    w = back.bert.embeddings.word_embeddings
    torch.testing.assert_close(w.weight, dequantize(w.codes(), w.params()), rtol=0, atol=0)


# ------------------------------------------------------------------ export side

def test_export_writes_stamp_and_sidecar(qexport):
    model, res = qexport
    stamp = json.loads((res.dir / "config.json").read_text())["compresslab_quant"]
    assert stamp == {n: {"group_rows": 1, **s} for n, s in SPECS.items()}
    params = mnb.read_quant_sidecar(res.dir)
    for n, m in quantized_modules(model).items():
        assert np.array_equal(params[n][0], m.weight_scale.numpy()) and params[n][1].dtype == np.uint8
        assert np.array_equal(params[n][1], m.weight_zero_point.numpy())
    assert params[L + "0.intermediate.dense"][0].shape == (64 // 8, 1)


def test_export_refuses_a_dynamic_model(tmp_path, tok, batches):
    model = tiny_model("bert")
    quantize_modules(model, {"classifier": {"bits": 4, "block_size": 16}})
    with pytest.raises(ValueError, match="freeze_all"):
        mnb.export_quantized(model, tok, tmp_path / "e", batches[:1], threads=1)


# ------------------------------------------------------------------ conversion

def test_level0_equals_torch_fake_quant_and_graph_has_the_bits(qexport, batches, tmp_path):
    model, _ = qexport
    dst = tmp_path / "nbits.onnx"
    m = _convert(qexport, dst)
    for ours, ref in zip(_logits(dst, batches), _torch_logits(model, batches)):
        assert np.abs(ours - ref).max() <= 1e-4
    g = onnx.load(str(dst)).graph
    nbits = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in g.node if n.op_type == "MatMulNBits"}
    linears = {n: s for n, s in SPECS.items() if "embeddings" not in n}
    assert len(nbits) == len(linears) == m["n_matmul_nbits"] and m["n_gather_block_quantized"] == 1
    assert m["quantized_nodes"] == len(SPECS) and not m["skipped"]
    for name, s in linears.items():
        node = [a for k, a in nbits.items() if k.startswith("/model/" + mnb.onnx_module_path(name) + "/")]
        assert len(node) == 1 and node[0]["bits"] == DEPLOYED[s["bits"]] and node[0]["accuracy_level"] == 0
        assert m["modules"][name]["bits"] == s["bits"] and m["modules"][name]["deployed_bits"] == DEPLOYED[s["bits"]]
    assert Counter(n.op_type for n in g.node)["Gemm"] == 0  # pooler + classifier converted, bias Add kept
    # the fp32 Linear (layer 1 key) is still a MatMul on an fp32 initializer
    assert any(n.op_type == "MatMul" and n.name.endswith("layer.1/attention/self/key/MatMul") for n in g.node)
    gbq = [n for n in g.node if n.op_type == "GatherBlockQuantized"]
    assert len(gbq) == 1 and "word_embeddings" in gbq[0].name
    assert m["modules"][L + "0.attention.self.value"]["deployed_block_size"] == 32
    assert m["modules"][L + "0.output.dense"]["deployed_block_size"] == 64  # 3-bit, block = K = 64
    assert 2 < m["avg_bits_nominal"] < m["avg_bits_deployed"] < 8 and m["size_ratio"] < 0.8


def test_swapped_nibble_order_breaks_parity(qexport, batches, tmp_path, monkeypatch):
    """The layout is checked by ORT, not by belief: packing high-bits-first must not pass."""
    model, _ = qexport
    right = nbp.pack_codes

    def swapped(q, bits):  # the first code in the HIGH bits of each byte
        if bits == 8:
            return right(q, bits)
        per = 8 // bits
        q = np.asarray(q, np.uint8)
        pad = (-q.shape[-1]) % per
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (pad,), np.uint8)], -1).reshape(q.shape[:-1] + (-1, per))
        return right(q[..., ::-1].reshape(q.shape[:-2] + (-1,)), bits)

    monkeypatch.setattr(nbp, "pack_codes", swapped)
    dst = tmp_path / "bad.onnx"
    _convert(qexport, dst)
    worst = max(np.abs(o - r).max() for o, r in zip(_logits(dst, batches), _torch_logits(model, batches)))
    assert worst > 1e-2


def test_codes_off_the_grid_are_refused(qexport, tmp_path):
    _, res = qexport
    stamp = json.loads((res.dir / "config.json").read_text())["compresslab_quant"]
    params = mnb.read_quant_sidecar(res.dir)
    name = L + "0.attention.self.key"
    params[name] = (params[name][0] * np.float32(1.37), params[name][1])
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        mnb.to_matmul_nbits(res.dir / "model_unfused.onnx", tmp_path / "x.onnx", stamp, params)
    with pytest.raises(ValueError, match="unfused export"):
        mnb.to_matmul_nbits(res.dir / "model.onnx", tmp_path / "x.onnx", stamp, mnb.read_quant_sidecar(res.dir))
    assert not (tmp_path / "x.onnx").exists()


def test_undeployable_blocks_fall_back_exactly(tok, batches, tmp_path):
    """Block 8 has no power-of-two divisor >= 16: the embedding deploys as Gather of uint8 codes +
    standard-op dequantization, the Linear stays its exact fp32 MatMul (reported as skipped)."""
    specs = {"bert.embeddings.word_embeddings": {"bits": 3, "block_size": 8},
             L + "0.output.dense": {"bits": 4, "block_size": 8}, L + "1.output.dense": {"bits": 2, "block_size": 16}}
    model = _quantized(specs, seed=1)
    res = mnb.export_quantized(model, tok, tmp_path / "exp", batches, threads=1)
    stamp = json.loads((res.dir / "config.json").read_text())["compresslab_quant"]
    m = mnb.to_matmul_nbits(res.unfused_path, tmp_path / "fb.onnx", stamp, mnb.read_quant_sidecar(res.dir))
    assert m["n_gather_dequantize"] == 1 and m["n_matmul_nbits"] == 1 and list(m["skipped"]) == [L + "0.output.dense"]
    assert m["modules"]["bert.embeddings.word_embeddings"]["deployed_bits"] == 8
    ops = count_ops(tmp_path / "fb.onnx")
    assert ops["GatherBlockQuantized"] == 0 and ops["MatMulNBits"] == 1
    for ours, ref in zip(_logits(tmp_path / "fb.onnx", batches), _torch_logits(model, batches)):
        assert np.abs(ours - ref).max() <= 1e-4
    _refuses_ids_outside_the_table(tmp_path / "fb.onnx", batches, int(model.config.vocab_size))


def _refuses_ids_outside_the_table(path, batches, vocab):
    """GatherBlockQuantized reads past its table on an id >= vocab without an error, and Gather wraps -1: the
    deployed lookup refuses both, as the fp32 model does."""
    import onnxruntime as ort

    run = OnnxRunner(path, threads=1)
    feeds = run.feeds(batches[0])
    for bad in (-1, vocab):
        ids = feeds["input_ids"].copy()
        ids[0, 1] = bad
        with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="token_id_out_of_range"):
            run.session.run(None, {**feeds, "input_ids": ids})


def test_the_block_quantized_lookup_refuses_ids_outside_the_table(qexport, batches, tmp_path):
    model, _ = qexport
    m = _convert(qexport, tmp_path / "nb.onnx")
    assert m["n_gather_block_quantized"] == 1
    _refuses_ids_outside_the_table(tmp_path / "nb.onnx", batches, int(model.config.vocab_size))


# ------------------------------------------------------------------ the pass

def test_registered_yaml_round_trip_and_validation():
    from hydra.utils import instantiate

    p = instantiate(OmegaConf.load(Path(config_dir()) / "pass" / "ort_matmul_nbits.yaml"))
    assert type(p) is OrtMatmulNBits and p.name == "ort_matmul_nbits" and OrtMatmulNBits.stage is Stage.ONNX
    assert pass_from_dict(pass_to_dict(p)) == p == build_pass("ort_matmul_nbits")
    for bad, match in [({"accuracy_level": 5}, "allowed: 0, 1, 2, 3, 4"),
                       ({"accuracy_level": True}, "^ort_matmul_nbits.accuracy_level must be an integer, got True \\(default 0\\)$"),
                       ({"check_parity": "yes"}, "true or false"), ({"parity_examples": 0}, "parity_examples")]:
        with pytest.raises(ValueError, match=match):
            OrtMatmulNBits(**bad)


def test_pass_applies_with_parity_and_reports(qexport, tmp_path, tok, batches):
    _, res = qexport
    ctx = _ctx(tmp_path, tok, batches)
    out = OrtMatmulNBits().apply(OnnxModel(res.dir, res.onnx_path), ctx)
    files = {p.name for p in ctx.step_dir.iterdir()}
    assert Path(out.onnx_path) == ctx.step_dir / "model.onnx" and "parity.json" not in files
    assert {"model.onnx", "config.json", "tokenizer.json", mnb.SIDECAR} <= files
    met = out.metrics
    assert met["parity"]["max_abs_diff"] <= 1e-3 and met["parity"]["argmax_agreement"] == 1.0
    assert met["source_graph"] == "model_unfused.onnx" and met["n_matmul_nbits"] == 13
    assert met["modules"][L + "0.attention.self.key"]["bits"] == 3
    assert met["modules"][L + "0.attention.self.key"]["deployed_bits"] == 4
    assert "de-quantized to fp32" in met["kernel_2bit"]["statement"]
    assert "matmul_nbits.cc" in met["kernel_2bit"]["source"]
    assert set(met["kernel_paths"].values()) <= {"kernel", "dequantize_fp32", "unknown"}
    assert "bits2_block16_level0" in met["kernel_paths"]
    assert out.structure["deployed_bits"][L + "0.output.dense"] == 4 and not out.skipped


def test_pass_level4_reports_agreement_not_parity(qexport, tmp_path, tok, batches):
    _, res = qexport
    out = OrtMatmulNBits(accuracy_level=4).apply(OnnxModel(res.dir, res.onnx_path), _ctx(tmp_path, tok, batches))
    par = out.metrics["parity"]
    assert par["atol"] is None and 0.0 <= par["argmax_agreement"] <= 1.0 and par["max_abs_diff"] >= 0.0
    g = onnx.load(out.onnx_path).graph
    assert {onnx.helper.get_attribute_value(a) for n in g.node if n.op_type == "MatMulNBits"
            for a in n.attribute if a.name == "accuracy_level"} == {4}


def test_pass_raises_on_a_parity_gap(qexport, tmp_path, tok, batches, monkeypatch):
    _, res = qexport
    real = mnb.compare_graphs
    monkeypatch.setattr(mnb, "compare_graphs", lambda *a, **k: {**real(*a, **k), "max_abs_diff": 0.5})
    with pytest.raises(ParityError, match="packing bug"):
        OrtMatmulNBits().apply(OnnxModel(res.dir, res.onnx_path), _ctx(tmp_path, tok, batches))


def test_pass_refuses_an_unquantized_export(exported_bert, tmp_path, tok, batches):
    with pytest.raises(ValueError, match="run a quantizing pass such as 'hawq'"):
        OrtMatmulNBits().apply(OnnxModel(exported_bert.dir, exported_bert.onnx_path), _ctx(tmp_path, tok, batches))


def test_size_breakdown_counts_nbits_embeddings_as_embeddings(qexport, tmp_path):
    """GatherBlockQuantized tables are embeddings, MatMulNBits blobs encoder: the deployed size split."""
    from compresslab.export.size import onnx_size_breakdown

    dst = tmp_path / "sizes" / "model.onnx"
    _convert(qexport, dst)
    _, res = qexport
    before, after = onnx_size_breakdown(res.dir / "model_unfused.onnx"), onnx_size_breakdown(dst)
    g = onnx.load(str(dst)).graph
    inits = {t.name: t for t in g.initializer}
    gbq = [n for n in g.node if n.op_type == "GatherBlockQuantized"]
    table = sum(onnx.numpy_helper.to_array(inits[i]).nbytes for n in gbq for i in n.input if i in inits)
    assert gbq and table > 0
    pos_type = before["embeddings"] - onnx.numpy_helper.to_array(
        next(t for t in onnx.load(str(res.dir / "model_unfused.onnx")).graph.initializer
             if "word_embeddings" in t.name)).nbytes
    # the lookup's id check reads a vocab-long uint8 zero vector with a Gather: embeddings too (its 8-byte int64
    # bound is read by a CastLike, so it counts as encoder)
    guard = [onnx.numpy_helper.to_array(t) for t in g.initializer if t.name.endswith("_ids_zeros")]
    assert len(guard) == 1 and guard[0].nbytes == onnx.numpy_helper.to_array(inits[gbq[0].input[0]]).shape[0]
    assert after["embeddings"] == pos_type + table + guard[0].nbytes  # the n-bit table (codes, scales, zeros) too
    assert after["encoder"] < before["encoder"] / 2


@pytest.mark.parametrize("table_level,deploy_level,refused", [(0, 4, True), (4, 0, True), (4, 4, False), (0, 0, False)])
def test_a_latency_budget_priced_at_another_accuracy_level_is_refused(table_level, deploy_level, refused):
    """hawq's latency_limit is priced on MatMulNBits at latency.accuracy_level; the deploy step must run that
    level, or the budget holds on paper only (a level-0 table under a level-4 deploy, and the reverse)."""
    from compresslab.passes.hawq import Hawq

    hawq = Hawq(avg_bits=None, latency_limit=0.8, latency={"accuracy_level": table_level})
    deploy = OrtMatmulNBits(accuracy_level=deploy_level)
    if refused:
        with pytest.raises(ValueError, match=r"latency\.accuracy_level.*set both to the same value"):
            deploy.check_after([hawq])
    else:
        deploy.check_after([hawq])
    deploy.check_after([Hawq(avg_bits=3.0, latency={"accuracy_level": table_level})])  # no latency budget: no rule
