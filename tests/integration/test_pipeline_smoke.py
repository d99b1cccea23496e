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
    # ORT dynamic int8 takes one activation scale per call: scored one sentence per call too; the fp32 file not
    bd = m["eval"]["batch_dependence"]
    assert set(bd) == {"deployed"} and "DynamicQuantizeLinear" in bd["deployed"]["ops"]
    assert bd["deployed"]["score_batched"] == pytest.approx(ev["deployed"]["score"])
    assert 0 <= bd["deployed"]["flips"] <= m["eval"]["n"] and 0.0 <= bd["deployed"]["agreement_b1"] <= 1.0
    assert m["size"]["deployed"]["encoder"] < 0.3 * m["size"]["ort_fp32"]["encoder"]
    bench = m["bench"]
    assert {"ort_fp32", "deployed", "torch_fp32", "ort_int8"} <= set(bench["latency"])
    # the teacher's ORT dynamic int8 is a dense baseline a user gets in one call: timed, scored, counted
    assert "ort_int8" in bench["dense_runners"] and bench["precision"]["ort_int8"] == "int8"
    assert 0.5 <= bench["scores"]["ort_int8"]["agreement"] <= 1.0
    for shape, best in bench["best_dense"].items():
        assert best["p50_ms"] == min(bench["latency"][n][shape]["p50_ms"] for n in bench["dense_runners"])
    assert bench["size_bytes"]["ort_int8"] < 0.5 * bench["size_bytes"]["ort_fp32"]
    # ort_int8 is ORT's one-call recipe (one scale per embedding table); the pass stores the word table block-wise
    # (embeddings: blockwise), so the deployed file is not that file byte for byte, and the bench must not say so
    assert bench["deployed_same_file_as"] is None
    assert m["steps"][1]["result"]["structure"]["embeddings"] == "blockwise"
    # no torch pass changed the model: its OpenVINO cells would time the teacher's file again
    assert not any(n.startswith(("final_fp32_openvino", "deployed_openvino")) for n in bench["latency"])
    assert any("openvino_* stand for them" in n for n in bench["notes"]) or "openvino" in bench["skipped"]
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
    assert m["eval"]["batch_dependence"]["deployed"]["max_abs_diff"] >= 0.0  # embeddings: no labels to flip
    json.dumps(m)


# The compression pipelines' own promises (sparse sizes, structure removed, the n-bit graph and packed
# checkpoint of hawq_mp3) are checked on their end-to-end runs: tests/e2e/test_pipelines_e2e.py (make test-e2e).


def test_int8_per_token_smoke_deploys_a_batch_independent_file(tmp_path, data_root):
    """``activations=per_token`` end to end on the real model: the deployed file has no per-call scale left (so
    the eval stage finds nothing batch-dependent), Attention stays fp32, and the parity-checked export scores."""
    from compresslab.export import count_ops

    d = run(_cfg(tmp_path, data_root, "tok", "bench.enabled=false", "pipeline.passes.int8.activations=per_token"))
    m = read_json(d / "manifest.json")
    assert m["status"] == "finished"
    step = next(s for s in m["steps"] if s["name"] == "int8")
    assert step["result"]["metrics"]["per_token"]["rewritten"] > 0
    ops = count_ops(d / "steps" / "01_int8" / "model.onnx")
    assert "DynamicQuantizeLinear" not in ops and ops["MatMulIntegerToFloat"] > 0 and ops["Attention"] == 6
    assert "batch_dependence" not in m["eval"]
    ev = m["eval"]["models"]
    assert ev["deployed"]["agreement"] >= 0.9
