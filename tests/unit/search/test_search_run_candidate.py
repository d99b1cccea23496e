"""The search's run_candidate on a run dir already there: ``run()`` is called even for a finished one (it checks
the run's files), the candidate counts as ran (``ran_s``, ``teacher_s``) only when that run redid something, and
an unfinished run is an error, not figures."""

from __future__ import annotations

import pytest

from compresslab.search.space import Candidate
from tests.unit.search.test_search import _plan


def _manifest(status: str, redone: list | None = None) -> dict:
    return {"status": status, "redone": redone or [],
            "steps": [{"pass_config": {"name": "finetune"}, "wall_s": 100.0}],
            "eval": {"split": "validation", "models": {"deployed": {"score": 0.89, "agreement": 0.98},
                                                        "teacher_torch": {"score": 0.90}}},
            "bench": {"speedups_best_dense": {"deployed": {"b32xs128": 1.7}}, "machine_load": {"busy": False}},
            "size": {"deployed": {"total": 123}}}


@pytest.mark.parametrize("before, after, ran", [
    (None, _manifest("finished"), True),                                        # a new run
    (_manifest("failed"), _manifest("finished"), True),                         # a failed run resumed
    (_manifest("finished"), _manifest("finished"), False),                      # read back: its files still match
    (_manifest("finished", ["export"]), _manifest("finished", ["export"]), False),  # an old redo is not this one
    (_manifest("finished"), _manifest("finished", ["bench"]), True),            # its files changed: a stage redone
])
def test_a_finished_candidate_is_run_again_and_counts_as_ran_only_when_something_was_redone(
        tmp_path, monkeypatch, before, after, ran):
    """The search hands a finished run dir to ``run()`` (which checks its files) instead of reading it blindly; the
    candidate's price (``ran_s``, ``teacher_s``) is counted only when that run did work."""
    import compresslab.pipeline
    import compresslab.pipeline.plan
    from compresslab.manifest import atomic_write_json
    from compresslab.search import driver

    run_dir = tmp_path / "outputs" / "int8" / "abc"
    run_dir.mkdir(parents=True)
    if before is not None:
        atomic_write_json(run_dir / "manifest.json", before)
    calls = []

    def fake_run(cfg, overrides):
        calls.append(list(overrides))
        atomic_write_json(run_dir / "manifest.json", after)
        return run_dir

    monkeypatch.setattr(driver, "compose_candidate", lambda args: {"args": args})
    monkeypatch.setattr(compresslab.pipeline.plan, "resolve_run_dir", lambda cfg: run_dir)
    monkeypatch.setattr(compresslab.pipeline, "run", fake_run)
    ticks = iter([10.0, 15.0])  # run() took 5 s by the driver's clock
    monkeypatch.setattr(driver, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: next(ticks))}))
    plan = _plan(tmp_path)
    c = Candidate("int8", "int8", "int8", (), ("int8",), 1.0)
    got = driver.run_candidate(plan, c)
    assert len(calls) == 1  # run() even for a finished dir: no figure is read from files it did not check
    assert got.status == "ok" and got.run_dir == str(run_dir)
    assert (got.ran_s, got.teacher_s) == ((5.0, 100.0) if ran else (0.0, 0.0))
    assert (got.val_score, got.speedup, got.size_bytes) == (0.89, 1.7, 123)


def test_a_candidate_whose_run_did_not_finish_is_an_error_not_figures(tmp_path, monkeypatch):
    import compresslab.pipeline
    import compresslab.pipeline.plan
    from compresslab.manifest import atomic_write_json
    from compresslab.search import driver

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setattr(driver, "compose_candidate", lambda args: {})
    monkeypatch.setattr(compresslab.pipeline.plan, "resolve_run_dir", lambda cfg: run_dir)
    monkeypatch.setattr(compresslab.pipeline, "run",
                        lambda cfg, overrides: atomic_write_json(run_dir / "manifest.json", _manifest("interrupted"))
                        or run_dir)
    with pytest.raises(RuntimeError, match="ended 'interrupted', not finished"):
        driver.run_candidate(_plan(tmp_path), Candidate("int8", "int8", "int8", (), ("int8",), 1.0))
