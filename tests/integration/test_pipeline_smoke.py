"""The real embedded MiniLM on small slices of real SST-2 / STS-B, end to end (debug=smoke)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compresslab.config import compose
from compresslab.manifest import read_json
from compresslab.pipeline import run

pytestmark = pytest.mark.integration


def _cfg(tmp_path: Path, data_root: Path, out: str, *extra: str, pipeline: str = "int8"):
    return compose([f"+pipeline={pipeline}", "debug=smoke", f"data.root={data_root}", "run.threads=1",
                    f"paths.output_dir={tmp_path}/{out}", f"paths.cache_dir={tmp_path}/{out}-cache", *extra])


def _final_metrics(run_dir: Path) -> dict:
    return read_json(run_dir / "eval" / "metrics.json")["models"]


def test_int8_smoke_end_to_end_then_interrupted_run_resumes_to_same_result(tmp_path, data_root):
    # OpenVINO at its default precision only (as `make demo`): on a CPU without bf16 the f32 pair times and
    # scores the same compiled graphs again; both precisions run in make test-e2e
    full = run(_cfg(tmp_path, data_root, "full", "bench.openvino_precisions=[default]"))
    m = read_json(full / "manifest.json")
    assert m["status"] == "finished" and [s["status"] for s in m["steps"]] == ["done", "done"]
    for f in ("report.md", "report.html", "export/model.onnx", "export/parity.json", "steps/00_finetune/model.safetensors",
              "steps/00_finetune/config.json", "steps/01_int8/model.onnx", "steps/01_int8/config.json",
              "bench/latency.json", ".hydra/config.yaml"):
        assert (full / f).is_file(), f
    assert m["export"]["fp32"]["parity"]["max_abs_diff"] <= m["export"]["fp32"]["parity"]["atol"]
    assert m["export"]["fp32"]["fused_attention_nodes"] == 6
    ev = m["eval"]["models"]
    assert set(ev) >= {"teacher_torch", "torch_final", "ort_fp32", "deployed"}
    assert ev["ort_fp32"]["agreement"] == 1.0  # the fp32 export predicts exactly what torch predicts
    assert m["size"]["deployed"]["encoder"] < 0.3 * m["size"]["ort_fp32"]["encoder"]
    assert {"ort_fp32", "deployed", "torch_fp32"} <= set(m["bench"]["latency"])
    assert m["hardware"]["cpu"]["model"] and m["versions"]["torch"].startswith("2.13")

    # interrupted after step 1, then the same command again: resumes, same final metrics. Its own
    # teacher cache, so the teacher is fine-tuned again (determinism is part of "same result"); no
    # bench stage: resuming concerns the steps, and the bench stage was checked on the full run above
    cfg = _cfg(tmp_path, data_root, "resumed", "bench.enabled=false")
    stopped = run(_cfg(tmp_path, data_root, "resumed", "bench.enabled=false", "run.stop_after=1"))
    s = read_json(stopped / "manifest.json")
    assert s["status"] == "stopped" and [x["name"] for x in s["steps"]] == ["finetune"]
    done = run(cfg)
    assert done == stopped
    a, b = _final_metrics(full), _final_metrics(done)
    for label in ("teacher_torch", "deployed"):
        assert a[label]["score"] == pytest.approx(b[label]["score"])

    # a finished run is never redone without run.overwrite=true
    before = (done / "manifest.json").stat().st_mtime_ns
    assert run(cfg) == done
    assert (done / "manifest.json").stat().st_mtime_ns == before


def test_stsb_embedding_int8_smoke(tmp_path, data_root):
    d = run(_cfg(tmp_path, data_root, "emb", "task=stsb_embedding", "bench.enabled=false"))
    m = read_json(d / "manifest.json")
    ev = m["eval"]["models"]
    assert m["eval"]["primary_metric"] == "spearman"
    assert ev["teacher_torch"]["score"] > 0.6  # the pretrained embedder is a good STS model
    assert abs(ev["deployed"]["score"] - ev["teacher_torch"]["score"]) < 0.05
    json.dumps(m)


# Each compression pipeline once more with its own assertions (sparse file sizes, heads removed); these
# are minutes of real-model work, so they run with the other end-to-end runs (`make test-e2e`).
@pytest.mark.e2e
@pytest.mark.parametrize("pipeline,extra", [
    ("magnitude_int8", []),
    ("obert_int8", []),
    ("ziplm_int8", ["pipeline.passes.ziplm.batch=8", "pipeline.passes.ziplm.seq=32", "pipeline.passes.ziplm.speedup=1.3",
                    "pipeline.passes.ziplm.num_calibration=64", "pipeline.passes.ziplm.latency_runs=5",
                    "pipeline.passes.ziplm.check_runs=5"]),
])
def test_compression_pipelines_smoke(tmp_path, data_root, pipeline, extra):
    d = run(_cfg(tmp_path, data_root, pipeline, "bench.enabled=false", *extra, pipeline=pipeline))
    m = read_json(d / "manifest.json")
    assert m["status"] == "finished" and all(s["status"] == "done" for s in m["steps"])
    step = m["steps"][1]
    if pipeline == "ziplm_int8":
        structure, metrics = step["result"]["structure"], step["result"]["metrics"]
        # structure really removed and the shrunk model measured faster than the dense one. Which structure
        # goes (heads, FFN neurons or both) is the DP's choice under measured latencies: at 1.3x it may keep
        # every head (CI once saw 12 heads in all 6 layers and FFN-only shrinking), so neither kind alone is
        # asserted; nor is meeting 1.3x at b8 x s32 with 5 timing rounds (timing noise, not correctness)
        removed = 6 * 12 - sum(structure["heads"]) + 6 * 1536 - sum(structure["ffn"])
        measured = [v for k, v in metrics.items() if k.startswith("measured_speedup_b")]
        assert removed > 0 and metrics["params"] < metrics["params_dense"]
        assert measured and measured[0] > 1.0
    else:
        assert step["result"]["metrics"]["sparsity"] == pytest.approx(0.5 if pipeline == "magnitude_int8" else 0.8,
                                                                      abs=1e-3)
        assert (d / step["dir"] / "model.sparse.safetensors").is_file()
        ratio = 5 if pipeline == "magnitude_int8" else 10  # int8 alone gives 4x; the bitmask adds the rest
        assert m["size"]["sparse_int8"]["encoder"] < m["size"]["ort_fp32"]["encoder"] / ratio
    assert m["eval"]["models"]["deployed"]["score"] > 0


def test_hawq_mp3_smoke_deploys_matmul_nbits_and_packed_checkpoint(tmp_path, data_root):
    """Hessian MP at 3 average bits + QAT on the real MiniLM: MatMulNBits graph at parity with the
    fake-quant model, the packed n-bit checkpoint restored by compresslab.load, sizes as promised."""
    import onnx

    import compresslab
    from compresslab.models.quantized import quantized_modules

    d = run(_cfg(tmp_path, data_root, "hawq", "bench.enabled=false", pipeline="hawq_mp3"))
    m = read_json(d / "manifest.json")
    assert m["status"] == "finished" and all(s["status"] == "done" for s in m["steps"])
    hawq, nbits = m["steps"][1]["result"]["metrics"], m["steps"][2]["result"]["metrics"]
    assert hawq["avg_bits"] <= 3.0 + 1e-9 and hawq["qat"]["steps"] > 0
    assert nbits["parity"]["max_abs_diff"] <= 1e-3
    graph = onnx.load(str(d / m["eval"]["deployed_path"]), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulNBits") == 36 and "GatherBlockQuantized" in ops
    assert m["size"]["deployed"]["encoder"] < m["size"]["ort_fp32"]["encoder"] / 6
    step = d / m["steps"][1]["dir"]
    (step / "model.safetensors").unlink()  # the packed file alone restores the model
    back = compresslab.load(step)
    assert len(quantized_modules(back)) == 37  # 36 encoder Linears + word embeddings
    assert m["eval"]["models"]["deployed"]["agreement"] > 0.5
