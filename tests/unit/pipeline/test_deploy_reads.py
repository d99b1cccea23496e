"""Every ``deploy.*`` setting a run would not read is refused before any work, for every shipped pipeline (and the
combinations of a torch quantizer with an ORT int8 pass a user writes), and a search passes a deploy setting to the
candidates that read it by the same rule (``pipeline/deploy_reads.py``).

Which settings a run reads is not taken from that rule: the deploy stage itself (``pipeline.deploy.deploy``) is run
on each pipeline's kind of file, its OpenVINO conversions, NNCF, calibration and timings stood in for, with the
deploy settings behind a proxy that records each one it reads. The file each pass leaves is said once below
(``LEAVES``). The cases this found: ``deploy.calibration_examples`` was accepted for hawq followed by ORT's static
int8 (our recipe does not run on a QDQ graph, NNCF has no fp32 model after hawq: nothing calibrates) and for any QDQ
pipeline with ``deploy.int8=ours``; ``deploy.precision`` / ``tolerance`` for an n-bit pipeline under
``deploy.runtime=auto`` (ORT stays, no IR is made); and the search kept a list of its own that passed NNCF's
settings to int8 QAT candidates, which preflight then refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from compresslab.config import available_pipelines, compose
from compresslab.pipeline import SettingsError
from compresslab.pipeline.deploy_reads import READERS, DeployedFile, unread_deploy_settings
from compresslab.pipeline.plan import build_steps
from compresslab.pipeline.settings import DeploySettings, default_deploy

pytest.importorskip("openvino")  # DeploySettings refuses runtime=openvino|auto without it, int8=nncf without nncf
pytest.importorskip("nncf")

# what each pass leaves the deploy stage: its ONNX file ("nbits": MatMulNBits; "dynamic": ORT's MatMulInteger int8,
# which OpenVINO cannot read; "qdq": a QDQ int8 graph, which it can) and whether its torch model is quantized itself
LEAVES = {"ort_int8_dynamic": ("dynamic", False), "ort_int8_static": ("qdq", False), "int8_qat": ("qdq", True),
          "ort_matmul_nbits": ("nbits", False), "hawq": (None, True), "bibert": (None, True)}
# a torch quantizer before an ORT int8 pass: no shipped pipeline, as a user writes them
COMBINATIONS = {
    "hawq+ort_int8_static": ["+pipeline=qdq_int8", "pipeline.steps=[finetune,hawq,int8]",
                             "+pass@pipeline.passes.hawq=hawq", "pipeline.passes.hawq.bits=4"],
    "hawq+ort_int8_dynamic": ["+pipeline=int8", "pipeline.steps=[finetune,hawq,int8]",
                              "+pass@pipeline.passes.hawq=hawq", "pipeline.passes.hawq.bits=4"],
    "bibert+ort_int8_dynamic": ["+pipeline=int8", "pipeline.steps=[finetune,bibert,int8]",
                                "+pass@pipeline.passes.bibert=bibert"],
}
PIPELINES = {**{p: [f"+pipeline={p}"] for p in available_pipelines()}, **COMBINATIONS}
# a value other than the default for each setting a variant below does not already set
CHANGED = {"precision": "f32", "tolerance": 0.01, "calibration_examples": 50, "max_drop": 0.02,
           "keep_fp32": ("ffn_out",), "smooth_alpha": (0.5,)}


def _variants() -> list[DeploySettings]:
    """Every deploy setting changed in turn, on every runtime that makes an IR and every int8 method / accuracy
    control; the combinations DeploySettings refuses itself are left out (they never reach preflight)."""
    out = []
    for runtime, int8, control, key in itertools.product(("openvino", "auto"), ("auto", "ours", "nncf"), (False, True),
                                                         (None, *CHANGED)):
        over: dict[str, Any] = {"runtime": runtime, "int8": int8, "accuracy_control": control}
        if key is not None:
            over[key] = CHANGED[key]
        with contextlib.suppress(ValueError):
            out.append(default_deploy(over))
    return out


class _Reads:
    """The deploy settings, recording the name of each one read."""

    def __init__(self, d: DeploySettings) -> None:
        self._d, self.read = d, set()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self._d, name)


@pytest.fixture
def deploy_stage(monkeypatch, tmp_path):
    """``run(d, file, quantized)``: the settings of ``d`` the deploy stage reads on a run whose steps leave ``file``
    (None: fp32) and a torch model quantized or not; everything but the stage's own decisions stood in for."""
    import compresslab.bench as bench
    import compresslab.bench.machine_load as machine_load
    import compresslab.bench.openvino_runner as ovr
    import compresslab.eval.evaluate as evaluate
    import compresslab.eval.onnx_runner as onnx_runner
    import compresslab.export.openvino_int8 as oi
    import compresslab.pipeline.deploy as dep
    import compresslab.pipeline.ir_parity as ir_parity

    def ir(out: Path, *_: Any, **__: Any) -> Path:
        xml = Path(out) / "openvino_model.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text("")
        xml.with_suffix(".bin").write_text("")
        return xml

    class Validation:
        examples, key = [0], "agreement"

        def agreement(self, paths: Any, threads: int) -> dict:
            return {k: {"agreement": 1.0} for k in paths}

        def score(self, forwards: Any) -> dict:
            return {k: {"agreement": 1.0} for k in forwards}

        labelled_feeds = ir_scorer = lambda self, *a: None

    runner = SimpleNamespace(compiled_precision="f32", precision_note=None)
    monkeypatch.setattr(dep, "ValidationAgreement", SimpleNamespace(of_run=lambda state: Validation()))
    monkeypatch.setattr(dep, "convert_to_ir", lambda src, out: ir(out))
    monkeypatch.setattr(dep, "fp32_matmuls", lambda *a: [])
    monkeypatch.setattr(dep, "_outlier_split", lambda p: False)
    monkeypatch.setattr(ir_parity, "_parity_batches", lambda state: [])
    monkeypatch.setattr(ir_parity, "ir_parity", lambda *a: {"passed": True})
    monkeypatch.setattr(ovr, "OpenVinoRunner", lambda *a, **k: runner)
    monkeypatch.setattr(ovr, "plain_export", lambda p: p)
    monkeypatch.setattr(oi, "nncf_missing_reason", lambda: None)
    ran: list[str] = []
    monkeypatch.setattr(oi, "nncf_int8_ir", lambda plain, out, *a, **k: ran.append("nncf") or (ir(out), {}))
    monkeypatch.setattr(oi, "ours_int8_ir_chosen", lambda plain, out, *a, **k: (ir(out), {}))
    monkeypatch.setattr(bench, "OrtRunner", lambda *a, **k: runner)
    monkeypatch.setattr(bench, "measure_latency", lambda runners, shapes, **k: {"results": {
        r: {f"b{b}xs{s}": {"p50_ms": 1.0} for b, s in shapes} for r in runners}})
    monkeypatch.setattr(machine_load, "timing_window", lambda name: contextlib.nullcontext(
        SimpleNamespace(record=lambda: {"busy": False})))
    monkeypatch.setattr(evaluate, "onnx_forward", lambda r: None)
    monkeypatch.setattr(onnx_runner, "OnnxRunner", lambda *a, **k: None)
    onnx = tmp_path / "export" / "model.onnx"
    onnx.parent.mkdir()
    onnx.write_text("")

    def run(d: DeploySettings, file: str | None, quantized: bool) -> set[str]:
        """The settings read; ``int8=nncf`` counts as read only where NNCF's PTQ then runs (elsewhere the stage
        falls back to ours with a note: the setting asked for what the run does not do)."""
        monkeypatch.setattr(dep, "_precision_of", lambda p: {"nbits": "nbits", None: "fp32"}.get(file, "int8"))
        monkeypatch.setattr(dep, "_nbits_of", lambda p: [4])
        monkeypatch.setattr(dep, "is_int8", lambda p: file in ("dynamic", "qdq"))
        monkeypatch.setattr(ovr, "unreadable_ops",
                            lambda p: ["com.microsoft.MatMulInteger"] if file == "dynamic" else [])
        monkeypatch.setattr(dep, "quantized_already", lambda *a: "quantized already" if quantized else None)
        reads = _Reads(d)
        context = SimpleNamespace(calibration_batches=lambda n, batch_size=None, setting=None: iter(()))
        settings = SimpleNamespace(deploy=reads, max_length=32,
                                   bench=SimpleNamespace(warmup=0, runs=1, min_time_s=0.0, seed=0, max_runs=1))
        state = SimpleNamespace(settings=settings, onnx=SimpleNamespace(onnx_path=onnx),
                                model=SimpleNamespace(config=SimpleNamespace(vocab_size=100)),
                                context=lambda *a: context)
        manifest = SimpleNamespace(data={"export": {"fp32": {"path": "export/model.onnx"}}}, save=lambda: None)
        _clear_irs(tmp_path / "export", keep=onnx)
        ran.clear()
        dep.deploy(state, tmp_path, manifest, threads=1)  # type: ignore[arg-type]
        return reads.read - ({"int8"} if d.int8 == "nncf" and "nncf" not in ran else set())

    return run


