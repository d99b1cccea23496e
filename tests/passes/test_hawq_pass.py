"""hawq: uniform and Hessian-allocated widths, QAT, determinism, the cache, and bad input before work."""

from __future__ import annotations

import copy

import pytest
import torch

from compresslab.models.tiny import tiny_model
from compresslab.passes.hawq import Hawq
from compresslab.models.quantized import FakeQuantLinear, quantized_modules
from compresslab.targets import select_modules

FAST = dict(hessian={"batches": 2, "batch_size": 8, "probes_per_batch": 4, "min_probes": 4, "eigen_batches": 1,
                     "eigen_iters": 5}, block_size=16)


def _logits(model, n=4):
    g = torch.Generator().manual_seed(1)
    x = {"input_ids": torch.randint(5, 60, (n, 10), generator=g), "attention_mask": torch.ones(n, 10, dtype=torch.long)}
    with torch.no_grad():
        return model(**x).logits


def test_uniform_bits_quantize_every_target_and_freeze(tiny_ctx):
    model = tiny_model()
    names = list(select_modules(model))
    res = Hawq(bits=4, block_size=16).apply(model, tiny_ctx())
    q = quantized_modules(model)
    assert list(q) == names and all(m.bits == 4 and m.frozen for m in q.values())
    assert res.metrics["avg_bits"] == 4
    assert res.structure["quant"][names[0]] == {"bits": 4, "block_size": 16, "group_rows": 1}
    for m in q.values():  # the weight is on the grid: its codes reproduce it exactly
        p = m.params()
        assert torch.equal(((m.codes().float() - p.expand(p.zero_point).float()) * p.expand(p.scale)), m.weight)


@pytest.mark.parametrize("allocate,sensitivity,loss", [("ilp", "trace", "task"), ("rank", "eigen", "task"),
                                                       ("random", "trace", "task"), ("ilp", "trace", "teacher_kl"),
                                                       ("rank", "eigen", "teacher_kl"), ("ilp", "trace", "exact")])
def test_mixed_precision_meets_the_budget_and_is_deterministic(tiny_ctx, allocate, sensitivity, loss):
    maps = []
    for _ in range(2):
        model = tiny_model()
        extra = {"choices": [2, 4]} if allocate == "rank" else {}
        how = {"loss": "teacher_kl", "estimator": "exact"} if loss == "exact" else {"loss": loss}
        fast = {**FAST, "hessian": {**FAST["hessian"], **how}}
        res = Hawq(avg_bits=3.0, allocate=allocate, sensitivity=sensitivity, **fast, **extra).apply(model, tiny_ctx())
        assert res.metrics["avg_bits"] <= 3.0 + 1e-9
        if allocate != "random":
            assert res.metrics["sensitivity"]["loss"] == how["loss"]
            if loss == "exact":
                assert res.metrics["sensitivity"]["estimator"] == "exact"
                assert all(t["trace"] > 0 for t in res.metrics["sensitivity"]["traces"].values())  # PSD, exact
        maps.append(res.metrics["bits"])
    assert maps[0] == maps[1]
    assert len(set(maps[0].values())) > 1  # a mixed map at 3 average bits over {2, 3, 4, 8, 32}


def test_qat_changes_weights_and_keeps_them_on_the_grid(tiny_ctx):
    model = tiny_model()
    ref = copy.deepcopy(model)
    res = Hawq(bits=3, block_size=16, recovery={"steps": 3, "lr": 1e-3}).apply(model, tiny_ctx(teacher=ref))
    assert res.metrics["qat"]["steps"] == 3
    ptq = tiny_model()
    Hawq(bits=3, block_size=16).apply(ptq, tiny_ctx())
    assert not torch.equal(_logits(model), _logits(ptq))
    assert all(isinstance(m, FakeQuantLinear) and m.frozen for m in quantized_modules(model).values())


def test_sensitivity_is_cached_by_content(tiny_ctx):
    ctx = tiny_ctx()
    r1 = Hawq(avg_bits=3.0, **FAST).apply(tiny_model(), ctx)
    r2 = Hawq(avg_bits=3.0, **FAST).apply(tiny_model(), ctx)
    assert "cached" not in r1.metrics["sensitivity"] and "cached" in r2.metrics["sensitivity"]
    assert r1.metrics["bits"] == r2.metrics["bits"]
    r3 = Hawq(avg_bits=3.0, **FAST).apply(tiny_model(seed=1), ctx)  # other weights: no stale cache
    assert "cached" not in r3.metrics["sensitivity"]


