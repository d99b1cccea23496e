"""Guided int8 (quant/guided_int8.py): node listing, exclusion, divergence, the exact fp32 selection
(against brute force), the driver under a synthetic latency table, and the pass option."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from compresslab.export.ort_quant import quantize_dynamic_int8
from compresslab.passes.ort_int8_dynamic import OrtInt8Dynamic
from compresslab.quant import guided_int8 as g
from compresslab.testing import tiny_context

N_LAYERS = 2  # tiny_model: 2 layers -> per layer Attention + 3 MatMuls; pooler and classifier Gemms


def _ops(path: Path) -> dict[str, str]:
    return {n.name: n.op_type for n in onnx.load(str(path)).graph.node}


# ------------------------------------------------------------------------------------- graph side
def test_lists_every_weight_matmul_of_the_fused_graph(exported):
    cands = g.quantizable_matmuls(exported.onnx_path)
    kinds = [c.op_type for c in cands]
    assert kinds.count("Attention") == N_LAYERS and kinds.count("MatMul") == 3 * N_LAYERS
    assert kinds.count("Gemm") == 2  # pooler and classifier, named as ORT's Gemm -> MatMul rewrite names them
    assert all(c.name.endswith("_MatMul") for c in cands if c.op_type == "Gemm")
    by_type = {c.op_type: c.macs_per_row for c in cands}
    assert by_type["Attention"] == 32 * 96  # hidden x 3 hidden (QKV)
    assert {c.macs_per_row for c in cands if c.op_type == "MatMul"} == {32 * 32, 32 * 64}
    assert [c.op_type for c in g.quantizable_matmuls(exported.onnx_path, ["Attention"])] == ["Attention"] * N_LAYERS


def test_listing_matches_what_ort_quantizes(exported, tmp_path):
    """Every candidate becomes ``<name>_quant`` (MatMulInteger / QAttention) in the all-int8 graph."""
    quantize_dynamic_int8(exported.onnx_path, tmp_path / "q.onnx")
    ops = _ops(tmp_path / "q.onnx")
    for c in g.quantizable_matmuls(exported.onnx_path):
        assert ops.get(f"{c.name}_quant") in ("MatMulInteger", "QAttention"), c
        assert c.name not in ops
    assert not {"MatMul", "Attention", "Gemm"} & set(ops.values())


def test_excluded_nodes_stay_fp32_and_only_those(exported, tmp_path):
    cands = g.quantizable_matmuls(exported.onnx_path)
    keep = [next(c.name for c in cands if c.op_type == "Attention"),
            next(c.name for c in cands if c.op_type == "MatMul"),
            next(c.name for c in cands if c.op_type == "Gemm")]
    quantize_dynamic_int8(exported.onnx_path, tmp_path / "q.onnx", nodes_to_exclude=keep)
    model = onnx.load(str(tmp_path / "q.onnx"))
    ops = {n.name: n for n in model.graph.node}
    floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    for name in keep:
        assert ops[name].op_type in ("MatMul", "Attention") and f"{name}_quant" not in ops
        assert ops[name].input[1] in floats  # the fp32 weight, not an int8 one
    for c in cands:
        if c.name not in keep:
            assert f"{c.name}_quant" in ops and c.name not in ops
    only = cands[3].name
    quantize_dynamic_int8(exported.onnx_path, tmp_path / "one.onnx", nodes_to_quantize=[only])
    ops = _ops(tmp_path / "one.onnx")
    assert [n for n in ops if n.endswith("_quant")] == [f"{only}_quant"]
    with pytest.raises(ValueError, match="nodes_to_quantize is empty"):
        quantize_dynamic_int8(exported.onnx_path, tmp_path / "none.onnx", nodes_to_quantize=[])


# ------------------------------------------------------------------------------------- divergence
def test_divergence_by_hand():
    ref = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = np.array([[1.0, 0.0], [0.5, 0.0], [1.0, 1.0]])
    p, q = torch.softmax(torch.tensor(ref), -1), torch.softmax(torch.tensor(out), -1)
    want = float((p * (p.log() - q.log())).sum(-1).mean())
    d = g.divergence(ref, out)
    assert d.kl == pytest.approx(want, rel=1e-12) and d.flips == 1 and d.n == 3
    assert d.agreement == pytest.approx(2 / 3)
    assert g.divergence(ref, ref).kl == pytest.approx(0.0, abs=1e-15) and g.divergence(ref, ref).flips == 0
    r = g.divergence(np.array([[1.0], [3.0]]), np.array([[2.0], [3.0]]))
    assert (r.kl, r.flips) == (0.5, 0)
    with pytest.raises(ValueError, match="one shape"):
        g.divergence(ref, out[:2])


# -------------------------------------------------------------------------------------- selection
def _brute(benefit, cost, budget):
    """Every subset: max benefit, then min cost, then the smallest sorted name tuple."""
    names = sorted(benefit)
    best = None
    for r in range(len(names) + 1):
        for sub in itertools.combinations(names, r):
            if any(benefit[n] <= 0 for n in sub):
                continue
            c = sum(cost[n] for n in sub)
            if c > budget + 1e-12:
                continue
            key = (-round(sum(benefit[n] for n in sub), 9), round(c, 9), sub)
            best = key if best is None or key < best else best
    return best[2]


def test_selection_is_the_exact_optimum_where_greedy_is_not():
    benefit, cost = {"a": 10.0, "b": 7.0, "c": 7.0}, {"a": 6.0, "b": 5.0, "c": 5.0}
    sel = g.choose_fp32(benefit, cost, 10.0)
    assert sel.chosen == ("b", "c") and sel.benefit == 14.0 and sel.cost == 10.0  # greedy by ratio takes "a": 10
    assert g.choose_fp32(benefit, cost, 5.9).chosen == ("b",)  # tie b/c: the smaller name
    assert g.choose_fp32(benefit, cost, 0.0).chosen == ()
    free = g.choose_fp32({"x": 1.0, "y": 0.0, "z": -1.0}, {"x": 0.0, "y": 0.0, "z": 0.0}, 0.0)
    assert free.chosen == ("x",)  # free and useful: taken; useless or harmful: never


@pytest.mark.parametrize("seed", range(40))
def test_selection_equals_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 11)
    names = [f"n{i:02d}" for i in range(n)]
    if seed % 3 == 0:  # integer values: many ties, the tie rule must hold too
        benefit = {k: float(rng.randint(0, 4)) for k in names}
        cost = {k: float(rng.randint(0, 3)) for k in names}
    else:
        benefit = {k: rng.uniform(-0.2, 1.0) for k in names}
        cost = {k: rng.uniform(0.0, 1.0) for k in names}
    budget = rng.uniform(0.0, sum(cost.values()) * 0.7)
    sel = g.choose_fp32(benefit, cost, budget)
    assert sel.cost <= budget + 1e-12
    assert sel.chosen == _brute(benefit, cost, budget)
    assert sel.benefit == pytest.approx(sum(benefit[k] for k in sel.chosen))
    assert g.choose_fp32(dict(reversed(benefit.items())), cost, budget) == sel  # input order is irrelevant


def test_selection_bad_input():
    with pytest.raises(ValueError, match="same nodes"):
        g.choose_fp32({"a": 1.0}, {"b": 1.0}, 1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        g.choose_fp32({"a": 1.0}, {"a": -1.0}, 1.0)
    with pytest.raises(ValueError, match="finite"):
        g.choose_fp32({"a": math.nan}, {"a": 1.0}, 1.0)
    with pytest.raises(ValueError, match="budget"):
        g.choose_fp32({"a": 1.0}, {"a": 1.0}, -1.0)


def _brute_mixed(benefits, costs, budget):
    names = sorted(benefits)
    best = 0.0
    for combo in itertools.product(*[[None, *sorted(benefits[n])] for n in names]):
        c = sum(costs[n][o] for n, o in zip(names, combo) if o)
        if c <= budget + 1e-12:
            best = max(best, sum(benefits[n][o] for n, o in zip(names, combo) if o))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_mixed_selection_equals_brute_force(seed):
    """One choice per node among per-call int8 (free), per-token and fp32: the integer program's summed
    benefit is the brute-force optimum, and its cost fits the budget."""
    rng = random.Random(seed)
    benefits, costs = {}, {}
    for i in range(7):
        name = f"n{i}"
        fp32, tok = rng.uniform(-0.2, 1.0), rng.uniform(-0.2, 1.0)
        benefits[name] = {"fp32": fp32, **({"per_token": tok} if i % 3 else {})}  # some nodes: fp32 only
        costs[name] = {"fp32": rng.uniform(0.2, 1.0), **({"per_token": rng.uniform(0.0, 0.4)} if i % 3 else {})}
    budget = rng.uniform(0.3, 2.0)
    sel = g.choose(benefits, costs, budget)
    assert sel.cost <= budget + 1e-9
    assert sel.benefit == pytest.approx(_brute_mixed(benefits, costs, budget), abs=1e-7)
    assert all(benefits[n][o.value] > 0 for n, o in sel.choice.items())  # nothing chosen that does not help
    assert sel.cost == pytest.approx(sum(costs[n][o.value] for n, o in sel.choice.items()))


def test_mixed_selection_ties_go_to_the_cheaper_choice():
    # per token keeps all of fp32's benefit at a fifth of its cost: never fp32
    sel = g.choose({"a": {"fp32": 1.0, "per_token": 1.0}}, {"a": {"fp32": 0.5, "per_token": 0.1}}, 1.0)
    assert dict(sel.choice) == {"a": g.Choice.PER_TOKEN} and sel.cost == pytest.approx(0.1)
    # same benefit and cost: per token (the cheaper kind in the model's order), every time
    for _ in range(3):
        sel = g.choose({"a": {"fp32": 1.0, "per_token": 1.0}, "b": {"fp32": 0.5, "per_token": 0.2}},
                       {"a": {"fp32": 0.3, "per_token": 0.3}, "b": {"fp32": 0.4, "per_token": 0.1}}, 1.0)
        assert dict(sel.choice) == {"a": g.Choice.PER_TOKEN, "b": g.Choice.FP32}
    with pytest.raises(ValueError, match="budget"):
        g.choose({"a": {"fp32": 1.0}}, {"a": {"fp32": 1.0}}, None)
    with pytest.raises(ValueError, match="finite"):
        g.choose({"a": {"fp32": "1"}}, {"a": {"fp32": 1.0}}, 1.0)


def test_mixed_selection_without_per_token_is_the_fp32_knapsack():
    benefits = {"a": {"fp32": 3.0}, "b": {"fp32": 2.0}, "c": {"fp32": 2.0}}
    costs = {"a": {"fp32": 3.0}, "b": {"fp32": 2.0}, "c": {"fp32": 2.0}}
    sel = g.choose(benefits, costs, 4.0)
    assert sel.names(g.Choice.FP32) == g.choose_fp32({n: 3.0 if n == "a" else 2.0 for n in "abc"},
                                                      {n: 3.0 if n == "a" else 2.0 for n in "abc"}, 4.0).chosen
    # a cheap per-token choice that keeps most of the benefit frees the budget for another node
    mixed = g.choose({**benefits, "a": {"fp32": 3.0, "per_token": 2.9}}, {**costs, "a": {"fp32": 3.0, "per_token": 0.1}},
                     4.0)
    assert dict(mixed.choice) == {"a": g.Choice.PER_TOKEN, "b": g.Choice.FP32} or dict(mixed.choice) == {
        "a": g.Choice.PER_TOKEN, "c": g.Choice.FP32}
    assert mixed.benefit == pytest.approx(4.9)
    with pytest.raises(ValueError, match="same nodes"):
        g.choose({"a": {"fp32": 1.0}}, {}, 1.0)
    with pytest.raises(ValueError, match="same choices"):
        g.choose({"a": {"fp32": 1.0, "per_token": 1.0}}, {"a": {"fp32": 1.0}}, 1.0)
    with pytest.raises(ValueError, match="same choices"):
        g.choose({"a": {"int8": 1.0}}, {"a": {"int8": 1.0}}, 1.0)
    with pytest.raises(ValueError, match="finite"):
        g.choose({"a": {"per_token": math.nan}}, {"a": {"per_token": 1.0}}, 1.0)
    with pytest.raises(ValueError, match="budget"):
        g.choose({"a": {"fp32": 1.0}}, {"a": {"fp32": 1.0}}, -1.0)


def test_per_token_cost_model():
    cands = [g.Candidate("a", "MatMul", 12, 3, 4), g.Candidate("b", "Gemm", 2, 1, 2),
             g.Candidate("att", "Attention", 9, 3, 3), g.Candidate("shared", "MatMul", 4, 2, 2, own_input=False)]
    cost = g.per_token_costs(cands, t_int8=1.0, t_per_token=1.5, seq=2)
    # (in + out features) x rows: 7 x 2 tokens for the MatMul, 3 x 1 for the Gemm head; only nodes with the choice
    assert cost == pytest.approx({"a": 0.5 * 14 / 17, "b": 0.5 * 3 / 17})
    # per token timed no slower (noise): the floor, never 0, or the rounds' scaling could never correct it
    floor = g.PER_TOKEN_GAP_FLOOR
    assert g.per_token_costs(cands, 1.0, 0.9, seq=2) == pytest.approx({"a": floor * 14 / 17, "b": floor * 3 / 17})
    with pytest.raises(ValueError, match="in_features and out_features"):
        g.per_token_costs([g.Candidate("bare", "MatMul", 12)], 1.0, 1.5)


def test_cost_model_and_budget():
    cands = [g.Candidate("a", "MatMul", 100), g.Candidate("b", "Attention", 300)]
    cost = g.fp32_costs(cands, t_fp32=2.0, t_int8=1.2)
    assert cost == pytest.approx({"a": 0.2, "b": 0.6}) and sum(cost.values()) == pytest.approx(0.8)
    assert g.fp32_costs(cands, 1.0, 1.5) == {"a": 0.0, "b": 0.0}  # int8 not faster: fp32 costs nothing
    assert g.extra_time_budget(0.9, 0.9) == pytest.approx(0.1)  # 0.9 s / 0.9 = 1.0 s allowed
    assert g.extra_time_budget(1.0, 1.0) == 0.0
    for bad in (0.0, -0.5, 1.01):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            g.extra_time_budget(1.0, bad)


# ----------------------------------------------------------------------------------------- driver
def test_driver_respects_the_budget_and_writes_the_chosen_graph(exported, feeds, tmp_path, synthetic_times):
    rec = g.guided_int8(exported.onnx_path, tmp_path / "g.onnx", feeds, latency_ratio=0.9, threads=1)
    cands = g.quantizable_matmuls(exported.onnx_path)
    cost = g.fp32_costs(cands, 2.0, 1.0)
    budget = 1.0 * (1 / 0.9 - 1)
    assert rec["latency"]["budget_extra_s"] == pytest.approx(budget)
    for m in ("single_int8", "single_fp32"):
        sel = rec["selections"][m]
        assert sum(cost[n] for n in sel["fp32_matmuls"]) <= budget + 1e-12
        benefit = {r["name"]: r[m]["benefit"] for r in rec["ranking"]}
        assert tuple(sel["fp32_matmuls"]) == g.choose_fp32(benefit, cost, budget).chosen
    assert rec["winner"] in ("all_int8", "single_int8", "single_fp32")
    assert rec["sensitivity"] in ("single_int8", "single_fp32")
    val = rec["validation"]
    assert val[rec["winner"]]["agreement"] >= val["all_int8"]["agreement"]
    assert rec["n_validation_examples"] == 48 and len(rec["ranking"]) == len(cands)
    chosen = rec["fp32_matmuls"]
    ops = _ops(tmp_path / "g.onnx")
    assert all(ops[n] in ("MatMul", "Attention") for n in chosen)
    assert all(f"{c.name}_quant" in ops for c in cands if c.name not in chosen)
    assert rec["latency"]["predicted_s"] == pytest.approx(1.0 + sum(cost[n] for n in chosen))
    assert rec["latency"]["measured"]["speedup_chosen_vs_int8"] == pytest.approx(1 / 1.05)
    assert rec["latency"]["budget_met_measured"] is True  # 2/1.05 >= 0.9 * 2/1


def test_driver_with_per_token_choices(exported, feeds, tmp_path, monkeypatch):
    """per_token: three estimates, one choice per node within the budget under both cost models, and the
    written file has exactly the chosen per-token and fp32 nodes."""
    table = {"fp32": 2.0, "int8": 1.0, "per_token": 1.04, "chosen": 1.05}
    monkeypatch.setattr(g, "time_models", lambda paths, *a, **k: {n: table[n] for n in paths})
    rec = g.guided_int8(exported.onnx_path, tmp_path / "g.onnx", feeds, threads=1, per_token=True)
    cands = g.quantizable_matmuls(exported.onnx_path)
    fp32, tok = g.fp32_costs(cands, 2.0, 1.0), g.per_token_costs(cands, 1.0, 1.04)
    assert rec["per_token"] is True and list(rec["selections"]) == ["single_int8", "single_fp32", "single_per_call"]
    assert rec["latency"]["per_token_s"] == 1.04 and "per_token_top_validation" in rec
    budget = 1.0 * (1 / 0.9 - 1)
    for sel in rec["selections"].values():
        assert not set(sel["fp32_matmuls"]) & set(sel["per_token_matmuls"])
        spent = sum(fp32[n] for n in sel["fp32_matmuls"]) + sum(tok[n] for n in sel["per_token_matmuls"])
        assert spent == pytest.approx(sel["predicted_extra_s"]) and spent <= budget + 1e-9
    assert rec["validation"][rec["winner"]]["agreement"] >= rec["validation"]["all_int8"]["agreement"]
    assert all(n in tok for n in rec["per_token_matmuls"])  # Attention never per token
    assert rec["per_token_matmuls"]  # the wide-init tiny model takes some (the checks below need one)
    graph = onnx.load(str(tmp_path / "g.onnx")).graph
    assert sum(n.name.endswith("_per_token_Quantize") for n in graph.node) == len(rec["per_token_matmuls"])
    ops = _ops(tmp_path / "g.onnx")
    assert all(ops[n] in ("MatMul", "Attention") for n in rec["fp32_matmuls"])
    assert rec["quantize_metrics"]["size_bytes"] == (tmp_path / "g.onnx").stat().st_size
    assert rec["quantize_metrics"]["n_excluded"] == len(rec["fp32_matmuls"])
    with pytest.raises(ValueError, match="per_token=True"):
        g.guided_int8(exported.onnx_path, tmp_path / "x.onnx", feeds, sensitivity="single_per_call")
    # nothing can be per token (Attention only): single_per_call is refused before any work, auto says so and
    # chooses between int8 and fp32
    with pytest.raises(ValueError, match="single_per_call: no weight MatMul"):
        g.guided_int8(exported.onnx_path, tmp_path / "x.onnx", feeds, sensitivity="single_per_call", per_token=True,
                      op_types=["Attention"])
    only_att = g.guided_int8(exported.onnx_path, tmp_path / "y.onnx", feeds, threads=1, per_token=True,
                             op_types=["Attention"], sensitivity="single_fp32")
    assert only_att["per_token"] is False and only_att["per_token_requested"] is True
    assert only_att["per_token_matmuls"] == []


def test_driver_tightens_the_cost_model_when_the_measurement_misses(exported, feeds, tmp_path, monkeypatch):
    """The chosen model measures slower than predicted: costs are scaled up and the choice redone."""
    table = {"fp32": 2.0, "int8": 1.0, "chosen": 1.5}  # 2/1.5 < 0.9 x 2/1: always a miss unless nothing is fp32
    monkeypatch.setattr(g, "time_models", lambda paths, *a, **k: {n: table[n] for n in paths})
    rec = g.guided_int8(exported.onnx_path, tmp_path / "g.onnx", feeds, threads=1, max_rounds=3)
    rounds = rec["latency"]["rounds"]
    assert len(rounds) >= 2 and rounds[0]["budget_met_measured"] is False and rounds[0]["fp32_matmuls"]
    assert all(b["cost_scale"] >= a["cost_scale"] * 1.05 for a, b in zip(rounds, rounds[1:]))
    cost = g.fp32_costs(g.quantizable_matmuls(exported.onnx_path), 2.0, 1.0)
    for r in rounds:  # each round's set fits the budget under that round's scaled costs
        assert sum(cost[n] * r["cost_scale"] for n in r["fp32_matmuls"]) <= 1.0 * (1 / 0.9 - 1) + 1e-12
    assert rec["fp32_matmuls"] == rounds[-1]["fp32_matmuls"]
    assert rec["latency"]["budget_met_measured"] is (not rec["fp32_matmuls"])
    with pytest.raises(ValueError, match="max_rounds"):
        g.guided_int8(exported.onnx_path, tmp_path / "x.onnx", feeds, max_rounds=0)


def test_driver_is_deterministic_and_single_method(exported, feeds, tmp_path, synthetic_times):
    a = g.guided_int8(exported.onnx_path, tmp_path / "a.onnx", feeds, sensitivity="single_fp32", threads=1)
    b = g.guided_int8(exported.onnx_path, tmp_path / "b.onnx", feeds, sensitivity="single_fp32", threads=1)
    a.pop("quantize_metrics"), b.pop("quantize_metrics")
    assert a == b and list(a["selections"]) == ["single_fp32"] and a["sensitivity"] == "single_fp32"
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    with pytest.raises(ValueError, match="hessian"):
        g.guided_int8(exported.onnx_path, tmp_path / "c.onnx", feeds, sensitivity="hessian")


def test_single_int8_sensitivity_sees_the_node(exported, feeds, tmp_path):
    """The probe quantizes the node alone: an Attention's KL equals the KL of that one-node model."""
    cands = g.quantizable_matmuls(exported.onnx_path)
    ref = g.run_outputs(exported.onnx_path, feeds, 1)

    def quantize(s, d, **nodes):
        return quantize_dynamic_int8(s, d, **nodes)

    def evaluate(p):
        return g.divergence(ref, g.run_outputs(p, feeds, 1))

    build = g.make_build(Path(exported.onnx_path), quantize, tmp_path)
    base = g.Divergence(1.0, 0, 48)
    s = g.sensitivities(g.Sensitivity.SINGLE_INT8, cands[:2], build, evaluate, tmp_path, base)
    quantize_dynamic_int8(exported.onnx_path, tmp_path / "x.onnx", nodes_to_quantize=[cands[0].name])
    assert s[cands[0].name]["benefit"] == pytest.approx(evaluate(tmp_path / "x.onnx").kl)
    assert all(v["benefit"] > 0 for v in s.values())  # int8 of a wide-init model moves the logits
    assert all(set(v["benefits"]) == {"fp32"} for v in s.values())  # no per-token choice unless asked
    f = g.sensitivities(g.Sensitivity.SINGLE_FP32, cands[:2], build, evaluate, tmp_path, base)
    assert all(v["benefit"] == pytest.approx(max(1.0 - v["kl"], 0.0)) for v in f.values())


