"""``deploy.runtime=ort|openvino|auto``: composed from conf/deploy, typed and refused at start when wrong."""

from __future__ import annotations

import pytest

from compresslab.config import compose
from compresslab.pipeline import SettingsError
from compresslab.pipeline.settings import DeploySettings, RunSettings, default_deploy


def _settings(*extra: str) -> RunSettings:
    return RunSettings.from_config(compose(["+pipeline=int8", "debug=smoke", *extra]))


def test_default_is_ort_and_every_option_composes():
    assert _settings().deploy == default_deploy() == DeploySettings(runtime="ort", precision="default", tolerance=0.005)
    ov = "deploy=openvino"
    assert _settings(ov, "deploy.smooth_alpha=null").deploy.smooth_alpha == (None,)
    assert _settings(ov, "deploy.smooth_alpha=0.8").deploy.smooth_alpha == (0.8,)
    assert _settings(ov, "deploy.smooth_alpha=[null,0.5]").deploy.smooth_alpha == (None, 0.5)
    pytest.importorskip("openvino")
    assert _settings("deploy=openvino").deploy.runtime == "openvino"
    auto = _settings("deploy=auto", "deploy.tolerance=0.01").deploy
    assert (auto.runtime, auto.tolerance) == ("auto", 0.01)
    cfg = compose(["+pipeline=ziplm_int8", "deploy=openvino"])
    assert RunSettings.from_config(cfg).deploy.runtime == "openvino"


@pytest.mark.parametrize("override,match", [
    ("deploy.runtime=tensorrt", r"runtime='tensorrt' is not valid; allowed: 'ort', 'openvino', 'auto'"),
    ("deploy.precision=fp8", r"precision='fp8' is not valid; allowed: 'default', 'f32', 'bf16'"),
    ("deploy.tolerance=1.5", r"tolerance: a fraction"),
    ("+deploy.tolerence=0.1", r"unknown key\(s\) \['tolerence'\]"),
    ("deploy.int8=int4", r"int8='int4' is not valid; allowed: 'ours', 'nncf', 'auto'"),
    ("deploy.calibration_examples=0", r"calibration_examples"),
    ("deploy.max_drop=-0.1", r"max_drop: a fraction"),
    ("deploy.accuracy_control=maybe", r"accuracy_control: true or false"),
    ("deploy.keep_fp32=ffn_out", r"keep_fp32 must be a list"),
    ("deploy.keep_fp32=[ffn_out]", r"keep_fp32 applies to our OpenVINO int8 recipe .*runtime='ort'"),
    ("deploy.smooth_alpha=[]", r"smooth_alpha: an empty list"),
    ("deploy.smooth_alpha=[0.5,0]", r"smooth_alpha: each entry is a SmoothQuant strength in \(0, 1\] or null, got 0"),
    ("deploy.smooth_alpha=1.5", r"smooth_alpha: each entry"),
    ("deploy.smooth_alpha=[0.5,0.5]", r"smooth_alpha: 0.5 is listed twice"),
    ("deploy.smooth_alpha=[0.5,0.50000001]", r"smooth_alpha: 0.50000001 equals another entry .* at 6 significant"),
    ("deploy.smooth_alpha=0.8", r"smooth_alpha applies to our OpenVINO int8 recipe .*runtime='ort'"),
])
def test_bad_deploy_settings_are_refused_at_start(override, match):
    with pytest.raises(SettingsError, match=f"deploy: {match}"):
        _settings(override)


def test_openvino_requested_but_missing_names_the_extra(monkeypatch):
    import compresslab.bench.openvino_runner as ovr

    monkeypatch.setattr(ovr, "openvino_missing_reason",
                        lambda: "openvino is not installed (x); install it with `pip install 'compresslab[openvino]'`")
    with pytest.raises(SettingsError, match=r"runtime 'openvino' requested but .*compresslab\[openvino\]"):
        _settings("deploy=openvino")
    assert _settings().deploy.runtime == "ort"  # ort never needs it


def test_nncf_requested_by_name_but_missing_is_refused_at_start(monkeypatch):
    pytest.importorskip("openvino")
    import compresslab.export.openvino_int8 as oi

    monkeypatch.setattr(oi, "nncf_missing_reason",
                        lambda: "nncf is not installed (x); install it with `pip install 'compresslab[openvino]'`")
    with pytest.raises(SettingsError, match=r"int8 'nncf' requested but nncf is not installed"):
        _settings("deploy=openvino", "deploy.int8=nncf")
    assert _settings("deploy=openvino").deploy.int8 == "auto"  # auto goes on with ours (a note says why)
    with pytest.raises(SettingsError, match="int8='nncf' applies to how an int8 pipeline's OpenVINO IR is made"):
        _settings("deploy.int8=nncf")  # ORT never runs NNCF's IR: the setting would be ignored, so it is refused


