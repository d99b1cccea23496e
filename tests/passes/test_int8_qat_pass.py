"""int8_qat: QAT with KD keeps an earlier pass's zeros exactly, freezes its observers on schedule,
resumes from a step checkpoint, and exports a plain QDQ graph (int8 zero-point-0 weights feeding
every quantized MatMul) at parity with the fake-quant model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from compresslab.models.qdq import qdq_modules
from compresslab.models.tiny import tiny_model
from compresslab.passes.int8_qat import Int8Qat
from compresslab.targets import select_modules

FAST = dict(num_calibration=16, recovery={"steps": 4, "lr": 1e-3})


def _pruned(fraction: float = 0.6):
    """A tiny model whose encoder Linears have their smallest |w| set to exactly 0 (as oBERT leaves them)."""
    model = tiny_model()
    with torch.no_grad():
        for m in select_modules(model).values():
            k = int(fraction * m.weight.numel())
            cut = m.weight.abs().reshape(-1).kthvalue(k).values
            m.weight[m.weight.abs() <= cut] = 0.0
    return model


def _inputs(tok):
    enc = tok(["the movie was good", "boring plot and bad actors !", "fine"], padding=True, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def test_qat_keeps_every_zero_and_leaves_weights_on_the_int8_grid(tiny_ctx):
    model = _pruned()
    zeros = {n: m.weight.detach() == 0 for n, m in select_modules(model).items()}
    teacher = copy.deepcopy(model).eval()
    res = Int8Qat(**FAST).apply(model, tiny_ctx(teacher=teacher))
    mods = qdq_modules(model)
    assert list(mods) == list(zeros) and all(m.frozen for m in mods.values())
    for n, m in mods.items():
        assert bool((m.weight[zeros[n]] == 0).all()), n  # the mask survives exactly
        assert torch.equal(m.dequantized(), m.weight.detach()) and int(m.codes().min()) >= -127  # on the grid
    met = res.metrics
    assert met["zeros_kept"] is True and met["qat"]["steps"] == 4
    assert met["sparsity"] == pytest.approx(met["sparsity_before"] + met["rounded_to_zero"] / met["num_targeted"])
    assert met["sparsity_before"] == pytest.approx(0.6, abs=0.01)
    changed = any(not torch.equal(m.weight, teacher.get_submodule(n).weight) for n, m in mods.items())
    assert changed  # QAT trained the weights


def test_sparsity_is_unchanged_when_no_surviving_weight_rounds_to_zero(tiny_ctx):
    model = _pruned()
    with torch.no_grad():  # survivors pushed away from 0: none can round to 0 on a 127-level grid
        for m in select_modules(model).values():
            w = m.weight
            w[w != 0] = torch.sign(w[w != 0]) * (0.05 + w[w != 0].abs())
    before = sum(int((m.weight == 0).sum()) for m in select_modules(model).values())
    res = Int8Qat(num_calibration=16, recovery={"steps": 0}).apply(model, tiny_ctx())
    after = sum(int((m.weight == 0).sum()) for m in qdq_modules(model).values())
    assert after == before and res.metrics["rounded_to_zero"] == 0
    assert res.metrics["sparsity"] == res.metrics["sparsity_before"]


def test_observers_follow_the_data_until_the_freeze_step(tiny_ctx, monkeypatch):
    from compresslab.passes import int8_qat

    seen = []
    orig = int8_qat.FreezeObservers.on_step_begin

    def spy(self, step, model):
        orig(self, step, model)
        seen.append(all(bool(m.input_quant.observer_enabled) for m in qdq_modules(model).values()))

    monkeypatch.setattr(int8_qat.FreezeObservers, "on_step_begin", spy)
    model = tiny_model()
    res = Int8Qat(num_calibration=16, freeze_observer_step=2, recovery={"steps": 4}).apply(model, tiny_ctx())
    assert seen == [True, True, False, False]
    assert res.metrics["qat"]["observers_frozen_at_step"] == 2
    assert Int8Qat(recovery={"steps": 10}).observer_freeze_step == 5  # default: half the QAT


def test_a_stopped_qat_resumes_from_its_step_checkpoint(tiny_ctx, monkeypatch):
    import compresslab.passes.int8_qat as iq
    from compresslab.pruning.masks import MaskKeeper

    monkeypatch.setattr(iq, "QAT_CHECKPOINT_EVERY", 2)
    ref = _pruned()
    ctx = tiny_ctx(teacher=copy.deepcopy(ref).eval())
    unbroken = copy.deepcopy(ref)
    Int8Qat(**FAST).apply(unbroken, ctx)

    orig = MaskKeeper.on_step_end

    def stop(self, step, model, optimizer):
        orig(self, step, model, optimizer)
        if step + 1 == 3:
            raise KeyboardInterrupt("stopped")

    monkeypatch.setattr(MaskKeeper, "on_step_end", stop)
    with pytest.raises(KeyboardInterrupt):
        Int8Qat(**FAST).apply(copy.deepcopy(ref), ctx)
    assert (ctx.step_dir / "qat_checkpoint").is_dir()
    monkeypatch.setattr(MaskKeeper, "on_step_end", orig)
    resumed = copy.deepcopy(ref)
    res = Int8Qat(**FAST).apply(resumed, ctx)
    assert res.metrics["qat"].get("resumed_at") == 2
    assert not (ctx.step_dir / "qat_checkpoint").exists()  # removed once the frozen model is returned
    for (n, a), b in zip(unbroken.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("per_channel", [False, True])
def test_export_is_a_plain_qdq_graph_at_parity(tiny_ctx, tiny_tok, tmp_path, per_channel):
    import onnx
    from onnx import numpy_helper

    from compresslab.export.onnx import export_model

    model = _pruned()
    Int8Qat(per_channel=per_channel, **FAST).apply(model, tiny_ctx(teacher=copy.deepcopy(model).eval()))
    batches = [_inputs(tiny_tok)]
    exp = export_model(model, tiny_tok, tmp_path / "export", batches)
    assert exp.onnx_path.name == "model.onnx" and exp.unfused_path is None and exp.fused_attention_nodes == 0
    assert not (tmp_path / "export" / "model_unfused.onnx").exists()
    n = len(qdq_modules(model))
    q = exp.qdq
    # every encoder Linear: both MatMul inputs from DequantizeLinear, the weight an int8 initializer, zero point 0
    assert q["folded"] == n and q["transposes_folded"] == n and q["int8_weights_zp0"] == n and q["qdq_matmuls"] == n
    assert q["per_tensor_weights"] == (0 if per_channel else n)
    assert q["ops"]["QuantizeLinear"] == n and q["ops"]["DequantizeLinear"] == 2 * n  # weights: DQ only
    assert q["int8_weight_sparsity"] >= 0.59
    graph = onnx.load(str(exp.onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: nd for nd in graph.node for o in nd.output}
    for mm in (nd for nd in graph.node if nd.op_type == "MatMul" and nd.input[1] in producer
               and producer[nd.input[1]].op_type == "DequantizeLinear"):
        dq = producer[mm.input[1]]
        assert inits[dq.input[0]].dtype == np.int8 and not np.any(inits[dq.input[2]])
        qa = producer[producer[mm.input[0]].input[0]]
        assert qa.op_type == "QuantizeLinear" and inits[qa.input[2]].dtype == np.uint8
        assert inits[qa.input[1]].shape == ()  # per-tensor activation scale (0-d)
    par = exp.parity
    assert par["max_abs_diff"] <= par["atol"] and par["argmax_agreement"] == 1.0
    assert "int8_kernels" in par and "rule" in par


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="averaging_constant"):
        Int8Qat(averaging_constant=0)
    with pytest.raises(ValueError, match="never observes"):
        Int8Qat(num_calibration=0, recovery={"steps": 0})
    with pytest.raises(ValueError, match="per_channel"):
        Int8Qat(per_channel="yes")


def test_refuses_already_quantized_linears(tiny_ctx):
    model = tiny_model()
    Int8Qat(num_calibration=8, recovery={"steps": 0}).apply(model, tiny_ctx())
    with pytest.raises(ValueError, match="already quantized"):
        Int8Qat().check_model(model)
