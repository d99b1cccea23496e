"""BiBERT's theoretical FLOPs accounting against hand counts on the tiny models (hidden 32, 4 heads
of 8, FFN 64, 2 layers, 2 labels)."""

from __future__ import annotations

import pytest

from compresslab.bench.flops import max_seq_len, theoretical_flops
from compresslab.models.adapters import get_adapter
from compresslab.models.binary import binarize_model, freeze_binary
from compresslab.models.structure import shrink_heads
from compresslab.models.tiny import tiny_model

LINEARS_PER_TOKEN = 3 * 32 * 32 + 32 * 32 + 32 * 64 + 64 * 32  # q k v o ffn_in ffn_out: 8192 MACs


def _attn(t: int, heads: int = 4) -> int:
    return heads * t * t * 8  # Q·Kᵀ (or A·V) of one layer, per sequence


def _binary(arch: str, attention: str = "bool"):
    m = tiny_model(arch)
    binarize_model(m, attention=attention)
    freeze_binary(m)
    return m


def _check(f, binary: int, fp: int, batch: int = 1) -> None:
    assert f["theoretical"] is True and "BOPs/64" in f["convention"]
    assert f["macs"] == {"binary": binary * batch, "fp": fp * batch, "total": (binary + fp) * batch}
    assert f["bops"] == 2 * binary * batch and f["flops_fp32"] == 2 * (binary + fp) * batch
    assert f["flops"] == pytest.approx(2 * fp * batch + 2 * binary * batch / 64)
    assert f["flops_ratio"] == pytest.approx((binary + fp) / (fp + binary / 64))


@pytest.mark.parametrize("t", [5, 16])
def test_bert_bi_attention_hand_count(t):
    f = theoretical_flops(_binary("bert"), t)
    # binary: 2 layers x (Linears on t tokens + Q·Kᵀ + A·V) + the pooler on [CLS]; fp: the classifier
    _check(f, binary=2 * (LINEARS_PER_TOKEN * t + 2 * _attn(t)) + 32 * 32, fp=32 * 2)
    assert f["per_module"]["bert.encoder.layer.0.attention.qk"] == {"macs": _attn(t), "binary": True}
    assert f["per_module"]["bert.pooler.dense"] == {"macs": 32 * 32, "binary": True}
    assert f["per_module"]["classifier"] == {"macs": 64, "binary": False}


def test_softmax_ablation_counts_a_v_as_full_precision():
    t = 16
    f = theoretical_flops(_binary("bert", attention="softmax"), t)
    _check(f, binary=2 * (LINEARS_PER_TOKEN * t + _attn(t)) + 32 * 32, fp=32 * 2 + 2 * _attn(t))
    assert f["per_module"]["bert.encoder.layer.1.attention.av"]["binary"] is False


def test_dense_model_ratio_is_one_and_batch_scales_counts():
    t = 16
    f = theoretical_flops(tiny_model("bert"), t, batch_size=3)
    _check(f, binary=0, fp=2 * (LINEARS_PER_TOKEN * t + 2 * _attn(t)) + 32 * 32 + 64, batch=3)
    assert f["flops_ratio"] == 1.0


def test_distilbert_and_roberta_heads_stay_full_precision():
    t = 16
    encoder = 2 * (LINEARS_PER_TOKEN * t + 2 * _attn(t))
    _check(theoretical_flops(_binary("distilbert"), t), binary=encoder, fp=32 * 32 + 64)  # pre_classifier
    _check(theoretical_flops(_binary("roberta"), t), binary=encoder, fp=32 * 32 + 64)  # no pooler; head dense


def test_pruned_heads_count_what_they_keep():
    t = 8
    m = tiny_model("bert")
    shrink_heads(get_adapter(m).layer(1), [0])  # layer 1 keeps one head: q/k/v 32->8, o 8->32
    binarize_model(m)
    freeze_binary(m)
    layer1 = (3 * 32 * 8 + 8 * 32 + 32 * 64 + 64 * 32) * t + 2 * _attn(t, heads=1)
    _check(theoretical_flops(m, t), binary=LINEARS_PER_TOKEN * t + 2 * _attn(t) + layer1 + 32 * 32, fp=64)


def test_bad_lengths_are_refused():
    m = tiny_model("roberta")
    assert max_seq_len(m) == 72 - 2  # positions start after RoBERTa's padding id (1)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="seq_len must be an integer >= 1"):
            theoretical_flops(m, bad)
    with pytest.raises(ValueError, match="exceeds"):
        theoretical_flops(m, 71)
    assert theoretical_flops(m, 70)["seq_len"] == 70
