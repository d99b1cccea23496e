"""``benchmarks/compound_seeds.py run`` (issue 13 seeds) end to end on a tiny random BERT, ``debug=smoke``.

The real pipelines (ziplm_2x, the structured_l1 arm, obert_int8, magnitude_int8) run from the command's
own entry point with two seeds and a scratch results file. ZipLM's latency table is a synthetic one put
where this machine's cache keeps it (the command refuses to start without it, and checks every run
priced with exactly that file); the one speedup check per ZipLM/L1 run is scripted (it is void anyway).
What must hold: every arm runs once per seed from the same teacher (the cache entry, its own head), the
summary has the issue's keys, meta.pending.seeds says what is left, and a second call runs nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from compresslab.testing import process_state_restored, synthetic_latency_table, tiny_generic_run

ROOT = Path(__file__).resolve().parents[2]
# ZipLM's and L1's tiny timing shape (the script adds max_retries=0 and check_runs=1 itself)
SPEED = ["batch=2", "seq=16", "threads=1", "ffn_grid=16", "latency_warmup=0", "latency_runs=2", "num_calibration=32"]


@pytest.fixture(scope="module")
def seeds():
    from compresslab.testing import import_benchmark

    return import_benchmark("compound_seeds", ROOT)


def _inputs(root: Path) -> list[str]:
    return [*tiny_generic_run(root), *(f"pipeline.passes.{p}.{o}" for p in ("ziplm", "structured_l1") for o in SPEED)]


def _put_table(root: Path) -> Path:
    """A synthetic table (1 ms per head, 0.05 ms per neuron) where the cache keeps this machine's."""
    from compresslab.bench.latency_table import TableSettings, cache_file, environment
    from compresslab.checkpoint import load_pretrained

    model, _ = load_pretrained(root / "model", kind="classification", num_labels=2)
    env = environment(model, TableSettings(batch=2, seq=16, threads=1, ffn_grid=16))
    table, info = synthetic_latency_table(env=env)
    path = cache_file(root / "cache", env)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"table": table.to_dict(), "info": info}))
    return path


@pytest.fixture(scope="module")
def study(seeds, tmp_path_factory):
    """(root, argv, results, SystemExit of the run without a table); the study run with two seeds."""
    import compresslab.pruning.speedup as sp

    root = tmp_path_factory.mktemp("seeds")
    argv = ["run", "--seeds", "42", "1", "--budget", "smoke", "--steps", "4", "--grads", "8", "--events", "2",
            "--results", str(root / "compound.json"), "--override", *_inputs(root)]
    with pytest.MonkeyPatch.context() as mp, process_state_restored():
        mp.chdir(root)  # the script moves to the repo root: undone after
        mp.setenv("COMPRESSLAB_TIME_BUSY", "1")  # what the script sets for its runs, undone after
        mp.setattr(sp, "measure_speedup", lambda *a, **k: {"speedup": 2.0, "dense_ms": 2.0, "candidate_ms": 1.0})
        with pytest.raises(SystemExit) as refused:
            seeds.main([*argv[:1], "--only", "ziplm_vs_l1_2x", *argv[1:]])
        table = _put_table(root)
        seeds.main(argv)
    return root, argv, json.loads((root / "compound.json").read_text()), refused.value, table


def test_refused_before_any_run_without_the_cached_table(study) -> None:
    root, _, _, refused, _ = study
    assert "no latency table cached" in str(refused) and "compound_seeds.py table" in str(refused)


def test_every_arm_once_per_seed_from_the_one_teacher(study) -> None:
    root, _, data, _, table = study
    assert set(data["seeds"]) == {"ziplm_vs_l1_2x", "obert_vs_magnitude_80"}
    teachers = set()
    for name, e in data["seeds"].items():
        assert set(e["runs"]) == {"42", "1"} and e["seeds_done"] == [42, 1]
        for seed, r in e["runs"].items():
            for side in ("a", "b"):
                rd = ROOT / r[side]["run_dir"] if not Path(r[side]["run_dir"]).is_absolute() else Path(r[side]["run_dir"])
                m = json.loads((rd / "manifest.json").read_text())
                assert m["status"] == "finished" and m["config"]["seed"] == int(seed)
                assert m["config"]["bench"]["enabled"] is False and m["config"]["model"]["finetuned"] is True
                teachers.add(m["config"]["model"]["source"])
                assert r[side]["acc"] == pytest.approx(r[side]["step_score"])  # the step's own dev score
                assert len(r[side]["preds"]) == len(r[side]["labels"]) == 32
    assert len(teachers) == 1 and Path(next(iter(teachers))).parent.name == "teachers"  # the cache entry
    zl = data["seeds"]["ziplm_vs_l1_2x"]
    assert zl["a"] == "ziplm_2x" and zl["b"] == "structured_l1_2x"
    assert "structured_l1_2x" in zl["runs"]["42"]["b"]["run_dir"]
    assert zl["latency_table"]["sha256"] and Path(zl["latency_table"]["path"]).name == table.name
    for r in zl["runs"].values():
        assert r["a"]["retries"] == 0 and r["b"]["retries"] == 0
    # L1's structure depends on the weights and the pinned table only: the same for every seed
    assert zl["runs"]["42"]["b"]["structure"] == zl["runs"]["1"]["b"]["structure"]


def test_summary_keys_and_pending(study, seeds) -> None:
    _, _, data, _, _ = study
    for e in data["seeds"].values():
        for k in ("a_mean", "a_std", "b_mean", "b_std", "mcnemar_p_pooled"):
            assert isinstance(e[k], float), k
        assert set(e["mcnemar_p"]) == {"42", "1"} and all(0 <= p <= 1 for p in e["mcnemar_p"].values())
        again = seeds.summarize({s: {"labels": r["a"]["labels"], **r} for s, r in e["runs"].items()})
        assert again["a_mean"] == e["a_mean"] and again["b_std"] == e["b_std"]
    pending = data["meta"]["pending"]["seeds"]
    assert "1 more seed(s)" in pending  # two of the three seeds
    assert data["meta"]["seeds"]["varies"] and data["meta"]["seeds"]["fixed"]
    assert data["meta"]["machine_load"]  # every write stamped by ResultsFile


def test_a_second_call_runs_nothing(study, seeds) -> None:
    import compresslab.pipeline as pipeline

    root, argv, before, _, _ = study

    def no_run(*a, **k):
        raise AssertionError("a finished seed was run again")

    with pytest.MonkeyPatch.context() as mp, process_state_restored():
        mp.chdir(root)
        mp.setenv("COMPRESSLAB_TIME_BUSY", "1")
        mp.setattr(pipeline, "run", no_run)
        seeds.main(argv)
    after = json.loads((root / "compound.json").read_text())
    assert after["seeds"]["ziplm_vs_l1_2x"]["runs"] == before["seeds"]["ziplm_vs_l1_2x"]["runs"]


def test_table_command_finds_the_cached_table(study, seeds, capsys) -> None:
    root, argv, _, _, table = study
    with pytest.MonkeyPatch.context() as mp, process_state_restored():
        mp.chdir(root)
        seeds.main(["table", *argv[4:]])  # the run's overrides, no seeds
    out = json.loads(capsys.readouterr().out)
    assert out["cached"] is True and Path(out["cache_file"]).name == table.name
