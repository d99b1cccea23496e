"""int8 OpenVINO IRs: our static QDQ calibration and NNCF's PTQ (the peer's method), and the choice rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from compresslab.bench.openvino_runner import OpenVinoRunner  # noqa: E402
from compresslab.export.openvino_int8 import IR_NAME, nncf_int8_ir, ours_int8_ir  # noqa: E402
from compresslab.export.precision import is_int8 as _is_int8  # noqa: E402
from compresslab.pipeline.deploy import choose_int8  # noqa: E402


def _feeds(batches: list) -> list[dict]:
    return [{k: v.numpy() for k, v in b.items() if k != "labels"} for b in batches]


def _fq_count(xml: Path) -> int:
    return xml.read_text().count('type="FakeQuantize"')


def test_ours_makes_an_int8_ir_in_optimum_layout_that_runs_our_qdq_math(exported_bert, make_batches, tmp_path):
    import onnxruntime as ort

    from compresslab.export.ort_quant import quantize_static_qdq

    calib, held = _feeds(make_batches(n=4, bs=8, seed=1)), _feeds(make_batches(n=3, bs=8, seed=2))
    plain = Path(exported_bert.unfused_path)
    xml, metrics = ours_int8_ir(plain, tmp_path / "ours", calib, attention_scores=False, embeddings_int8=False)
    assert xml.name == IR_NAME and _is_int8(xml) and _fq_count(xml) > 0
    for f in ("openvino_model.bin", "config.json", "tokenizer.json"):
        assert (tmp_path / "ours" / f).is_file(), f
    assert not list((tmp_path / "ours").glob("*.onnx"))  # the QDQ graph is a step, not the artifact
    assert metrics["method"] == "ours" and metrics["n_calibration_examples"] == 32
    assert metrics["attention_matmuls"] is False and metrics["matmul_outputs"] is False
    # OpenVINO must run the same int8 arithmetic as ORT on our QDQ graph (same scales, zero points): the
    # recipe's graph rebuilt by hand (weight MatMul inputs only, outputs float, float residual path)
    from compresslab.export.ort_quant import activation_matmuls
    from compresslab.export.qdq import float_path_for_unquantized

    qdq = tmp_path / "ref" / "model.onnx"
    quantize_static_qdq(plain, qdq, calib, per_channel=True, op_types=["MatMul"],
                        nodes_to_exclude=activation_matmuls(plain),
                        extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]})
    assert float_path_for_unquantized(qdq) == metrics["float_residual_inputs"] > 0
    sess, runner = ort.InferenceSession(str(qdq)), OpenVinoRunner(xml, threads=1, precision="f32")
    for f in held:
        ref = sess.run(None, f)[0]
        assert np.abs(runner.run(f) - ref).max() <= 0.02 * np.abs(ref).max()


def test_ours_int8_ir_tracks_torch_on_a_normally_initialized_model(tok, make_batches, tmp_path):
    import torch

    from compresslab.export import export_model
    from compresslab.models.tiny import tiny_model

    model = tiny_model("bert")  # initializer_range 0.02, as pretrained checkpoints are
    ex = export_model(model, tok, tmp_path / "exp", make_batches(n=2, bs=4), threads=1)
    calib, held = make_batches(n=4, bs=8, seed=1), make_batches(n=3, bs=8, seed=2)
    xml, _ = ours_int8_ir(Path(ex.unfused_path), tmp_path / "ours", _feeds(calib))
    runner = OpenVinoRunner(xml, threads=1, precision="f32")
    for b, f in zip(held, _feeds(held)):
        with torch.no_grad():
            ref = model(**{k: v for k, v in b.items() if k != "labels"})[0].numpy()
        assert np.abs(runner.run(f) - ref).max() <= 0.1 * np.abs(ref).max()


def test_ours_stores_the_word_embedding_table_in_int8_by_default(tok, make_batches, tmp_path):
    """The recipe's default (RECIPE 2026-12-04.2): the word-embedding table per-row int8 before its Gather,
    the IR's weights ~table/4 smaller, its outputs those of the same recipe with the table in fp32 up to the
    table's rounding."""
    from compresslab.export import export_model
    from compresslab.models.tiny import tiny_model

    model = tiny_model("bert", vocab_size=1200)  # a word table (>= 1,000 rows), beside the small position/type ones
    ex = export_model(model, tok, tmp_path / "exp", make_batches(n=2, bs=4), threads=1)
    calib, held = _feeds(make_batches(n=4, bs=8, seed=1)), _feeds(make_batches(n=2, bs=8, seed=2))
    plain = Path(ex.unfused_path)
    xml, m = ours_int8_ir(plain, tmp_path / "emb", calib)
    ref_xml, ref_m = ours_int8_ir(plain, tmp_path / "fp32_table", calib, embeddings_int8=False)
    table = model.config.vocab_size * model.config.hidden_size
    assert m["embeddings_int8"]["rows"] == model.config.vocab_size and len(m["embeddings_int8"]["tables"]) == 1
    assert "embeddings_int8" not in ref_m
    saved = ref_xml.with_suffix(".bin").stat().st_size - xml.with_suffix(".bin").stat().st_size
    assert saved >= 0.7 * 3 * table  # 4 bytes -> 1 per entry (+ one fp32 scale per row)
    got, ref = OpenVinoRunner(xml, threads=1, precision="f32"), OpenVinoRunner(ref_xml, threads=1, precision="f32")
    for f in held:
        r = ref.run(f)
        assert np.abs(got.run(f) - r).max() <= 0.05 * np.abs(r).max()


