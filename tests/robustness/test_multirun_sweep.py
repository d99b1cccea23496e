"""Trial 44, finding 8: a multirun (``-m``) whose jobs would write one dir is refused before any job starts, and a job
that fails while it runs neither stops the jobs after it nor goes unnamed.

* the dir each job writes is compared before Hydra starts (``multirun.check_own_dirs``): a fixed ``run.dir`` for jobs
  that differ, or jobs that differ only outside a run's identity (``run.threads=1,2``), used to let job #0 run to the
  end before job #1 was refused ("belongs to another config") or found nothing to do; ``run.dir='X/${hydra:job.num}'``
  (what the refusal suggests) gives each job its own dir, in the check as in the jobs;
* a job's run dir that holds another config's run is refused up front too (``rundir.check_run_dir`` in the preflight);
* a job that fails at run time is named on stderr, the next jobs run, and a summary (job, swept values, status, run
  dir, error) ends the sweep with the first failed job's exit status (``cli._run_sweep_job``, ``sweep.Sweep``);
  Ctrl-C ends the whole sweep.

The sweeps run in this process through ``cli.main`` (Hydra's basic launcher), on a tiny BERT and a 64-row CSV, each
run stopped before its first step (``run.stop_after=0``); a run-time failure is a patched ``pipeline.run``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _runs import cli_args, command_overrides, make_inputs
from compresslab import cli

case = pytest.mark.case
JOB_NUM = "${hydra:job.num}"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_inputs(tmp_path_factory.mktemp("sweep") / "in")


def _args(inputs: Path, out: Path, *extra: str) -> list[str]:
    return cli_args(inputs, out, "run.stop_after=0", *extra)


# ------------------------------------------------------------------ 1. jobs that would write one dir

@pytest.mark.parametrize("sweep, match", [
    (["seed=1,2", "run.dir={tmp}/MR"],
     r"run\.dir=\S+/MR: jobs #0 \(seed=1\), #1 \(seed=2\) of this multirun would all write that dir.*"
     r"run\.dir='\S+/MR/\$\{hydra:job\.num\}'.*no job was started"),
    (["seed=1,2,3,4,5", "run.dir={tmp}/MR"], r"jobs #0 \(seed=1\), #1 \(seed=2\), #2 \(seed=3\) and 2 more"),
    (["run.threads=1,2"], r"jobs #0 \(run\.threads=1\), #1 \(run\.threads=2\) of this multirun are one run: .*"
                          r"not part of a run's identity.*run\.dir='\S+/int8/sweep-\$\{hydra:job\.num\}'"),
    (["paths.cache_dir={tmp}/c1,{tmp}/c2"], r"jobs #0 \(paths\.cache_dir=\S+/c1\), #1 .* are one run"),
    (["seed=3,3"], r"jobs #0 \(seed=3\), #1 \(seed=3\) of this multirun are one run"),
], ids=["fixed run.dir", "fixed run.dir, 5 jobs", "run.threads", "paths.cache_dir", "a value twice"])
@case(name="-m seed=1,2 run.dir=DIR (and every sweep whose jobs would write one dir)", kind=1,
      expected="exit 2 before any job starts, naming the jobs and run.dir='DIR/${hydra:job.num}'")
def test_jobs_writing_one_dir_are_refused(inputs, tmp_path, cli_refusal, expect_clear, sweep, match):
    argv = _args(inputs, tmp_path / "out", *(s.replace("{tmp}", str(tmp_path)) for s in sweep))
    expect_clear(cli_refusal(lambda: cli.check_multirun(argv)), match=match)
    assert not (tmp_path / "MR").exists() and not (tmp_path / "out" / "int8").exists()


@case(name="run.dir='DIR/${hydra:job.num}' without -m (Hydra's job config reads nothing in a single run)", kind=1,
      expected="exit 2 naming the override and saying to add -m or give a fixed value")
def test_a_single_run_reading_hydras_job_config_is_refused(inputs, tmp_path, cli_refusal, expect_clear):
    argv = _args(inputs, tmp_path / "out", "run.dir=" + str(tmp_path / "MR" / JOB_NUM))
    expect_clear(cli_refusal(lambda: cli.check_command_line(argv)),
                 match=r"run\.dir=\S+/MR/\$\{hydra:job\.num\} reads Hydra's job config .*add -m .* fixed value")
    assert not (tmp_path / "MR").exists()


@pytest.mark.parametrize("sweep, dirs", [
    (["seed=1,2", "run.dir={tmp}/MR/" + JOB_NUM], ["MR/0", "MR/1"]),
    (["seed=1,2", "run.dir={tmp}/MR/seed${seed}"], ["MR/seed1", "MR/seed2"]),
    (["paths.output_dir={tmp}/a,{tmp}/b"], None),  # the run dir is under paths.output_dir: one each
], ids=["${hydra:job.num}", "${seed}", "paths.output_dir"])
def test_jobs_with_dirs_of_their_own_pass(inputs, tmp_path, sweep, dirs):
    sweep_obj = cli.check_multirun(_args(inputs, tmp_path / "out", *(s.replace("{tmp}", str(tmp_path)) for s in sweep)))
    got = [job.out_dir for job in sorted(sweep_obj.jobs.values(), key=lambda j: j.num)]
    assert len(set(got)) == 2
    if dirs is not None:
        assert got == [tmp_path / d for d in dirs]


@case(name="-m seed=2,1 run.dir='DIR/${hydra:job.num}' where DIR/0 holds the run of seed=1", kind=1,
      expected="exit 2 before any job starts: DIR/0 belongs to another config, in the job with seed=2")
def test_a_jobs_dir_holding_another_configs_run_is_refused_up_front(inputs, tmp_path, cli_refusal, expect_clear):
    from compresslab.config import compose
    from compresslab.pipeline import run

    run(compose(_args(inputs, tmp_path / "out", "seed=1", f"run.dir={tmp_path}/MR/0")))
    argv = _args(inputs, tmp_path / "out", "seed=2,1", f"run.dir={tmp_path}/MR/{JOB_NUM}")
    expect_clear(cli_refusal(lambda: cli.check_multirun(argv)),
                 match=r"MR/0 belongs to another config.*multirun job with seed=2; no job was started")
    assert not (tmp_path / "MR" / "1").exists()
    # a single run finds it before any data is read too
    expect_clear(cli_refusal(lambda: cli.check_command_line(
        _args(inputs, tmp_path / "out", "seed=2", f"run.dir={tmp_path}/MR/0"))), match=r"belongs to another config")


# ------------------------------------------------------------------ 2. a job that fails at run time

@pytest.fixture(autouse=True)
def _logging_kept() -> Iterator[None]:
    """Hydra configures logging for each job (handlers on the test's captured streams, closed after it): every
    logger's handlers, level and state are put back after the test, or later tests' log lines go to closed files."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    yield
    for lg in logging.Logger.manager.loggerDict.values():  # the loggers Hydra made: no handlers left behind
        if isinstance(lg, logging.Logger):
            lg.handlers = []
    for lg, handlers, level, propagate, disabled in saved:
        lg.handlers, lg.level, lg.propagate, lg.disabled = handlers, level, propagate, disabled


def _sweep(monkeypatch: pytest.MonkeyPatch, argv: list[str], fail: dict[int, BaseException]) -> int:
    """``python -m compresslab -m ARGV`` in this process, ``pipeline.run`` raising ``fail[seed]`` for those seeds;
    returns the exit status."""
    from compresslab import pipeline

    real = pipeline.run

    def run(cfg: Any, overrides: Any = None) -> Path:
        if int(cfg.seed) in fail:
            raise fail[int(cfg.seed)]
        return real(cfg, overrides=overrides)

    monkeypatch.setattr(pipeline, "run", run)
    monkeypatch.setattr(sys, "argv", ["compresslab", "-m", *argv])
    try:
        cli.main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _manifest(d: Path) -> dict[str, Any]:
    return json.loads((d / "manifest.json").read_text())


@case(name="-m seed=1,2,3,4: job #1 fails at run time (a bad input), job #2 crashes", kind="own", bad_input=False,
      expected="jobs #0 and #3 still run; each failure named on stderr; a summary of every job; exit 2 (job #1's)")
def test_a_failing_job_does_not_stop_the_sweep(inputs, tmp_path, monkeypatch, capsys, observe):
    from compresslab.config import compose
    from compresslab.pipeline import config_hash, resolve_run_dir

    mr = tmp_path / "MR"
    argv = _args(inputs, tmp_path / "out", "seed=1,2,3,4", f"run.dir={mr}/{JOB_NUM}")
    code = _sweep(monkeypatch, argv, {2: ValueError("seed 2 is refused at run time"),
                                      3: RuntimeError("a crash in job 3")})
    out, err = capsys.readouterr()
    observe(out.splitlines()[-5:])
    assert code == 2  # the first failed job's: a bad input
    assert [_manifest(mr / str(n))["config"]["seed"] for n in (0, 3)] == [1, 4]  # the jobs after the failures ran
    assert "compresslab: error: multirun job #1 (seed=2) failed: seed 2 is refused at run time" in err
    assert "compresslab: error: multirun job #2 (seed=3) crashed: RuntimeError: a crash in job 3" in err
    assert "Traceback" in err  # a crash shows where it happened, as in a single run
    summary = out[out.index("multirun: 4 jobs"):].splitlines()
    assert summary == ["multirun: 4 jobs: 2 stopped, 1 failed, 1 crashed",
        f"  #0 seed=1: stopped, {mr}/0",
        f"  #1 seed=2: failed (exit 2), {mr}/1: seed 2 is refused at run time",
        f"  #2 seed=3: crashed (exit 1), {mr}/2: RuntimeError: a crash in job 3",
        f"  #3 seed=4: stopped, {mr}/3"]
    # one job's recorded command reruns that job alone: its own run dir, not ${hydra:job.num} (unset in a single run)
    m = _manifest(mr / "3")
    _, words = command_overrides(m["command"])
    assert f"run.dir={mr}/3" in words
    again = compose(words)
    assert resolve_run_dir(again) == mr / "3" and config_hash(again) == m["config_hash"]


@case(name="-m seed=1,2,3 with Ctrl-C in job #1", kind="own", bad_input=False,
      expected="the sweep stops (exit 130): the summary lists job #2 as not started")
def test_ctrl_c_stops_the_sweep(inputs, tmp_path, monkeypatch, capsys, observe):
    argv = _args(inputs, tmp_path / "out", "seed=1,2,3", f"run.dir={tmp_path}/MR/{JOB_NUM}")
    code = _sweep(monkeypatch, argv, {2: KeyboardInterrupt()})
    out, err = capsys.readouterr()
    observe(out.splitlines()[-4:])
    assert code == cli.EXIT_INTERRUPTED
    assert out[out.index("multirun: 3 jobs"):].splitlines()[1:] == [
        f"  #0 seed=1: stopped, {tmp_path}/MR/0", f"  #1 seed=2: interrupted (exit 130), {tmp_path}/MR/1",
        "  #2 seed=3: not started"]
    assert not (tmp_path / "MR" / "2").exists()


def test_a_sweep_that_succeeds_exits_0_with_its_summary(inputs, tmp_path, monkeypatch, capsys):
    argv = _args(inputs, tmp_path / "out", "seed=1,2")
    assert _sweep(monkeypatch, argv, {}) == 0
    out = capsys.readouterr().out
    assert "multirun: 2 jobs: 2 stopped" in out and "#1 seed=2: stopped, " in out


def test_jobs_are_numbered_as_hydra_numbers_them(monkeypatch):
    from compresslab.pipeline import multirun

    lists = [["a=1", "a=2"], ["b=x"], ["c=1", "c=2", "c=3"]]
    assert multirun.jobs_to_check(lists) == list(range(6))
    monkeypatch.setattr(multirun, "MAX_CHECKED_JOBS", 4)  # a covering set: job i takes value i of each sweep
    jobs = multirun.sweep_jobs(["a=1,2", "b=x", "c=1,2,3"])
    assert [jobs[n].label for n in multirun.jobs_to_check(lists)] == ["a=1 c=1", "a=2 c=2", "a=1 c=3"]


@pytest.mark.parametrize("error, status, said", [
    (RuntimeError(), "crashed (exit 1)", "RuntimeError"),  # never "RuntimeError:" with nothing after it
    (RuntimeError("two\n  lines"), "crashed (exit 1)", "RuntimeError: two lines"),
    (ValueError(""), "failed (exit 2)", "ValueError"),
    (ValueError("bad\nvalue"), "failed (exit 2)", "bad value"),
], ids=["crash, no message", "crash, two lines", "bad input, no message", "bad input, two lines"])
def test_a_failed_jobs_error_is_one_line_and_never_an_empty_type(monkeypatch, capsys, error, status, said):
    # the summary and the stderr line say an error as every record does (failure.error_text), on one line
    from omegaconf import OmegaConf

    from compresslab.pipeline.multirun import SweepJob
    from compresslab.sweep import Sweep

    def run(cfg: Any) -> None:
        raise error

    monkeypatch.setattr(cli, "_SWEEP", Sweep([SweepJob(0, ["seed=1"], "seed=1")]))
    monkeypatch.setattr(cli, "_run", run)
    monkeypatch.setattr("traceback.print_exc", lambda: None)
    cli._run_sweep_job(OmegaConf.create({"search": {}}), cli._SWEEP.job(0, ["seed=1"]))
    err = capsys.readouterr().err
    assert cli._SWEEP.summary().splitlines()[1] == f"  #0 seed=1: {status}: {said}"
    assert err.strip().endswith(f"multirun job #0 (seed=1) {status.split()[0]}: {said}"), err


def test_jobs_sharing_a_dir_past_the_up_front_check_are_refused_as_it_would(inputs, tmp_path, monkeypatch, capsys):
    # above MAX_CHECKED_JOBS the check before Hydra composes a covering set of jobs, not every pair: #0 (run.threads=1
    # seed=1) and #3 (run.threads=2 seed=2) have dirs of their own; #2 shares #0's and #3 #1's (run.* is no part of a
    # run's identity). Such a job is refused as it starts, naming the earlier job and the setting the up-front
    # refusal gives (check_own_dirs): the dir comes from the identity they share, so one of their own beside it
    from compresslab.pipeline import multirun

    monkeypatch.setattr(multirun, "MAX_CHECKED_JOBS", 2)
    out = tmp_path / "out"
    code = _sweep(monkeypatch, _args(inputs, out, "seed=1,2", "run.threads=1,2"), {})
    err = capsys.readouterr().err
    assert code == 2
    assert "multirun job #2 (run.threads=2 seed=1) failed: " in err
    assert "is the dir of job #0 (run.threads=1 seed=1) of this multirun" in err
    assert f"run.dir='{out}/int8/sweep-${{hydra:job.num}}'" in err, err
