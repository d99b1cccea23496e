"""The two ONNX-stage passes: validation on construction, YAML, and apply on an exported dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from compresslab.config import config_dir
from compresslab.export import count_ops, export_model
from compresslab.export.ort_quant import CalibrateMethod
from compresslab.passes.ort_int8_dynamic import OrtInt8Dynamic
from compresslab.passes.ort_int8_static import OrtInt8Static
from compresslab.registry import build_pass, pass_from_dict, pass_to_dict
from compresslab.types import OnnxModel, PassContext, Stage

CONF = Path(config_dir()) / "pass"


def _ctx(tmp_path: Path, tok, batches) -> PassContext:
    from compresslab.testing import batches_context

    return batches_context(tok, tmp_path, batches, "01_q")


@pytest.mark.parametrize("name,cls", [("ort_int8_dynamic", OrtInt8Dynamic), ("ort_int8_static", OrtInt8Static)])
def test_registered_yaml_and_round_trip(name, cls):
    from hydra.utils import instantiate

    p = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert type(p) is cls and p.name == name and cls.stage is Stage.ONNX
    assert pass_from_dict(pass_to_dict(p)) == p == build_pass(name)


@pytest.mark.parametrize("kwargs,match", [
    ({"calibrate_method": "kl"}, "allowed: 'minmax', 'entropy', 'percentile'"),
    ({"activation_type": "int4"}, "allowed: 'int8', 'uint8'"),
    ({"num_calibration": 0}, "num_calibration must be an integer >= 1"),
    ({"num_calibration": True}, "ort_int8_static.num_calibration must be an integer, got True"),  # a wrong type
    ({"per_channel": "yes"}, "true or false"),
    ({"op_types": ["Softmax"]}, "allowed: .*MatMul"),
    ({"op_types": "MatMul"}, r"op_types must be a list of texts \(written \[a, b\]\) or null, got 'MatMul'"),
])
def test_static_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OrtInt8Static(**kwargs)


def test_dynamic_validation_and_coercion():
    with pytest.raises(ValueError, match="allowed: Attention, Conv"):
        OrtInt8Dynamic(op_types=["Gemm"])
    with pytest.raises(ValueError, match="empty"):
        OrtInt8Dynamic(op_types=[])
    with pytest.raises(ValueError, match="no option"):
        build_pass("ort_int8_dynamic", per_chanel=True)
    assert OrtInt8Dynamic(op_types=OmegaConf.create(["MatMul"])).op_types == ["MatMul"]
    assert OrtInt8Static(calibrate_method="entropy").calibrate_method is CalibrateMethod.ENTROPY


def test_dynamic_pass_applies_on_export(exported_bert, tmp_path, tok, batches):
    ctx = _ctx(tmp_path, tok, batches)
    res = OrtInt8Dynamic().apply(OnnxModel(exported_bert.dir, exported_bert.onnx_path), ctx)
    out = Path(res.onnx_path)
    assert out == ctx.step_dir / "model.onnx" and res.metrics["size_bytes"] < res.metrics["size_bytes_input"]
    files = {p.name for p in ctx.step_dir.iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json"} <= files and "parity.json" not in files
    assert res.metrics["fused_before_quantization"] is False and res.structure["weight_bits"] == 8


def test_static_pass_applies_on_export(exported_bert, tmp_path, tok, batches):
    ctx = _ctx(tmp_path, tok, batches)
    res = OrtInt8Static(num_calibration=12).apply(OnnxModel(exported_bert.dir, exported_bert.onnx_path), ctx)
    assert count_ops(res.onnx_path)["QuantizeLinear"] > 0 and res.metrics["n_calibration_examples"] == 12


def test_static_pass_on_the_plain_graph_gives_standard_ops_openvino_reads(exported_bert, tmp_path, tok, batches):
    from compresslab.bench.openvino_runner import unreadable_ops

    ctx = _ctx(tmp_path, tok, batches)
    res = OrtInt8Static(num_calibration=12, graph="plain", op_types=["MatMul"]).apply(
        OnnxModel(exported_bert.dir, exported_bert.onnx_path), ctx)
    ops = count_ops(res.onnx_path)
    assert ops["QuantizeLinear"] > 0 and not [o for o in ops if o.startswith(("Attention", "SkipLayerNorm", "Embed"))]
    assert unreadable_ops(res.onnx_path) == [] and res.structure["graph"] == "plain"
    with pytest.raises(ValueError, match="allowed: 'fused', 'plain'"):
        OrtInt8Static(graph="unfused")


def test_dynamic_pass_fuses_an_unfused_export_first(tmp_path, tok, batches, bert_model):
    exp = export_model(bert_model, tok, tmp_path / "exp", batches[:1], optimize=False, threads=1)
    res = OrtInt8Dynamic().apply(OnnxModel(exp.dir, exp.onnx_path), _ctx(tmp_path, tok, batches))
    assert res.metrics["fused_before_quantization"] is True
    assert count_ops(res.onnx_path)["QAttention"] == 2


def test_per_token_activation_settings_are_checked():
    with pytest.raises(ValueError, match="allowed: 'per_call', 'per_token'"):
        OrtInt8Dynamic(activations="per_row")
    with pytest.raises(ValueError, match="needs activations=per_token"):
        OrtInt8Dynamic(fp32_fallback="guided", sensitivity="single_per_call")
    # guided with per_token: a per-MatMul choice, Attention included as int8 / fp32 (quant/guided_int8.py)
    both = OrtInt8Dynamic(activations="per_token", fp32_fallback="guided", op_types=["Attention", "MatMul"])
    assert both.op_types == ["Attention", "MatMul"] and both.activations == "per_token"
    with pytest.raises(ValueError, match="MatMul only"):
        OrtInt8Dynamic(activations="per_token", op_types=["Attention", "MatMul"])
    assert OrtInt8Dynamic(activations="per_token", op_types=["MatMul"]).op_types == ["MatMul"]


def test_per_token_pass_leaves_no_per_call_scale_and_no_batch_dependence(exported_bert, tmp_path, tok, batches):
    """Every activation scale per token: no DynamicQuantizeLinear left, the fused Attention fp32 (QAttention
    would need one scale per call), and a sentence scores the same alone as in its batch."""
    import numpy as np

    from compresslab.eval.batch_dependence import batch_dependent_ops
    from compresslab.eval.onnx_runner import OnnxRunner

    ctx = _ctx(tmp_path, tok, batches)
    res = OrtInt8Dynamic(activations="per_token").apply(OnnxModel(exported_bert.dir, exported_bert.onnx_path), ctx)
    ops = count_ops(res.onnx_path)
    assert ops["MatMulIntegerToFloat"] > 0 and ops["Attention"] == 2 and "QAttention" not in ops
    assert batch_dependent_ops(res.onnx_path) == []
    assert res.metrics["per_token"]["rewritten"] > 0 and res.metrics["per_token"]["kept_per_call"] == 0
    assert res.structure["activations"] == "per_token" and res.metrics["activations"] == "per_token"
    runner = OnnxRunner(res.onnx_path, threads=1)
    feed = {k: v.numpy() for k, v in batches[0].items() if k != "labels"}
    together = runner.run(feed)
    alone = runner.run({k: v[:1] for k, v in feed.items()})
    np.testing.assert_allclose(together[:1], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"outliers": "llm_int8"}, "allowed: 'none', 'split'"),
    ({"outlier_ratio": 1.0}, "outlier_ratio must be a number > 1"),
    ({"outlier_ratio": "3"}, "ort_int8_dynamic.outlier_ratio must be a number, got '3'"),  # a wrong type
    ({"outlier_max_channels": 0}, "outlier_max_channels must be an integer >= 1"),
    ({"outlier_calibration": True}, "ort_int8_dynamic.outlier_calibration must be an integer, got True"),
    ({"outlier_ratio": float("inf")}, "outlier_ratio must be finite"),
    ({"outliers": "split", "op_types": ["Attention"]}, "quantizes no MatMul"),
])
def test_outlier_split_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OrtInt8Dynamic(**kwargs)


@pytest.mark.parametrize("activations", ["per_call", "per_token"])
def test_outlier_split_pass_keeps_the_side_path_fp32_and_records_the_split(exported_bert, tmp_path, tok, batches,
                                                                           activations):
    """outliers=split: the FFN side MatMuls stay fp32 MatMul under either activation scheme, every other weight
    MatMul is int8, and the record names what was split (a ratio near 1: the tiny random model has mild outliers)."""
    import onnx

    ctx = _ctx(tmp_path, tok, batches)
    p = OrtInt8Dynamic(outliers="split", outlier_ratio=1.01, outlier_max_channels=2, activations=activations)
    res = p.apply(OnnxModel(exported_bert.dir, exported_bert.onnx_path), ctx)
    split = res.metrics["outlier_split"]
    assert split["side_nodes"] and split["split_input_channels"] > 0 and split["split_neurons"] > 0
    assert split["calibration_examples"] == sum(len(b["input_ids"]) for b in batches)
    nodes = {n.name: n.op_type for n in onnx.load(res.onnx_path).graph.node}
    assert all(nodes[n] == "MatMul" for n in split["side_nodes"])
    # every other weight MatMul is int8 (the fused graph has no activation x activation MatMul outside Attention)
    fp32_weight_matmuls = [n for n, op in nodes.items() if op == "MatMul" and n not in split["side_nodes"]]
    assert fp32_weight_matmuls == []
    assert res.structure["outliers"] == "split"
    assert res.structure["outlier_side_matmuls"] == split["side_nodes"]


def test_a_split_that_moves_nothing_says_so(exported_bert, tmp_path, tok, batches, caplog):
    """outlier_ratio above every channel: the file is plain int8, and the log says so (a trial run saw silence)."""
    import logging

    ctx = _ctx(tmp_path, tok, batches)
    with caplog.at_level(logging.WARNING):
        res = OrtInt8Dynamic(outliers="split", outlier_ratio=1e6).apply(
            OnnxModel(exported_bert.dir, exported_bert.onnx_path), ctx)
    split = res.metrics["outlier_split"]
    assert split["split_input_channels"] == split["split_neurons"] == 0 and split["side_nodes"] == []
    assert "the file is plain int8" in caplog.text


@pytest.mark.parametrize("embeddings", ["blockwise", "per_tensor", "fp32"])
@pytest.mark.parametrize("activations", ["per_call", "per_token"])
def test_the_embeddings_setting_decides_how_the_tables_are_stored(exported_bert, tmp_path, tok, batches, embeddings,
                                                                  activations):
    """blockwise: uint8 codes read by a plain Gather and the fused op fp32; per_tensor: ORT's QEmbedLayerNormalization
    where the op type is quantized (per_token quantizes MatMul only); fp32: the fp32 tables."""
    import onnx
    from onnx import numpy_helper

    ctx = _ctx(tmp_path, tok, batches)
    res = OrtInt8Dynamic(embeddings=embeddings, activations=activations).apply(
        OnnxModel(exported_bert.dir, exported_bert.onnx_path), ctx)
    g = onnx.load(res.onnx_path).graph
    ops = count_ops(res.onnx_path)
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    word = [k for k in inits if k.endswith("word_embeddings.weight")]
    # per_token quantizes MatMul only: ORT's own (per_tensor) leaves the tables fp32, and the record says so
    assert res.structure["embeddings"] == ("fp32" if (embeddings, activations) == ("per_tensor", "per_token")
                                           else embeddings)
    if embeddings == "blockwise":
        assert ops["EmbedLayerNormalization"] == 1 and ops["QEmbedLayerNormalization"] == 0 and not word
        assert inits["/embedding_int8/0_codes"].dtype == np.uint8
        eln = [n.name for n in g.node if n.op_type == "EmbedLayerNormalization"]
        assert set(eln) <= set(res.metrics["embeddings"]["exclude"])  # left alone by ORT's quantizer
    elif embeddings == "per_tensor" and activations == "per_call":
        assert ops["QEmbedLayerNormalization"] == 1 and res.metrics["embeddings"]["stored"] == "per_tensor"
    else:
        assert ops["EmbedLayerNormalization"] == 1 and inits[word[0]].dtype == np.float32
    # int8 MatMuls either way: the setting changes the tables only
    assert ops["MatMulInteger"] + ops.get("MatMulIntegerToFloat", 0) > 0


def test_blockwise_embeddings_compose_with_the_outlier_split(exported_bert, tmp_path, tok, batches):
    """Both rewrites in one file: the side MatMuls fp32, the word table as codes, the fused op left fp32."""
    import onnx
    import onnxruntime as ort

    ctx = _ctx(tmp_path, tok, batches)
    res = OrtInt8Dynamic(outliers="split", outlier_ratio=1.01, outlier_max_channels=2).apply(
        OnnxModel(exported_bert.dir, exported_bert.onnx_path), ctx)
    split, emb = res.metrics["outlier_split"], res.metrics["embeddings"]
    assert split["side_nodes"] and [t.endswith("word_embeddings.weight") for t in emb["tables"]] == [True]
    g = onnx.load(res.onnx_path).graph
    ops = {n.name: n.op_type for n in g.node}
    assert all(ops[n] == "MatMul" for n in split["side_nodes"])
    assert "EmbedLayerNormalization" in ops.values() and "QEmbedLayerNormalization" not in ops.values()
    b = ort.InferenceSession(res.onnx_path, providers=["CPUExecutionProvider"])
    names = {i.name for i in b.get_inputs()}
    assert np.isfinite(b.run(None, {k: v.numpy() for k, v in batches[0].items() if k in names})[0]).all()


def test_a_bad_embeddings_value_is_refused():
    with pytest.raises(ValueError, match="embeddings"):
        OrtInt8Dynamic(embeddings="int4")


def test_explicit_op_types_without_the_embedding_ops_keep_the_tables_fp32(exported_bert, tmp_path, tok, batches):
    import onnx
    from onnx import numpy_helper

    p = OrtInt8Dynamic(op_types=["MatMul", "Attention"])
    res = p.apply(OnnxModel(exported_bert.dir, exported_bert.onnx_path), _ctx(tmp_path, tok, batches))
    word = [t for t in onnx.load(res.onnx_path).graph.initializer if t.name.endswith("word_embeddings.weight")]
    assert res.structure["embeddings"] == "fp32" and numpy_helper.to_array(word[0]).dtype == np.float32
    assert OrtInt8Dynamic(embeddings="per_tensor", activations="per_token")._embeddings_effective() == "fp32"
    assert OrtInt8Dynamic(activations="per_token")._embeddings_effective() == "blockwise"


def test_the_record_says_what_the_file_stores_and_warns_when_it_is_not_what_was_asked(exported_bert, tmp_path, tok,
                                                                                      batches, caplog):
    """op_types [MatMul, Gather] on the fused graph: ORT's per-tensor tables need EmbedLayerNormalization, so the
    tables stay fp32; the record reads that back from the file and a warning says so (a trial run saw silence)."""
    with caplog.at_level("WARNING"):
        res = OrtInt8Dynamic(embeddings="per_tensor", op_types=["MatMul", "Gather"]).apply(
            OnnxModel(exported_bert.dir, exported_bert.onnx_path), _ctx(tmp_path, tok, batches))
    assert res.structure["embeddings"] == "fp32" == res.metrics["embeddings"]["stored"]
    assert res.metrics["embeddings"]["requested"] == "per_tensor"
    assert "stores its word table as fp32" in caplog.text


def test_a_graph_without_a_word_lookup_falls_back_to_ort_and_says_why(tmp_path):
    """The step runs after every torch pass: a graph the rewrite does not know keeps ORT's tables, and the record
    and the warning say why."""
    from compresslab.passes.ort_int8_dynamic import OrtInt8Dynamic as P
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph([helper.make_node("Gather", ["table", "positions"], ["y"], name="pos")], "g",
                          [helper.make_tensor_value_info("positions", TensorProto.INT64, ["T"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 4])],
                          [numpy_helper.from_array(np.zeros((8, 4), np.float32), "table")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "pos.onnx"))
    from compresslab.export.embedding_int8 import table_storage

    out, rec = P()._embeddings(tmp_path / "pos.onnx", tmp_path)
    assert out == tmp_path / "pos.onnx" and rec["embeddings"] == "per_tensor" and rec["requested"] == "blockwise"
    assert table_storage(out) == "none"  # a position table is no word table, quantized or not
    # the one warning apply gives names every reason that applies
    assert "did not apply: " in P()._storage_reasons(rec["fallback_reason"])[0]
    assert P(activations="per_token")._storage_reasons(None) == ["per_token quantizes MatMul only"]
    assert "op_types ['MatMul']" in P(op_types=["MatMul"])._storage_reasons(None)[0]
    assert P()._storage_reasons(None) == ["ORT's quantizer left the embedding op as it was"]


def test_guided_scores_against_the_graph_before_its_tables_were_quantized(exported_bert, tmp_path, tok, batches,
                                                                          monkeypatch):
    """The block-wise rewrite is not exact: guided's fp32 reference must be the file before it, not after."""
    import inspect

    import compresslab.quant.guided_int8 as g

    seen, original = {}, OrtInt8Dynamic._guided

    def fake(self, src, dst, model, ctx, keep_fp32=(), reference=None):
        seen.update(src=Path(src), reference=reference, exclude=list(keep_fp32))
        raise RuntimeError("stop")

    monkeypatch.setattr(OrtInt8Dynamic, "_guided", fake)
    with pytest.raises(RuntimeError, match="stop"):
        OrtInt8Dynamic(fp32_fallback="guided").apply(OnnxModel(exported_bert.dir, exported_bert.onnx_path),
                                                     _ctx(tmp_path, tok, batches))
    assert seen["src"].name == "embeddings_int8.onnx"
    assert Path(seen["reference"]) == Path(exported_bert.onnx_path)  # the fused fp32 export this step was given
    assert any(n.startswith("/embedding_int8/") for n in seen["exclude"])
    assert "reference" in inspect.signature(g.guided_int8).parameters  # and _guided hands it on
    assert "reference=reference" in inspect.getsource(original)


