"""What a run publishes: every file and folder has the mode a plain ``open``/``mkdir`` gives under the umask, and
saved tokenizers carry no state from their last call.

Temp files and dirs are private (``mkstemp`` 0600, ``mkdtemp`` 0700) and safetensors writes 0600; moved into place
as they were, a checkpoint or an export is unreadable to the service account that deploys it. Two umasks, so a
fixed 0644 cannot pass for the right rule."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

import compresslab
from compresslab.manifest import atomic_write_bytes, process_umask, publish_mode
from compresslab.models.tiny import tiny_model
from compresslab.testing import tiny_sentiment
from compresslab.training.resume import StepCheckpoints

UMASKS = (0o022, 0o027)


@pytest.fixture(params=UMASKS, ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _wrong_modes(*roots: Path, mask: int) -> list[str]:
    """``path: mode`` of every file or dir under ``roots`` (roots included) whose mode is not the umask's."""
    bad = []
    for root in roots:
        for p in [root, *root.rglob("*")]:
            if p.is_symlink():
                continue
            want = (0o777 if p.is_dir() else 0o666) & ~mask
            have = stat.S_IMODE(p.stat().st_mode)
            if have != want:
                bad.append(f"{p.relative_to(root.parent)}: {have:03o} (want {want:03o})")
    return bad


def test_process_umask_reads_the_umask_without_changing_it(umask):
    assert process_umask() == umask
    assert process_umask() == umask  # still the same: reading did not move it


def test_publish_mode_opens_private_temp_files_and_dirs(tmp_path, umask):
    f, d = tmp_path / "f", tmp_path / "d"
    f.write_bytes(b"x")
    d.mkdir()
    os.chmod(f, 0o600)
    os.chmod(d, 0o700)
    publish_mode(f)
    publish_mode(d)
    assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~umask


def test_atomic_write_gives_a_new_file_the_umask_mode_and_keeps_an_existing_ones(tmp_path, umask):
    p = tmp_path / "a.json"
    atomic_write_bytes(p, b"{}")
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    os.chmod(p, 0o640)
    atomic_write_bytes(p, b"[]")
    assert stat.S_IMODE(p.stat().st_mode) == 0o640


def test_run_dir_export_and_saved_checkpoint_are_readable_as_the_umask_says(tiny_tok, tmp_path, umask):
    model = tiny_model("bert", seed=0)
    with torch.no_grad():
        model.classifier.bias.add_(0.01)  # a "trained" head: the model is its own teacher
    data = [(e.text_a, ["neg", "pos"][e.label]) for e in tiny_sentiment(48, 0)]
    passes = [{"name": "magnitude", "sparsity": 0.5, "recovery": {"steps": 2}}, "ort_int8_dynamic"]
    r = compresslab.compress(model, tiny_tok, passes, data=data, output_dir=tmp_path / "run", max_length=32,
                             batch_size=8, progress=False)
    exported, saved = r.export(tmp_path / "export"), r.save(tmp_path / "saved")
    assert any(p.name == "model.safetensors" for p in (tmp_path / "run").rglob("*"))  # the file safetensors wrote
    assert _wrong_modes(tmp_path / "run", exported, saved, mask=umask) == []


def test_step_checkpoint_folder_is_not_private(tmp_path, umask):
    ck = StepCheckpoints(str(tmp_path / "ck"), {"run": 1}, ["w"], "d")
    final = ck.save(3, 10, {"w": torch.zeros(2)}, {"step": 3})
    assert _wrong_modes(final, mask=umask) == []


def test_saved_tokenizers_carry_no_state_from_the_last_encode(tiny_tok, tmp_path):
    """A fast tokenizer's backend keeps the padding and truncation of its last call, and save_pretrained wrote them
    into tokenizer.json: a checkpoint and an export of one model tokenized differently under plain `tokenizers`."""
    import json

    from compresslab.checkpoint import save
    from compresslab.models.loading import save_tokenizer

    import copy

    tok = copy.deepcopy(tiny_tok)  # the session's tokenizer stays as it is
    tok(["a b c", "a"], padding="max_length", truncation=True, max_length=7)  # leaves state behind
    assert tok.backend_tokenizer.truncation is not None and tok.backend_tokenizer.padding is not None
    save(tiny_model("bert", seed=0), tmp_path / "ckpt", tok)
    save_tokenizer(tok, tmp_path / "tok")
    for d in ("ckpt", "tok"):
        saved = json.loads((tmp_path / d / "tokenizer.json").read_text())
        assert saved["truncation"] is None and saved["padding"] is None, d
    assert tok.backend_tokenizer.truncation["max_length"] == 7  # the caller's tokenizer is as it was