def _clear_irs(folder: Path, keep: Path) -> None:
    """Remove the IRs an earlier call wrote (the stage converts once per run), keeping ``keep``."""
    import shutil

    for p in folder.iterdir():
        if p != keep:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _leaves(steps: list[Any]) -> tuple[str | None, bool]:
    """The file the run's steps leave (the last pass that writes one) and whether its torch model is quantized."""
    file, quantized = None, False
    for s in steps:
        leaves, quantizes = LEAVES.get(s.pass_.name, (None, False))
        file, quantized = leaves or file, quantized or quantizes
    return file, quantized


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@pytest.mark.case(name="a deploy.* setting the run never reads (deploy.calibration_examples for hawq + ORT static "
                       "int8), every shipped pipeline and every deploy setting", kind=1,
                  expected="preflight refuses it naming the setting and why; the settings the run reads are accepted")
def test_a_deploy_setting_the_run_never_reads_is_refused(pipeline, deploy_stage) -> None:
    from compresslab.pipeline.preflight import check_unread_deploy_settings

    steps = build_steps(compose(PIPELINES[pipeline]))
    file, quantized = _leaves(steps)
    defaults, wrong = default_deploy(), []
    for d in _variants():
        if file == "nbits" and d.runtime == "openvino":
            continue  # refused whole by check_nbits_deploy: MatMulNBits has no OpenVINO form
        read = deploy_stage(d, file, quantized)
        changed = {k for k in READERS if getattr(d, k) != getattr(defaults, k)}
        try:
            check_unread_deploy_settings(SimpleNamespace(deploy=d), steps)  # type: ignore[arg-type]
            refused = None
        except SettingsError as e:
            refused = str(e).split("=", 1)[0].removeprefix("deploy.")
        unread = changed - read
        if (refused is None) != (not unread) or (refused is not None and refused not in unread):
            wrong.append(f"{_shown(d)}: the stage reads {sorted(read & changed)}, preflight refused {refused}")
    assert not wrong, "\n".join(wrong)


