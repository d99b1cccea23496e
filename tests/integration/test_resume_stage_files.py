"""A resume reuses a file of a stage after the steps (the export, the OpenVINO IR deploy converted, eval's and the
bench's files) only while it is the one that stage wrote, and a rerun of a finished run checks every file as an
interrupted run's resume does: a changed one is redone, never reported finished as if intact.

One uninterrupted tiny run (finetune and hawq: torch steps, no ONNX step, so the export is made after the steps;
``deploy=openvino``: an IR converted from the plain fp32 export is deployed, scored and timed; bench on ORT; the
report) is the reference. Each case copies it, as killed during eval or as it finished, breaks one file (other bytes
of the same size, truncated, deleted) and reruns the same config: one WARNING names the file and why, the manifest's
``redone`` list says which stage (or step) was redone, and the run ends with every file and figure of the reference.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from _resume import BREAK, assert_same_as, files, stopped_copy
from compresslab.config import compose
from compresslab.manifest import read_json
from compresslab.pipeline import run
from compresslab.testing import tiny_generic_run

pytestmark = pytest.mark.integration

IR_BIN = "export/openvino/openvino_model.bin"


def _cfg(tiny: list[str], run_dir: Path):
    return compose(["+pipeline=hawq_mp3", *tiny, "pipeline.steps=[finetune,hawq]", "pipeline.passes.hawq.block_size=16",
                    "deploy=openvino", "bench.backends=[ort]", "report=true", "run.threads=1", "run.keep=all",
                    f"run.dir={run_dir}"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """(the tiny inputs' overrides, run dir) of the uninterrupted run."""
    pytest.importorskip("openvino")
    root = tmp_path_factory.mktemp("resume_stages")
    tiny = tiny_generic_run(root, "hawq_mp3")
    d = run(_cfg(tiny, root / "ref"))
    m = read_json(d / "manifest.json")
    assert m["status"] == "finished" and m["export"]["deployed"]["path"] == "export/openvino/openvino_model.xml"
    assert "openvino" not in m["bench"]["skipped"]
    assert m["bench"]["files"]["deployed"] == m["export"]["deployed"]["path"]
    return tiny, d


def _rerun(tiny: list[str], d: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Rerun the reference's config in ``d``; the WARNINGs that say something cannot be reused."""
    with caplog.at_level("INFO", logger="compresslab"):
        assert run(_cfg(tiny, d)) == d
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "cannot be reused" in r.getMessage()]


def test_every_file_after_the_steps_has_its_sha256_recorded_by_its_stage(reference):
    # the class, not one file: whatever a stage writes under the run dir (outside the steps' dirs, which the steps
    # record) is one of its recorded files, so a resume checks it before any reuse
    _, ref = reference
    m = read_json(ref / "manifest.json")
    recorded = {rel: stage for stage, rec in m["stage_files"].items() for rel in rec}
    written = {rel for rel in files(ref) if not rel.startswith("steps/") and rel != "manifest.json"}
    assert written and written == set(recorded), written ^ set(recorded)
    assert [recorded[f] for f in ("export/model.onnx", "export/teacher/model.onnx", IR_BIN, "eval/metrics.json",
                                  "bench/teacher_int8/model.onnx")] == ["export", "export", "deploy", "eval", "bench"]


@pytest.mark.parametrize("how", list(BREAK))
def test_a_broken_ir_of_an_interrupted_run_is_converted_again(reference, tmp_path, caplog, how):
    # deploy's IR is reused on resume (export.openvino) only while intact: else converted again, with the stages
    # that read it; the export, intact, is not redone
    tiny, ref = reference
    d = stopped_copy(ref, tmp_path / "run", 2)
    breaker, why = BREAK[how]
    breaker(d / IR_BIN)
    warned = _rerun(tiny, d, caplog)
    assert len(warned) == 1 and f"{IR_BIN} {why}" in warned[0] and warned[0].startswith("the deploy stage"), warned
    assert "export: ONNX with parity checks" not in caplog.text
    redone = read_json(d / "manifest.json")["redone"]
    assert [(r["stage"], r["stages"]) for r in redone] == [("deploy", ["deploy"])]
    assert_same_as(ref, d)


# a finished run: (file, the stage redone first, what it redoes after it; None: a step redone)
FINISHED = {
    "a step's checkpoint": ("steps/01_hawq/model.safetensors", None, None),
    "the export": ("export/model.onnx", "export", ["export", "deploy", "eval", "sizes", "bench", "keep", "report"]),
    "the deployed IR": (IR_BIN, "deploy", ["deploy", "eval", "sizes", "bench", "keep", "report"]),
}


@pytest.mark.parametrize("how", list(BREAK))
@pytest.mark.parametrize("what", list(FINISHED))
def test_a_finished_run_with_a_broken_file_is_redone_on_rerun(reference, tmp_path, caplog, what, how):
    tiny, ref = reference
    d = shutil.copytree(ref, tmp_path / "run")
    rel, stage, stages = FINISHED[what]
    breaker, why = BREAK[how]
    breaker(d / rel)
    warned = _rerun(tiny, d, caplog)
    assert "already finished" not in caplog.text
    assert len(warned) == 1 and f"{rel} {why}" in warned[0], warned
    m = read_json(d / "manifest.json")
    assert len(m["redone"]) == 1 and any(rel in p and why in p for p in m["redone"][0]["problems"])
    if stage is None:
        assert (m["redone"][0]["step"], m["redone"][0]["steps"]) == ("hawq", ["hawq"])
    else:
        assert (m["redone"][0]["stage"], m["redone"][0]["stages"]) == (stage, stages)
    assert_same_as(ref, d)
    report = (d / "report.md").read_text()  # rebuilt: it says what was redone, naming the file
    assert "## Redone on resume" in report and f"{rel} {why}" in report.split("## Redone on resume")[1]
    # the run is intact again: a further rerun finds it finished, hashes everything and changes nothing
    before = (d / "manifest.json").read_bytes()
    caplog.clear()
    assert _rerun(tiny, d, caplog) == [] and "already finished, its files intact" in caplog.text
    assert (d / "manifest.json").read_bytes() == before


def test_a_finished_run_with_a_changed_bench_file_redoes_only_what_read_it(reference, tmp_path, caplog):
    # the bench is after eval: eval's figures and file are kept as they are, the bench and run.keep redone
    tiny, ref = reference
    d = shutil.copytree(ref, tmp_path / "run")
    before = read_json(d / "manifest.json")
    BREAK["changed"][0](d / "bench" / "teacher_int8" / "model.onnx")
    warned = _rerun(tiny, d, caplog)
    assert len(warned) == 1 and "bench/teacher_int8/model.onnx changed after the bench stage wrote it" in warned[0]
    m = read_json(d / "manifest.json")
    assert [(r["stage"], r["stages"]) for r in m["redone"]] == [("bench", ["bench", "keep", "report"])]
    assert m["eval"] == before["eval"] and m["deploy"] == before["deploy"] and m["bench"]["latency"]
    assert m["stage_files"]["bench"]["bench/teacher_int8/model.onnx"] == \
           before["stage_files"]["bench"]["bench/teacher_int8/model.onnx"]
    assert_same_as(ref, d)


def test_a_finished_run_written_before_the_stage_files_were_recorded_is_redone(reference, tmp_path, caplog):
    # an older run's export, IR and eval file have no sha256: they cannot be checked, so they are not reused
    tiny, ref = reference
    d = shutil.copytree(ref, tmp_path / "run")
    m = read_json(d / "manifest.json")
    del m["stage_files"]
    (d / "manifest.json").write_text(json.dumps(m))
    warned = _rerun(tiny, d, caplog)
    assert len(warned) == 1 and "the export stage's files have no recorded sha256" in warned[0]
    assert read_json(d / "manifest.json")["redone"][0]["stage"] == "export"
    assert_same_as(ref, d)


def test_an_intact_finished_run_is_found_finished_and_left_as_it_is(reference, tmp_path, caplog):
    tiny, ref = reference
    d = shutil.copytree(ref, tmp_path / "run")
    before = (d / "manifest.json").read_bytes()
    assert _rerun(tiny, d, caplog) == [] and "already finished, its files intact" in caplog.text
    assert (d / "manifest.json").read_bytes() == before


def test_the_report_is_a_view_rebuilt_when_missing_never_a_changed_file(reference, tmp_path, caplog):
    # python -m compresslab.report rewrites it from the manifest at any time: a rerun takes that for intact; a
    # deleted report file is rebuilt, and nothing else redone
    from compresslab.report import build_report

    tiny, ref = reference
    d = shutil.copytree(ref, tmp_path / "run")
    build_report(str(d) + "/")  # another spelling of the run dir, written into the report's rebuild command
    assert (d / "report.md").read_bytes() != (ref / "report.md").read_bytes()
    assert _rerun(tiny, d, caplog) == [] and "already finished, its files intact" in caplog.text
    before = read_json(d / "manifest.json")
    (d / "report.html").unlink()
    caplog.clear()
    warned = _rerun(tiny, d, caplog)
    assert len(warned) == 1 and "report.html is missing" in warned[0]
    m = read_json(d / "manifest.json")
    assert [(r["stage"], r["stages"]) for r in m["redone"]] == [("report", ["report"])]
    assert all(m[k] == before[k] for k in ("eval", "bench", "deploy", "disk", "size"))
    assert "report.html is missing" in (d / "report.html").read_text()
