"""Issue #12 kind 3: work identified by content; run status; disk use; reproducible artifacts.

A run dir is named by its config, and its manifest records the sha256 of every input (model files,
data files, the examples as parsed): rerunning after an input changed is refused, naming the file,
its old and new hash and how to start over, before any work. Caches (the finetune teacher, the
Hessian sensitivities) are keyed by content, never by a path. A run that raises says ``failed``
with the error; a killed one reads as ``crashed``. ``run.keep=minimal`` keeps one copy of each
artifact; safetensors files are byte-identical between identical saves.

Tiny random models and a 64-row CSV; one real int8 run (module fixture) and otherwise runs that
stop before their first step (``run.stop_after=0``: the inputs are read and hashed, nothing trained).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compresslab.config import compose
from compresslab.manifest import (RunManifest, live_status, model_files, process_record, read_json,
                                  safetensors_bytes)
from compresslab.pipeline import run
from compresslab.pipeline.identity import InputsChangedError

REPO = Path(__file__).resolve().parents[2]
WORDS = ["good", "bad", "great", "awful", "movie", "film", "fun", "boring"]


def _csv(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = ["text,label"] + [f"{' '.join(rng.choice(WORDS) for _ in range(5))},{rng.choice(['pos', 'neg'])}"
                             for _ in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _inputs(root: Path, weights: str = "safetensors", seed: int = 0) -> Path:
    """``root/model`` (tiny BERT + tokenizer; weights as one safetensors file, ``shards`` or a
    ``pytorch_model.bin``) and ``root/{train,dev}.csv``; returns ``root``."""
    from compresslab.models.tiny import tiny_model, tiny_tokenizer

    model_dir = root / "model"
    tok = tiny_tokenizer(model_dir)
    tok.save_pretrained(model_dir)
    m = tiny_model("bert", seed=seed)
    if weights == "bin":
        m.config.save_pretrained(model_dir)
        torch.save(m.state_dict(), model_dir / "pytorch_model.bin")
    else:
        m.save_pretrained(model_dir, **({"max_shard_size": "40KB"} if weights == "shards" else {}))
    _csv(root / "train.csv", 64, seed)
    _csv(root / "dev.csv", 16, seed + 1)
    return root


def _cfg(root: Path, out: Path, *extra: str, pipeline: str = "int8"):
    return compose([f"+pipeline={pipeline}", "debug=smoke", "model=local", f"model.source={root / 'model'}",
                    "task=generic", f"task.generic.train={root / 'train.csv'}", f"task.generic.dev={root / 'dev.csv'}",
                    "run.threads=1", f"paths.output_dir={out}", f"paths.cache_dir={out}/cache", "bench.enabled=false",
                    "report=false", *extra])


def _stopped(root: Path, out: Path, *extra: str) -> Path:
    """A run dir whose manifest recorded the inputs, stopped before its first step (nothing trained)."""
    d = run(_cfg(root, out, "run.stop_after=0", *extra))
    assert read_json(d / "manifest.json")["status"] == "stopped"
    return d


def _append_row(path: Path) -> None:
    with open(path, "a") as f:
        f.write("fun fun film,pos\n")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(inputs root, output root, run dir) of one real tiny int8 run (finetune -> int8), finished."""
    base = tmp_path_factory.mktemp("finished")
    root, out = _inputs(base / "in"), base / "out"
    d = run(_cfg(root, out))
    assert read_json(d / "manifest.json")["status"] == "finished"
    return root, out, d


