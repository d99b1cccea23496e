"""``benchmarks/compound_long.py`` (issue 13's long oBERT/magnitude runs) end to end on a tiny BERT, ``debug=smoke``.

The real obert_int8 / magnitude_int8 pipelines run from the command's own entry point with a scratch results
file. What must hold: ``run`` refuses before ``lr-grid``; the grid scores each LR on the validation split
and picks the best; a long run stopped mid-recovery leaves a step checkpoint and the same command resumes
it inside the pass (the loop's ``resumed_at``), the interrupted call's session marked; ``summarize`` fills
the three keys from the stored dev predictions and removes them from meta.pending.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compresslab.testing import process_state_restored, tiny_generic_run

ROOT = Path(__file__).resolve().parents[2]
STOP_AT = 3  # the stopped run raises before this optimizer step (a checkpoint was written after step 2)


@pytest.fixture(scope="module")
def long():
    from compresslab.testing import import_benchmark

    return import_benchmark("compound_long", ROOT)


def _inputs(root: Path) -> list[str]:
    return tiny_generic_run(root)


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def study(long, tmp_path_factory):
    """(root, common args, results, refusal, checkpoint seen while stopped); grid + long run of both methods."""
    import compresslab.pruning.unstructured as un

    root = tmp_path_factory.mktemp("long")
    common = ["--budget", "smoke", "--grads", "8", "--events", "2", "--results", str(root / "compound.json"),
              "--override", *_inputs(root)]
    run = ["--epochs", "1.0", "--checkpoint-every", "2", "--cpu-hours", "0.0001"]
    seen: dict[str, list[str]] = {}
    with pytest.MonkeyPatch.context() as mp, process_state_restored():
        mp.chdir(root)  # the script moves to the repo root: undone after
        with pytest.raises(SystemExit) as refused:
            long.main(["run", "--method", "obert", *run, *common])
        for method in ("obert", "magnitude"):
            long.main(["lr-grid", "--method", method, "--lrs", "5e-5", "1e-4", "--steps", "4", *common])
        # obert: stopped before step STOP_AT, then the same command again
        real = un._PruneAtEvents.on_step_begin

        def stop(self, step, model):
            if step == STOP_AT:
                seen["checkpoints"] = [str(p) for p in (root / "out").rglob("train_checkpoint/*")]
                raise _Stop
            real(self, step, model)

        mp.setattr(un._PruneAtEvents, "on_step_begin", stop)
        with pytest.raises(_Stop):
            long.main(["run", "--method", "obert", *run, *common])
        mp.setattr(un._PruneAtEvents, "on_step_begin", real)
        long.main(["run", "--method", "obert", *run, *common])
        long.main(["run", "--method", "magnitude", *run, *common])
        long.main(["summarize", "--results", str(root / "compound.json")])
    return root, common, json.loads((root / "compound.json").read_text()), refused.value, seen


def test_run_refused_before_the_lr_grid(study) -> None:
    refused = study[3]
    assert "no recovery LR chosen for obert" in str(refused) and "lr-grid --method obert" in str(refused)


def test_grid_scores_validation_and_chooses(study) -> None:
    data = study[2]
    for method in ("obert", "magnitude"):
        grid = data["long"]["lr_grid"][method]
        assert set(grid) == {"5e-05", "0.0001"} and all(0 <= v <= 1 for v in grid.values())
        chosen = data["long"]["chosen_lr"][method]
        assert grid[f"{chosen:g}"] == max(grid.values())
        runs = data["long"]["lr_grid_runs"][method]
        assert all(r["val_examples"] > 0 for r in runs.values())  # the carve from train, not dev
        assert data["long"]["lr_grid_settings"][method]["steps"] == 4
    assert data["long"]["budget"]["same_grid_and_budget"] is True
    assert data["long"]["budget"]["baseline_grid_covers_ours"] is True


def test_stopped_run_resumes_from_its_checkpoint(study) -> None:
    root, _, data, _, seen = study
    assert [Path(p).name for p in seen["checkpoints"]] == ["step-00000002"], seen  # every 2 steps, the newest kept
    r = data["long"]["runs"]["obert"]
    assert r["resumed_at"] == 2
    assert r["steps"] > STOP_AT and r["checkpoint_every"] == 2
    assert r["sessions"][0].get("interrupted") is True and "cpu_s" in r["sessions"][-1]
    m = json.loads((Path(r["run_dir"]) if Path(r["run_dir"]).is_absolute() else ROOT / r["run_dir"]
                    ).joinpath("manifest.json").read_text())
    assert m["status"] == "finished"
    step = next(s for s in m["steps"] if s["name"] == "obert")
    assert step["result"]["metrics"]["resumed_at"] == r["resumed_at"]
    assert abs(step["result"]["metrics"]["sparsity"] - 0.8) < 0.02  # the events before the stop were kept
    assert len(step["result"]["metrics"]["prune_steps"]) >= 2  # and reported
    assert not list((root / "out").rglob("train_checkpoint"))  # removed once the step finished
    assert r["over_budget"] is True  # a budget of 0.36 s of CPU: flagged, not stopped


def test_summary_fills_the_keys(study, long) -> None:
    data = study[2]
    runs = data["long"]["runs"]
    assert data["obert_80_long_acc"] == pytest.approx(runs["obert"]["acc"])
    assert data["magnitude_80_long_tuned_acc"] == pytest.approx(runs["magnitude"]["acc"])
    assert 0 <= data["mcnemar_p_obert_vs_magnitude_80_long"] <= 1
    assert len(runs["obert"]["preds"]) == len(runs["obert"]["labels"]) == 32
    pending = data["meta"].get("pending") or {}
    assert not set(pending) & {"obert_80_long_acc", "magnitude_80_long_tuned_acc",
                               "mcnemar_p_obert_vs_magnitude_80_long"}
    assert data["meta"]["machine_load"]  # every write stamped by ResultsFile


def test_a_finished_run_runs_nothing(study, long) -> None:
    import compresslab.pipeline as pipeline

    root, common, before, _, _ = study

    def no_run(*a, **k):
        raise AssertionError("a finished long run was run again")

    with pytest.MonkeyPatch.context() as mp, process_state_restored():
        mp.chdir(root)
        mp.setattr(pipeline, "run", no_run)
        long.main(["run", "--method", "obert", "--epochs", "1.0", "--checkpoint-every", "2", *common])
        long.main(["lr-grid", "--method", "obert", "--lrs", "5e-5", "1e-4", "--steps", "4", *common])
    after = json.loads((root / "compound.json").read_text())
    assert after["long"]["runs"]["obert"]["acc"] == before["long"]["runs"]["obert"]["acc"]