@pytest.mark.parametrize("args,match", [
    (["deploy.precision=f32"], "precision='f32' applies to OpenVINO's inference precision"),
    (["deploy.calibration_examples=50"], "calibration_examples=50 applies to the OpenVINO int8 IR"),
    (["deploy.accuracy_control=true"], "accuracy_control=True applies to NNCF's int8 IR"),
    (["deploy=openvino", "deploy.int8=ours", "deploy.accuracy_control=true"], "accuracy_control=True applies"),
    (["deploy=openvino", "deploy.max_drop=0.02"], "max_drop=0.02 applies to NNCF's accuracy control"),
    (["deploy=openvino", "deploy.tolerance=0.01"], "tolerance=0.01 applies to runtime=auto's choice"),
    (["deploy.tolerance=0.01"], "tolerance=0.01 applies to runtime=auto's choice"),
])
def test_a_deploy_setting_this_runtime_never_reads_is_refused(args, match):
    pytest.importorskip("openvino")
    with pytest.raises(SettingsError, match=match):
        _settings(*args)


@pytest.mark.parametrize("args", [["deploy=openvino", "deploy.precision=f32"], ["deploy=auto", "deploy.tolerance=0.01"],
                                  ["deploy=openvino", "deploy.accuracy_control=true", "deploy.max_drop=0.02"],
                                  ["deploy=auto", "deploy.calibration_examples=50", "deploy.int8=ours"]])
def test_the_same_settings_where_they_are_read_are_accepted(args):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    assert _settings(*args).deploy.runtime != "ort"


def test_bf16_without_a_bf16_isa_is_refused_at_start(monkeypatch):
    pytest.importorskip("openvino")
    import compresslab.bench.openvino_runner as ovr

    monkeypatch.setattr(ovr, "cpu_flags", lambda: {"avx2", "avx512f"})
    with pytest.raises(SettingsError, match=r"'bf16' requested but this CPU has none of \['avx512_bf16', 'amx_bf16'\]"):
        _settings("deploy=openvino", "deploy.precision=bf16")
    monkeypatch.setattr(ovr, "cpu_flags", lambda: {"amx_bf16"})
    assert _settings("deploy=openvino", "deploy.precision=bf16").deploy.precision == "bf16"


def test_bad_deploy_fails_a_run_before_any_model_loads(tmp_path, data_root):
    import time

    from compresslab.pipeline import run

    t0 = time.perf_counter()
    with pytest.raises(SettingsError, match="deploy: runtime"):
        run(compose(["+pipeline=int8", "debug=smoke", f"data.root={data_root}", "deploy.runtime=nope",
                     f"paths.output_dir={tmp_path}/out", f"paths.cache_dir={tmp_path}/cache"]))
    assert time.perf_counter() - t0 < 20


def test_keep_fp32_with_nncf_is_refused_as_ignored():
    pytest.importorskip("openvino")
    with pytest.raises(SettingsError, match=r"keep_fp32 applies to .*int8='nncf' it would be ignored"):
        _settings("deploy=openvino", "deploy.int8=nncf", "deploy.keep_fp32=[ffn_out]")


def test_keep_fp32_matching_no_layer_fails_the_run_before_any_step(tmp_path, data_root):
    pytest.importorskip("openvino")
    from compresslab.pipeline import run

    with pytest.raises(ValueError, match=r"deploy.keep_fp32: target 'no_such_layer' matches no nn.Linear"):
        run(compose(["+pipeline=int8", "debug=smoke", f"data.root={data_root}", "deploy=openvino",
                     "deploy.keep_fp32=[no_such_layer]", f"paths.output_dir={tmp_path}/out",
                     f"paths.cache_dir={tmp_path}/cache"]))
    assert not list((tmp_path / "out").glob("int8/*"))  # refused before the run dir is written


def test_openvino_deploy_of_an_nbits_pipeline_is_refused_before_the_run_dir(tmp_path, data_root):
    """OpenVINO cannot read MatMulNBits: its IR would be the fp32 model, so the request is refused up front."""
    pytest.importorskip("openvino")
    from compresslab.pipeline import run

    from compresslab.pipeline.preflight import preflight

    cfg = compose(["+pipeline=hawq_w4", "debug=smoke", f"data.root={data_root}", "deploy=openvino",
                   f"paths.output_dir={tmp_path}/out", f"paths.cache_dir={tmp_path}/cache"])
    match = r"deploy.runtime=openvino: step nbits writes n-bit weights"
    with pytest.raises(SettingsError, match=match):
        preflight(cfg)  # with the config: the CLI's check, every multirun job and a search's candidates
    with pytest.raises(SettingsError, match=match):
        run(cfg)
    assert not list((tmp_path / "out").glob("hawq_w4/*"))
    preflight(compose(["+pipeline=hawq_w4", "debug=smoke", "deploy=auto", f"paths.output_dir={tmp_path}/out",
                       f"paths.cache_dir={tmp_path}/cache"]))  # auto keeps ORT for the n-bit file: allowed


