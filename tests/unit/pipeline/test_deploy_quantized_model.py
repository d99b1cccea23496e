"""An int8 pipeline whose torch model a pass quantized already, deployed on OpenVINO: NNCF's PTQ takes an fp32 model
and has none here, so ``deploy.int8=auto`` (the default) builds ours alone and says why in the notes, and
``deploy.int8=nncf`` is refused before any work.

Trial 44 found no test of the note for ``int8_qat`` (its export is its QDQ graph, which ``nncf_int8_ir`` refuses),
and the class was wider: after ``hawq`` (frozen n-bit weights) or ``bibert`` (binary ones) the export is a float
graph whose weights sit on a grid, so NNCF quantized the rounding again (seen: a hawq 4-bit model got an NNCF IR)
and preflight accepted ``deploy.int8=nncf``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compresslab.config import compose
from compresslab.manifest import read_json
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.pipeline import SettingsError
from compresslab.testing import tiny_sentiment, write_csv

# the steps after finetune, each leaving the torch model quantized, then an ORT int8 pass where it needs one
QUANTIZERS = {
    "int8_qat": ["pipeline.steps=[finetune,int8_qat]", "+pass@pipeline.passes.int8_qat=int8_qat",
                 "pipeline.passes.int8_qat.recovery.steps=0", "pipeline.passes.int8_qat.num_calibration=16"],
    "hawq": ["pipeline.steps=[finetune,hawq,int8]", "+pass@pipeline.passes.hawq=hawq", "pipeline.passes.hawq.bits=4",
             "pipeline.passes.hawq.block_size=16", "pipeline.passes.hawq.recovery.steps=0"],
    "bibert": ["pipeline.steps=[finetune,bibert,int8]", "+pass@pipeline.passes.bibert=bibert",
               "pipeline.passes.bibert.recovery.steps=1", "pipeline.passes.bibert.max_length=32"],
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny BERT with its tokenizer as a model folder, and two-label train and dev CSVs."""
    root = tmp_path_factory.mktemp("inputs")
    tiny_tokenizer(root / "model").save_pretrained(root / "model")
    tiny_model("bert").save_pretrained(root / "model")
    for name, n, seed in (("train", 96, 0), ("dev", 32, 1)):
        write_csv(root / f"{name}.csv", ["text", "label"], [[e.text_a, str(e.label)] for e in tiny_sentiment(n, seed)])
    return root / "model", root / "train.csv", root / "dev.csv"


def _cfg(inputs: tuple[Path, Path, Path], out: Path, *extra: str):
    src, train, dev = inputs
    return compose(["+pipeline=int8", "debug=smoke", "model=local", f"model.source={src}", "task=generic",
                    f"task.generic.train={train}", f"task.generic.dev={dev}", "task.max_length=32", "run.threads=1",
                    "bench=off", "report=false", f"paths.output_dir={out}", f"paths.cache_dir={out}/cache", *extra])


@pytest.mark.parametrize("quantizer, kind", [("int8_qat", "int8"), ("hawq", "n-bit")])
def test_auto_skips_nncf_on_a_quantized_model_and_says_why(quantizer, kind, inputs, tmp_path, monkeypatch) -> None:
    """deploy=openvino, deploy.int8=auto: the note names what is quantized, NNCF's PTQ never runs, ours is
    deployed. int8_qat: its own QDQ graph converted as it is."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import compresslab.export.openvino_int8 as oi
    from compresslab.pipeline import run

    called: list[tuple] = []
    monkeypatch.setattr(oi, "nncf_int8_ir", lambda *a, **k: called.append(a) or pytest.fail("NNCF ran"))
    rd = run(_cfg(inputs, tmp_path, "deploy=openvino", *QUANTIZERS[quantizer]))
    m = read_json(rd / "manifest.json")
    assert m["status"] == "finished" and called == []
    notes = m["deploy"]["notes"]
    assert any(n.startswith(f"NNCF PTQ skipped: the model is {kind} already (") and "a torch pass quantized it" in n
               and n.endswith("NNCF's PTQ takes an fp32 model") for n in notes), notes
    ir = m["export"]["openvino"]
    assert set(ir["candidates"]) == {"ours"} and ir["int8_method"] == "ours"
    assert not (rd / "export" / "openvino_nncf").exists()
    dep = m["export"]["deployed"]
    assert dep["runtime"] == "openvino" and dep["int8"] and dep["method"] == "compresslab"
    if quantizer == "int8_qat":  # the QDQ graph itself, counted in the note, converted as it is
        assert "Quantize/DequantizeLinear nodes in export/model.onnx" in notes[0]
        assert ir["source"] == "export/model.onnx" and ir["quantization"]["by"] == "the pipeline's int8 pass"


def test_every_kind_of_quantized_model_is_named(tiny_model, tmp_path) -> None:
    """The model-level reading behind the note: QDQ Linears, n-bit and binary modules, each named; a float model
    (or none) over a float graph gives None."""
    import copy

    import onnx
    from onnx import TensorProto, helper

    from compresslab.models.binary import binarize_model
    from compresslab.models.qdq import quantize_qdq
    from compresslab.models.quantized import quantize_modules
    from compresslab.pipeline.deploy import quantized_already

    plain = tmp_path / "plain.onnx"  # a float graph: hawq's and bibert's exports are float graphs too
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy"]
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", io[:1], io[1:])),
              str(plain))
    assert quantized_already(tiny_model, plain, tmp_path) is None and quantized_already(None, plain, tmp_path) is None
    q = "bert.encoder.layer.0.attention.self.query"
    qdq, nbit, binary = (copy.deepcopy(tiny_model) for _ in range(3))
    quantize_qdq(qdq, [q])
    quantize_modules(nbit, {q: {"bits": 4, "block_size": 16}})
    binarize_model(binary, linears=[q], embeddings=[])
    assert quantized_already(qdq, plain, tmp_path) == "int8 already (1 int8 QDQ Linears: a torch pass quantized it)"
    assert quantized_already(nbit, plain, tmp_path) == ("n-bit already (1 n-bit weight modules: a torch pass "
                                                        "quantized it)")
    assert quantized_already(binary, plain, tmp_path) == "binary already (1 binary modules: a torch pass quantized it)"


@pytest.mark.parametrize("quantizer", list(QUANTIZERS))
@pytest.mark.parametrize("setting", ["deploy.int8=nncf", "deploy.accuracy_control=true"])
def test_nncf_settings_after_a_quantizing_pass_are_refused_before_any_work(quantizer, setting, inputs,
                                                                            tmp_path) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from compresslab.pipeline.preflight import preflight

    cfg = _cfg(inputs, tmp_path, "deploy=openvino", *QUANTIZERS[quantizer], setting)
    key = setting.split("=")[0]
    with pytest.raises(SettingsError, match=rf"{key}=.* would be ignored: {quantizer} .*quantizes the torch model.*"
                                            r"no fp32 model for NNCF's PTQ"):
        preflight(cfg)
    assert preflight(_cfg(inputs, tmp_path, "deploy=openvino", *QUANTIZERS[quantizer]))  # auto: accepted
    if quantizer != "int8_qat":  # ORT's dynamic int8 after it: our recipe reads its settings
        assert preflight(_cfg(inputs, tmp_path, "deploy=openvino", *QUANTIZERS[quantizer], "deploy.int8=ours",
                              "deploy.smooth_alpha=0.5"))
