"""build_report on a full, a partial and a malformed manifest; atomic regeneration."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from compresslab.report import build_report, plots, write_atomic

FIXTURE = Path(__file__).with_name("manifest_full.json")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRIPT_NOTE = "a | b < c & d <script>alert(1)</script>"


def full_manifest() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def write_run(root: Path, manifest: dict[str, Any]) -> Path:
    run = root / "outputs" / "obert_int8" / "a41c9e07"
    run.mkdir(parents=True, exist_ok=True)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], bytes]:
    """One build of the full fixture (plots cost ~1 s), shared by the read-only tests below."""
    m = full_manifest()
    m["bench"]["notes"].append(SCRIPT_NOTE)  # user text that must come out escaped
    run = write_run(tmp_path_factory.mktemp("full"), m)
    before = (run / "manifest.json").read_bytes()
    return run, build_report(run), before


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip drawing where a test only reads the text (keeps the suite fast)."""
    monkeypatch.setattr(plots, "PLOTS", {})


def partial_manifest() -> dict[str, Any]:
    """A run killed mid-pruning: finetune done, obert running, no export/eval/size/bench."""
    m = full_manifest()
    for key in ("export", "eval", "size", "bench"):
        del m[key]
    m["status"] = "running"
    m["steps"] = m["steps"][:2]
    m["steps"][1]["status"] = "running"
    del m["steps"][1]["metrics_after"]
    del m["steps"][1]["result"]
    return m


def test_full_manifest_writes_md_html_and_plots(full_report: tuple[Path, dict[str, Path], bytes]) -> None:
    run, written, manifest_before = full_report
    assert (run / "manifest.json").read_bytes() == manifest_before  # the report only reads
    assert set(written) == {"report.md", "report.html", "plots/score_vs_latency.png",
                            "plots/size_per_step.png", "plots/layer_sparsity.png",
                            "plots/structure.png"}
    for rel, path in written.items():
        assert path == run / rel and path.stat().st_size > 0
        if rel.endswith(".png"):
            assert path.read_bytes().startswith(PNG_MAGIC)


def test_markdown_has_formatted_headline_numbers(full_report: tuple[Path, dict[str, Path], bytes]) -> None:
    md = full_report[1]["report.md"].read_text()
    headline = md.split("## Headline")[1].split("## Steps")[0]
    deployed = next(line for line in headline.splitlines() if line.startswith("| deployed"))
    # label, score %, delta pt (over the 1 pt default tolerance), agreement %, McNemar p, MB, then the
    # largest shape only (b32xs128): p50 and speedup; every shape is in the Speed section
    assert [c.strip() for c in deployed.strip("|").split("|")] == [
        "deployed_ort_int8", "89.68", "-1.49 ⚠", "94.15", "0.0412", "23.1", "38.7", "2.49x"]
    ort = next(line for line in headline.splitlines() if line.startswith("| ort_fp32"))
    assert "91.0" in ort and "1.00x" in ort  # the denominator is 1.00x by definition
    assert "![score vs latency](plots/score_vs_latency.png)" in md
    # per-step table, skipped modules, parity, size, notes, environment footer
    assert "| 01 obert | torch | done | 45 min 10 s | 91.17 | 90.02 | 95.53 | 22.71M | 90.9 | 80.0 |" in md
    assert "classifier — out_features < 64: too small to prune" in md  # plain: no tag opens with "< "
    assert "| verdict | ok |" in md and "| max_abs_diff | 3.1e-06 |" in md
    assert "| sparse_int8 | 4.22 | 16.5 | 10.10x | 5.50x | — | — |" in md
    assert "ORT runs sparse weights with dense kernels" in md
    assert "| isa | avx2, avx512f, avx512_vnni, amx_int8 |" in md
    assert "| seed | 42 |" in md and "| config_hash | a41c9e07 |" in md
    assert "python -m compresslab +pipeline=obert_int8" in md
    assert "Missing from the manifest" not in md and "Run status" not in md


def test_html_is_self_contained_and_escaped(full_report: tuple[Path, dict[str, Path], bytes]) -> None:
    html = full_report[1]["report.html"].read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 4
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert 'src="plots/' not in html and "<link" not in html  # nothing outside the file
    assert "<script>" not in html
    assert "a | b &lt; c &amp; d &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "out_features &lt; 64" in html
    assert "<style>" in html and html.rstrip().endswith("</html>")


def test_markdown_escapes_pipes_and_tags(tmp_path: Path, no_plots: None) -> None:
    m = full_manifest()
    m["model_id"] = "<b>x</b>"
    m["hardware"]["cpu_model"] = "cpu | with pipe"
    md = build_report(write_run(tmp_path, m))["report.md"].read_text()
    assert not re.search(r"(?<!\\)<b>", md) and "\\<b>x\\</b>" in md  # shown as <b>x</b>, never a tag
    assert "| cpu_model | cpu \\| with pipe |" in md  # a raw pipe would split the row


def test_partial_running_manifest_says_what_is_missing(tmp_path: Path) -> None:
    written = build_report(write_run(tmp_path, partial_manifest()))
    md = written["report.md"].read_text()
    assert "Run status: running" in md
    assert "Missing from the manifest: export, eval, size, bench." in md
    assert "No headline: the manifest has neither `eval` nor `bench` results." in md
    assert "Not available: the manifest has no `bench` section." in md
    assert "Not available: the manifest has no `export` section." in md
    assert "| 01 obert | torch | running |" in md
    assert "plots/score_vs_latency.png" not in written
    assert "plots/size_per_step.png" in written  # finetune's size is known
    assert "Run status: running" in written["report.html"].read_text()


