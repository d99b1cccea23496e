"""Issue #12: the CLI refuses a bad command line before Hydra starts a job.

* a misspelled key gets a did-you-mean in every config group, set with or without ``+``;
* ``-m`` multiruns have every job checked before the first starts (``cli.check_multirun``).

One subprocess of the real CLI (a refused multirun); the rest calls the CLI's checks in process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from _cases import case_param
from compresslab import cli

case = pytest.mark.case


TYPOS = [  # (overrides, the did-you-mean)
    (["model.sorce=/models/x"], r"model\.sorce: no such setting \('sorce': did you mean 'source'\?\)"),
    (["model=local", "model.sorce=/models/x"], r"model\.sorce: no such setting \('sorce': did you mean 'source'\?\)"),
    (["model=local", "+model.sorce=/models/x"], r"model: unknown setting\(s\) \['sorce'\] \('sorce': did you mean "
                                                r"'source'\?\)"),
    (["+model.finetunned=true"], r"did you mean 'finetuned'"),
    (["data.rot=/data"], r"data\.rot: no such setting \('rot': did you mean 'root'\?\)"),
    (["eval.splt=dev"], r"eval\.splt: no such setting \('splt': did you mean 'split'\?\)"),
    (["+eval.splt=dev"], r"eval: unknown key\(s\) \['splt'\] \('splt': did you mean 'split'\?\)"),
    (["bench.deepsparse.sq=64"], r"did you mean 'seq'"),
    (["+bench.deepsparse.sq=64"], r"bench\.deepsparse: unknown key.*did you mean 'seq'"),
    (["+export.opst=17"], r"export: unknown key.*did you mean 'opset'"),
    (["budget.recovery_step=3"], r"did you mean 'recovery_steps'"),
    (["seeed=3"], r"seeed: no such setting \('seeed': did you mean 'seed'\?\)"),
    (["paths.outptu_dir=/x"], r"did you mean 'output_dir'"),
    (["pipeline.passes.int8.per_chanel=false"], r"did you mean 'per_channel'"),
    (["task=generic", "task.generic.trian=a.csv"], r"task\.generic\.trian: no such setting.*did you mean 'train'"),
    (["task=generic", "+task.generic.trian=a.csv"], r"task\.generic: unknown setting.*did you mean 'train'"),
]


@pytest.mark.parametrize("overrides,hint", TYPOS, ids=[" ".join(o) for o, _ in TYPOS])
@case(name="a misspelled key (model.sorce=DIR) in any config group, with or without +", kind=1,
      expected="exit 2 before Hydra starts, naming the key with a did-you-mean")


def test_misspelled_key_did_you_mean(overrides, hint, cli_refusal, expect_clear):
    expect_clear(cli_refusal(lambda: cli.check_command_line(["+pipeline=int8", *overrides])), match=hint)


# ------------------------------------------------------------------ 2. -m: every job checked first


@case(name="CLI: +pipeline=int8 -m seed=abc", kind=1,
      expected="exit 2, the same one line as without -m, before Hydra starts a job (no multirun dir)")


def test_cli_multirun_bad_value(tmp_path, observe):
    out = subprocess.run([sys.executable, "-m", "compresslab", "+pipeline=int8", "-m", "seed=abc",
                          f"paths.output_dir={tmp_path}/out"], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    err = out.stderr.strip()
    observe(f"exit {out.returncode}: {err}")
    assert out.returncode == 2 and "Traceback" not in err
    assert err == "compresslab: error: seed must be an integer >= 0, got 'abc'"
    assert not (tmp_path / "out").exists()  # Hydra's multirun dir was never made


@pytest.mark.parametrize("argv, match", [  # each -m command refused with exit 2 before any job starts
    case_param(["+pipeline=int8", "seed=1,abc"],
               r"seed must be an integer.*'abc' \(in the multirun job with seed=abc; no job was started\)",
               name="-m seed=1,abc (a bad value in a sweep)", kind=1,
               expected="exit 2 naming the job's swept value, no job started"),
    case_param(["+pipeline=int8", "sede=1,2"],
               r"sede: no such setting \('sede': did you mean 'seed'\?\).*no job was started",
               name="--multirun sede=1,2 (a typo key)", kind=1,
               expected="exit 2 with the did-you-mean, no job started"),
    case_param(["+pipeline=int8", "budget=quick,smoke", "eval.split=dev,test"],
               r"split='test' is not valid.*multirun job with budget=quick eval\.split=test",
               name="-m budget=quick,smoke eval.split=dev,test (the bad value in one combination)", kind=1,
               expected="exit 2 naming that job's values"),
    case_param(["+pipeline=int8", "seed=interval(0,1)"],
               r"seed=interval\(0,1\): a multirun \(-m\) sweeps lists.*give the values as a list",
               name="-m seed=interval(0,1)", kind=1,
               expected="exit 2: the basic sweeper takes lists, range() and glob()"),
])


def test_multirun_refused(cli_refusal, expect_clear, argv, match):
    expect_clear(cli_refusal(lambda: cli.check_multirun(argv)), match=match)


@case(name="-m over more jobs than are composed one by one (task=glob(*) seed=range(0,20) debug=...)", kind=1,
      expected="every swept value still checked: the bad one named")


def test_multirun_large_sweep_checks_each_value(cli_refusal, monkeypatch, expect_clear):
    from compresslab.pipeline import multirun

    monkeypatch.setattr(multirun, "MAX_CHECKED_JOBS", 4)  # as if the sweep were huge
    expect_clear(cli_refusal(lambda: cli.check_multirun(["+pipeline=int8", "budget=glob(*)", "seed=range(0,6)",
                                                          "task.max_length=64,32,0"])),
                 match=r"task\.max_length must be an integer >= 1.*multirun job with .*task\.max_length=0")


@case(name="--cfg job with a misspelled key (pipeline.passes.obert.sparsty=0.5)", kind=1,
      expected="exit 2: one line with the did-you-mean, not Hydra's advice to append it with '+'")


def test_cfg_job_with_a_typo(cli_refusal, expect_clear, monkeypatch):
    import hydra

    def hydra_never_starts(*a, **k):
        raise AssertionError("hydra.main was reached: the typo was not refused first")

    monkeypatch.setattr(hydra, "main", hydra_never_starts)
    monkeypatch.setattr(sys, "argv", ["compresslab", "+pipeline=obert_int8", "debug=smoke",
                                      "pipeline.passes.obert.sparsty=0.5", "--cfg", "job"])
    expect_clear(cli_refusal(cli.main), match=r"sparsty: no such setting .*did you mean 'sparsity'")


@case(name="+pipeline=int8 -m seed=1,2 --cfg job (flags anywhere)", kind="own", bad_input=False,
      expected="Hydra's own parser accepts the reordered command line (it refused overrides after -m); "
               "--cfg prints instead of running, so nothing is checked")


def test_multirun_flags_anywhere(observe):
    from hydra._internal.utils import get_args_parser

    args = ["+pipeline=int8", "-m", "seed=1,2", "--cfg", "job", "task.max_length=64"]
    parsed = cli._parse_hydra_args(args)
    argv = cli._overrides_first(args, parsed.overrides)
    assert argv == ["+pipeline=int8", "seed=1,2", "task.max_length=64", "-m", "--cfg", "job"]
    again = get_args_parser().parse_args(argv)  # what hydra.main does with sys.argv
    assert again.multirun and again.cfg == "job" and again.overrides == parsed.overrides
    from compresslab.pipeline.multirun import sweep_jobs

    assert [job.overrides for job in sweep_jobs(["a=1,2", "b=x", "c=1,2,3"])] == [
        ["a=1", "b=x", "c=1"], ["a=1", "b=x", "c=2"], ["a=1", "b=x", "c=3"],
        ["a=2", "b=x", "c=1"], ["a=2", "b=x", "c=2"], ["a=2", "b=x", "c=3"]]
    observe(f"{args} -> {argv}")


# ------------------------------------------------------------------ 6. overrides recorded, rerun command exact
