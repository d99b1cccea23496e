"""The deploy stage's OpenVINO IR parity has a verdict that fits what is compared (``pipeline.ir_parity``):

* compiled f32, the graph's fidelity, by the export's rules (plain at export.atol; an int8 QAT model's own QDQ
  graph by the few-examples rule at QDQ_ATOL); a failure is the record's error (ORT stays deployed);
* at the deployed precision when it is not f32 (OpenVINO's default is bf16 on AVX512_BF16/AMX CPUs), at a
  tolerance relative to the outputs' scale; a failure is a note and a warning, not hidden;
* a post-training int8 IR of a float model: no tolerance applies (quantization error), said so.

The runner is faked (torch's own outputs, perturbed per compiled precision) so every case runs on any CPU; one
test runs the real OpenVINO IR of a tiny model."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import compresslab.bench.openvino_runner as ovr
import compresslab.pipeline.ir_parity as irp
from compresslab.export.parity import QDQ_ATOL
from compresslab.models.tiny import tiny_model
from compresslab.pipeline.deploy import _add_ir

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _fake_runner(model: torch.nn.Module, compiled: str, error: dict[str, float]) -> type:
    """An OpenVinoRunner stand-in: compiles ``f32`` as f32 and anything else as ``compiled``; its outputs are
    torch's plus ``error[precision]`` times the outputs' scale (bf16 rounding, or a wrong graph)."""

    class Runner:
        def __init__(self, xml: Any, threads: Any, precision: str = "default", **kw: Any) -> None:
            self.compiled_precision = "f32" if precision == "f32" else compiled
            self.precision_note = None

        def feed(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {k: np.asarray(batch[k]) for k in INPUTS if k in batch}

        def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                out = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
            return out + error.get(self.compiled_precision, 0.0) * np.abs(out).max()

    return Runner


def _model(kind: str) -> torch.nn.Module:
    m = tiny_model("bert", initializer_range=0.3)
    if kind == "qdq":
        from compresslab.models.qdq import freeze_qdq, quantize_qdq
        from compresslab.targets import select_modules

        quantize_qdq(m, list(select_modules(m)), per_channel=False)
        freeze_qdq(m)
    return m


def _check(monkeypatch, tmp_path: Path, batches, *, kind: str = "plain", int8_ir: bool = False,
           precision: str = "default", compiled: str = "bf16", error: dict[str, float] | None = None) -> dict:
    model = _model(kind)
    monkeypatch.setattr(ovr, "OpenVinoRunner", _fake_runner(model, compiled, error or {}))
    monkeypatch.setattr(irp, "_parity_batches", lambda state: batches)
    xml = tmp_path / "export" / "openvino" / "openvino_model.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.write_text('<net><layer type="FakeQuantize"/></net>' if int8_ir else "<net/>")  # export.precision reads it
    state = SimpleNamespace(model=model, settings=SimpleNamespace(export=SimpleNamespace(atol=1e-4),
                                                                  deploy=SimpleNamespace(precision=precision)))
    rec: dict[str, Any] = {"source": "export/model_unfused.onnx", "int8": int8_ir, "notes": []}
    _add_ir(rec, state, xml, tmp_path, 1)
    return rec


def test_each_compiled_precision_is_judged_at_a_tolerance_that_fits_it(monkeypatch, tmp_path, batches):
    rec = _check(monkeypatch, tmp_path, batches, error={"bf16": 0.01})  # bf16: about 1% of the outputs' scale
    f32, bf16 = rec["parity"], rec["parity_deployed"]
    assert f32["precision"] == "f32" and f32["passed"] is True and f32["atol"] == 1e-4 and "rule" not in f32
    assert bf16["precision"] == "bf16" and bf16["passed"] is True and bf16["max_abs_diff"] > 1e-4
    assert bf16["atol"] == pytest.approx(irp.REDUCED_RTOL * bf16["max_abs_ref"])
    assert "compiled bf16" in bf16["tolerance_rule"]
    assert "error" not in rec and rec["notes"] == [] and rec["compiled_precision"] == {"f32": "f32",
                                                                                       "default": "bf16"}


def test_a_failed_verdict_is_an_error_at_f32_and_a_loud_note_at_the_deployed_precision(monkeypatch, tmp_path,
                                                                                       batches, caplog):
    with caplog.at_level(logging.WARNING, logger="compresslab"):
        rec = _check(monkeypatch, tmp_path / "bf16", batches, error={"bf16": 0.3})
    assert rec["parity"]["passed"] is True and rec["parity_deployed"]["passed"] is False and "error" not in rec
    assert rec["notes"] and "IR parity FAILED at deploy.precision=default (compiled bf16)" in rec["notes"][0]
    assert "IR parity FAILED" in caplog.text
    rec = _check(monkeypatch, tmp_path / "f32", batches, precision="f32", error={"f32": 0.01})
    assert rec["parity"]["passed"] is False and "parity_deployed" not in rec
    assert rec["error"].startswith("IR parity vs torch (compiled f32): max |diff|")


def test_an_int8_qat_ir_is_judged_by_the_qdq_rule_and_a_ptq_ir_is_not_judged(monkeypatch, tmp_path, batches):
    qat = _check(monkeypatch, tmp_path / "qat", batches, kind="qdq", int8_ir=True, error={"f32": 0.01})
    assert qat["parity"]["atol"] == QDQ_ATOL and qat["parity"]["passed"] is True
    assert "int8 QDQ model" in qat["parity"]["rule"] and "error" not in qat
    ptq = _check(monkeypatch, tmp_path / "ptq", batches, int8_ir=True, error={"f32": 0.5, "bf16": 0.5})
    for par in (ptq["parity"], ptq["parity_deployed"]):
        assert par["passed"] is None and par["rule"] == irp.PTQ_RULE
    assert "error" not in ptq and ptq["notes"] == []


def test_no_second_check_where_the_deployed_precision_compiles_as_f32(monkeypatch, tmp_path, batches):
    asked_f32 = _check(monkeypatch, tmp_path / "a", batches, precision="f32")
    no_bf16_cpu = _check(monkeypatch, tmp_path / "b", batches, compiled="f32")  # default compiles f32 there
    for rec in (asked_f32, no_bf16_cpu):
        assert rec["parity"]["passed"] is True and "parity_deployed" not in rec


def test_the_real_ir_of_a_tiny_model_passes_at_every_precision_it_compiles_to(exported_bert, bert_model, batches,
                                                                              monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    from compresslab.pipeline.deploy import convert_to_ir, ir_source

    src, _ = ir_source(Path(exported_bert.onnx_path), Path(exported_bert.onnx_path))
    xml = convert_to_ir(src, tmp_path / "export" / "openvino")
    monkeypatch.setattr(irp, "_parity_batches", lambda state: batches)
    state = SimpleNamespace(model=bert_model, settings=SimpleNamespace(export=SimpleNamespace(atol=1e-4),
                                                                       deploy=SimpleNamespace(precision="default")))
    rec = irp.check_ir(state, xml, 1)
    assert rec["parity"]["passed"] is True and rec["parity"]["precision"] == "f32"
    assert rec["parity"]["n_examples"] == sum(len(b["input_ids"]) for b in batches)
    if rec["compiled_precision"]["default"] != "f32":  # a bf16 CPU (AVX512_BF16 / AMX)
        assert rec["parity_deployed"]["passed"] is True