def test_eval_without_bench_keeps_scores(tmp_path: Path, no_plots: None) -> None:
    m = full_manifest()
    del m["bench"]
    md = build_report(write_run(tmp_path, m))["report.md"].read_text()
    assert "| deployed_ort_int8 | 89.68 | -1.49 ⚠ |" in md
    assert "Not available: the manifest has no `bench` section." in md


@pytest.mark.parametrize("manifest", [
    {},
    {"status": "failed", "steps": []},
    {"steps": [{"index": "x", "metrics_after": "oops", "result": []}, 3],
     "eval": {"models": {"a": {"score": "high"}}}, "bench": {"shapes": "b1", "latency": []},
     "export": {"fp32": None}, "size": {"fp32": 12}, "hardware": ["cpu"], "versions": None},
])
def test_degenerate_manifests_do_not_crash(tmp_path: Path, manifest: dict[str, Any]) -> None:
    written = build_report(write_run(tmp_path, manifest))
    md = written["report.md"].read_text()
    assert md.startswith("# compresslab:")
    assert "Missing from the manifest" in md


def test_regenerating_overwrites_and_leaves_no_temp_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "PLOTS", {"score_vs_latency.png": plots.score_vs_latency})
    m = full_manifest()
    run = write_run(tmp_path, m)
    first = build_report(run)
    assert "89.68" in first["report.md"].read_text()
    m["eval"]["models"]["deployed"]["score"] = 0.9011
    del m["bench"]  # the score/latency plot no longer applies and must disappear
    (run / "manifest.json").write_text(json.dumps(m))
    second = build_report(run)
    md = second["report.md"].read_text()
    assert "| deployed_ort_int8 | 90.11 | -1.06 ⚠ |" in md and "| deployed_ort_int8 | 89.68" not in md
    assert not (run / "plots" / "score_vs_latency.png").exists()
    leftovers = [p for p in run.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_written_files_are_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "plots" / "x.png"
    write_atomic(target, b"png")
    assert target.stat().st_mode & 0o777 == 0o644
    target.chmod(0o664)
    write_atomic(target, b"png2")  # a rewrite keeps the mode the user chose
    assert target.stat().st_mode & 0o777 == 0o664 and target.read_bytes() == b"png2"


def test_failed_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.md"
    write_atomic(target, b"old report")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new report")
    assert target.read_bytes() == b"old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_plot_error_is_written_into_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(m: object) -> bytes:
        raise KeyError("heads")

    monkeypatch.setattr(plots, "PLOTS", {"structure.png": broken})
    md = build_report(write_run(tmp_path, full_manifest()))["report.md"].read_text()
    assert "### Plot errors" in md and "- structure.png: KeyError: 'heads'" in md


def test_deepsparse_section_lists_engines_speedups_and_scores(tmp_path: Path, no_plots: None) -> None:
    m = full_manifest()
    m["bench"]["deepsparse"] = {
        "deepsparse_version": "1.8.0", "seq": 128,
        "latency": {"b32xs128": {"ort_fp32": {"p50_ms": 600.0}, "deepsparse_int8": {"p50_ms": 150.0}}},
        "speedups": {"b32xs128": {"ort_fp32": 1.0, "deepsparse_int8": 4.0}},
        "scores": {"deepsparse_int8": {"score": 0.875, "agreement": 0.93}},
        "files": {"ort_fp32": "export/teacher/model.onnx",
                  "deepsparse_int8": "export/deepsparse/model_int8_matmulinteger.onnx"},
        "notes": ["DeepSparse runs static shapes"]}
    md = build_report(write_run(tmp_path, m))["report.md"].read_text()
    assert "DeepSparse 1.8.0" in md and "DeepSparse runs static shapes" in md
    row = next(line for line in md.splitlines() if line.startswith("| deepsparse_int8 | b32xs128"))
    assert "4.00x" in row and "87.50" in row and "93.00" in row
    # which file each figure is from (a trial could not tell the MatMulInteger file from the QDQ one)
    assert row.rstrip(" |").endswith("export/deepsparse/model_int8_matmulinteger.onnx")
    assert "| file |" in md
    m["bench"]["deepsparse"] = {"skipped": "bench.deepsparse.enabled is false"}
    assert "deepsparse_int8" not in build_report(write_run(tmp_path, m))["report.md"].read_text()


def test_summary_names_the_isa_beside_the_speed_and_shows_deploy_notes(tmp_path: Path, no_plots: None) -> None:
    """A speed figure means little without the CPU's ISA; a deploy that kept ORT (an n-bit file OpenVINO cannot
    read, a failed conversion) says why in the summary, not only in the manifest."""
    m = full_manifest()
    m["deploy"] = {"requested": "auto", "runtime": "ort",
                   "notes": ["OpenVINO not deployed: steps/02_nbits/model.onnx has n-bit weights (MatMulNBits)"]}
    md = build_report(write_run(tmp_path, m))["report.md"].read_text()
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "on a CPU with avx2, avx512f, avx512_vnni, amx_int8" in summary
    assert "Deploy notes (deploy.runtime=auto):" in summary
    assert "has n-bit weights (MatMulNBits)" in summary