def test_nncf_makes_an_int8_ir_and_accuracy_control_is_wired(exported_bert, bert_model, make_batches, torch_out,
                                                              tmp_path):
    pytest.importorskip("nncf")
    calib, held = make_batches(n=4, bs=8, seed=1), make_batches(n=2, bs=8, seed=3)
    plain = Path(exported_bert.unfused_path)
    xml, info = nncf_int8_ir(plain, tmp_path / "nncf", _feeds(calib))
    assert _is_int8(xml) and _fq_count(xml) > 0 and info["api"] == "nncf.quantize"
    assert info["n_calibration_examples"] == 32 and (tmp_path / "nncf" / "config.json").is_file()
    val = [(f, torch_out(bert_model, b).argmax(-1)) for f, b in zip(_feeds(held), held)]
    # any drop allowed: NNCF keeps its full quantization scope, so the IR equals plain PTQ's
    xml2, info2 = nncf_int8_ir(plain, tmp_path / "nncf_ac", _feeds(calib), validation=val, max_drop=1.0)
    assert info2["api"] == "nncf.quantize_with_accuracy_control" and info2["n_validation_examples"] == 16
    assert _fq_count(xml2) == _fq_count(xml)


@pytest.mark.parametrize("scores, chosen", [
    ({"ours": {"agreement": 0.98}, "nncf": {"agreement": 0.99}}, "nncf"),
    ({"ours": {"agreement": 0.99}, "nncf": {"agreement": 0.98}}, "ours"),
    ({"ours": {"agreement": 0.99}, "nncf": {"agreement": 0.99}}, "ours"),    # a tie keeps ours
    ({"nncf": {"agreement": 0.99}, "ours": {"agreement": 0.99}}, "ours"),    # whatever the order
    ({"ours": {"agreement": float("nan")}, "nncf": {"agreement": 0.5}}, "nncf"),
    ({"ours": {}, "nncf": {}}, "ours"),
])
def test_int8_choice_is_the_higher_validation_agreement(scores, chosen):
    assert choose_int8(scores, "agreement") == chosen


def test_activation_matmuls_are_attentions_two_per_layer_and_can_stay_fp32(exported_bert, make_batches, tmp_path):
    import onnx

    from compresslab.export.ort_quant import activation_matmuls

    plain = Path(exported_bert.unfused_path)
    names = activation_matmuls(plain)
    assert len(names) == 2 * 2  # the tiny BERT has 2 layers:  # Q.K^T and P.V in every layer, no weight MatMul among them
    graph = onnx.load(str(plain)).graph
    weights = {i.name for i in graph.initializer}
    assert all(not any(i in weights for i in n.input) for n in graph.node if n.name in names)
    n_matmul = sum(n.op_type == "MatMul" for n in graph.node)
    calib = _feeds(make_batches(n=2, bs=8, seed=1))
    all_q, _ = ours_int8_ir(plain, tmp_path / "all", calib, attention_matmuls=True)
    w_only, m = ours_int8_ir(plain, tmp_path / "w", calib, attention_scores=False)  # weight MatMuls only
    assert m["attention_matmuls"] is False and m["n_excluded"] == len(names) < n_matmul
    # each activation MatMul quantized adds at least one FakeQuantize per input (none are weights)
    assert _fq_count(all_q) - _fq_count(w_only) >= 2 * len(names)


def test_keep_fp32_maps_module_patterns_to_the_exported_matmuls(exported_bert, bert_model):
    from compresslab.pipeline.deploy import fp32_matmuls

    plain = Path(exported_bert.unfused_path)
    names = fp32_matmuls(bert_model, ["ffn_out"], plain)  # the role: every layer's FFN output projection
    assert [n.split("/")[-4:] for n in names] == [["layer.0", "output", "dense", "MatMul"],
                                                  ["layer.1", "output", "dense", "MatMul"]]
    assert fp32_matmuls(bert_model, ["bert.encoder.layer.1.attention.self.query"], plain)[0].endswith(
        "layer.1/attention/self/query/MatMul")
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        fp32_matmuls(bert_model, ["no_such_module"], plain)


