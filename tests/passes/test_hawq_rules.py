"""hawq ``rules``: {pattern: width} pins in the bit map under every allocation mode, counted in the budget,
recorded in the metrics; bad rules fail at construction or before any work; old run identities stay."""

from __future__ import annotations

import pytest

from compresslab.models.tiny import tiny_model
from compresslab.ops.knapsack import InfeasibleBudgetError
from compresslab.passes.hawq import Hawq
from compresslab.models.quantized import quantized_modules
from compresslab.targets import select_modules

FAST = dict(hessian={"batches": 2, "batch_size": 8, "probes_per_batch": 4, "min_probes": 4, "eigen_batches": 1,
                     "eigen_iters": 5}, block_size=16)
ENC = "bert.encoder.layer"
FFN_OUT = [f"{ENC}.0.output.dense", f"{ENC}.1.output.dense"]


def _avg(model, bits):
    numel = {n: m.weight.numel() for n, m in select_modules(model).items()}
    return sum(numel[n] * b for n, b in bits.items()) / sum(numel.values())


@pytest.mark.parametrize("allocate", ["ilp", "random"])
def test_ffn_out_rule_shows_up_in_the_bit_map_and_counts_in_the_budget(tiny_ctx, allocate):
    model = tiny_model("bert", seed=0)
    res = Hawq(avg_bits=4.0, allocate=allocate, rules={"ffn_out": 8}, **FAST).apply(model, tiny_ctx())
    bits = res.metrics["bits"]
    assert [bits[n] for n in FFN_OUT] == [8, 8]
    assert res.metrics["allocation"]["pinned"] == {n: 8 for n in FFN_OUT}
    avg = _avg(tiny_model("bert", seed=0), bits)  # over all targets, the pins (3.5 bits alone) included
    assert avg <= 4.0 + 1e-9 and (allocate == "ilp" or avg >= 4.0 - 0.05 - 1e-9)
    assert res.metrics["avg_bits"] <= 4.0 + 1e-9
    others = [b for n, b in bits.items() if n not in FFN_OUT]
    assert min(others) == 2  # the rest paid for the pins
    q = quantized_modules(model)
    assert all(q[n].bits == 8 for n in FFN_OUT)


def test_rank_rule_keeps_pins(tiny_ctx):
    res = Hawq(avg_bits=3.0, allocate="rank", sensitivity="eigen", choices=[2, 4], rules={"ffn_out": 2},
               **FAST).apply(tiny_model(), tiny_ctx())
    assert [res.metrics["bits"][n] for n in FFN_OUT] == [2, 2]
    assert res.metrics["allocation"]["pinned"] == {n: 2 for n in FFN_OUT}
    for i in range(2):  # Q-BERT's one width per layer still holds for the layer's other Linears
        assert len({b for n, b in res.metrics["bits"].items() if f".layer.{i}." in n and n not in FFN_OUT}) == 1


def test_uniform_bits_keep_pinned_widths_and_fp32(tiny_ctx):
    model = tiny_model()
    res = Hawq(bits=4, block_size=16, rules={"ffn_out": 6, r"re:layer\.1\.attention\.self\.query": 32}).apply(
        model, tiny_ctx())
    bits = res.metrics["bits"]
    assert [bits[n] for n in FFN_OUT] == [6, 6] and bits[f"{ENC}.1.attention.self.query"] == 32
    assert sum(b == 4 for b in bits.values()) == len(bits) - 3
    assert f"{ENC}.1.attention.self.query" not in quantized_modules(model)  # kept fp32
    assert res.metrics["allocation"] == {"method": "uniform", "pinned": {
        FFN_OUT[0]: 6, f"{ENC}.1.attention.self.query": 32, FFN_OUT[1]: 6}}


def test_couple_qkv_spreads_a_pin_and_refuses_a_split_group(tiny_ctx):
    model = tiny_model()
    res = Hawq(bits=3, block_size=16, couple_qkv=True, rules={r"re:layer\.0\.attention\.self\.key": 8}).apply(
        model, tiny_ctx())
    assert [res.metrics["bits"][f"{ENC}.0.attention.self.{x}"] for x in ("query", "key", "value")] == [8, 8, 8]
    bad = Hawq(avg_bits=3.0, couple_qkv=True, rules={r"re:layer\.0\.attention\.self\.key": 8, "q": 4}, **FAST)
    with pytest.raises(ValueError, match=r"hawq: rules: coupled modules .*pinned to different widths"):
        bad.check_model(tiny_model())