def test_per_token_sensitivities_probe_each_choice_around_their_base(exported, feeds, tmp_path):
    """Every choice of a node but the base's is probed with the others at the base, and each benefit is
    KL(node per-call int8) - KL(node at the choice): checked against models built by hand."""
    from compresslab.export.per_token_int8 import per_token_activations

    cands = g.quantizable_matmuls(exported.onnx_path)
    mm = next(c for c in cands if c.op_type == "MatMul")
    att = next(c for c in cands if c.op_type == "Attention")
    assert mm.options(True) == (g.Choice.INT8, g.Choice.PER_TOKEN, g.Choice.FP32)
    assert att.options(True) == mm.options(False) == (g.Choice.INT8, g.Choice.FP32)  # QAttention: one scale per call
    ref = g.run_outputs(exported.onnx_path, feeds, 1)

    def evaluate(p):
        return g.divergence(ref, g.run_outputs(p, feeds, 1))

    build = g.make_build(Path(exported.onnx_path), quantize_dynamic_int8, tmp_path)
    # single_int8 around all-fp32: the MatMul alone per token = quantize it alone, then its per-token rewrite
    s = g.sensitivities(g.Sensitivity.SINGLE_INT8, [mm], build, evaluate, tmp_path, g.Divergence(0.0, 0, 48),
                        per_token=True)[mm.name]
    quantize_dynamic_int8(exported.onnx_path, tmp_path / "one.onnx", nodes_to_quantize=[mm.name])
    per_token_activations(tmp_path / "one.onnx", tmp_path / "one_tok.onnx", matmuls=[mm.name])
    kl8, klt = evaluate(tmp_path / "one.onnx").kl, evaluate(tmp_path / "one_tok.onnx").kl
    assert s["benefits"]["fp32"] == pytest.approx(kl8) and s["benefits"]["per_token"] == pytest.approx(max(kl8 - klt, 0))
    assert klt != kl8  # the per-token probe is another model (symmetric per-token codes are not always closer)
    # single_per_call around every MatMul per token and every Attention fp32
    top = g.base_choice(g.Sensitivity.SINGLE_PER_CALL, cands, True)
    assert {c.op_type for c in cands if top[c.name] is g.Choice.FP32} == {"Attention"}
    build(top, tmp_path / "top.onnx")
    base = evaluate(tmp_path / "top.onnx")
    p = g.sensitivities(g.Sensitivity.SINGLE_PER_CALL, cands, build, evaluate, tmp_path, base, per_token=True)
    build({**top, mm.name: g.Choice.INT8}, tmp_path / "mm8.onnx")
    build({**top, mm.name: g.Choice.FP32}, tmp_path / "mm32.onnx")
    build({**top, att.name: g.Choice.INT8}, tmp_path / "att8.onnx")
    k8, k32 = evaluate(tmp_path / "mm8.onnx").kl, evaluate(tmp_path / "mm32.onnx").kl
    assert p[mm.name]["benefits"] == pytest.approx({"per_token": max(k8 - base.kl, 0), "fp32": max(k8 - k32, 0)})
    assert p[att.name]["benefits"] == pytest.approx({"fp32": max(evaluate(tmp_path / "att8.onnx").kl - base.kl, 0)})
    with pytest.raises(ValueError, match="per_token=True"):
        g.base_choice(g.Sensitivity.SINGLE_PER_CALL, cands, False)