def _shown(d: DeploySettings) -> str:
    defaults = default_deploy()
    return ", ".join(f"{f.name}={getattr(d, f.name)!r}" for f in dataclasses.fields(d)
                     if f.name == "runtime" or getattr(d, f.name) != getattr(defaults, f.name))


@pytest.mark.parametrize("pipeline", available_pipelines())
def test_the_search_and_preflight_read_deploy_settings_by_one_rule(pipeline) -> None:
    """For every shipped pipeline and deploy setting: the search's ``unread_deploy_keys``, read from the pipeline's
    YAML, is what preflight refuses on its built steps (the search used to keep a list of its own)."""
    from compresslab.search.plan import unread_deploy_keys

    steps = build_steps(compose([f"+pipeline={pipeline}"]))
    for d in _variants():
        preflight = unread_deploy_settings(DeployedFile.of((s.name, s.pass_) for s in steps), d)
        assert unread_deploy_keys(pipeline, d) == {f"deploy.{k}": why for k, why in preflight.items()}, (pipeline, d)


def test_the_trial_case_names_why() -> None:
    """hawq + ORT static int8 with deploy.calibration_examples: our recipe does not run on a QDQ graph, and NNCF has
    no fp32 model after hawq."""
    from compresslab.pipeline.preflight import check_unread_deploy_settings

    steps = build_steps(compose(COMBINATIONS["hawq+ort_int8_static"]))
    d = default_deploy({"runtime": "openvino", "calibration_examples": 50})
    said = (r"^deploy\.calibration_examples=50 would be ignored: ort_int8_static \(step int8\) writes a QDQ graph.*; "
            r"and hawq quantizes the torch model itself \(step hawq\): there is no fp32 model for NNCF's PTQ .*; leave "
            r"it out$")
    with pytest.raises(SettingsError, match=said):
        check_unread_deploy_settings(SimpleNamespace(deploy=d), steps)  # type: ignore[arg-type]
