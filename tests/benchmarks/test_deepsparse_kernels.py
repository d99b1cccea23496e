"""benchmarks/deepsparse_kernels.py (issue #13), its pure parts, without DeepSparse: the magnitude masks (a 4-block
mask prunes whole groups of 4 consecutive input weights, exactly round(sparsity * groups) per Linear, the smallest
L2 norms, encoder Linears only) and the derived ratios and verdict, computed from a fake latency table (the verdict
follows the numbers: change one cell and it says something else)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compresslab.models.tiny import tiny_model
from compresslab.targets import select_modules

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dk():
    from compresslab.testing import import_benchmark

    return import_benchmark("deepsparse_kernels", ROOT)


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("sparsity", [0.8, 0.9, 0.37])
def test_block4_prunes_whole_groups_of_four_inputs_by_l2_norm(dk, sparsity) -> None:
    model = tiny_model("bert", seed=1)
    before = _weights(model)
    encoder = set(select_modules(model))
    got = dk.prune(model, sparsity, 4)
    assert set(got) == encoder
    for name, w in _weights(model).items():
        if name not in encoder:  # pooler and classifier untouched
            assert torch.equal(w, before[name]), name
            continue
        groups = w.view(w.shape[0], -1, 4)  # (out, in / 4, 4): 4 consecutive inputs of a row
        zero = groups == 0
        assert torch.equal(zero.all(-1), zero.any(-1)), f"{name}: a group of 4 is partly pruned"
        pruned = zero.all(-1)
        assert int(pruned.sum()) == round(sparsity * pruned.numel()), name
        assert got[name] == pytest.approx(float(pruned.float().mean()))
        norms = before[name].view(w.shape[0], -1, 4).norm(dim=-1)
        assert norms[~pruned].min() >= norms[pruned].max(), f"{name}: a kept group is smaller than a pruned one"
        assert torch.equal(w[w != 0], before[name][w != 0])  # the kept weights do not move


def test_unstructured_prunes_exactly_the_smallest_weights(dk) -> None:
    model = tiny_model("bert", seed=2)
    before = _weights(model)
    got = dk.prune(model, 0.8, 1)
    for name, frac in got.items():
        w, w0 = dict(model.named_modules())[name].weight.detach(), before[name]
        zero = w == 0
        assert int(zero.sum()) == round(0.8 * w.numel()) and frac == pytest.approx(float(zero.float().mean()))
        assert w0[~zero].abs().min() >= w0[zero].abs().max()
        # not a 4-block pattern by accident: some group of 4 is partly pruned
        g = zero.view(w.shape[0], -1, 4)
        assert not torch.equal(g.all(-1), g.any(-1))


def test_block4_refuses_rows_not_divisible_by_four(dk) -> None:
    model = tiny_model("bert", intermediate_size=66)  # ffn out reads 66 inputs
    with pytest.raises(ValueError, match="66 inputs are not a multiple of the group size 4"):
        dk.prune(model, 0.8, 4)


def table(**changes: float) -> dict[str, dict[str, float]]:
    """p50 ms at b32 (b1 = b32 / 20): QDQ slower than fp32 (no int8 kernels), qoperator and matmulinteger int8,
    block4 sparse int8 1.36-1.4x its dense file, unstructured ~1.04x, sparse fp32 ~1.6-1.8x."""
    b32 = {"ort_fp32": 300.0,
           "dense.fp32": 250.0, "dense.qdq": 300.0, "dense.qoperator": 150.0, "dense.matmulinteger": 140.0,
           "unstructured_80.fp32": 160.0, "unstructured_80.qdq": 290.0, "unstructured_80.qoperator": 145.0,
           "unstructured_80.matmulinteger": 135.0,
           "block4_80.fp32": 140.0, "block4_80.qdq": 280.0, "block4_80.qoperator": 110.0,
           "block4_80.matmulinteger": 100.0}
    b32.update({k.replace("__", "."): v for k, v in changes.items()})
    return {k: {"b32xs128": v, "b1xs128": v / 20} for k, v in b32.items()}


def test_derived_ratios_from_the_table(dk) -> None:
    specs = dk.model_specs([0.8])
    assert [s["key"] for s in specs] == ["dense", "unstructured_80", "block4_80"]
    d = dk.derive(table(), specs, dk.FORMATS, cpu_isa=["avx512_vnni"], version="1.8.0")
    assert d["headline_shape"] == "b32xs128"
    cell = d["cells"]["block4_80"]["matmulinteger"]
    assert cell["b32_ms"] == 100.0 and cell["b32_speedup_vs_ort_fp32"] == 3.0 and cell["b1_ms"] == 5.0
    assert d["sparse_over_dense"]["block4_80"]["matmulinteger"] == {"b32": 1.4, "b1": 1.4}
    assert d["sparse_over_dense"]["unstructured_80"]["fp32"]["b32"] == pytest.approx(1.562, abs=1e-3)
    assert d["int8_over_fp32"]["dense"]["qdq"]["b32"] == pytest.approx(0.833, abs=1e-3)
    assert "dense" not in d["sparse_over_dense"] and "fp32" not in d["int8_over_fp32"]["dense"]
    json.dumps(d)  # a results file holds it as is


def test_verdict_follows_the_numbers(dk) -> None:
    specs = dk.model_specs([0.8])
    v = dk.derive(table(), specs, dk.FORMATS, cpu_isa=["avx512_vnni"], version="1.8.0")["verdict"]
    assert "DeepSparse 1.8.0" in v and "avx512_vnni" in v and "nothing is scored" in v
    assert "for: qoperator 1.67x, matmulinteger 1.79x; not for: qdq 0.83x" in v
    assert "Sparse fp32 kernels engage" in v and "for: unstructured_80 1.56x, block4_80 1.79x; not for: none" in v
    assert ("for: block4_80 qoperator 1.36x, block4_80 matmulinteger 1.40x; not for: unstructured_80 qoperator "
            "1.03x, unstructured_80 matmulinteger 1.04x (not judged: qdq, whose int8 kernels do not run)") in v
    assert "block4_80 matmulinteger 3.00x ort_fp32: target 3.0x met" in v
    # one cell slower: block4 MatMulInteger no longer engages, the target is missed, qoperator is the best file
    v2 = dk.derive(table(block4_80__matmulinteger=140.0), specs, dk.FORMATS)["verdict"]
    assert "not for: unstructured_80 qoperator 1.03x, unstructured_80 matmulinteger 1.04x, block4_80 " \
           "matmulinteger 1.00x" in v2
    assert "block4_80 qoperator 2.73x ort_fp32: target 3.0x not met" in v2
    # QDQ that runs int8: it is judged for sparse int8 too
    v3 = dk.derive(table(dense__qdq=150.0, block4_80__qdq=100.0), specs, dk.FORMATS)["verdict"]
    assert "not judged" not in v3 and "block4_80 qdq 1.50x" in v3


def test_verdict_at_b1_only_and_without_the_target_sparsity(dk) -> None:
    specs = dk.model_specs([0.9])
    t = {k.replace("_80", "_90"): {"b1xs128": v["b1xs128"]} for k, v in table().items()}
    d = dk.derive(t, specs, dk.FORMATS)
    assert d["headline_shape"] == "b1xs128" and set(d["cells"]["block4_90"]["qdq"]) == {
        "b1_ms", "b1_speedup_vs_ort_fp32"}
    assert "At b1xs128" in d["verdict"] and "not judged, no sparse int8 file at 80% was timed" in d["verdict"]


def test_smoke_never_writes_the_committed_results(dk, tmp_path) -> None:
    a = dk._args(["--smoke", "--sparsities", "0.8", "0.9", "--out", str(tmp_path)])
    assert (a.sparsities, a.batches, a.runs) == ([0.8], [1], 2)
    assert a.results == tmp_path / "smoke_results.json" != dk.RESULTS
    assert dk._args([]).results == dk.RESULTS
    with pytest.raises(SystemExit):
        dk._args(["--sparsities", "80"])


def test_a_build_dir_with_other_calibration_is_refused(dk, tmp_path) -> None:
    specs = dk.model_specs([0.8])
    (tmp_path / "dense").mkdir()
    (tmp_path / "dense" / "build.json").write_text(json.dumps({"calibration_examples": 32, "seed": 0,
                                                                "sparsity": 0.0}))
    dk.check_builds(tmp_path, specs, 32, 0)  # same settings: reused
    with pytest.raises(SystemExit, match="built with other settings.*calibration_examples.*32, 128"):
        dk.check_builds(tmp_path, specs, 128, 0)