def test_accuracy_control_stops_after_max_iterations(exported_bert, bert_model, make_batches, torch_out, tmp_path):
    import time

    pytest.importorskip("nncf")
    calib, held = make_batches(n=2, bs=8, seed=1), make_batches(n=2, bs=8, seed=3)
    val = [(f, torch_out(bert_model, b).argmax(-1)) for f, b in zip(_feeds(held), held)]
    t0 = time.perf_counter()
    # the wide-init tiny BERT cannot meet a zero drop: NNCF alone would keep reverting layers
    xml, info = nncf_int8_ir(Path(exported_bert.unfused_path), tmp_path / "ac", _feeds(calib), validation=val,
                             max_drop=0.0, max_iterations=1)
    assert info["max_iterations"] == 1 and xml.is_file() and time.perf_counter() - t0 < 60


def _fq_edges(xml: Path) -> tuple[set[str], set[str]]:
    """The op types that feed a FakeQuantize, and those that read one."""
    import openvino as ov

    srcs, dsts = set(), set()
    for op in ov.Core().read_model(str(xml)).get_ops():
        if op.get_type_name() == "FakeQuantize":
            srcs.add(op.input_value(0).get_node().get_type_name())
            dsts |= {t.get_node().get_type_name() for t in op.output(0).get_target_inputs()}
    return srcs, dsts


def test_outputs_and_residual_options_leave_only_the_weight_matmul_inputs_on_the_grid(tok, make_batches, tmp_path):
    import torch

    from compresslab.export import export_model
    from compresslab.models.tiny import tiny_model

    model = tiny_model("bert")
    ex = export_model(model, tok, tmp_path / "exp", make_batches(n=2, bs=4), threads=1)
    plain, calib, held = Path(ex.unfused_path), _feeds(make_batches(n=4, bs=8, seed=1)), make_batches(n=3, bs=8, seed=2)
    # ORT's static QDQ defaults (our recipe before), then the recipe's defaults
    old, m_old = ours_int8_ir(plain, tmp_path / "old", calib, attention_matmuls=True, matmul_outputs=True,
                              float_residual=False)
    new, m_new = ours_int8_ir(plain, tmp_path / "new", calib, attention_scores=False)
    srcs, dsts = _fq_edges(old)
    assert "MatMul" in srcs and "Add" in dsts  # ORT's defaults: MatMul outputs and the residual Add on the grid
    srcs, dsts = _fq_edges(new)
    assert dsts == {"MatMul"} and "MatMul" not in srcs, (srcs, dsts)
    # the default adds Q.K^T: its pairs sit on the query/key projections' outputs, before the head split
    dflt, m_dflt = ours_int8_ir(plain, tmp_path / "dflt", calib)
    srcs, dsts = _fq_edges(dflt)
    assert dsts == {"MatMul", "Reshape"}, (srcs, dsts)
    # 2 layers x (Q, K): every override took (symmetric int8) and every pair moved
    assert m_dflt["attention_scores"] == {"matmuls": 2, "symmetric_int8_inputs": 4, "pairs_moved_before_head_split": 4}
    assert m_dflt["n_excluded"] == 2  # P.V stays float
    assert m_new["matmul_outputs"] is False and m_new["float_residual_inputs"] > 0 and m_old["matmul_outputs"]
    assert "float_residual_inputs" not in m_old
    err = {}
    for name, xml in (("old", old), ("new", new)):
        runner = OpenVinoRunner(xml, threads=1, precision="f32")
        err[name] = 0.0
        for b, f in zip(held, _feeds(held)):
            with torch.no_grad():
                ref = model(**{k: v for k, v in b.items() if k != "labels"})[0].numpy()
            err[name] = max(err[name], float(np.abs(runner.run(f) - ref).max()))
    assert err["new"] < err["old"], err  # fewer roundings on the way: closer to torch


