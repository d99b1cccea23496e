"""hawq refuses, before any step, a model its Hessian-vector products cannot go through (an attention implementation
without a double backward): the refusal used to come from inside the hawq step, after fine-tuning, and said eager
attention was in effect when a custom kernel was kept."""

from __future__ import annotations

import pytest
import torch

from compresslab.models.tiny import tiny_model
from compresslab.passes.hawq import Hawq
from compresslab.quant.sensitivity import DoubleBackwardError, check_double_backward

QUERY = "bert.encoder.layer.0.attention.self.query"


@pytest.fixture
def custom_sdpa():
    """A custom attention registered with transformers that calls torch's fused SDPA: kept as it is (it is not one of
    transformers' kernels) and, on CPU, without a double backward."""
    from transformers import AttentionInterface

    def attend(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=None, scale=scaling)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register("test_custom_sdpa", attend)
    yield "test_custom_sdpa"
    AttentionInterface._global_mapping.pop("test_custom_sdpa", None)


def _model(attn: str):
    m = tiny_model("bert", seed=0)
    m.config._attn_implementation = attn
    return m


@pytest.mark.parametrize("attn", ["eager", "sdpa"])  # sdpa is transformers' own: switched to eager for the probe
def test_the_probe_passes_where_hvps_work_and_leaves_the_model_as_it_was(attn):
    m = _model(attn)
    m.train()
    flags = [p.requires_grad for p in m.parameters()]
    check_double_backward(m, [QUERY])
    with torch.no_grad():  # a caller's no_grad does not read as "no double backward"
        check_double_backward(m, [QUERY])
    assert m.training and m.config._attn_implementation == attn
    assert [p.requires_grad for p in m.parameters()] == flags and all(p.grad is None for p in m.parameters())


def test_a_custom_attention_without_double_backward_is_named(custom_sdpa):
    with pytest.raises(DoubleBackwardError, match=r"attention implementation test_custom_sdpa has none here.*"
                                                  r"attn_implementation='eager'"):
        check_double_backward(_model(custom_sdpa), [QUERY])


def test_hawq_refuses_it_in_check_model_and_only_when_it_takes_hvps(custom_sdpa):
    m = _model(custom_sdpa)
    with pytest.raises(DoubleBackwardError):
        Hawq(avg_bits=4.0, block_size=16).check_model(m)  # Hutchinson traces: double backprop
    Hawq(bits=4, block_size=16).check_model(m)  # uniform bits: no Hessian
    Hawq(avg_bits=4.0, block_size=16, hessian={"estimator": "exact", "loss": "teacher_kl"}).check_model(m)  # exact Fisher traces: first derivatives only
    assert isinstance(DoubleBackwardError("x"), ValueError)  # a bad input for the CLI, not a crash
