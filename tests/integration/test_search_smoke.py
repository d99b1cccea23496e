"""``python -m compresslab +search=auto`` end to end on a tiny random BERT (``debug=smoke``), a space of
two entries (int8, oBERT 50% + int8), through the CLI; then the same command again resumes and runs
nothing. What must hold: every candidate is a normal run scored on validation, the choice and its dev
score are in search.json, the best model is copied under best/, and a pass setting reaches only the
pipelines that have that step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from compresslab.manifest import read_json
from compresslab.search.driver import EXIT_WEAK_TEACHER
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.testing import tiny_sentiment, write_csv

DROP = [f"~search.space.{e}" for e in ("guided_int8", "ziplm", "w4", "mixed_precision", "ziplm_int8",
                                       "ziplm_obert_int8")]


def _args(root: Path) -> list[str]:
    tiny_tokenizer(root / "model").save_pretrained(root / "model")
    tiny_model("bert").save_pretrained(root / "model")
    for name, n, seed in (("train", 96, 0), ("dev", 32, 1)):
        write_csv(root / f"{name}.csv", ["text", "label"], [[e.text_a, str(e.label)] for e in tiny_sentiment(n, seed)])
    return ["+search=auto", "debug=smoke", "model=local", f"model.source={root / 'model'}", "task=generic",
            f"task.generic.train={root / 'train.csv'}", f"task.generic.dev={root / 'dev.csv'}", "task.max_length=32",
            f"paths.output_dir={root / 'out'}", f"paths.cache_dir={root / 'cache'}", "report=false", "run.threads=1",
            "bench.backends=[ort]", "+search.passes.obert.grad_batch_size=4", *DROP,
            "search.space.obert_int8.values=[0.5]", "search.max_drop=60", "search.margin=0",
            "search.time_budget_s=1200", "search.unit_s=1"]


def _cli(root: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "compresslab", *args], cwd=root, capture_output=True, text=True,
                         timeout=900, env=env)
    assert out.returncode in (0, EXIT_WEAK_TEACHER), out.stderr[-3000:]
    return out


def test_search_cli_smoke_then_resume(tmp_path):
    args = _args(tmp_path)
    out = _cli(tmp_path, args)
    (path,) = (tmp_path / "out" / "search").glob("*/search.json")
    data = read_json(path)
    # a tiny random BERT after smoke's few fine-tuning steps is a teacher at chance: the search still chooses, says
    # so and exits 5 (search.driver.EXIT_WEAK_TEACHER); with a usable teacher it exits 0 and says "best model:"
    if data["weak_teacher"]:
        assert out.returncode == EXIT_WEAK_TEACHER and "TEACHER NO BETTER THAN CHANCE" in out.stdout
        assert "model chosen against a teacher no better than chance" in out.stdout
    else:
        assert out.returncode == 0 and "best model:" in out.stdout
    assert "chose " in out.stdout  # after the chance-teacher preamble, when there is one
    assert data["status"] == "finished" and data["met"]
    cands = {c["name"]: c for c in data["candidates"]}
    assert list(cands) == ["int8", "obert_int8[obert.sparsity=0.5]"]
    assert all(c["status"] == "ok" for c in cands.values())
    for c in cands.values():  # each a normal run, in its pipeline's dir, scored on validation
        m = read_json(Path(c["run_dir"]) / "manifest.json")
        assert m["status"] == "finished" and m["eval"]["split"] == "validation"
        assert Path(c["run_dir"]).parent.name == c["pipeline"]
        assert c["val_score"] == pytest.approx(m["eval"]["models"]["deployed"]["score"])
        assert c["speedup"] == pytest.approx(m["bench"]["speedups_best_dense"]["deployed"]["b4xs32"])
        assert c["size_bytes"] == m["size"]["deployed"]["total"]
        passes = m["config"]["pipeline"]["passes"]
        assert passes.get("obert", {}).get("grad_batch_size", 4) == 4 and ("obert" in passes) == ("obert" in c["name"])
    chosen = data["chosen"]
    assert chosen["name"] in cands and chosen["dev_score"] is not None and data["teacher_dev"] is not None
    assert data["teacher_val"] == pytest.approx(cands["int8"]["teacher_val"])
    best = path.parent / "best"
    choice = read_json(best / "choice.json")  # the deployed artifact: an ONNX file or an OpenVINO IR (deploy=auto)
    assert choice["name"] == chosen["name"] and (path.parent / choice["file"]).is_file()
    assert data["front"] and data["best_single"]["name"] == "int8"

    # the same command again: read back, nothing rerun (no manifest rewritten)
    stamps = {n: (Path(c["run_dir"]) / "manifest.json").stat().st_mtime_ns for n, c in cands.items()}
    again = _cli(tmp_path, args)
    assert "finished earlier" in again.stdout + again.stderr
    assert {n: (Path(c["run_dir"]) / "manifest.json").stat().st_mtime_ns for n, c in cands.items()} == stamps
    assert read_json(path)["chosen"]["name"] == chosen["name"]
