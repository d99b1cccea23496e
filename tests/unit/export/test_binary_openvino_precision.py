"""A binary (BiBERT) model on OpenVINO compiles as f32 whatever the CPU: OpenVINO's default is bf16 on
AVX512_BF16/AMX CPUs, and bf16 rounds small pre-sign activations across 0 (flipped signs, lost accuracy).
``default`` is forced to f32 with a note; bf16 is refused naming the setting, at start for a pipeline
that binarizes. The CPU flags are patched to claim AMX so these run on CPUs without bf16 too."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from compresslab.bench import openvino_runner as ovr
from compresslab.export import export_model
from compresslab.models.binary import binarize_model, freeze_binary
from compresslab.models.tiny import tiny_model
from compresslab.pipeline.bench import precision_notes
from compresslab.pipeline.deploy import check_deploy

AMX = {"avx512f", "avx512_bf16", "amx_bf16", "amx_int8"}


@pytest.fixture(scope="module")
def binary_onnx(tmp_path_factory, tok, make_batches):
    """The plain export of a tiny frozen binary BERT (config.json with its compresslab_binary stamp beside it)."""
    m = tiny_model("bert", initializer_range=0.3)
    binarize_model(m)
    freeze_binary(m)
    res = export_model(m, tok, tmp_path_factory.mktemp("binary"), make_batches(seed=1), threads=1)
    return res.unfused_path


@pytest.fixture
def amx(monkeypatch):
    monkeypatch.setattr(ovr, "cpu_flags", lambda: set(AMX))


def test_the_rule_for_binary_and_dense_models(amx):
    assert ovr.allowed_precisions(True) == ("default", "f32")
    assert ovr.allowed_precisions(False) == ("default", "f32", "bf16")
    hint, note = ovr.resolve_precision("default", binary=True, what="m.onnx")
    assert hint == "f32" and "m.onnx" in note and "forced to f32" in note
    assert ovr.resolve_precision("f32", binary=True) == ("f32", None)
    assert ovr.resolve_precision("default", binary=False) == ("default", None)  # dense: bf16 is a choice
    assert ovr.resolve_precision("bf16", binary=False) == ("bf16", None)
    with pytest.raises(ValueError, match=r"deploy\.precision='bf16' refused for m\.onnx, a binary model.*'f32'"):
        ovr.resolve_precision("bf16", binary=True, setting="deploy.precision", what="m.onnx")
    with pytest.raises(ValueError, match="one of"):
        ovr.resolve_precision("fp16", binary=True)


def test_a_binary_export_is_recognised_by_its_config(binary_onnx, tmp_path):
    assert ovr.is_binary_artifact(binary_onnx)
    (tmp_path / "model.onnx").write_bytes(b"")
    assert not ovr.is_binary_artifact(tmp_path / "model.onnx")  # no config.json: a hand-made graph
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert not ovr.is_binary_artifact(tmp_path / "model.onnx")


def test_the_runner_compiles_a_binary_model_as_f32_and_refuses_bf16(amx, binary_onnx, tmp_path):
    pytest.importorskip("openvino")
    r = ovr.OpenVinoRunner(binary_onnx, threads=1)  # default precision, on a "bf16 CPU"
    assert r.binary and r.compiled_precision == "f32"
    info = r.info()
    assert info["precision_requested"] == "default" and info["precision"] == "f32"
    assert "forced to f32" in info["precision_note"]
    assert precision_notes({"deployed_openvino_default": r, "ort_fp32": object()}) == [
        f"deployed_openvino_default: {r.precision_note}"]
    with pytest.raises(ValueError, match="'bf16' refused for .*binary model"):
        ovr.OpenVinoRunner(binary_onnx, threads=1, precision="bf16")
    # the deploy stage's IR (optimum-intel layout: config.json copied beside it) is recognised too
    from compresslab.pipeline.deploy import convert_to_ir

    ir = ovr.OpenVinoRunner(convert_to_ir(binary_onnx, tmp_path / "ir"), threads=1)
    assert ir.binary and ir.compiled_precision == "f32" and "forced to f32" in ir.precision_note
    # the same graph without its config (nothing says it is binary) keeps OpenVINO's pick, and no note
    bare = tmp_path / "model.onnx"
    bare.write_bytes(binary_onnx.read_bytes())
    assert ovr.OpenVinoRunner(bare, threads=1).precision_note is None
    assert ovr.OpenVinoRunner(bare, threads=1, binary=True).compiled_precision == "f32"  # said by the caller


def _settings(runtime="openvino", precision="default", backends=("ort", "openvino"), precisions=("default", "f32")):
    deploy = SimpleNamespace(runtime=runtime, precision=precision, keep_fp32=None, int8="auto")
    bench = SimpleNamespace(backends=backends, openvino_precisions=precisions)
    return SimpleNamespace(deploy=deploy, bench=bench)


def test_a_pipeline_that_binarizes_refuses_bf16_before_any_step(amx):
    from compresslab.passes.bibert import BiBert

    steps = [SimpleNamespace(name="finetune", pass_=object()), SimpleNamespace(name="bibert", pass_=BiBert())]
    dense = tiny_model("bert")
    check_deploy(_settings(precision="bf16"), [], dense)  # a dense pipeline: bf16 is a deployment choice
    check_deploy(_settings(), steps, dense)  # default and f32: compiled as f32, fine
    with pytest.raises(ValueError, match=r"deploy\.precision='bf16' refused for the model step bibert makes"):
        check_deploy(_settings(precision="bf16"), steps, dense)
    with pytest.raises(ValueError, match=r"bench\.openvino_precisions='bf16'"):
        check_deploy(_settings(runtime="ort", precisions=("default", "bf16")), steps, dense)
    check_deploy(_settings(runtime="ort", precision="bf16", backends=("ort",)), steps, dense)  # OpenVINO unused
    loaded = tiny_model("bert")
    binarize_model(loaded)
    freeze_binary(loaded)  # a binary checkpoint given as the source model
    with pytest.raises(ValueError, match="refused for the model loaded"):
        check_deploy(_settings(precision="bf16"), [], loaded)