@pytest.mark.parametrize("kw,match", [
    ({"bits": 9}, "bits"),
    ({"bits": 0}, "bits"),
    ({"avg_bits": 1.5}, "smallest achievable average 2"),
    ({"avg_bits": -1}, "avg_bits"),
    ({"choices": [2, 12]}, "choices"),
    ({"sensitivity": "hessian"}, "sensitivity"),
    ({"group": "rows"}, "group"),
    ({"allocate": "rank"}, "two-width"),
    ({"hessian": {"batchez": 2}}, "batchez"),
    ({"hessian": {"loss": "kl"}}, "hessian.loss='kl' is not valid; allowed: 'task', 'teacher_kl'"),
    ({"hessian": {"estimator": "exact"}}, "set hessian.loss=teacher_kl"),
    ({"sensitivity": "eigen", "hessian": {"loss": "teacher_kl", "estimator": "exact"}}, "set sensitivity=trace"),
])
def test_bad_settings_fail_at_construction(kw, match):
    with pytest.raises(ValueError, match=match):
        Hawq(**kw)


def test_block_size_that_does_not_divide_fails_before_the_hessian(tiny_ctx, monkeypatch):
    import compresslab.quant.sensitivity as sens

    monkeypatch.setattr(sens, "linear_traces", lambda *a, **k: pytest.fail("Hessian ran before the shape check"))
    with pytest.raises(ValueError, match="block_size=24 does not divide"):
        Hawq(avg_bits=3.0, block_size=24).apply(tiny_model(), tiny_ctx())


@pytest.mark.parametrize("group,rows", [("row", 1), ("layer", None), ("head", None)])
def test_groups(tiny_ctx, group, rows):
    model = tiny_model()
    Hawq(bits=4, group=group).apply(model, tiny_ctx())
    m = next(iter(quantized_modules(model).values()))
    assert m.block_size == m.in_features
    expect = {"row": 1, "layer": m.out_features, "head": m.out_features // model.config.num_attention_heads}[group]
    assert m.group_rows == expect


def test_embedding_bits_quantize_word_embeddings_outside_the_budget(tiny_ctx, tmp_path):
    import compresslab
    from compresslab.models.quantized import FakeQuantEmbedding

    model = tiny_model()
    res = Hawq(bits=4, block_size=16, embedding_bits=8).apply(model, tiny_ctx())
    emb = model.get_input_embeddings()
    assert isinstance(emb, FakeQuantEmbedding) and emb.bits == 8 and emb.frozen
    assert res.metrics["avg_bits"] == 4  # the budget counts the encoder Linears only
    ref = _logits(model)
    compresslab.save(model, tmp_path / "ck")
    torch.testing.assert_close(_logits(compresslab.load(tmp_path / "ck", attn_implementation="eager")), ref,
                               rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Hessian trace not converged", "ignore:power iteration did not converge")
@pytest.mark.parametrize("sensitivity,setting", [("trace", "batches"), ("eigen", "eigen_batches")])
def test_hessian_batches_beyond_the_train_split_are_capped_and_recorded(tiny_ctx, caplog, sensitivity, setting):
    """More Hessian batches than the train split holds: every batch it has, warned and recorded (not a second
    epoch); a batch larger than the split is refused with the largest batch_size that works."""
    ctx = tiny_ctx()  # 96 train examples = 3 batches of 32
    hessian = {**FAST["hessian"], "batch_size": 32, setting: 50}
    with caplog.at_level("WARNING", logger="compresslab.passes.hawq"):
        res = Hawq(avg_bits=3.0, sensitivity=sensitivity, **{**FAST, "hessian": hessian}).apply(tiny_model(), ctx)
    rec = res.metrics["sensitivity"]
    assert rec["batches"] == 3 and rec["batches_capped_from"] == 50
    assert f"hessian.{setting}=50 but the train split has 96 examples (3 batches of hessian.batch_size=32)" in caplog.text
    with pytest.raises(ValueError, match=r"hessian.batch_size=128 exceeds the train split \(96 examples\); "
                                         r"set hessian.batch_size<=96"):
        Hawq(avg_bits=3.0, **{**FAST, "hessian": {**FAST["hessian"], "batch_size": 128}}).check(ctx.task)
