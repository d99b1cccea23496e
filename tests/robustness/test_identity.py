"""Issue #12 kind 3: work identified by content.

A run dir is named by its config, and its manifest records the sha256 of every input (model files,
data files, the examples as parsed): rerunning after an input changed is refused, naming the file,
its old and new hash and how to start over, before any work. Caches (the finetune teacher, the
Hessian sensitivities) are keyed by content, never by a path.

Tiny random models and a 64-row CSV (``_runs.py``); one real int8 run (shared with ``test_disk.py``)
and otherwise runs that stop before their first step (``run.stop_after=0``: the inputs are read and
hashed, nothing trained). Run status lives in ``test_run_status.py``, disk use in ``test_disk.py``,
reproducible bytes in ``test_reproducible.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _runs import REPO, Restore, append_row, cli_args, finished_run, make_inputs, run_cfg, stopped_inputs, stopped_run
from compresslab.manifest import RunManifest, model_files, read_json
from compresslab.pipeline import run
from compresslab.pipeline.identity import InputsChangedError


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(inputs root, output root, run dir) of one real tiny int8 run, finished (made once per session)."""
    return finished_run(tmp_path_factory)


# --------------------------------------------------------------------------- changed inputs refused
@pytest.mark.case(name="finished run, data file edited, same command again", kind=3,
                  expected="refused before any work: names train.csv with old/new sha256 and run.overwrite=true")
def test_finished_run_with_edited_data_is_refused(finished, expect_clear):
    root, out, d = finished
    before = (d / "manifest.json").read_bytes()
    with Restore(root / "train.csv") as f:
        append_row(f)
        msg = expect_clear(lambda: run(run_cfg(root, out)), match=r"train\.csv.*sha256 \w+ -> \w+.*run\.overwrite=true",
                           errors=(InputsChangedError,))
    assert (d / "manifest.json").read_bytes() == before, "a refused rerun must leave the run as it was"
    assert "finished" in msg
    assert run(run_cfg(root, out)) == d  # the file restored: the finished run is found again


@pytest.mark.case(name="finished run, model weights replaced in place", kind=3,
                  expected="refused: names model.safetensors (old -> new sha256)")
def test_finished_run_with_new_weights_is_refused(finished, expect_clear):
    from compresslab.models.tiny import tiny_model

    root, out, _ = finished
    with Restore(root / "model" / "model.safetensors"):
        tiny_model("bert", seed=7).save_pretrained(root / "model")  # same path, same size, other bytes
        expect_clear(lambda: run(run_cfg(root, out)), match=r"model file .*model\.safetensors: sha256 \w+ -> \w+")


@pytest.mark.case(name="stopped run resumed after the data changed (teacher trained on the old file)", kind=3,
                  expected="refused: the old steps are never resumed with a new file")
def test_stopped_run_with_edited_data_is_refused(tmp_path, expect_clear):
    root = make_inputs(tmp_path / "in")
    stopped_run(root, tmp_path / "out")
    append_row(root / "dev.csv")
    expect_clear(lambda: run(run_cfg(root, tmp_path / "out")), match=r"data file dev .*dev\.csv.*run\.overwrite=true")


@pytest.mark.parametrize("weights,changed", [("shards", r"model-00001-of-\d+\.safetensors"),
                                             ("bin", r"pytorch_model\.bin")])
@pytest.mark.case(name="sharded or pytorch_model.bin weights changed", kind=3,
                  expected="refused, naming the shard / .bin file (not keyed by the folder's path)")
def test_changed_shard_or_bin_is_refused(tmp_path, expect_clear, weights, changed):
    root = make_inputs(tmp_path / "in", weights=weights)
    names = [p.name for p in model_files(root / "model")]
    assert any(n.startswith("model-0000") for n in names) if weights == "shards" else "pytorch_model.bin" in names
    stopped_run(root, tmp_path / "out")
    target = sorted((root / "model").glob("model-00001-*.safetensors") if weights == "shards"
                    else [root / "model" / "pytorch_model.bin"])[0]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight: size and name unchanged
    target.write_bytes(bytes(data))
    expect_clear(lambda: run(run_cfg(root, tmp_path / "out")), match=changed + r": sha256 \w+ -> \w+")


@pytest.mark.case(name="tokenizer vocab.txt or config.json edited", kind=3,
                  expected="refused, naming the tokenizer / config file")