def test_smooth_grid_keeps_the_best_scored_ir_and_cleans_up(exported_bert, make_batches, tmp_path):
    from compresslab.export.openvino_int8 import ours_int8_ir_chosen

    plain, calib = Path(exported_bert.unfused_path), _feeds(make_batches(n=2, bs=8, seed=1))
    seen: list[dict] = []

    def score(irs: dict[str, Path]) -> dict[str, float]:
        seen.append({k: v.is_file() for k, v in irs.items()})
        return {"none": 0.5, "alpha_0.5": 0.9, "alpha_0.8": 0.9}  # a tie between 0.5 and 0.8: the earlier wins

    out = tmp_path / "export" / "openvino"
    xml, m = ours_int8_ir_chosen(plain, out, calib, [None, 0.5, 0.8], score)
    assert seen == [{"none": True, "alpha_0.5": True, "alpha_0.8": True}]  # all built before scoring
    assert xml == out / IR_NAME and xml.is_file() and _is_int8(xml)
    assert m["smooth_choice"]["alpha"] == 0.5 and m["smooth_choice"]["scores"]["none"] == 0.5
    assert m["smoothquant"]["alpha"] == 0.5  # the kept IR's own build record
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["openvino"]  # the losers are gone
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "stale.txt").write_text("an earlier build")
    one, m1 = ours_int8_ir_chosen(plain, tmp_path / "one", calib, [None], lambda irs: 1 / 0)  # never scored
    assert one.is_file() and m1["smooth_choice"] == {"grid": [None], "alpha": None, "scored": False}
    assert not (tmp_path / "one" / "stale.txt").exists()  # replaced whole, as with a grid
    with pytest.raises(ValueError, match="no SmoothQuant grid entry got a finite score"):
        ours_int8_ir_chosen(plain, tmp_path / "nan", calib, [None, 0.5], lambda irs: {"none": float("nan")})
    assert not (tmp_path / "nan").exists()
    assert "smoothquant" not in m1
    with pytest.raises(ValueError, match="empty"):
        ours_int8_ir_chosen(plain, tmp_path / "e", calib, [], score)
    with pytest.raises(ValueError, match="repeated"):
        ours_int8_ir_chosen(plain, tmp_path / "r", calib, [0.5, 0.5], score)


def test_smooth_grid_failure_leaves_nothing_and_a_nan_score_is_never_chosen(exported_bert, make_batches, tmp_path):
    from compresslab.export.openvino_int8 import ours_int8_ir_chosen

    plain, calib = Path(exported_bert.unfused_path), _feeds(make_batches(n=2, bs=8, seed=1))
    out = tmp_path / "export" / "openvino"
    out.mkdir(parents=True)
    (out / "previous.txt").write_text("an earlier IR")

    def broken(irs):
        raise RuntimeError("compile failed")

    with pytest.raises(ValueError, match="scoring the SmoothQuant grid failed: RuntimeError: compile failed"):
        ours_int8_ir_chosen(plain, out, calib, [None, 0.5], broken)
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["openvino"]  # no grid dir left
    assert (out / "previous.txt").is_file()  # what was there stays
    xml, m = ours_int8_ir_chosen(plain, out, calib, [None, 0.5], lambda irs: {"none": float("nan"), "alpha_0.5": 0.1})
    assert m["smooth_choice"]["alpha"] == 0.5 and m["smooth_choice"]["scores"]["none"] is None
    assert not (out / "previous.txt").exists() and xml.is_file()  # replaced whole


def test_refuses_output_quantization_with_the_float_residual_path(exported_bert, make_batches, tmp_path):
    with pytest.raises(ValueError, match="matmul_outputs=True with float_residual=True"):
        ours_int8_ir(Path(exported_bert.unfused_path), tmp_path / "x", _feeds(make_batches(n=1, bs=4)),
                     matmul_outputs=True, float_residual=True)


def test_nncf_refuses_a_graph_that_is_already_int8(exported_bert, make_batches, tmp_path):
    """An int8_qat run's export is its QDQ graph, and it sat where the suite and deploy look for the "plain fp32
    export" NNCF quantizes: NNCF's "int8 of our model" was NNCF re-quantizing our rounding (SST-2 session 43,
    `ziplm_trim_qat_int8_openvino_nncf`). Any QDQ graph is refused, naming why, before NNCF runs."""
    from compresslab.export.openvino_int8 import already_quantized
    from compresslab.export.ort_quant import quantize_static_qdq

    calib = _feeds(make_batches(n=2, bs=4, seed=1))
    plain = Path(exported_bert.unfused_path)
    qdq = tmp_path / "qdq" / "model.onnx"
    quantize_static_qdq(plain, qdq, calib, per_channel=True, op_types=["MatMul"])
    assert already_quantized(plain) == 0 and already_quantized(qdq) > 0
    with pytest.raises(ValueError, match=r"already an int8 QDQ graph .*NNCF's PTQ takes an fp32 model"):
        nncf_int8_ir(qdq, tmp_path / "nncf", calib)
    assert not (tmp_path / "nncf").exists()  # refused before any work
