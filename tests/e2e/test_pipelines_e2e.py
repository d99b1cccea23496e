"""Every shipped pipeline, end to end, with every fixed stage on (`make test-e2e`).

The real embedded MiniLM on small slices of real data (`debug=smoke`), with export, eval, sizes,
the latency bench and the load probe all switched on (`debug=smoke` turns the load probe off; it
is turned back on here). The pipelines are read from `compresslab/conf/pipeline/` when the tests
are collected, so a new pipeline is covered without touching this file. A pipeline whose passes
are too slow at their defaults gets smoke overrides per pass (PASS_SMOKE), never a different
target: ziplm_2x keeps its 2x speedup so the path that once crashed the bench stage still runs.
A pipeline with promises of its own (sparse file sizes, structure removed, n-bit graph) gets them checked
on the same run (EXTRA_CHECKS), so no pipeline runs twice in CI. The e2e runs share one teacher cache per
test process, as a user's runs share theirs: the smoke teacher is fine-tuned once, not once per pipeline.
"""

from __future__ import annotations

import importlib.util
import numbers
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from compresslab.config import available_pipelines, compose
from compresslab.manifest import read_json
from compresslab.pipeline import run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# Shrinks a pass's own measurement work (the latency table, calibration); keyed by pass name, so any
# pipeline using that pass gets it. Targets (sparsity, speedup) stay the pipeline's own.
PASS_SMOKE: dict[str, list[str]] = {
    "ziplm": ["batch=8", "seq=32", "num_calibration=64", "latency_runs=5", "check_runs=5"],
}


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-cache")


def _overrides(pipeline: str, tmp_path: Path, data_root: Path, cache: Path) -> list[str]:
    base = [f"+pipeline={pipeline}", "debug=smoke", f"data.root={data_root}", "run.threads=1",
            f"paths.output_dir={tmp_path}/out", f"paths.cache_dir={cache}",
            "bench.enabled=true", "bench.load_probe=true"]
    passes = compose(base).pipeline.passes
    return base + [f"pipeline.passes.{name}.{o}" for name, opts in PASS_SMOKE.items() if name in passes
                   for o in opts]


def _numbers(d: Any) -> list[float]:
    """Every number in a nested dict/list (bools excluded)."""
    if isinstance(d, dict):
        return [x for v in d.values() for x in _numbers(v)]
    if isinstance(d, list):
        return [x for v in d for x in _numbers(v)]
    return [d] if isinstance(d, numbers.Number) and not isinstance(d, bool) else []


def _sparse_int8(run_dir: Path, m: dict, *, sparsity: float, ratio: float) -> None:
    """Sparse pipelines: the sparsity reached and the sparse int8 file's size (int8 alone gives 4x; the
    bitmask adds the rest)."""
    step = m["steps"][1]
    assert step["result"]["metrics"]["sparsity"] == pytest.approx(sparsity, abs=1e-3)
    assert (run_dir / step["dir"] / "model.sparse.safetensors").is_file()
    assert m["size"]["sparse_int8"]["encoder"] < m["size"]["ort_fp32"]["encoder"] / ratio
    assert m["eval"]["models"]["deployed"]["score"] > 0


def _ziplm_int8(run_dir: Path, m: dict) -> None:
    """Structure really removed and the shrunk model measured faster than the dense one. Which structure
    goes (heads, FFN neurons or both) is the DP's choice under measured latencies (CI once saw 12 heads in
    all 6 layers and FFN-only shrinking), so neither kind alone is asserted; nor is meeting the target at
    b8 x s32 with 5 timing rounds (timing noise, not correctness)."""
    structure, metrics = m["steps"][1]["result"]["structure"], m["steps"][1]["result"]["metrics"]
    removed = 6 * 12 - sum(structure["heads"]) + 6 * 1536 - sum(structure["ffn"])
    measured = [v for k, v in metrics.items() if k.startswith("measured_speedup_b")]
    assert removed > 0 and metrics["params"] < metrics["params_dense"]
    assert measured and measured[0] > 1.0
    assert m["eval"]["models"]["deployed"]["score"] > 0


def _hawq_mp3(run_dir: Path, m: dict) -> None:
    """Hessian MP at 3 average bits + QAT: MatMulNBits graph at parity with the fake-quant model, the packed
    n-bit checkpoint restored by compresslab.load, sizes as promised."""
    import onnx

    import compresslab
    from compresslab.models.quantized import quantized_modules

    hawq, nbits = m["steps"][1]["result"]["metrics"], m["steps"][2]["result"]["metrics"]
    assert hawq["avg_bits"] <= 3.0 + 1e-9 and hawq["qat"]["steps"] > 0
    assert nbits["parity"]["max_abs_diff"] <= 1e-3
    ops = [n.op_type for n in onnx.load(str(run_dir / m["eval"]["deployed_path"]), load_external_data=False).graph.node]
    assert ops.count("MatMulNBits") == 36 and "GatherBlockQuantized" in ops
    assert m["size"]["deployed"]["encoder"] < m["size"]["ort_fp32"]["encoder"] / 6
    step = run_dir / m["steps"][1]["dir"]
    (step / "model.safetensors").unlink()  # the packed file alone restores the model
    assert len(quantized_modules(compresslab.load(step))) == 37  # 36 encoder Linears + word embeddings
    assert m["eval"]["models"]["deployed"]["agreement"] > 0.5