def test_a_matmul_sharing_its_input_has_no_per_token_choice(tmp_path):
    """Q/K/V of the plain graph read one input: per-token scales would reach all three or none
    (export/per_token_int8.py), so none of them is offered the choice alone."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["b", 4]) for i in range(3)]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y0"], name="q"), helper.make_node("MatMul", ["x", "W"], ["y1"], name="k"),
             helper.make_node("MatMul", ["y1", "W"], ["y2"], name="own")]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], outs, [w])), tmp_path / "m.onnx")
    by = {c.name: c for c in g.quantizable_matmuls(tmp_path / "m.onnx")}
    assert not by["q"].own_input and not by["k"].own_input and by["own"].own_input
    assert by["q"].options(True) == (g.Choice.INT8, g.Choice.FP32)
    assert (by["own"].in_features, by["own"].out_features) == (4, 4)


# ------------------------------------------------------------------------------------------- pass
@pytest.mark.parametrize("kwargs,match", [
    ({"sensitivity": "hessian"}, "allowed: 'auto', 'single_int8', 'single_fp32', 'single_per_call'"),
    ({"sensitivity": "single_per_call", "fp32_fallback": "guided"}, "needs activations=per_token"),
    ({"sensitivity": "single_per_call", "activations": "per_token"}, "with fp32_fallback=guided"),
    ({"fp32_fallback": "all"}, "allowed: 'none', 'guided'"),
    ({"latency_ratio": 0}, r"\(0, 1\]"),
    ({"latency_ratio": 1.2}, r"\(0, 1\]"),
    ({"latency_ratio": "0.9"}, "ort_int8_dynamic.latency_ratio must be a number, got '0.9'"),  # a wrong type
    ({"max_examples": 0}, "max_examples must be an integer >= 1"),
    ({"latency_runs": 0}, "latency_runs must be an integer >= 1"),
])
def test_pass_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OrtInt8Dynamic(**kwargs)


def test_pass_default_is_plain_int8_and_pipeline_composes():
    from compresslab.config import compose

    assert OrtInt8Dynamic().fp32_fallback == "none"
    cfg = compose(["+pipeline=hawq_int8", "debug=smoke"])
    assert cfg.pipeline.passes.int8.fp32_fallback == "guided"
    assert list(cfg.pipeline.steps) == ["finetune", "int8"]


def test_pass_guided_apply(exported, tiny_tok, tmp_path, synthetic_times):
    from compresslab.types import OnnxModel

    ctx = tiny_context(tiny_tok, tmp_path)
    p = OrtInt8Dynamic(fp32_fallback="guided", max_examples=12, latency_runs=1,
                       latency_seq=64)  # tiny BERT: 72 positions
    p.check(ctx.task)
    res = p.apply(OnnxModel(exported.dir, exported.onnx_path), ctx)
    rec = res.metrics["guided"]
    assert rec["latency"]["shape"] == [32, 64]  # the setting reaches the timing
    assert rec["n_validation_examples"] == 12 and "quantize_metrics" not in rec
    assert res.metrics["size_bytes"] == Path(res.onnx_path).stat().st_size
    ops = _ops(Path(res.onnx_path))
    assert all(ops[n] in ("MatMul", "Attention") for n in rec["fp32_matmuls"])
    assert res.structure["fp32_matmuls"] == rec["fp32_matmuls"]
    assert (Path(res.onnx_path).parent / "config.json").is_file()
    assert rec["per_token"] is False and "per_token_matmuls" not in res.structure
    assert res.structure["activations"] == res.metrics["activations"] == "per_call"


def test_pass_guided_per_token_apply(exported, tiny_tok, tmp_path, monkeypatch):
    from compresslab.types import OnnxModel

    table = {"fp32": 2.0, "int8": 1.0, "per_token": 1.04, "chosen": 1.05}
    monkeypatch.setattr(g, "time_models", lambda paths, *a, **k: {n: table[n] for n in paths})
    ctx = tiny_context(tiny_tok, tmp_path)
    p = OrtInt8Dynamic(fp32_fallback="guided", activations="per_token", max_examples=12, latency_runs=1,
                       latency_seq=64)
    res = p.apply(OnnxModel(exported.dir, exported.onnx_path), ctx)
    rec = res.metrics["guided"]
    assert rec["per_token"] is True and res.metrics["activations_requested"] == "per_token"
    # the record says what the file does: per token only where a MatMul was chosen per token
    assert res.metrics["activations"] == res.structure["activations"] == (
        "per_token" if rec["per_token_matmuls"] else "per_call")
    assert res.structure["per_token_matmuls"] == rec["per_token_matmuls"]
    assert res.structure["fp32_matmuls"] == rec["fp32_matmuls"]
    assert res.metrics["size_bytes"] == Path(res.onnx_path).stat().st_size
