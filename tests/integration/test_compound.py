"""Compound pipelines (#13): ZipLM -> oBERT -> int8, with and without layer dropping first.

Tiny random BERT / RoBERTa / DistilBERT models run through the real pipeline code (``pipeline.run``
on a composed config, ``model=local`` and a generic CSV task); ZipLM's timing is a synthetic
latency table and scripted speedup checks (as in tests/passes/test_ziplm_pass.py), while every
candidate is still really exported with parity. What must hold when passes compose:

* oBERT's Fisher and OBS run on the shrunk layers (per-layer head counts and FFN widths differ,
  a layer may have no heads at all), and its sparsity target is reached on the shrunk model's
  Linears; ``sparsity_vs_teacher`` is the same count against the dense teacher's weights;
* zeros survive every later step: zeros already in the shrunk model through oBERT's pruning and
  after every optimizer step of its KD recovery (on the pass directly), oBERT's in the checkpoint
  (dense and sparse int8 files, ``compresslab.load``), in the fp32 ONNX export and in the int8
  graph; export parity passes;
* orders that cannot compose (a sparse pass before one that rewrites weights densely, block4
  after a grid not on 4, ZipLM on DistilBERT, too deep a layer_drop) are refused before any work.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import compresslab
from compresslab.config import compose
from compresslab.manifest import read_json
from compresslab.models.adapters import get_adapter
from compresslab.models.structure import shrink_ffn, shrink_heads
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.pipeline import PipelineError, build_steps, run
from compresslab.targets import select_modules
from compresslab.testing import synthetic_latency_table, tiny_sentiment, write_csv

# tiny budgets: ZipLM's latency shape and calibration, oBERT's gradient batches (the smoke budget's
# 8 gradients per Fisher need 8 mini-batches of the 64 train examples left after validation)
ZIPLM_TINY = ["batch=2", "seq=16", "threads=1", "ffn_grid=16", "latency_warmup=0", "latency_runs=2", "check_runs=2",
              "num_calibration=32", "max_retries=0"]
OBERT_TINY = ["grad_batch_size=4"]


def patch_timing(mp: pytest.MonkeyPatch) -> None:
    """No timing on a shared machine: ZipLM prices with ``synthetic_latency_table`` and every check says 100x."""
    import compresslab.pruning.reachable as reachable
    import compresslab.pruning.speedup as sp

    mp.setattr(sp, "build_latency_table", lambda *a, **k: synthetic_latency_table())
    mp.setattr(reachable, "cached_latency_table", lambda *a, **k: synthetic_latency_table())  # the preflight's
    mp.setattr(sp, "measure_speedup", lambda *a, **k: {"speedup": 100.0, "dense_ms": 10.0, "candidate_ms": 0.1})


@pytest.fixture
def fake_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    patch_timing(monkeypatch)


def make_inputs(root: Path, arch: str) -> Path:
    """``root/model`` (a tiny ``arch`` model + tokenizer) and ``root/{train,dev}.csv``; returns ``root``."""
    model_dir = root / "model"
    tiny_tokenizer(model_dir).save_pretrained(model_dir)
    tiny_model(arch).save_pretrained(model_dir)
    for name, n, seed in (("train", 96, 0), ("dev", 32, 1)):
        write_csv(root / f"{name}.csv", ["text", "label"], [[e.text_a, str(e.label)] for e in tiny_sentiment(n, seed)])
    return root


def tiny_cfg(root: Path, pipeline: str, *extra: str):
    """The CLI's config for ``pipeline`` on the tiny inputs under ``root`` (bench and report off)."""
    passes = compose([f"+pipeline={pipeline}"]).pipeline.passes
    tiny = [f"pipeline.passes.ziplm.{o}" for o in ZIPLM_TINY if "ziplm" in passes]
    tiny += [f"pipeline.passes.obert.{o}" for o in OBERT_TINY if "obert" in passes]
    tiny += ["pipeline.passes.layer_drop.num_layers=1"] if "layer_drop" in passes else []
    return compose([f"+pipeline={pipeline}", "debug=smoke", "model=local", f"model.source={root / 'model'}",
                    "task=generic", f"task.generic.train={root / 'train.csv'}", f"task.generic.dev={root / 'dev.csv'}",
                    "task.max_length=32", "run.threads=1", f"paths.output_dir={root / 'out'}",
                    f"paths.cache_dir={root / 'cache'}", "bench.enabled=false", "report=false", *tiny, *extra])


