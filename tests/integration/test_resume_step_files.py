"""A resume reuses a finished step only while its files are the ones it wrote; a resumed run writes the files an
uninterrupted one does.

One uninterrupted tiny ``hawq_mp3`` run (finetune and hawq: torch steps, hawq's checkpoint rebuilt from its
``compresslab_quant`` stamp; nbits: an ONNX step) is the reference. Each case copies it as a run that stopped
after its steps (killed during eval: export and deploy recorded) or after hawq, breaks one step's files (a valid
file with other bytes, a truncated file, a deleted file, the step's whole dir deleted), and reruns the same
config: the step and every later one are redone, with a warning naming the file and why, and the run ends with
every file and figure of the reference. A broken file of the export (the nbits step's input) makes the export stage
be redone, and the stages after it, never the ONNX step (test_resume_stage_files.py: the other stages, and a rerun of
a finished run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from _resume import BREAK as BREAK_FILE
from _resume import assert_same_as as _assert_same_as
from _resume import change as _change
from _resume import stopped_copy as _stopped_copy
from compresslab.config import compose
from compresslab.manifest import read_json
from compresslab.pipeline import run
from compresslab.testing import tiny_generic_run

pytestmark = pytest.mark.integration


def _cfg(tiny: list[str], run_dir: Path, cache: Path | None = None):
    return compose(["+pipeline=hawq_mp3", *tiny, "pipeline.passes.hawq.block_size=16", "run.threads=1",
                    "bench.enabled=false", "run.keep=all", f"run.dir={run_dir}",
                    *([f"paths.cache_dir={cache}"] if cache else [])])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """(the tiny inputs' overrides, run dir) of the uninterrupted run."""
    root = tmp_path_factory.mktemp("resume_files")
    tiny = tiny_generic_run(root, "hawq_mp3")
    d = run(_cfg(tiny, root / "ref"))
    assert read_json(d / "manifest.json")["status"] == "finished"
    return tiny, d


# how a step's file is broken -> (the breaker, what the warning says of it)
BREAK = {**{how: (breaker, "changed after the step finished" if how != "deleted" else why)
            for how, (breaker, why) in BREAK_FILE.items()},
         "dir deleted": (lambda p: shutil.rmtree(p.parent), "is missing (the step's whole dir)")}
FILE = {"finetune": "model.safetensors", "hawq": "model.safetensors", "nbits": "model.onnx"}
INDEX = {"finetune": 0, "hawq": 1, "nbits": 2}


@pytest.mark.parametrize("how", list(BREAK))
@pytest.mark.parametrize("step", ["hawq", "nbits"])
def test_a_broken_finished_step_is_redone_with_every_later_one(reference, tmp_path, caplog, step, how):
    tiny, ref = reference
    d = _stopped_copy(ref, tmp_path / "run", 3)
    breaker, why = BREAK[how]
    rel = f"steps/{INDEX[step]:02d}_{step}/{FILE[step]}"
    breaker(d / rel)
    with caplog.at_level("INFO", logger="compresslab"):
        assert run(_cfg(tiny, d)) == d
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    warned = [m for m in warned if "cannot be reused" in m]
    assert len(warned) == 1 and why in warned[0]
    assert (rel if how != "dir deleted" else rel.rsplit("/", 1)[0]) in warned[0]
    # a torch step's output is the export's input: exported again; an ONNX step's input is the export: kept
    exported = "export: ONNX with parity checks" in caplog.text
    assert exported == (step != "nbits")
    redone = read_json(d / "manifest.json")["redone"]
    assert [(r["step"], r["steps"]) for r in redone] == [(step, ["hawq", "nbits"] if step == "hawq" else ["nbits"])]
    _assert_same_as(ref, d)


def test_a_deleted_teacher_step_is_trained_again(reference, tmp_path, caplog):
    # its own cache: the teacher is fine-tuned again (not taken from the cache the reference filled)
    tiny, ref = reference
    d = _stopped_copy(ref, tmp_path / "run", 3)
    shutil.rmtree(d / "steps" / "00_finetune")
    with caplog.at_level("WARNING", logger="compresslab"):
        run(_cfg(tiny, d, cache=tmp_path / "cache"))
    assert "steps/00_finetune/ is missing" in caplog.text
    assert read_json(d / "manifest.json")["redone"][0]["steps"] == ["finetune", "hawq", "nbits"]
    _assert_same_as(ref, d)


@pytest.mark.parametrize("steps", [2, 3], ids=["stopped after hawq", "killed during eval"])
def test_a_resumed_run_writes_the_files_of_an_uninterrupted_one(reference, tmp_path, caplog, steps):
    # intact steps are reused, not redone; hawq's checkpoint is loaded back and exported: its config.json (and the
    # deployed dir's) gains no key a model never loaded back lacks (transformers' pruned_heads: {})
    tiny, ref = reference
    d = _stopped_copy(ref, tmp_path / "run", steps)
    with caplog.at_level("WARNING", logger="compresslab"):
        run(_cfg(tiny, d))
    assert "cannot be reused" not in caplog.text and "redone" not in read_json(d / "manifest.json")
    _assert_same_as(ref, d)
    deployed = Path("steps", "02_nbits", "config.json")
    assert (d / deployed).read_bytes() == (ref / deployed).read_bytes()


def test_a_step_that_passes_its_hashes_but_cannot_be_read_is_redone(reference, tmp_path, caplog):
    # a manifest that recorded no hashes for the step (its dir then empty, or an older writer): the load fails
    # instead, and the step is redone as a changed one is, never a stuck run advising model.save_pretrained
    tiny, ref = reference
    d = _stopped_copy(ref, tmp_path / "run", 3)
    m = read_json(d / "manifest.json")
    m["steps"][1]["artifacts"] = {}
    (d / "manifest.json").write_text(json.dumps(m))
    p = d / "steps" / "01_hawq" / "model.safetensors"
    p.write_bytes(p.read_bytes()[:1000])
    with caplog.at_level("WARNING", logger="compresslab"):
        run(_cfg(tiny, d))
    assert "steps/01_hawq is unreadable: cannot read" in caplog.text
    _assert_same_as(ref, d)


@pytest.mark.parametrize("rel, how", [("export/model.onnx", "changed"), ("export/model.onnx", "truncated"),
                                      ("export/model.onnx", "deleted"), ("export/teacher/model.onnx", "changed"),
                                      ("export/model_unfused.onnx", "deleted")])
def test_a_broken_export_file_is_exported_again_and_the_onnx_step_kept(reference, tmp_path, caplog, rel, how):
    # the export is the nbits step's input, and deploy, eval and bench read it (the teacher's export: ort_fp32):
    # the export stage is redone from the restored torch model, the finished ONNX step (its own files intact) kept
    tiny, ref = reference
    d = _stopped_copy(ref, tmp_path / "run", 3)
    breaker, why = BREAK_FILE[how]
    breaker(d / rel)
    with caplog.at_level("INFO", logger="compresslab"):
        run(_cfg(tiny, d))
    warned = [r.getMessage() for r in caplog.records
              if r.levelname == "WARNING" and "cannot be reused" in r.getMessage()]
    assert len(warned) == 1 and f"{rel} {why}" in warned[0] and warned[0].startswith("the export stage"), warned
    assert "export: ONNX with parity checks" in caplog.text and "step 2: nbits (onnx)" not in caplog.text
    redone = read_json(d / "manifest.json")["redone"]
    assert [(r["stage"], r["stages"]) for r in redone] == [("export", ["export", "deploy"])]
    assert any(rel in p and why in p for p in redone[0]["problems"])
    _assert_same_as(ref, d)


@pytest.mark.parametrize("rel, refusal", [
    ("steps/01_hawq/model.safetensors", r"step 1 \(hawq\) cannot be restored: steps/01_hawq/model\.safetensors "
                                        r"changed after the step finished.*Rerun the run's command"),
    ("export/teacher/model.onnx", r"the export stage's files cannot be restored: "
                                  r"export/teacher/model\.onnx changed after the export stage wrote it")])
def test_restoring_a_run_with_a_changed_file_names_it(reference, tmp_path, rel, refusal):
    # pipeline.restore (re-benchmarks, the search's dev scores) reads a run without running it: it cannot redo, so a
    # changed step checkpoint or export (the ORT runners of a re-benchmark) is refused, naming the file
    from compresslab.models.loading import CheckpointError
    from compresslab.pipeline import restore

    _, ref = reference
    d = shutil.copytree(ref, tmp_path / "run")
    _change(d / rel)
    with pytest.raises(CheckpointError, match=refusal):
        restore(d)