def test_a_plain_graph_step_reads_an_unfused_export_and_names_what_is_missing(tmp_path, tok, batches, bert_model,
                                                                              exported_bert):
    # export.optimize=false writes only an unfused model.onnx: graph=plain quantizes that one (a review found it
    # refused with a FileNotFoundError that named neither setting)
    exp = export_model(bert_model, tok, tmp_path / "exp", batches[:1], optimize=False, threads=1)
    assert not (exp.dir / "model_unfused.onnx").exists()
    res = OrtInt8Static(num_calibration=12, graph="plain", op_types=["MatMul"]).apply(
        OnnxModel(exp.dir, exp.onnx_path), _ctx(tmp_path, tok, batches))
    assert count_ops(res.onnx_path)["QuantizeLinear"] > 0
    # a fused graph alone cannot serve it: the error says what needs the unfused one
    alone = tmp_path / "fused_only"
    alone.mkdir()
    (alone / "model.onnx").write_bytes(exported_bert.onnx_path.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"no unfused export .* graph=plain \(a QDQ graph OpenVINO reads\) needs"):
        OrtInt8Static(num_calibration=12, graph="plain").apply(OnnxModel(alone, alone / "model.onnx"),
                                                               _ctx(tmp_path / "b", tok, batches))


@pytest.mark.parametrize("kw,mode", [({"outlier_ratio": 9.0}, "outliers=split"), ({"outlier_calibration": 64}, "outliers=split"),
                                     ({"latency_ratio": 0.5}, "fp32_fallback=guided"),
                                     ({"sensitivity": "single_int8"}, "fp32_fallback=guided")])
def test_a_setting_of_a_mode_that_is_off_is_refused_not_ignored(kw, mode):
    # a new user's outlier_ratio=9 without outliers=split ran plain int8 under its own config hash
    key = next(iter(kw))
    with pytest.raises(ValueError, match=f"{key}=.*applies to {mode} only"):
        OrtInt8Dynamic(**kw)
    on = {"outliers": "split"} if mode == "outliers=split" else {"fp32_fallback": "guided"}
    assert getattr(OrtInt8Dynamic(**kw, **on), key) is not None