EXTRA_CHECKS = {"magnitude_int8": partial(_sparse_int8, sparsity=0.5, ratio=5),
                "obert_int8": partial(_sparse_int8, sparsity=0.8, ratio=10),
                "ziplm_int8": _ziplm_int8, "hawq_mp3": _hawq_mp3}


def test_extra_checks_name_shipped_pipelines():
    assert set(EXTRA_CHECKS) <= set(available_pipelines())


@pytest.mark.parametrize("pipeline", available_pipelines())
def test_pipeline_end_to_end_with_every_stage(pipeline, tmp_path, data_root, shared_cache):
    run_dir = run(compose(_overrides(pipeline, tmp_path, data_root, shared_cache)))
    m = read_json(run_dir / "manifest.json")
    assert m["status"] == "finished"
    assert m["steps"] and all(s["status"] == "done" for s in m["steps"]), [(s["name"], s["status"]) for s in m["steps"]]
    assert (run_dir / "report.md").is_file() and (run_dir / "report.md").stat().st_size > 0

    parity = m["export"]["fp32"]["parity"]
    assert parity["passed"], parity  # every parity report carries its verdict, whatever rule judged it
    if "rule" in parity:  # binary / QDQ: flips allowed on a few examples, judged by their own rule
        assert parity["argmax_agreement"] >= 0.9, parity
    else:  # fp32 graphs: every example within the report's own tolerance
        assert parity["max_abs_diff"] <= parity["atol"], parity
    assert (run_dir / "export" / "model.onnx").is_file()

    ev = m["eval"]["models"]
    assert {"teacher_torch", "ort_fp32", "deployed"} <= set(ev)
    assert all(isinstance(ev[k]["score"], numbers.Number) for k in ev)
    assert 0 < m["size"]["deployed"]["encoder"]

    bench = m["bench"]
    assert {"ort_fp32", "deployed"} <= set(bench["latency"])
    for name in ("ort_fp32", "deployed"):
        for shape, r in bench["latency"][name].items():
            assert r["p50_ms"] > 0, (name, shape)
    assert _numbers(bench["speedups"]["deployed"]) and all(x > 0 for x in _numbers(bench["speedups"]["deployed"]))
    # the model's cells are "deployed_openvino_*" unless the deployed file is ORT-only and no int8 IR of it was made
    model_ov = "deployed_openvino" if "deployed_openvino_default" in bench["latency"] else "final_fp32_openvino"
    ov = {"openvino_default", "openvino_f32", f"{model_ov}_default", f"{model_ov}_f32"}
    if any("openvino_* stand for them" in n for n in bench["notes"]):  # the model's file is the teacher's: not re-timed
        ov = {"openvino_default", "openvino_f32"}
        assert not any(n.startswith(model_ov) for n in bench["latency"])
    if importlib.util.find_spec("openvino") is not None:  # issue 9: every backend, precision and file recorded
        assert model_ov == "deployed_openvino" or any("cannot read the deployed" in n for n in bench["notes"])
        assert ov <= set(bench["latency"]) and ov <= set(bench["scores"]), sorted(bench["latency"])
        # a quantized file (QDQ graph, int8 IR) says so: int8 ops run int8, the rest as compiled
        assert all(bench["precision"][n].removeprefix("int8+") in ("f32", "bf16") and bench["files"][n] for n in ov)
        assert all(bench["precision"][n] in ("f32", "bf16") for n in ov if n.startswith(("openvino_", "final_fp32_")))
    else:
        assert "openvino" in bench["skipped"]
    assert set(bench["best_dense"]) == set(bench["latency"]["ort_fp32"])
    assert "ort_int8" in bench["dense_runners"] and "ort_int8" in bench["scores"]  # the teacher's int8 counts
    assert bench["best_dense"][next(iter(bench["best_dense"]))]["runner"] in bench["dense_runners"]
    load = bench["load"]
    # load time and peak RSS of the deployed file and the dense baseline; with OpenVINO also each dense openvino_<p>
    # cell (a deployed IR is probed under "deployed", its ONNX as deployed_onnx_ort)
    dense_ov = {n for n in ("openvino_default", "openvino_f32") if n in bench["latency"]}
    assert {"ort_fp32", "deployed"} | dense_ov <= set(load), sorted(load)
    assert set(load) <= {"ort_fp32", "deployed", "deployed_onnx_ort"} | dense_ov, sorted(load)
    for name, r in load.items():
        assert r["load_s"] > 0 and r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0, (name, r)
    assert (run_dir / "bench" / "latency.json").is_file()
    if pipeline in EXTRA_CHECKS:
        EXTRA_CHECKS[pipeline](run_dir, m)