def test_changed_tokenizer_or_config_is_refused(tmp_path, expect_clear):
    root = make_inputs(tmp_path / "in")
    stopped_run(root, tmp_path / "out")
    vocab = root / "model" / "vocab.txt"
    vocab.write_text(vocab.read_text().replace("movie", "cinema"))
    expect_clear(lambda: run(run_cfg(root, tmp_path / "out")), match=r"vocab\.txt: sha256")
    cfg = json.loads((root / "model" / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-5  # changes the function, not a single weight
    (root / "model" / "config.json").write_text(json.dumps(cfg))
    expect_clear(lambda: run(run_cfg(root, tmp_path / "out")),
                 match=r"config\.json: sha256.*vocab\.txt|vocab\.txt.*config\.json")


@pytest.mark.case(name="changed inputs through the real CLI", kind=3,
                  expected="exit code 2, the changed file and run.overwrite=true in the output, no traceback")
def test_changed_inputs_cli_exit_2(tmp_path, observe):
    root, d = stopped_inputs(tmp_path)
    append_row(root / "train.csv")
    out = subprocess.run([sys.executable, "-m", "compresslab", *cli_args(root, tmp_path / "out")], capture_output=True,
                         text=True, timeout=600, cwd=REPO)
    both = out.stdout + out.stderr  # cli.py logs through Hydra's console handler: either stream is shown
    assert out.returncode == 2, both[-2000:]
    assert "Traceback" not in both
    line = next(x for x in both.splitlines() if "train.csv" in x and "sha256" in x)
    assert "run.overwrite=true" in both
    assert read_json(d / "manifest.json")["status"] == "stopped"
    observe(f"exit 2; {line.strip()[:300]}")


def _glue_root(root: Path, dev_label: int = 0) -> Path:
    """A data root holding ``glue/SST-2/{train,dev}.tsv`` (tiny; the last dev label is ``dev_label``)."""
    sst = root / "glue" / "SST-2"
    sst.mkdir(parents=True)
    words = ["good", "bad", "fun", "dull", "film"]
    rows = [f"{' '.join(words[(i + k) % 5] for k in range(4))}\t{i % 2}" for i in range(48)]
    (sst / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (sst / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[:15] + [f"fun film\t{dev_label}"]) + "\n")
    return root


@pytest.mark.case(name="the report's rerun command of a run whose data came from $COMPRESSLAB_DATA, in a new shell",
                  kind=3, bad_input=False, expected="the command sets COMPRESSLAB_DATA and resumes the run; the same "
                  "data under another data.root resumes it too; other data there is refused by its hash")
def test_the_recorded_command_reproduces_a_run_whose_data_root_came_from_the_environment(tmp_path, monkeypatch,
                                                                                        observe, expect_clear):
    # a trial: "compresslab: error: ... belongs to another config; ... data.root: "/work/shared/data" -> null"
    from compresslab.config import compose

    inputs = make_inputs(tmp_path / "in")
    first, moved, other = (_glue_root(tmp_path / n, lab) for n, lab in (("a b", 0), ("moved", 0), ("other", 1)))
    args = ["+pipeline=int8", "debug=smoke", "model=local", f"model.source={inputs / 'model'}", "task=sst2",
            "task.max_length=32", "run.threads=1", f"paths.output_dir={tmp_path}/out",
            f"paths.cache_dir={tmp_path}/cache", "bench.enabled=false", "report=false", f"run.dir={tmp_path}/run",
            "run.stop_after=0"]
    monkeypatch.setenv("COMPRESSLAB_DATA", str(first))
    d = run(compose(args), overrides=args)
    m = read_json(d / "manifest.json")
    assert m["status"] == "stopped" and m["environment"]["COMPRESSLAB_DATA"] == str(first)
    assert m["command"].startswith(f"COMPRESSLAB_DATA='{first}' python -m compresslab +pipeline=int8 ")
    monkeypatch.delenv("COMPRESSLAB_DATA")
    # the printed command, as a user pastes it into a new shell without the variable
    env = {k: v for k, v in os.environ.items() if k != "COMPRESSLAB_DATA"}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", PYTHONPATH=str(REPO))
    out = subprocess.run(m["command"], shell=True, cwd=m["cwd"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    again = read_json(d / "manifest.json")
    assert again["config_hash"] == m["config_hash"] and len(again["invocations"]) == 2
    # each process that worked on the run recorded its code (F6): this one, then the shell's
    first_s, shell_s = again["sessions"]
    assert (first_s["resumed"], shell_s["resumed"]) == (False, True) and first_s["pid"] != shell_s["pid"]
    assert all({"git_sha", "git_dirty", "compresslab_version", "ran"} <= set(s) for s in (first_s, shell_s))
    # the same files found at another path: the same run (its content is its identity)
    assert run(compose([*args, f"data.root={moved}"])) == d
    # other data at a path: refused by its hash, naming the file
    expect_clear(lambda: run(compose([*args, f"data.root={other}"])), match=r"dev.*sha256 \w+ -> \w+",
                 errors=(InputsChangedError,))
    observe(f"resumed by: {m['command'][:120]}...")


@pytest.mark.case(name="a run dir from before input hashes, its data edited", kind=3,
                  expected="refused by the data file hashes the old manifest holds (model files cannot be compared)")
def test_run_without_recorded_inputs_is_checked_by_its_data_files(tmp_path, expect_clear):
    root, d = stopped_inputs(tmp_path)
    m = RunManifest.load(d)
    del m.data["inputs"]  # what manifests written before this check hold
    m.save()
    assert stopped_run(root, tmp_path / "out") == d  # unchanged data: resumed (with a warning)
    m = RunManifest.load(d)
    del m.data["inputs"]
    m.save()
    append_row(root / "train.csv")
    expect_clear(lambda: run(run_cfg(root, tmp_path / "out")), match=r"train\.csv.*sha256 \w+ -> \w+")


@pytest.mark.case(name="run.overwrite=true after an input changed", kind=3, bad_input=False,
                  expected="the old run dir moved aside (<dir>.replaced-<time>), a fresh run from the new files")
def test_overwrite_starts_over_with_new_inputs(tmp_path, observe):
    root, d = stopped_inputs(tmp_path)
    old_hash = read_json(d / "manifest.json")["inputs"]["data"]["files"]["train"]["sha256"]
    append_row(root / "train.csv")
    again = stopped_run(root, tmp_path / "out", "run.overwrite=true")
    assert again == d
    new_hash = read_json(d / "manifest.json")["inputs"]["data"]["files"]["train"]["sha256"]
    aside = sorted(d.parent.glob(f"{d.name}.replaced-*"))
    assert new_hash != old_hash and len(aside) == 1
    assert read_json(aside[0] / "manifest.json")["inputs"]["data"]["files"]["train"]["sha256"] == old_hash
    observe(f"old run moved to {aside[0].name}; new manifest train sha256 {new_hash[:12]} (was {old_hash[:12]})")


@pytest.mark.case(name="a README or tf_model.h5 beside the model changes", kind=3, bad_input=False,
                  expected="not an input: the run resumes (only files transformers loads are hashed)")
def test_unloaded_files_are_not_identity(tmp_path, observe):
    root, d = stopped_inputs(tmp_path)
    (root / "model" / "README.md").write_text("# notes\n")
    (root / "model" / "tf_model.h5").write_bytes(b"\0" * 64)
    assert stopped_run(root, tmp_path / "out") == d
    observe("resumed: README.md and tf_model.h5 are not among the hashed model files")


@pytest.mark.case(name="re-benchmarking (restore) a run whose model source changed", kind=3,
                  expected="refused: the dense reference would be rebuilt from the new files")
def test_restore_after_source_changed_is_refused(tmp_path, expect_clear):
    from compresslab.models.tiny import tiny_model
    from compresslab.pipeline.driver import restore

    root, d = stopped_inputs(tmp_path)
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
        root = make_inputs(tmp_path / weights, weights=weights)
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

    root = make_inputs(tmp_path / "in")
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
    # version 1 keys predate val_carve: a grouped carve never adopts them (its validation was in their train)
    grouped = dataclasses.replace(ctx, task=dataclasses.replace(ctx.task, info={**ctx.task.info,
                                                                                "val_carve": "grouped"}))
    assert ft._legacy_key(grouped) is None and ft._legacy_key(ctx) == old.name
    observe(f"adopted {old.name} as {new.name} (hard links), no training")


@pytest.mark.case(name="Hessian sensitivity cache when a late train example changes", kind=3, bad_input=False,
                  expected="a new cache entry (was keyed by the train size and the first example only)")
def test_hessian_cache_key_covers_every_example(tmp_path, tiny_tok):
    from compresslab.data.schema import Example
    from compresslab.models.tiny import tiny_model
    from compresslab.passes.hawq import _cache_path
    from compresslab.quant.hawq_settings import HessianSettings

    ctx = _ctx(tiny_tok, tmp_path)
    model = tiny_model("bert")
    mods = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    p0 = _cache_path(ctx, model, mods, "trace", HessianSettings())
    train = list(ctx.task.train)
    train[-1] = Example(train[-1].text_a + " fun", None, train[-1].label)
    p1 = _cache_path(dataclasses.replace(ctx, task=dataclasses.replace(ctx.task, train=train)), model, mods, "trace",
                     HessianSettings())
    assert p0 != p1 and p0 == _cache_path(ctx, model, mods, "trace", HessianSettings())