@pytest.mark.parametrize("runtime", ["auto", "openvino"])
def test_an_nbits_file_stays_on_ort_with_the_reason(tmp_path, monkeypatch, runtime):
    """deploy=auto (and openvino, should the file be n-bit without a step saying so) never deploys the fp32 IR of
    an n-bit model: no IR is built, ORT is the target and the note says why."""
    from types import SimpleNamespace

    import compresslab.pipeline.deploy as dep

    f = tmp_path / "model.onnx"
    f.write_bytes(b"x" * 10)
    monkeypatch.setattr(dep, "_precision_of", lambda p: "nbits")
    monkeypatch.setattr(dep, "_nbits_of", lambda p: [2, 4, 8])
    monkeypatch.setattr(dep, "openvino_ir", lambda *a, **k: pytest.fail("an IR was built for an n-bit file"))
    state = SimpleNamespace(settings=SimpleNamespace(deploy=SimpleNamespace(runtime=runtime)),
                            onnx=SimpleNamespace(onnx_path=str(f)))
    manifest = SimpleNamespace(data={}, save=lambda: None)
    dep.deploy(state, tmp_path, manifest, threads=1)
    assert manifest.data["export"]["deployed"]["runtime"] == "ort"
    assert manifest.data["export"]["deployed"]["precision"] == "nbits"
    assert manifest.data["export"]["deployed"]["stored_bits"] == [2, 4, 8]  # the widths the file stores
    assert manifest.data["deploy"]["runtime"] == "ort"
    assert "n-bit weights (MatMulNBits), which OpenVINO cannot read" in manifest.data["deploy"]["notes"][0]


@pytest.mark.parametrize("pipeline,args,match", [
    ("ziplm_2x", ["deploy.keep_fp32=[ffn_out]"], "deploy.keep_fp32=.* no step of this pipeline makes int8"),
    ("ziplm_2x", ["deploy.int8=nncf"], "deploy.int8='nncf' would be ignored: no step of this pipeline makes int8"),
    ("ziplm_2x", ["deploy.calibration_examples=50"], "no step of this pipeline makes int8"),
    ("qdq_int8", ["deploy.smooth_alpha=0.5"], "deploy.smooth_alpha=.* writes a QDQ graph"),
    ("obert_qat_int8", ["deploy.keep_fp32=[ffn_out]"], r"int8_qat \(step int8_qat\) writes a QDQ graph, which OpenVINO "
                                                       "reads as it is: our int8 recipe"),
    # nothing calibrates: OpenVINO converts the QDQ graph as it is, and int8=ours runs no NNCF
    ("qdq_int8", ["deploy.int8=ours", "deploy.calibration_examples=50"],
     "deploy.calibration_examples=50 would be ignored"),
    # int8_qat's torch model is int8 itself: no fp32 model for NNCF (session 43 trial: deploy.int8=nncf trained
    # every step, then NNCF refused the QDQ graph and ORT was deployed, exit 0)
    ("ziplm_trim_qat_int8", ["deploy.int8=nncf"],
     "deploy.int8='nncf' would be ignored: int8_qat quantizes the torch model.*no fp32 model for NNCF's PTQ"),
    ("obert_qat_int8", ["deploy.accuracy_control=true"], "deploy.accuracy_control=True would be ignored: int8_qat"),
    ("obert_qat_int8", ["deploy.int8=ours"], None),  # ours converts the QAT's QDQ graph
    ("qdq_int8", ["deploy.int8=nncf"], None),  # NNCF's IR of the plain export: read for a QDQ pipeline too
    ("int8", ["deploy.smooth_alpha=0.5", "deploy.keep_fp32=[ffn_out]"], None),  # ORT dynamic int8: our recipe
])
def test_an_openvino_int8_setting_the_pipeline_never_reads_is_refused_in_preflight(pipeline, args, match, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from compresslab.pipeline.preflight import preflight

    cfg = compose([f"+pipeline={pipeline}", "debug=smoke", "deploy=openvino", f"paths.output_dir={tmp_path}", *args])
    if match is None:
        assert preflight(cfg)
        return
    with pytest.raises(SettingsError, match=match):
        preflight(cfg)
