"""Issue #12 kind 1, settings and the CLI: every setting, limit and typo is refused before any work.

Each bad input runs the real entry point: ``compose`` then ``pipeline.run`` (the ``start`` fixture),
with model loading replaced by an error that is not a clear one, so a bad input that gets past the
checks is counted as a traceback, not as clear. CLI cases run the CLI's own checks in-process
(``check_command_line``: what ``python -m compresslab`` does before Hydra starts; ``_main``: what it
does with the composed config), and two run the real command in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from compresslab import cli
from compresslab.config import compose
from compresslab.pipeline import run
from compresslab.testing import write_csv

NOT_CAUGHT = "the model was loaded: the bad input was not caught up front"
case = pytest.mark.case


@pytest.fixture
def data(tmp_path: Path) -> list[str]:
    """Overrides for a tiny generic CSV task and private output and cache dirs (no GLUE needed)."""
    rows = [[f"{w} film number {i}", lab] for i in range(40) for w, lab in (("good", "pos"), ("bad", "neg"))]
    train = write_csv(tmp_path / "train.csv", ["text", "label"], rows)
    dev = write_csv(tmp_path / "dev.csv", ["text", "label"], rows[:8])
    return ["task=generic", f"task.generic.train={train}", f"task.generic.dev={dev}",
            f"paths.output_dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}"]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the model raises a RuntimeError (not a clear error): a run stops there."""
    import compresslab.pipeline.state as state

    def loaded(self: Any) -> None:
        raise RuntimeError(NOT_CAUGHT)

    monkeypatch.setattr(state.RunState, "load_initial", loaded)


@pytest.fixture
def start(data: list[str], no_model: None) -> Callable[..., Callable[[], Any]]:
    """``start(*overrides, pipeline="int8")``: a thunk that composes the pipeline (debug=smoke, the
    tiny CSV task) and runs it up to loading the model, which raises a non-clear RuntimeError."""

    def make(*overrides: str, pipeline: str = "int8") -> Callable[[], Any]:
        return lambda: run(compose([f"+pipeline={pipeline}", "debug=smoke", *data, *overrides]))

    return make


def _refusal(capsys: pytest.CaptureFixture[str], fn: Callable[[], Any]) -> Callable[[], None]:
    """``fn`` (a CLI entry) as a thunk whose refusal, exit status 2 with one line on stderr and no
    traceback, is raised as a ValueError carrying that line (any other exit is re-raised)."""

    def call() -> None:
        try:
            fn()
        except SystemExit as e:
            err = capsys.readouterr().err.strip()
            if e.code == 2 and err.startswith("compresslab: error:") and "\n" not in err and "Traceback" not in err:
                raise ValueError(err) from None
            raise
    return call