class _Restore:
    """Put a file's bytes back after a test changed it (the module fixture's inputs are shared)."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, path.read_bytes()

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.path.write_bytes(self.data)


# --------------------------------------------------------------------------- changed inputs refused
@pytest.mark.case(name="finished run, data file edited, same command again", kind=3,
                  expected="refused before any work: names train.csv with old/new sha256 and run.overwrite=true")
def test_finished_run_with_edited_data_is_refused(finished, expect_clear):
    root, out, d = finished
    before = (d / "manifest.json").read_bytes()
    with _Restore(root / "train.csv") as f:
        _append_row(f)
        msg = expect_clear(lambda: run(_cfg(root, out)), match=r"train\.csv.*sha256 \w+ -> \w+.*run\.overwrite=true",
                           errors=(InputsChangedError,))
    assert (d / "manifest.json").read_bytes() == before, "a refused rerun must leave the run as it was"
    assert "finished" in msg
    assert run(_cfg(root, out)) == d  # the file restored: the finished run is found again


@pytest.mark.case(name="finished run, model weights replaced in place", kind=3,
                  expected="refused: names model.safetensors (old -> new sha256)")
def test_finished_run_with_new_weights_is_refused(finished, expect_clear):
    from compresslab.models.tiny import tiny_model

    root, out, _ = finished
    with _Restore(root / "model" / "model.safetensors"):
        tiny_model("bert", seed=7).save_pretrained(root / "model")  # same path, same size, other bytes
        expect_clear(lambda: run(_cfg(root, out)), match=r"model file .*model\.safetensors: sha256 \w+ -> \w+")


@pytest.mark.case(name="stopped run resumed after the data changed (teacher trained on the old file)", kind=3,
                  expected="refused: the old steps are never resumed with a new file")
def test_stopped_run_with_edited_data_is_refused(tmp_path, expect_clear):
    root = _inputs(tmp_path / "in")
    _stopped(root, tmp_path / "out")
    _append_row(root / "dev.csv")
    expect_clear(lambda: run(_cfg(root, tmp_path / "out")), match=r"data file dev .*dev\.csv.*run\.overwrite=true")


@pytest.mark.parametrize("weights,changed", [("shards", r"model-00001-of-\d+\.safetensors"),
                                             ("bin", r"pytorch_model\.bin")])
@pytest.mark.case(name="sharded or pytorch_model.bin weights changed", kind=3,
                  expected="refused, naming the shard / .bin file (not keyed by the folder's path)")
def test_changed_shard_or_bin_is_refused(tmp_path, expect_clear, weights, changed):
    root = _inputs(tmp_path / "in", weights=weights)
    names = [p.name for p in model_files(root / "model")]
    assert any(n.startswith("model-0000") for n in names) if weights == "shards" else "pytorch_model.bin" in names
    _stopped(root, tmp_path / "out")
    target = sorted((root / "model").glob("model-00001-*.safetensors") if weights == "shards"
                    else [root / "model" / "pytorch_model.bin"])[0]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight: size and name unchanged
    target.write_bytes(bytes(data))
    expect_clear(lambda: run(_cfg(root, tmp_path / "out")), match=changed + r": sha256 \w+ -> \w+")


@pytest.mark.case(name="tokenizer vocab.txt or config.json edited", kind=3,
                  expected="refused, naming the tokenizer / config file")
def test_changed_tokenizer_or_config_is_refused(tmp_path, expect_clear):
    root = _inputs(tmp_path / "in")
    _stopped(root, tmp_path / "out")
    vocab = root / "model" / "vocab.txt"
    vocab.write_text(vocab.read_text().replace("movie", "cinema"))
    expect_clear(lambda: run(_cfg(root, tmp_path / "out")), match=r"vocab\.txt: sha256")
    cfg = json.loads((root / "model" / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-5  # changes the function, not a single weight
    (root / "model" / "config.json").write_text(json.dumps(cfg))
    expect_clear(lambda: run(_cfg(root, tmp_path / "out")),
                 match=r"config\.json: sha256.*vocab\.txt|vocab\.txt.*config\.json")


@pytest.mark.case(name="changed inputs through the real CLI", kind=3,
                  expected="exit code 2, the changed file and run.overwrite=true in the output, no traceback")
def test_changed_inputs_cli_exit_2(tmp_path, observe):
    root = _inputs(tmp_path / "in")
    d = _stopped(root, tmp_path / "out")
    _append_row(root / "train.csv")
    args = ["+pipeline=int8", "debug=smoke", "model=local", f"model.source={root / 'model'}", "task=generic",
            f"task.generic.train={root / 'train.csv'}", f"task.generic.dev={root / 'dev.csv'}", "run.threads=1",
            f"paths.output_dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'out'}/cache",
            "bench.enabled=false", "report=false"]
    out = subprocess.run([sys.executable, "-m", "compresslab", *args], capture_output=True, text=True, timeout=600,
                         cwd=REPO)
    both = out.stdout + out.stderr  # cli.py logs through Hydra's console handler: either stream is shown
    assert out.returncode == 2, both[-2000:]
    assert "Traceback" not in both
    line = next(x for x in both.splitlines() if "train.csv" in x and "sha256" in x)
    assert "run.overwrite=true" in both
    assert read_json(d / "manifest.json")["status"] == "stopped"
    observe(f"exit 2; {line.strip()[:300]}")


@pytest.mark.case(name="a run dir from before input hashes, its data edited", kind=3,
                  expected="refused by the data file hashes the old manifest holds (model files cannot be compared)")
def test_run_without_recorded_inputs_is_checked_by_its_data_files(tmp_path, expect_clear):
    root = _inputs(tmp_path / "in")
    d = _stopped(root, tmp_path / "out")
    m = RunManifest.load(d)
    del m.data["inputs"]  # what manifests written before this check hold
    m.save()
    assert _stopped(root, tmp_path / "out") == d  # unchanged data: resumed (with a warning)
    m = RunManifest.load(d)
    del m.data["inputs"]
    m.save()
    _append_row(root / "train.csv")
    expect_clear(lambda: run(_cfg(root, tmp_path / "out")), match=r"train\.csv.*sha256 \w+ -> \w+")


@pytest.mark.case(name="run.overwrite=true after an input changed", kind=3, bad_input=False,
                  expected="the old run dir moved aside (<dir>.replaced-<time>), a fresh run from the new files")
def test_overwrite_starts_over_with_new_inputs(tmp_path, observe):
    root = _inputs(tmp_path / "in")
    d = _stopped(root, tmp_path / "out")
    old_hash = read_json(d / "manifest.json")["inputs"]["data"]["files"]["train"]["sha256"]
    _append_row(root / "train.csv")
    again = _stopped(root, tmp_path / "out", "run.overwrite=true")
    assert again == d
    new_hash = read_json(d / "manifest.json")["inputs"]["data"]["files"]["train"]["sha256"]
    aside = sorted(d.parent.glob(f"{d.name}.replaced-*"))
    assert new_hash != old_hash and len(aside) == 1
    assert read_json(aside[0] / "manifest.json")["inputs"]["data"]["files"]["train"]["sha256"] == old_hash
    observe(f"old run moved to {aside[0].name}; new manifest train sha256 {new_hash[:12]} (was {old_hash[:12]})")


@pytest.mark.case(name="a README or tf_model.h5 beside the model changes", kind=3, bad_input=False,
                  expected="not an input: the run resumes (only files transformers loads are hashed)")
def test_unloaded_files_are_not_identity(tmp_path, observe):
    root = _inputs(tmp_path / "in")
    d = _stopped(root, tmp_path / "out")
    (root / "model" / "README.md").write_text("# notes\n")
    (root / "model" / "tf_model.h5").write_bytes(b"\0" * 64)
    assert _stopped(root, tmp_path / "out") == d
    observe("resumed: README.md and tf_model.h5 are not among the hashed model files")


@pytest.mark.case(name="re-benchmarking (restore) a run whose model source changed", kind=3,
                  expected="refused: the dense reference would be rebuilt from the new files")
def test_restore_after_source_changed_is_refused(tmp_path, expect_clear):
    from compresslab.models.tiny import tiny_model
    from compresslab.pipeline.driver import restore

    root = _inputs(tmp_path / "in")
    d = _stopped(root, tmp_path / "out")
    tiny_model("bert", seed=3).save_pretrained(root / "model")
    expect_clear(lambda: restore(d), match=r"model\.safetensors: sha256 \w+ -> \w+")


@pytest.mark.case(name="compress(output_dir=...) again with other data of the same size", kind=3,
                  expected="refused: the API's run dir is identified by the data's content, not its size")
def test_api_output_dir_with_other_data_is_refused(tmp_path, tiny_tok, expect_clear):
    import compresslab
    from compresslab.models.tiny import tiny_model
    from compresslab.testing import tiny_sentiment

    def data(seed: int) -> list[tuple[str, str]]:
        return [(e.text_a, ["neg", "pos"][e.label]) for e in tiny_sentiment(48, seed)]

    model = tiny_model("bert")
    kw = dict(max_length=32, batch_size=8, progress=False, output_dir=tmp_path / "run")
    compresslab.compress(model, tiny_tok, [{"name": "magnitude", "sparsity": 0.5, "recovery": {"steps": 0}}],
                         data=data(0), **kw).close()
    expect_clear(lambda: compresslab.compress(model, tiny_tok, [{"name": "magnitude", "sparsity": 0.5,
                                                                  "recovery": {"steps": 0}}], data=data(1), **kw),
                 match=r"data examples as parsed: sha256 \w+ -> \w+.*another output_dir")


# --------------------------------------------------------------------------- caches keyed by content
def _ctx(tiny_tok, tmp_path: Path, source: Path | str = ""):
    from compresslab.testing import tiny_context

    return dataclasses.replace(tiny_context(tiny_tok, tmp_path), model_source=str(source))


@pytest.mark.case(name="teacher cache key: shards, pytorch_model.bin, tokenizer, data", kind=3, bad_input=False,
                  expected="the key changes with any model file's bytes or any example, never with the folder path")
def test_teacher_cache_key_is_content(tmp_path, tiny_tok, observe):
    from compresslab.data.schema import Example
    from compresslab.passes.finetune import Finetune

    ft = Finetune(preset="smoke")
    keys = {}
    for weights in ("shards", "bin"):
        root = _inputs(tmp_path / weights, weights=weights)
        ctx = _ctx(tiny_tok, tmp_path / f"ctx-{weights}", root / "model")
        keys[weights] = k0 = ft.cache_key(ctx)
        moved = shutil.copytree(root / "model", tmp_path / f"moved-{weights}")
        assert ft.cache_key(dataclasses.replace(ctx, model_source=str(moved))) == k0, "a path is not identity"
        target = sorted(moved.glob("model-00002-*.safetensors") if weights == "shards"
                        else [moved / "pytorch_model.bin"])[0]
        data = bytearray(target.read_bytes())
        data[-1] ^= 0x01
        target.write_bytes(bytes(data))
        assert ft.cache_key(dataclasses.replace(ctx, model_source=str(moved))) != k0, weights
    root = tmp_path / "shards" / "model"
    ctx = _ctx(tiny_tok, tmp_path / "ctx-tok", root)
    k0 = ft.cache_key(ctx)
    (root / "tokenizer_config.json").write_text((root / "tokenizer_config.json").read_text().replace("true", "false"))
    assert ft.cache_key(ctx) != k0, "tokenizer files are part of the teacher"
    k1 = ft.cache_key(ctx)
    train = list(ctx.task.train)
    train[-1] = Example(train[-1].text_a + " fun", None, train[-1].label)  # a late example, same size
    ctx2 = dataclasses.replace(ctx, task=dataclasses.replace(ctx.task, train=train))
    assert ft.cache_key(ctx2) != k1, "every example is part of the teacher"
    observe(f"keys differ for shards/bin/tokenizer/data edits, equal for a moved folder ({keys})")


@pytest.mark.case(name="teacher cache key for a model held in memory", kind=3, bad_input=False,
                  expected="keyed by the model's weights and tokenizer (no source path to go by)")
def test_teacher_cache_key_in_memory(tmp_path, tiny_tok):
    from compresslab.models.tiny import tiny_model
    from compresslab.passes.finetune import Finetune

    ft, ctx = Finetune(preset="smoke"), _ctx(tiny_tok, tmp_path)
    a, b = tiny_model("bert", seed=0), tiny_model("bert", seed=1)
    assert ft.cache_key(ctx, a) == ft.cache_key(ctx, tiny_model("bert", seed=0))
    assert ft.cache_key(ctx, a) != ft.cache_key(ctx, b)
    with pytest.raises(ValueError, match="no model source"):
        ft.cache_key(ctx)


@pytest.mark.case(name="teacher cached under the old (v1) key", kind=3, bad_input=False,
                  expected="adopted under the content key by hard links, not trained again")
def test_legacy_teacher_is_adopted(tmp_path, tiny_tok, observe):
    from compresslab.checkpoint import save
    from compresslab.manifest import atomic_write_json
    from compresslab.models.tiny import tiny_model
    from compresslab.passes.finetune import Finetune

    root = _inputs(tmp_path / "in")
    ft = Finetune(preset="smoke")
    ctx = _ctx(tiny_tok, tmp_path / "ctx", root / "model")
    old = ctx.cache_dir / "teachers" / ft._legacy_key(ctx)
    teacher = tiny_model("bert", seed=5)
    save(teacher, old, tiny_tok)
    atomic_write_json(old / "teacher.json", {"metrics": {"train_steps": 1}, "recipe": ft.recipe(), "key": old.name})
    model = tiny_model("bert", seed=0)
    res = ft.apply(model, ctx)
    assert res.metrics["cached"] is True
    new = Path(res.metrics["cache_path"])
    assert new.name == ft.cache_key(ctx) != old.name
    assert (new / "model.safetensors").stat().st_ino == (old / "model.safetensors").stat().st_ino
    assert torch.equal(model.classifier.weight, teacher.classifier.weight)
    observe(f"adopted {old.name} as {new.name} (hard links), no training")


@pytest.mark.case(name="Hessian sensitivity cache when a late train example changes", kind=3, bad_input=False,
                  expected="a new cache entry (was keyed by the train size and the first example only)")
def test_hessian_cache_key_covers_every_example(tmp_path, tiny_tok):
    from compresslab.data.schema import Example
    from compresslab.models.tiny import tiny_model
    from compresslab.passes.hawq import HessianSettings, _cache_path

    ctx = _ctx(tiny_tok, tmp_path)
    model = tiny_model("bert")
    mods = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    p0 = _cache_path(ctx, model, mods, "trace", HessianSettings())
    train = list(ctx.task.train)
    train[-1] = Example(train[-1].text_a + " fun", None, train[-1].label)
    p1 = _cache_path(dataclasses.replace(ctx, task=dataclasses.replace(ctx.task, train=train)), model, mods, "trace",
                     HessianSettings())
    assert p0 != p1 and p0 == _cache_path(ctx, model, mods, "trace", HessianSettings())


# --------------------------------------------------------------------------- run status
@pytest.mark.parametrize("exc,status", [(RuntimeError("disk full (simulated)"), "failed"),
                                        (KeyboardInterrupt(), "interrupted")])
@pytest.mark.case(name="a step raises (or Ctrl-C) mid-run", kind=1, bad_input=False,
                  expected="manifest status failed / interrupted with the error type and message, the step marked")
def test_crash_is_recorded(tmp_path, monkeypatch, observe, exc, status):
    import compresslab.pipeline.steps as steps

    real = steps.run_torch_pass

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(steps, "run_torch_pass", boom)
    root = _inputs(tmp_path / "in")
    with pytest.raises(type(exc)):
        run(_cfg(root, tmp_path / "out", f"run.dir={tmp_path / 'run'}"))
    m = read_json(tmp_path / "run" / "manifest.json")
    assert m["status"] == status and m["error"]["type"] == type(exc).__name__ and m["error"]["step"] == "finetune"
    assert [s["status"] for s in m["steps"]] == [status] and "process" in m
    assert str(exc) in m["error"]["message"]
    monkeypatch.setattr(steps, "run_torch_pass", real)
    observe(f"status {m['status']}, error {m['error']['type']}: {m['error']['message']!r}, step {m['error']['step']}")


def _dead_pid() -> dict:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    import psutil

    started = psutil.Process(p.pid).create_time()
    p.wait()
    return {"pid": p.pid, "host": process_record()["host"], "pid_started": started}


@pytest.mark.case(name="a run killed outright (kill -9, out of memory)", kind=1, bad_input=False,
                  expected="read as crashed (its process is gone); the same command resumes it with a warning")
def test_killed_run_reads_as_crashed_and_resumes(tmp_path, observe, caplog):
    root = _inputs(tmp_path / "in")
    d = _stopped(root, tmp_path / "out")
    m = RunManifest.load(d)
    m.data["status"], m.data["process"] = "running", _dead_pid()  # what kill -9 leaves behind
    m.save()
    assert live_status(m.data) == "crashed"
    with caplog.at_level("WARNING", logger="compresslab"):
        assert _stopped(root, tmp_path / "out") == d
    assert "process is gone" in caplog.text
    observe(f"live_status=crashed; rerun resumed ({caplog.text.strip().splitlines()[-1][:160]})")


@pytest.mark.case(name="the same command started twice at once", kind=3,
                  expected="the second is refused while the first process runs (both would write one dir)")
def test_concurrent_run_is_refused(tmp_path, expect_clear):
    import psutil

    root = _inputs(tmp_path / "in")
    d = _stopped(root, tmp_path / "out")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        m = RunManifest.load(d)
        m.data["status"] = "running"
        m.data["process"] = {"pid": sleeper.pid, "host": process_record()["host"],
                             "pid_started": psutil.Process(sleeper.pid).create_time()}
        m.save()
        expect_clear(lambda: run(_cfg(root, tmp_path / "out")), match=rf"being run now by process {sleeper.pid}")
    finally:
        sleeper.kill()
        sleeper.wait()


# --------------------------------------------------------------------------- disk use
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
    root = _inputs(tmp_path / "in")
    expect_clear(lambda: run(_cfg(root, tmp_path / "out", "run.keep=everything")), match=r"run\.keep.*minimal.*all")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- reproducible bytes
def _header(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n])


@pytest.mark.case(name="model.sparse.safetensors / model.packed.safetensors saved twice", kind="own", bad_input=False,
                  expected="identical bytes (metadata keys sorted), readable by safetensors")
def test_safetensors_bytes_are_reproducible(tmp_path, observe):
    from safetensors.torch import load as st_load

    from compresslab.checkpoint.sparse_int8 import SPARSE_FILE, read_sparse_state, save_sparse
    from compresslab.models.tiny import tiny_model

    model = tiny_model("bert")
    blobs = set()
    for i in range(6):  # safetensors' metadata HashMap order is random per save
        blobs.add((save_sparse(model, tmp_path / f"s{i}")).read_bytes())
    assert len(blobs) == 1
    data = blobs.pop()
    meta = _header(data)["__metadata__"]
    assert list(meta) == sorted(meta)
    state = read_sparse_state(tmp_path / "s0" / SPARSE_FILE)
    assert torch.allclose(state["classifier.weight"], model.state_dict()["classifier.weight"])
    tensors = {"b": torch.arange(5.0), "a": torch.ones(3, dtype=torch.int8)}
    many = {safetensors_bytes(tensors, {k: k for k in "zyxwvutsrq"}) for _ in range(8)}
    assert len(many) == 1
    back = st_load(many.pop())
    assert torch.equal(back["b"], tensors["b"]) and torch.equal(back["a"], tensors["a"])
    observe(f"6 saves of model.sparse.safetensors: 1 distinct byte string; metadata keys {list(meta)}")


def test_packed_and_dense_checkpoints_are_reproducible(tmp_path):
    from compresslab.checkpoint import save
    from compresslab.checkpoint.packed import NBITS
    from compresslab.models.quantized import freeze_all, quantize_modules
    from compresslab.models.tiny import tiny_model
    from compresslab.targets import select_modules

    model = tiny_model("bert")
    dense = {save(model, tmp_path / f"d{i}").joinpath("model.safetensors").read_bytes() for i in range(3)}
    assert len(dense) == 1
    q = tiny_model("bert")
    quantize_modules(q, {n: {"bits": 4, "block_size": 16} for n in select_modules(q)})
    freeze_all(q)
    packed = {NBITS.save(q, tmp_path / f"p{i}").read_bytes() for i in range(4)}
    assert len(packed) == 1


@pytest.mark.case(name="SIGTERM mid-run (kill, a scheduler's time limit)", kind=1, bad_input=False,
                  expected="manifest status interrupted at the running step, as for Ctrl-C")
def test_sigterm_is_recorded_as_interrupted(tmp_path, monkeypatch, observe):
    import signal

    import compresslab.pipeline.steps as steps
    from compresslab.cli import Terminated, _terminate_as_interrupt

    old = signal.getsignal(signal.SIGTERM)

    def killed(*a, **k):  # what the interpreter does when SIGTERM arrives: call the installed handler
        # (a real os.kill of the test process crashed the full suite once with SIGSEGV: never send it here)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)

    try:
        _terminate_as_interrupt()
        monkeypatch.setattr(steps, "run_torch_pass", killed)
        root = _inputs(tmp_path / "in")
        with pytest.raises(Terminated):
            run(_cfg(root, tmp_path / "out", f"run.dir={tmp_path / 'run'}"))
    finally:
        signal.signal(signal.SIGTERM, old)
    m = read_json(tmp_path / "run" / "manifest.json")
    assert m["status"] == "interrupted" and m["error"]["step"] == "finetune"
    assert [s["status"] for s in m["steps"]] == ["interrupted"]
    observe(f"status {m['status']}, error {m['error']['type']}: {m['error']['message']!r}")


@pytest.mark.case(name="Ctrl-C in the CLI", kind=1, bad_input=False,
                  expected="one line saying the finished steps are kept and how to resume, exit 130, no traceback")
def test_cli_ctrl_c_prints_one_line(monkeypatch, capsys, observe):
    from compresslab import cli

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr("compresslab.pipeline.run", interrupted)
    monkeypatch.setattr(cli, "setup_process", lambda *a: 1)
    monkeypatch.setattr(cli, "_terminate_as_interrupt", lambda: None)
    from compresslab.config import compose

    with pytest.raises(SystemExit) as e:
        cli._main(compose(["+pipeline=int8", "debug=smoke"]))
    err = capsys.readouterr().err
    assert e.value.code == 130 and "rerun the same command to resume" in err and "Traceback" not in err
    observe(err.strip())