def steps_by_name(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in manifest["steps"]}


def reached(metrics: dict[str, Any], target: float, group: int = 1) -> bool:
    """The global count (ALGORITHMS §2.7-6): at least ``round(target * groups)`` whole groups are zero."""
    return metrics["num_zero"] >= round(target * metrics["num_targeted"] / group) * group


def targeted(model: nn.Module) -> dict[str, nn.Linear]:
    return select_modules(model)  # oBERT's default targets: every encoder Linear left


def zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() == 0 for n, m in targeted(model).items()}


def onnx_weights(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def matmul_weights(path: Path) -> dict[str, np.ndarray]:
    """The 2-D constant weights of the graph's (fused) Attention and MatMul nodes: the encoder's Linears."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = onnx_weights(path)
    names = {n.input[1] for n in graph.node if n.op_type in ("Attention", "MatMul") and len(n.input) > 1}
    return {n: weights[n] for n in names if n in weights and weights[n].ndim == 2}


def check_int8_keeps_zeros(fp32_onnx: Path, int8_onnx: Path) -> int:
    """Every quantized Linear weight: symmetric int8 (zero point 0) with a 0 code wherever the fp32
    weight is 0; returns the number of fp32 zeros so checked."""
    q = onnx_weights(int8_onnx)
    checked, quantized = 0, 0
    for base, w in matmul_weights(fp32_onnx).items():
        codes = q.get(f"{base}_quantized")
        if codes is None:
            continue
        quantized += 1
        zp = q[f"{base}_zero_point"]
        assert codes.dtype == np.int8 and not zp.any(), (base, codes.dtype, zp)  # symmetric int8
        zeros = w == 0
        assert codes.shape == zeros.shape and not codes[zeros].any(), base  # a pruned weight is code 0
        checked += int(zeros.sum())
    assert quantized, "no quantized Linear weight found in the int8 graph"
    return checked


def onnx_zeros(path: Path) -> int:
    """Exact zeros among the graph's Linear weights."""
    return int(sum((w == 0).sum() for w in matmul_weights(path).values()))


# ----------------------------------------------------------------------------- ZipLM -> oBERT -> int8, tiny BERT
@pytest.fixture(scope="module")
def bert_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(inputs root, run dir) of one finished ziplm_obert_int8 run on a tiny BERT."""
    mp = pytest.MonkeyPatch()
    try:
        patch_timing(mp)
        root = make_inputs(tmp_path_factory.mktemp("bert"), "bert")
        return root, run(tiny_cfg(root, "ziplm_obert_int8"))
    finally:
        mp.undo()


def test_compound_run_finishes_with_shrunk_then_sparse_model(bert_run):
    _, d = bert_run
    m = read_json(d / "manifest.json")
    assert m["status"] == "finished" and [s["name"] for s in m["steps"]] == ["finetune", "ziplm", "obert", "int8"]
    steps = steps_by_name(m)
    zip_structure = steps["ziplm"]["result"]["structure"]
    assert sum(zip_structure["heads"]) < 8 and sum(zip_structure["ffn"]) < 128  # ZipLM really shrank it

    shrunk, pruned = compresslab.load(d / steps["ziplm"]["dir"]), compresslab.load(d / steps["obert"]["dir"])
    structure = [{"heads": h, "ffn": f} for h, f in zip(zip_structure["heads"], zip_structure["ffn"])]
    assert get_adapter(shrunk).structure() == get_adapter(pruned).structure() == structure

    om = steps["obert"]["result"]["metrics"]
    mods = targeted(pruned)
    total = sum(w.weight.numel() for w in mods.values())
    zeros = sum(int((w.weight == 0).sum()) for w in mods.values())
    # the target is reached on the shrunk model's Linears (nothing grew back after the last event)
    assert om["num_targeted"] == total and om["num_zero"] == zeros
    assert om["sparsity"] == pytest.approx(zeros / total, abs=1e-6) and reached(om, 0.8)
    # ... and reported against the dense teacher's encoder Linears too: 2 x (4 x 32x32 + 2 x 32x64)
    assert om["teacher_targeted"] == 2 * (4 * 32 * 32 + 2 * 32 * 64) > total
    assert om["sparsity_vs_teacher"] == pytest.approx(1 - (total - zeros) / om["teacher_targeted"], abs=1e-6)
    assert om["sparsity_vs_teacher"] > om["sparsity"]


def test_obert_zeros_survive_the_checkpoints(bert_run, tmp_path):
    """(Zeros from before oBERT, e.g. ZipLM's dead columns, rarely occur on a tiny model: their
    survival through oBERT's pruning and recovery is tested directly below.)"""
    _, d = bert_run
    steps = steps_by_name(read_json(d / "manifest.json"))
    pruned = compresslab.load(d / steps["obert"]["dir"])
    after = zero_masks(pruned)
    assert sum(int(m.sum()) for m in after.values()) == steps["obert"]["result"]["metrics"]["num_zero"]

    # the sparse int8 file alone rebuilds the same shapes and exactly the same zeros
    alone = tmp_path / "sparse_only"
    alone.mkdir()
    for f in ("config.json", "model.sparse.safetensors", "vocab.txt", "tokenizer_config.json"):
        if (d / steps["obert"]["dir"] / f).exists():
            shutil.copy(d / steps["obert"]["dir"] / f, alone / f)
    sparse = compresslab.load(alone)
    assert get_adapter(sparse).structure() == get_adapter(pruned).structure()
    for n, mask in zero_masks(sparse).items():
        assert torch.equal(mask, after[n]), n

    # the public save -> load round trip keeps structure, zeros and logits
    out = compresslab.save(pruned, tmp_path / "saved")
    again = compresslab.load(out)
    assert get_adapter(again).structure() == get_adapter(pruned).structure()
    assert all(torch.equal(zero_masks(again)[n], after[n]) for n in after)
    x = {"input_ids": torch.tensor([[2, 7, 9, 11, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        torch.testing.assert_close(again(**x).logits, pruned(**x).logits)


def test_export_parity_and_int8_keep_the_zeros(bert_run):
    _, d = bert_run
    m = read_json(d / "manifest.json")
    parity = m["export"]["fp32"]["parity"]
    assert parity["max_abs_diff"] <= parity["atol"], parity
    om = steps_by_name(m)["obert"]["result"]["metrics"]
    fp32 = d / m["export"]["fp32"]["path"]
    assert onnx_zeros(fp32) >= om["num_zero"]  # every torch zero is in the exported graph
    int8 = d / steps_by_name(m)["int8"]["result"]["onnx_path"]
    assert check_int8_keeps_zeros(fp32, int8) >= om["num_zero"]
    assert m["eval"]["models"]["deployed"]["score"] is not None


# ----------------------------------------------------------------------------- variants
def test_roberta_block4_prunes_whole_blocks_of_the_shrunk_layers(tmp_path, fake_timing):
    root = make_inputs(tmp_path, "roberta")
    d = run(tiny_cfg(root, "ziplm_obert_int8", "pipeline.passes.obert.mask_type=block4"))
    m = read_json(d / "manifest.json")
    assert m["status"] == "finished"
    steps = steps_by_name(m)
    om = steps["obert"]["result"]["metrics"]
    assert om["mask_type"] == "block4" and reached(om, 0.8, group=4)
    model = compresslab.load(d / steps["obert"]["dir"])
    zip_structure = steps["ziplm"]["result"]["structure"]
    assert [s["heads"] for s in get_adapter(model).structure()] == zip_structure["heads"]
    for n, w in targeted(model).items():  # 1x4 blocks along rows: a group is all zero or has no zero
        g = (w.weight.detach().reshape(-1, 4) == 0).sum(dim=1)
        assert bool(((g == 0) | (g == 4)).all()), n
    parity = m["export"]["fp32"]["parity"]
    assert parity["max_abs_diff"] <= parity["atol"]
    fp32, int8 = d / m["export"]["fp32"]["path"], d / steps["int8"]["result"]["onnx_path"]
    assert check_int8_keeps_zeros(fp32, int8) >= om["num_zero"]


def test_layer_drop_variant_counts_sparsity_against_the_deeper_teacher(tmp_path, fake_timing):
    root = make_inputs(tmp_path, "bert")
    d = run(tiny_cfg(root, "layer_drop_ziplm_obert_int8"))
    m = read_json(d / "manifest.json")
    assert m["status"] == "finished"
    steps = steps_by_name(m)
    assert [s["name"] for s in m["steps"]] == ["finetune", "layer_drop", "ziplm", "obert", "int8"]
    model = compresslab.load(d / steps["obert"]["dir"])
    assert get_adapter(model).num_layers == 1
    assert len(steps["ziplm"]["result"]["structure"]["heads"]) == 1
    om = steps["obert"]["result"]["metrics"]
    assert reached(om, 0.8)
    teacher = 2 * (4 * 32 * 32 + 2 * 32 * 64)  # both teacher layers, the dropped one included
    assert om["teacher_targeted"] == teacher and om["num_targeted"] < teacher / 2
    assert om["sparsity_vs_teacher"] == pytest.approx(1 - (om["num_targeted"] - om["num_zero"]) / teacher, abs=1e-6)
    fp32, int8 = d / m["export"]["fp32"]["path"], d / steps["int8"]["result"]["onnx_path"]
    assert m["export"]["fp32"]["parity"]["max_abs_diff"] <= m["export"]["fp32"]["parity"]["atol"]
    assert check_int8_keeps_zeros(fp32, int8) >= om["num_zero"]


# ----------------------------------------------------------------------------- oBERT on shrunk layers, directly
def _shrunk_bert() -> nn.Module:
    """Tiny BERT with unequal layers: layer 0 keeps 1 head and 16 neurons, layer 1 no head and 48."""
    model = tiny_model("bert", initializer_range=0.3)
    ad = get_adapter(model)
    shrink_heads(ad.layer(0), [2])
    shrink_ffn(ad.layer(0), range(16, 32))
    shrink_heads(ad.layer(1), [])
    shrink_ffn(ad.layer(1), range(48))
    assert get_adapter(model).structure() == [{"heads": 1, "ffn": 16}, {"heads": 0, "ffn": 48}]
    return model


def test_fisher_sums_on_shrunk_layers_match_per_batch_gradients(tiny_ctx):
    """oBERT's Fisher on a shrunk model: per block, sum_j g_j g_j^T of the masked mini-batch gradients
    of exactly that module's weights, tail block zero-padded (B=50 does not divide 32x8 or 16x32)."""
    from compresslab.ops.fisher import to_blocks
    from compresslab.pruning.fisher import collect_outer_sums
    from compresslab.training.losses import task_loss

    model = _shrunk_bert()
    mods = targeted(model)
    assert "bert.encoder.layer.1.attention.output.dense" not in mods  # no heads: only a bias is left
    ctx = tiny_ctx()
    batches = list(ctx.calibration_batches(16, batch_size=4))
    pruned = {n: torch.zeros(m.weight.numel(), dtype=torch.bool) for n, m in mods.items()}
    first = next(iter(mods))
    pruned[first][::3] = True  # a masked module: its pruned coordinates carry no Fisher mass
    sums = collect_outer_sums(model, mods, pruned, iter(batches), len(batches), block_size=50)
    model.eval()
    for n, m in mods.items():
        expect = torch.zeros_like(sums[n])
        for b in batches:
            g, = torch.autograd.grad(task_loss(model, b), [m.weight])
            gb = to_blocks(g.reshape(-1) * ~pruned[n], 50)  # (nb, B)
            expect += gb.unsqueeze(2) * gb.unsqueeze(1)
        torch.testing.assert_close(sums[n], expect, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("mode", ["oneshot", "gradual"])
def test_obert_reaches_the_target_on_the_shrunk_weights_and_keeps_every_zero(mode, tiny_ctx, monkeypatch):
    """Global count (ALGORITHMS §2.7-6) on the shrunk Linears; zeros already there (an earlier pass's)
    count and stay; after every optimizer step of the KD recovery no pruned weight has grown back."""
    import compresslab.pruning.unstructured as un
    from compresslab.passes.obert import OBert

    teacher = tiny_model("bert", initializer_range=0.3)
    model = _shrunk_bert()
    first = next(iter(targeted(model)))
    with torch.no_grad():  # an earlier pass's zeros (e.g. ZipLM's dead columns)
        model.get_submodule(first).weight[:, :2] = 0
    earlier = zero_masks(model)
    seen: list[int] = []

    class Spy:  # runs after the pass's own callbacks, i.e. sees what the next step trains from
        def __init__(self, keeper: Any) -> None:
            self.keeper = keeper

        def on_step_end(self, step: int, model: nn.Module, optimizer: Any) -> None:
            for name, mask in self.keeper.masks.items():
                w = model.get_parameter(name).detach()
                assert not w[mask].any(), (step, name)  # nothing pruned grew back
                mod = name.removesuffix(".weight")
                assert not (earlier[mod] & (w != 0)).any(), (step, name)  # nor an earlier zero
            seen.append(step)

    real = un.recover

    def spied(*args: Any, callbacks: Any = (), **kw: Any) -> Any:
        keeper = next(c for c in callbacks if isinstance(c, un.MaskKeeper))
        return real(*args, callbacks=[*callbacks, Spy(keeper)], **kw)

    monkeypatch.setattr(un, "recover", spied)
    res = OBert(sparsity=0.5, mode=mode, num_grads=8, grad_batch_size=4, recovery={"steps": 4}).apply(
        model, tiny_ctx(teacher=teacher))
    assert len(seen) == 4
    mods = targeted(model)
    total = sum(m.weight.numel() for m in mods.values())
    zeros = sum(int((m.weight == 0).sum()) for m in mods.values())
    assert zeros == round(0.5 * total) == res.metrics["num_zero"] and res.metrics["num_targeted"] == total
    assert all(not (earlier[n] & (m.weight != 0)).any() for n, m in mods.items())
    dense = sum(m.weight.numel() for m in targeted(teacher).values())
    assert res.metrics["teacher_targeted"] == dense
    assert res.metrics["sparsity_vs_teacher"] == pytest.approx(1 - (total - zeros) / dense, abs=1e-6)
    assert res.structure["targets"] == list(mods)


def test_ziplm_on_a_sparse_model_grows_the_zeros_back(tiny_ctx, fake_timing):
    """Why ``obert -> ziplm`` is refused: ZipLM's OBS compensation rewrites the kept columns of every
    ``W_O`` / ``W_2`` it shrinks densely (and a recovery would train every weight): the zeros go."""
    from compresslab.passes.magnitude import Magnitude
    from compresslab.passes.ziplm import ZipLM

    model = tiny_model("bert")
    Magnitude(sparsity=0.5, recovery={"steps": 0}).apply(model, tiny_ctx())
    before = {(lv.index, role): (getattr(lv, role).weight.numel(), int((getattr(lv, role).weight == 0).sum()))
              for lv in get_adapter(model).layers() for role in ("o", "ffn_out")}
    assert all(z > 0.2 * n for n, z in before.values())
    ZipLM(speedup=2.0, batch=2, seq=16, threads=1, ffn_grid=16, latency_warmup=0, latency_runs=2, check_runs=2,
          num_calibration=32, max_retries=0).apply(model, tiny_ctx())
    shrunk = [(lv.index, role, getattr(lv, role)) for lv in get_adapter(model).layers() for role in ("o", "ffn_out")]
    changed = [(key, lin) for *key, lin in shrunk
               if isinstance(lin, nn.Linear) and lin.weight.numel() < before[tuple(key)][0]]
    assert changed  # ZipLM removed structure somewhere and compensated what was left
    for key, lin in changed:
        assert int((lin.weight == 0).sum()) < 0.02 * lin.weight.numel(), key  # its zeros are gone


# ----------------------------------------------------------------------------- bad orders, before any work
@pytest.mark.parametrize("order,match", [
    (["finetune", "obert", "ziplm", "int8"], "'ziplm' .* cannot come after step 'obert'"),
    (["finetune", "magnitude", "ziplm", "int8"], "cannot come after step 'magnitude'"),
    (["finetune", "obert", "layer_drop", "int8"], "'layer_drop' .* cannot come after step 'obert'"),
    (["finetune", "obert", "hawq"], "'hawq' .* cannot come after step 'obert'"),
    (["finetune", "int8", "obert"], "TORCH pass after the ONNX pass"),
])
def test_orders_that_cannot_compose_are_refused_at_plan_time(order, match):
    from omegaconf import open_dict

    cfg = compose(["+pipeline=layer_drop_ziplm_obert_int8", "debug=smoke"])
    with open_dict(cfg):
        cfg.pipeline.passes.magnitude = {"_target_": "compresslab.passes.magnitude.Magnitude"}
        cfg.pipeline.passes.hawq = {"_target_": "compresslab.passes.hawq.Hawq", "recovery": {"steps": 0}}
        cfg.pipeline.steps = order
    with pytest.raises(PipelineError, match=match) as e:
        build_steps(cfg)
    if "cannot come after" in match:
        assert "Put " in str(e.value) and "pipeline.steps" in str(e.value)  # says what to change


def test_orders_that_compose():
    """A zero-keeping pass after oBERT is fine: layer_drop without recovery, magnitude, int8."""
    from omegaconf import open_dict

    cfg = compose(["+pipeline=layer_drop_ziplm_obert_int8", "debug=smoke", "pipeline.passes.layer_drop.recovery.steps=0"])
    with open_dict(cfg):
        cfg.pipeline.passes.magnitude = {"_target_": "compresslab.passes.magnitude.Magnitude"}
        cfg.pipeline.steps = ["finetune", "ziplm", "obert", "layer_drop", "magnitude", "int8"]
    assert [s.name for s in build_steps(cfg)] == list(cfg.pipeline.steps)


def test_api_refuses_the_same_orders():
    from compresslab.api import build_steps as api_steps

    with pytest.raises(PipelineError, match="cannot come after step 'obert'"):
        api_steps(["obert", "ziplm"])
    assert [s.name for s in api_steps(["ziplm", "obert", "ort_int8_dynamic"])] == ["ziplm", "obert", "ort_int8_dynamic"]


def test_block4_after_a_grid_not_on_4_is_refused():
    cfg = compose(["+pipeline=ziplm_obert_int8", "debug=smoke", "pipeline.passes.obert.mask_type=block4",
                   "pipeline.passes.ziplm.ffn_grid=6"])
    with pytest.raises(PipelineError, match="ffn_grid=6, not a multiple of 4"):
        build_steps(cfg)


def test_distilbert_has_a_layer_drop_pipeline(tmp_path):
    # trial 47 finding 9: layer_drop_ziplm_obert_int8 was the only layer_drop pipeline, and ziplm refuses DistilBERT;
    # layer_drop_obert_int8 is the same compound without ZipLM, under its own name
    root = make_inputs(tmp_path, "distilbert")
    d = run(tiny_cfg(root, "layer_drop_obert_int8"))
    m = read_json(d / "manifest.json")
    assert m["status"] == "finished" and m["pipeline"] == "layer_drop_obert_int8" and d.parent.name == m["pipeline"]
    steps = steps_by_name(m)
    assert [s["name"] for s in m["steps"]] == ["finetune", "layer_drop", "obert", "int8"]
    model = compresslab.load(d / steps["obert"]["dir"])
    assert model.config.model_type == "distilbert" and get_adapter(model).num_layers == 1
    om = steps["obert"]["result"]["metrics"]
    assert reached(om, 0.8) and om["sparsity_vs_teacher"] > om["sparsity"]  # the dropped layer counts as removed
    fp32, int8 = d / m["export"]["fp32"]["path"], d / steps["int8"]["result"]["onnx_path"]
    assert check_int8_keeps_zeros(fp32, int8) >= om["num_zero"]


@pytest.mark.parametrize("pipeline", ["ziplm_obert_int8", "layer_drop_ziplm_obert_int8"])
def test_distilbert_is_refused_before_the_teacher_is_trained(pipeline, tmp_path):
    root = make_inputs(tmp_path, "distilbert")
    with pytest.raises(ValueError, match="ziplm supports bert, roberta models only, and this one is distilbert"):
        run(tiny_cfg(root, pipeline))
    assert not list((root / "out").glob("*/*/manifest.json"))  # no run dir: nothing was trained
    assert not (root / "cache" / "teachers").exists()


def test_layer_drop_deeper_than_the_model_is_refused_before_work(tmp_path):
    root = make_inputs(tmp_path, "bert")
    with pytest.raises(ValueError, match="step 'layer_drop': num_layers=4 but the model has only 2 layers"):
        run(tiny_cfg(root, "layer_drop_ziplm_obert_int8", "pipeline.passes.layer_drop.num_layers=4"))
    assert not list((root / "out").glob("*/*/manifest.json"))
