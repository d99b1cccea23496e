"""A resume reuses a finished step only while its files are the ones it wrote; a resumed run writes the files an
uninterrupted one does.

One uninterrupted tiny ``hawq_mp3`` run (finetune and hawq: torch steps, hawq's checkpoint rebuilt from its
``compresslab_quant`` stamp; nbits: an ONNX step) is the reference. Each case copies it as a run that stopped
after its steps (killed during eval: export and deploy recorded) or after hawq, breaks one step's files (a valid
file with other bytes, a truncated file, a deleted file, the step's whole dir deleted), and reruns the same
config: the step and every later one are redone, with a warning naming the file and why, and the run ends with
every file and figure of the reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compresslab.config import compose
from compresslab.manifest import read_json, sha256_file
from compresslab.pipeline import run
from compresslab.testing import tiny_generic_run

pytestmark = pytest.mark.integration

AFTER_EVAL = ("eval", "size", "bench", "disk", "finished")  # what a run killed during eval has not recorded yet


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


def _stopped_copy(ref: Path, dst: Path, steps: int) -> Path:
    """``ref`` as a run that stopped after its first ``steps`` steps: with all of them done, as killed during eval
    (export and deploy recorded); with fewer, as stopped before the export (``run.stop_after``)."""
    shutil.copytree(ref, dst)
    m = read_json(dst / "manifest.json")
    for s in m["steps"][steps:]:
        shutil.rmtree(dst / s["dir"])
    m["steps"] = m["steps"][:steps]
    dropped = AFTER_EVAL if steps == 3 else (*AFTER_EVAL, "export", "deploy")
    for key in dropped:
        m.pop(key, None)
    for name in ("eval", "plots") if steps == 3 else ("eval", "plots", "export"):
        shutil.rmtree(dst / name, ignore_errors=True)
    m["status"] = "interrupted" if steps == 3 else "stopped"
    (dst / "manifest.json").write_text(json.dumps(m, indent=1))
    return dst


def _change(path: Path) -> None:
    """Other bytes in a file that still reads as what it was (the trial negated a weight): no reader can tell."""
    if path.suffix == ".onnx":
        import onnx

        g = onnx.load(str(path))
        g.doc_string = "edited after the step finished"
        onnx.save(g, str(path))
    else:
        from safetensors.torch import load_file, save_file

        t = load_file(path)
        key = next(k for k in sorted(t) if k.endswith("classifier.weight"))
        t[key] = -t[key]
        save_file(t, path)


BREAK = {
    "changed": (_change, "changed after the step finished"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "changed after the step finished"),
    "deleted": (lambda p: p.unlink(), "is missing"),
    "dir deleted": (lambda p: shutil.rmtree(p.parent), "is missing (the step's whole dir)"),
}
FILE = {"finetune": "model.safetensors", "hawq": "model.safetensors", "nbits": "model.onnx"}
INDEX = {"finetune": 0, "hawq": 1, "nbits": 2}


def _files(d: Path) -> dict[str, str]:
    """sha256 of every file under ``d`` (relative path -> hash), hidden files aside."""
    return {str(p.relative_to(d)): sha256_file(p) for p in sorted(d.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts)}


def _assert_same_as(ref: Path, d: Path) -> None:
    """Every step and export file, the step records and the eval figures of ``d`` are the reference's."""
    a, b = read_json(ref / "manifest.json"), read_json(d / "manifest.json")
    assert b["status"] == "finished"
    assert _files(d / "steps") == _files(ref / "steps")
    assert _files(d / "export") == _files(ref / "export")
    for sa, sb in zip(a["steps"], b["steps"], strict=True):
        assert (sb["name"], sb["status"], sb["artifacts"], sb["metrics_after"]) == \
               (sa["name"], "done", sa["artifacts"], sa["metrics_after"])
    assert b["eval"]["models"] == a["eval"]["models"] and b["export"]["deployed"] == a["export"]["deployed"]


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


def test_restoring_a_run_with_a_changed_step_names_the_file(reference, tmp_path):
    # pipeline.restore (re-benchmarks, the search's dev scores) reads a run without running it: it cannot redo
    from compresslab.models.loading import CheckpointError
    from compresslab.pipeline import restore

    _, ref = reference
    d = shutil.copytree(ref, tmp_path / "run")
    _change(d / "steps" / "01_hawq" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"step 1 \(hawq\) cannot be restored: steps/01_hawq/model\.safetensors "
                                              r"changed after the step finished.*run\.overwrite=true"):
        restore(d)