def test_pins_alone_over_the_budget_fail_before_the_hessian(tiny_ctx, monkeypatch):
    import compresslab.quant.sensitivity as sens

    monkeypatch.setattr(sens, "linear_traces", lambda *a, **k: pytest.fail("Hessian ran before the budget check"))
    with pytest.raises(InfeasibleBudgetError, match=r"hawq: average bits 2\.5 is below the smallest achievable .*"
                                                    r"module\(s\) are pinned \(\{bert\.encoder"):
        Hawq(avg_bits=2.5, rules={"ffn_in": 32}, **FAST).apply(tiny_model(), tiny_ctx())


@pytest.mark.parametrize("kw,match", [
    ({"rules": {"ffn_out": 3}, "choices": [2, 4, 8]}, r"rules\['ffn_out'\] = 3: the pinned width must be one of "
                                                      r"choices=\[2, 4, 8\]"),
    ({"rules": {"ffn_out": 9}, "bits": 4}, r"rules\['ffn_out'\] = 9: .*an integer in \[1, 8\]"),
    # a width of the wrong type: the type check of every mapping field (its annotation, dict[str, int]) says so
    ({"rules": {"ffn_out": 8.0}}, r"^hawq\.rules must be a mapping of texts to integers \(written \{a: b\}\) or null, "
                                  r"got \{'ffn_out': 8\.0\}$"),
    ({"rules": {"ffn_out": True}}, r"^hawq\.rules must be a mapping of texts to integers .*got \{'ffn_out': True\}$"),
    ({"rules": ["ffn_out"]}, "rules must be a mapping"),
    ({"rules": {}}, "rules is an empty mapping"),
])
def test_bad_rules_fail_at_construction(kw, match):
    with pytest.raises(ValueError, match=match):
        Hawq(**kw)


@pytest.mark.parametrize("rules,match", [
    ({"ffn_outt": 8}, r"hawq: rules pattern 'ffn_outt' matches no nn.Linear"),
    ({"classifier": 8}, r"hawq: rules pattern 'classifier' matches only modules outside the selected ones"),
    ({"ffn_out": 8, r"re:layer\.0\.": 4}, r"hawq: rules: patterns 'ffn_out' \(8\) and .* both match "
                                         rf"{ENC}\.0\.output\.dense"),
])
def test_bad_patterns_fail_in_check_model(rules, match):
    with pytest.raises(ValueError, match=match):
        Hawq(avg_bits=3.0, rules=rules, **FAST).check_model(tiny_model())


def test_rules_from_yaml_and_the_run_identity():
    from omegaconf import OmegaConf

    from compresslab.config import compose
    from compresslab.pipeline.plan import config_hash, config_identity

    cfg = compose(["+pipeline=hawq_w4"])
    assert cfg.pipeline.passes.hawq.rules is None
    assert "rules" not in config_identity(cfg)["pipeline"]["passes"]["hawq"]  # old runs keep their hash
    pinned = compose(["+pipeline=hawq_w4", "++pipeline.passes.hawq.rules={ffn_out:8}"])
    assert config_hash(pinned) != config_hash(cfg)
    node = OmegaConf.to_container(pinned.pipeline.passes.hawq, resolve=True)
    assert Hawq(**{k: v for k, v in node.items() if k != "_target_"}).rules == {"ffn_out": 8}


def test_latency_budget_infeasible_through_pins_names_them():
    h = Hawq(avg_bits=None, latency_limit=0.6, **FAST)
    numel = {"a": 64, "b": 64}
    table = {n: {2: 1.0, 3: 1.0, 4: 1.0, 8: 1.0, 32: 2.0} for n in numel}  # fp32 total 4 s; limit 2.4 s
    h.check_feasible(numel, [], table, 2.4)
    with pytest.raises(InfeasibleBudgetError, match=r"latency_limit=0\.6 .* below the smallest achievable 0\.75 .*"
                                                    r"\(1 Linear\(s\) pinned by rules, counted at their widths: "
                                                    r"\{a: 32\}\)"):
        h.check_feasible(numel, [], table, 2.4, {"a": 32})