def _unwritable(tmp_path: Path) -> Path:
    """A directory nobody can create or write: read-only for a normal user, under /proc for root."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        ro = tmp_path / "read-only"
        ro.mkdir()
        ro.chmod(0o500)
        return ro / "out"
    if not Path("/proc/self").is_dir():
        pytest.skip("needs a non-root user or Linux /proc")
    return Path("/proc/compresslab-test/out")


# ------------------------------------------------------------------ the cases

@case(name="seed=abc", kind=1, expected="a one-line error naming `seed`, no traceback")
def test_seed_not_an_integer(start, expect_clear):
    expect_clear(start("seed=abc"), match=r"seed must be an integer")


@case(name="run.threads=0", kind=1, expected="an error naming `run.threads` before torch's threads are set")
def test_threads_zero(capsys, expect_clear, data, no_model):
    cfg = compose(["+pipeline=int8", "debug=smoke", *data, "run.threads=0"])
    expect_clear(_refusal(capsys, lambda: cli._main(cfg)), match=r"run\.threads must be an integer >= 1")


@case(name="device=cuda on a CPU-only torch", kind=1, expected="an error naming `device` and what to use")
def test_cuda_missing(start, expect_clear, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expect_clear(start("device=cuda"), match=r"device='cuda'.*device=cpu")


@case(name="model=local without model.source", kind=1, expected="an error saying to set model.source=DIR")
def test_local_model_without_source(start, expect_clear):
    expect_clear(start("model=local"), match=r"model\.source is not set.*model\.source=/path")


@case(name="read-only output dir", kind=1, expected="an error naming paths.output_dir and the path, nothing written")
def test_read_only_output_dir(start, expect_clear, tmp_path):
    out = _unwritable(tmp_path)
    expect_clear(start(f"paths.output_dir={out}"), match=rf"paths\.output_dir={out}: cannot write there")


@case(name="export.opset=5", kind=1, expected="an error naming export.opset and the range this install exports")
def test_opset_too_low(start, expect_clear):
    expect_clear(start("export.opset=5"), match=r"opset=5 cannot be used.*opsets 13\.\.\d+.*set export\.opset")


@case(name="debug=smok", kind=1, expected="an error: no such option, the options of `debug` listed")
def test_debug_typo(start, expect_clear):
    expect_clear(start("debug=smok"), match=r"debug=smok: no such option.*smoke")


@case(name="eval.split=test", kind=1, expected="an error listing dev and validation")
def test_eval_split_typo(start, expect_clear):
    expect_clear(start("eval.split=test"), match=r"split='test' is not valid; allowed: 'dev', 'validation'")


@case(name="budget.batch_size=0", kind=1, expected="an error naming budget.batch_size before any training")
def test_batch_size_zero(start, expect_clear):
    expect_clear(start("budget.batch_size=0"), match=r"budget\.batch_size must be an integer >= 1")


@case(name="bench.shapes=[[0,128]]", kind=1, expected="an error naming the bench shape before any training")
def test_bench_shape_zero(start, expect_clear):
    expect_clear(start("bench.shapes=[[0,128]]"), match=r"bench: shapes batch must be an integer >= 1")


@case(name="--help", kind="first", bad_input=False, expected="a description, the usage and examples, then the groups")
def test_help_describes_and_shows_examples(observe):
    out = subprocess.run([sys.executable, "-m", "compresslab", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("compresslab: compress a Hugging Face encoder")
    assert "Usage: python -m compresslab +pipeline=NAME" in out.stdout
    assert "Examples:" in out.stdout and "model=local model.source=" in out.stdout
    assert "pipeline: bibert" in out.stdout  # the groups and their options
    assert "Powered by Hydra" not in out.stdout
    observe(first)


# ------------------------------------------------------------------ siblings: the CLI

@case(name="CLI: seed=abc", kind=1, expected="exit status 2, one line on stderr naming seed, no traceback")
def test_cli_seed_not_an_integer(tmp_path, observe):
    out = subprocess.run([sys.executable, "-m", "compresslab", "+pipeline=int8", "debug=smoke", "seed=abc",
                          f"paths.output_dir={tmp_path}/out", f"data.root={tmp_path}/nodata"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    err = out.stderr.strip()
    observe(f"exit {out.returncode}: {err}")
    assert out.returncode == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("compresslab: error: seed must be an integer")
    assert not (tmp_path / "out").exists()  # refused before Hydra made its run dir


@case(name="CLI: read-only output dir", kind=1,
      expected="exit 2 naming paths.output_dir, before Hydra writes its logs there")
def test_cli_read_only_output_dir(capsys, expect_clear, tmp_path):
    out = _unwritable(tmp_path)
    expect_clear(_refusal(capsys, lambda: cli.check_command_line(["+pipeline=int8", f"paths.output_dir={out}"])),
                 match=r"compresslab: error: paths\.output_dir=.*cannot write there")


@case(name="CLI: debug=smok", kind=1, expected="exit 2, one line naming debug/smok and the options")
def test_cli_group_typo(capsys, expect_clear):
    expect_clear(_refusal(capsys, lambda: cli.check_command_line(["+pipeline=int8", "debug=smok"])),
                 match=r"debug=smok: no such option \(no config 'debug/smok'\); choose one with debug=NAME: smoke")


@case(name="CLI: budget=quik", kind=1, expected="exit 2 listing the budgets")
def test_cli_budget_typo(capsys, expect_clear):
    expect_clear(_refusal(capsys, lambda: cli.check_command_line(["+pipeline=int8", "budget=quik"])),
                 match=r"budget=quik: no such option.*bench, quick, smoke")


@case(name="CLI: pipeline=int8 without +", kind=1, expected="exit 2 saying to write +pipeline=int8")
def test_cli_pipeline_without_plus(capsys, expect_clear):
    expect_clear(_refusal(capsys, lambda: cli.check_command_line(["pipeline=int8"])), match=r"\+pipeline=int8")


@case(name="CLI: +debug=smoke", kind=1, expected="exit 2 saying to write debug=smoke without '+'")
def test_cli_group_with_plus(capsys, expect_clear):
    expect_clear(_refusal(capsys, lambda: cli.check_command_line(["+pipeline=int8", "+debug=smoke"])),
                 match=r"debug=OPTION, without '\+'")


@case(name="CLI: run.thread=2 (a key that does not exist, without +)", kind=1,
      expected="exit 2 saying there is no such setting, with a did-you-mean")
def test_cli_override_of_missing_key(capsys, expect_clear):
    expect_clear(_refusal(capsys, lambda: cli.check_command_line(["+pipeline=int8", "run.thread=2"])),
                 match=r"run\.thread: no such setting \('thread': did you mean 'threads'\?\); check its spelling")


@case(name="CLI: override syntax error", kind=1, expected="exit 2 with the parser's one-line message")
def test_cli_syntax_error(capsys, expect_clear):
    expect_clear(_refusal(capsys, lambda: cli.check_command_line(["+pipeline=int8", "bench.shapes=[[1,128]"])),
                 match=r"compresslab: error: .*bench\.shapes")


# ------------------------------------------------------------------ siblings: unknown keys and values

@case(name="+foo=1 (unknown top-level key)", kind=1, expected="an error listing the top-level settings")
def test_unknown_root_key(start, expect_clear):
    expect_clear(start("+foo=1"), match=r"unknown setting\(s\) \['foo'\].*allowed: bench, budget")


@case(name="+task.max_lenght=64 (misspelled, added with +)", kind=1, expected="an error with a did-you-mean hint")
def test_misspelled_key_added(start, expect_clear):
    expect_clear(start("+task.max_lenght=64"),
                 match=r"task: unknown setting\(s\) \['max_lenght'\].*did you mean 'max_length'")


@case(name="+run.thread=2", kind=1, expected="an error listing the run settings")
def test_unknown_run_key(start, expect_clear):
    expect_clear(start("+run.thread=2"), match=r"run: unknown setting.*did you mean 'threads'")


@case(name="+budget.recovery_step=10", kind=1, expected="an error listing the budget keys")
def test_unknown_budget_key(start, expect_clear):
    expect_clear(start("+budget.recovery_step=10"), match=r"budget: unknown setting.*recovery_steps")


@case(name="+pipeline.passes.int8.per_chanel=false", kind=1, expected="an error naming the key, the pass's settings")
def test_unknown_pass_key(start, expect_clear):
    expect_clear(start("+pipeline.passes.int8.per_chanel=false"),
                 match=r"pipeline\.passes\.int8: unknown setting.*did you mean 'per_channel'")


@case(name="pipeline.passes.finetune.cache=maybe", kind=1,
      expected="an error naming the pass's flag (a string would be truthy), from the annotations of any pass")
def test_pass_flag_not_bool(start, expect_clear):
    expect_clear(start("pipeline.passes.finetune.cache=maybe"),
                 match=r"pipeline\.passes\.finetune\.cache must be true or false")


@case(name="run.overwrite=yes", kind=1, expected="an error: true or false (a string 'yes' would be truthy)")
def test_truthy_string(start, expect_clear):
    expect_clear(start("run.overwrite=yes"), match=r"run\.overwrite must be true or false")


@case(name="report=maybe", kind=1, expected="an error: report is true or false")
def test_report_not_bool(start, expect_clear):
    expect_clear(start("report=maybe"), match=r"report must be true or false")


@case(name="export.optimize=maybe", kind=1, expected="an error naming export optimize")
def test_export_optimize_not_bool(start, expect_clear):
    expect_clear(start("export.optimize=maybe"), match=r"export: optimize must be true or false")


@case(name="eval.enabled=no", kind=1, expected="an error naming eval enabled")
def test_eval_enabled_not_bool(start, expect_clear):
    expect_clear(start("eval.enabled=no"), match=r"eval: enabled must be true or false")


@case(name="export.opset=24", kind=1, expected="an error: above the newest opset the installed torch exports")
def test_opset_too_high(start, expect_clear):
    expect_clear(start("export.opset=24"), match=r"opset=24 cannot be used.*opsets 13\.\.2[0-3]")


@case(name="seed=1.5 / seed=2**64", kind=1, expected="an error naming seed")
@pytest.mark.parametrize("seed", ["1.5", str(2**64)])
def test_seed_out_of_range(start, expect_clear, seed):
    expect_clear(start(f"seed={seed}"), match=r"seed must be an integer")


@case(name="task.max_train=0", kind=1, expected="an error naming task.max_train (0 examples cannot train)")
def test_max_train_zero(start, expect_clear):
    expect_clear(start("task.max_train=0"), match=r"task\.max_train must be an integer >= 1")


@case(name="budget.recovery_steps=-3", kind=1, expected="an error naming budget.recovery_steps")
def test_negative_steps(start, expect_clear):
    expect_clear(start("budget.recovery_steps=-3"), match=r"budget\.recovery_steps must be an integer >= 0")


@case(name="budget.lr=0", kind=1, expected="an error naming budget.lr")
def test_lr_zero(start, expect_clear):
    expect_clear(start("budget.lr=0"), match=r"budget\.lr must be > 0")


@case(name="bench.shapes=128 (a number for a list)", kind=1,
      expected="an error saying shapes is a list of [batch, seq]")
def test_scalar_for_list(start, expect_clear):
    expect_clear(start("bench.shapes=128"), match=r"shapes must be a list of \[batch, seq\] pairs")


@case(name="pipeline.steps=finetune (a string for a list)", kind=1, expected="an error saying steps is a list")
def test_steps_not_a_list(start, expect_clear):
    expect_clear(start("pipeline.steps=finetune"), match=r"pipeline\.steps must be a list of step names")


@case(name="bench.real_length_batch_size=0", kind=1, expected="an error naming the setting before training")
def test_real_length_batch_zero(start, expect_clear):
    expect_clear(start("bench.real_length_batch_size=0"), match=r"real_length_batch_size must be an integer >= 1")


@case(name="bench.max_runs below bench.runs", kind=1, expected="an error naming both")
def test_max_runs_below_runs(start, expect_clear):
    expect_clear(start("bench.runs=10", "bench.max_runs=5"), match=r"max_runs=5 is below runs=10")


@case(name="bench.deepsparse.batches=32 (a number for a list)", kind=1,
      expected="an error naming bench.deepsparse batches")
def test_deepsparse_batches_scalar(start, expect_clear):
    expect_clear(start("bench.deepsparse.batches=32"),
                 match=r"^bench\.deepsparse: batches must be a list")


# ------------------------------------------------------------------ siblings: limits of the model, machine and install

@case(name="task.max_length=600 > 512 positions", kind=1, expected="an error naming task.max_length and the limit")
def test_max_length_over_position_table(start, expect_clear):
    expect_clear(start("task.max_length=600"), match=r"task\.max_length=600 exceeds.*set task\.max_length<=512")


@case(name="bench.shapes seq 1024 > 512 positions", kind=1,
      expected="an error naming the bench shape before training (else the bench fails after it)")
def test_bench_seq_over_position_table(start, expect_clear):
    expect_clear(start("bench.shapes=[[1,1024]]"), match=r"bench\.shapes seq=1024 exceeds.*512")


@case(name="pipeline.passes.ziplm.seq=1024 > 512 positions", kind=1,
      expected="an error naming the pass's seq before the teacher is trained")
def test_pass_seq_over_position_table(start, expect_clear):
    expect_clear(start("pipeline.passes.ziplm.seq=1024", pipeline="ziplm_2x"),
                 match=r"pipeline\.passes\.ziplm\.seq=1024 exceeds")


@case(name="RoBERTa: task.max_length=513 with 514 position rows", kind=1,
      expected="an error: RoBERTa embeds at most 512 tokens (2 rows are the padding offset)")
def test_roberta_position_offset(start, expect_clear, tmp_path):
    d = tmp_path / "roberta"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "roberta", "max_position_embeddings": 514,
                                               "pad_token_id": 1}))
    expect_clear(start("model=local", f"model.source={d}", "task.max_length=513"),
                 match=r"task\.max_length=513 exceeds.*at most 512")


@case(name="bench.gpu=torch_cuda without CUDA", kind=1,
      expected="an error at start naming bench.gpu (else after training)")
def test_gpu_backend_missing(start, expect_clear, monkeypatch):
    import compresslab.bench.runners as runners

    monkeypatch.setattr(runners, "cuda_available_backends", lambda: [])
    expect_clear(start("bench.gpu=torch_cuda"), match=r"gpu='torch_cuda' requested.*bench\.gpu=auto")


@case(name="paths.cache_dir unwritable", kind=1, expected="an error naming paths.cache_dir and COMPRESSLAB_CACHE")
def test_cache_dir_unwritable(start, expect_clear, tmp_path):
    expect_clear(start(f"paths.cache_dir={_unwritable(tmp_path)}"), match=r"paths\.cache_dir=.*COMPRESSLAB_CACHE")


@case(name="run.dir under a file", kind=1, expected="an error naming run.dir and the path")
def test_run_dir_under_a_file(start, expect_clear, tmp_path):
    (tmp_path / "a-file").write_text("x")
    expect_clear(start(f"run.dir={tmp_path / 'a-file' / 'run'}"), match=r"run\.dir=.*a-file.*cannot write there")


# ------------------------------------------------------------------ a good config

@case(name="a valid config passes every check", kind=1, bad_input=False,
      expected="the run reaches model loading; the checks leave no directory behind")
def test_valid_config_reaches_the_model(start, tmp_path, observe):
    with pytest.raises(RuntimeError, match=NOT_CAUGHT):
        start()()
    assert not (tmp_path / "out").exists()
    observe("reached model loading; no output dir left by the checks")


# ------------------------------------------------------------------ the API checks what the CLI checks

@case(name="compress() with a pass flag of the wrong type", kind=1,
      expected="the API refuses cache='maybe' as the CLI does, naming the pass and the field")
def test_api_pass_field_type(expect_clear):
    from compresslab.api import build_steps

    expect_clear(lambda: build_steps([{"name": "finetune", "cache": "maybe"}, "ort_int8_dynamic"]),
                 match=r"finetune.*cache must be")
