"""Issue #12: disk per run (``run.keep``).

``run.keep=minimal`` keeps one copy of each artifact: byte-identical files (the teacher cache and
the finetune step, a teacher's export shared by a sweep) are hard links into one store, and blobs
no run links any more are pruned; ``run.keep=all`` keeps copies.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from _runs import finished_run, make_inputs, run_cfg
from compresslab.manifest import read_json
from compresslab.pipeline import run


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(inputs root, output root, run dir) of one real tiny int8 run, finished (made once per session)."""
    return finished_run(tmp_path_factory)


@pytest.mark.case(name="disk per run: the teacher cache and the finetune step", kind="first", bad_input=False,
                  expected="run.keep=minimal: byte-identical artifacts are one copy (hard links), recorded in "
                           "the manifest")
def test_keep_minimal_links_identical_artifacts(finished, observe):
    _, out, d = finished
    m = read_json(d / "manifest.json")
    step = d / "steps" / "00_finetune" / "model.safetensors"
    cached = Path(m["steps"][0]["result"]["metrics"]["cache_path"]) / "model.safetensors"
    assert step.stat().st_ino == cached.stat().st_ino  # one inode: cache entry, step dir (and the store blob)
    disk = m["disk"]
    assert disk["keep"] == "minimal" and disk["linked"] >= 1 and disk["bytes_after"] < disk["bytes_before"]
    assert Path(disk["store"]) == out / "cache" / "blobs"
    # every artifact hash the manifest records still matches (links change no bytes)
    from compresslab.manifest import sha256_file

    for s in m["steps"]:
        for name, h in s["artifacts"].items():
            assert sha256_file(d / s["dir"] / name) == h
    observe(f"{disk['linked']} file(s) linked, {disk['bytes_before']} -> {disk['bytes_after']} bytes "
            f"(run dir + teacher cache)")


def test_keep_all_keeps_copies_and_minimal_links_without_a_store(tmp_path):
    from compresslab.pipeline.disk import link_duplicates

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "w.bin").write_bytes(b"x" * 10000)
    use = link_duplicates(tmp_path / "b", [tmp_path / "a"], keep="all")
    assert use.linked == 0 and (tmp_path / "b" / "w.bin").stat().st_nlink == 1
    use = link_duplicates(tmp_path / "b", [tmp_path / "a"], keep="minimal")
    assert use.linked == 1 and (tmp_path / "b" / "w.bin").stat().st_nlink == 2
    assert use.bytes_before == 20000 and use.bytes_after == 10000


@pytest.mark.case(name="several runs from one teacher (a sparsity sweep)", kind="first", bad_input=False,
                  expected="files identical across runs (the teacher's ONNX export) are on disk once; blobs no run "
                           "links any more are pruned")
def test_store_shares_artifacts_across_runs_and_prunes(tmp_path, observe):
    from compresslab.pipeline.disk import link_duplicates

    store = tmp_path / "cache" / "blobs"
    teacher_onnx = os.urandom(50_000)
    for run_name, own in (("r1", b"a" * 20_000), ("r2", b"b" * 20_000)):
        (tmp_path / run_name / "export" / "teacher").mkdir(parents=True)
        (tmp_path / run_name / "export" / "teacher" / "model.onnx").write_bytes(teacher_onnx)
        (tmp_path / run_name / "steps").mkdir()
        (tmp_path / run_name / "steps" / "model.safetensors").write_bytes(own)
    first = link_duplicates(tmp_path / "r1", keep="minimal", store=store)
    second = link_duplicates(tmp_path / "r2", keep="minimal", store=store)
    a, b = (tmp_path / r / "export" / "teacher" / "model.onnx" for r in ("r1", "r2"))
    assert a.stat().st_ino == b.stat().st_ino and a.read_bytes() == teacher_onnx
    assert first.new_bytes == 70_000 and second.new_bytes == 20_000  # the second run adds only its own file
    shutil.rmtree(tmp_path / "r1")
    shutil.rmtree(tmp_path / "r2")
    (tmp_path / "r3").mkdir()
    assert link_duplicates(tmp_path / "r3", keep="minimal", store=store).pruned == 3
    observe(f"run 1 added {first.new_bytes} B, run 2 (same teacher export) {second.new_bytes} B; "
            "3 orphan blobs pruned after both runs were deleted")


@pytest.mark.case(name="run.keep=everything (a typo)", kind=1,
                  expected="a one-line error naming run.keep and its values")
def test_bad_keep_is_refused(tmp_path, expect_clear):
    root = make_inputs(tmp_path / "in")
    expect_clear(lambda: run(run_cfg(root, tmp_path / "out", "run.keep=everything")), match=r"run\.keep.*minimal.*all")
    assert not (tmp_path / "out").exists()


def test_a_private_blob_does_not_make_a_published_file_private_again(tmp_path):
    """A hard link shares its blob's mode: a blob stored 0600 (before files were published with the umask's mode, or
    under a stricter umask) gains the published file's read bits instead of taking them away."""
    import stat

    from compresslab.pipeline.disk import link_duplicates

    store, data = tmp_path / "cache" / "blobs", os.urandom(20_000)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.safetensors").write_bytes(data)
    os.chmod(tmp_path / "old" / "model.safetensors", 0o600)
    link_duplicates(tmp_path / "old", keep="minimal", store=store)  # stored as it was: 0600
    (tmp_path / "new").mkdir()
    new = tmp_path / "new" / "model.safetensors"
    new.write_bytes(data)
    os.chmod(new, 0o644)
    assert link_duplicates(tmp_path / "new", keep="minimal", store=store).linked == 1
    assert new.stat().st_nlink > 1 and stat.S_IMODE(new.stat().st_mode) == 0o644
