"""Issue #12 kind 1, settings and the CLI: every setting, limit and typo is refused before any work.

Each bad input runs the real entry point: ``compose`` then ``pipeline.run`` (the ``start`` fixture),
with model loading replaced by an error that is not a clear one, so a bad input that gets past the
checks is counted as a traceback, not as clear. CLI cases run the CLI's own checks in-process
(``check_command_line``: what ``python -m compresslab`` does before Hydra starts; ``_main``: what it
does with the composed config), and two run the real command in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from _cases import case_param
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


def refused(name: str, expected: str, overrides: str | tuple[str, ...], match: str, *,
            pipeline: str = "int8") -> Any:
    """One case of :func:`test_refused_before_work`: ``start(*overrides, pipeline=pipeline)`` must
    raise a clear error matching ``match``."""
    overrides = (overrides,) if isinstance(overrides, str) else overrides
    return case_param(overrides, pipeline, match, name=name, kind=1, expected=expected, id=" ".join(overrides))


NO_TEACHER = (r"step '{step}' distils from a teacher, but none is made before it.*Put 'finetune' first in "
              r"pipeline\.steps, or set model\.finetuned=true")

# Each a setting, limit or typo that the composed config and the plan must refuse before the model is
# loaded: they differ only in the override and the message.
REFUSED = [
    # the cases
    refused("seed=abc", "a one-line error naming `seed`, no traceback",
            "seed=abc", r"seed must be an integer"),
    refused("model=local without model.source", "an error saying to set model.source=DIR",
            "model=local", r"model\.source is not set.*model\.source=/path"),
    refused("export.opset=5", "an error naming export.opset and the range this install exports",
            "export.opset=5", r"opset=5 cannot be used.*opsets 13\.\.\d+.*set export\.opset"),
    refused("debug=smok", "an error: no such option, the options of `debug` listed",
            "debug=smok", r"debug=smok: no such option.*smoke"),
    refused("eval.split=test", "an error listing dev and validation",
            "eval.split=test", r"split='test' is not valid; allowed: 'dev', 'validation'"),
    refused("budget.batch_size=0", "an error naming budget.batch_size before any training",
            "budget.batch_size=0", r"budget\.batch_size must be an integer >= 1"),
    refused("bench.shapes=[[0,128]]", "an error naming the bench shape before any training",
            "bench.shapes=[[0,128]]", r"bench: shapes batch must be an integer >= 1"),
    # siblings: unknown keys and values
    refused("+foo=1 (unknown top-level key)", "an error listing the top-level settings",
            "+foo=1", r"unknown setting\(s\) \['foo'\].*allowed: bench, budget"),
    refused("+task.max_lenght=64 (misspelled, added with +)", "an error with a did-you-mean hint",
            "+task.max_lenght=64", r"task: unknown setting\(s\) \['max_lenght'\].*did you mean 'max_length'"),
    refused("+run.thread=2", "an error listing the run settings",
            "+run.thread=2", r"run: unknown setting.*did you mean 'threads'"),
    refused("+budget.recovery_step=10", "an error listing the budget keys",
            "+budget.recovery_step=10", r"budget: unknown setting.*recovery_steps"),
    refused("+pipeline.passes.int8.per_chanel=false", "an error naming the key, the pass's settings",
            "+pipeline.passes.int8.per_chanel=false",
            r"pipeline\.passes\.int8: unknown setting.*did you mean 'per_channel'"),
    refused("pipeline.passes.finetune.cache=maybe",
            "an error naming the pass's flag (a string would be truthy), from the annotations of any pass",
            "pipeline.passes.finetune.cache=maybe", r"pipeline\.passes\.finetune\.cache must be true or false"),
    refused("run.overwrite=yes", "an error: true or false (a string 'yes' would be truthy)",
            "run.overwrite=yes", r"run\.overwrite must be true or false"),
    refused("report=maybe", "an error: report is true or false",
            "report=maybe", r"report must be true or false"),
    refused("export.optimize=maybe", "an error naming export optimize",
            "export.optimize=maybe", r"export: optimize must be true or false"),
    refused("eval.enabled=no", "an error naming eval enabled",
            "eval.enabled=no", r"eval: enabled must be true or false"),
    refused("export.opset=24", "an error: above the newest opset the installed torch exports",
            "export.opset=24", r"opset=24 cannot be used.*opsets 13\.\.2[0-3]"),
    refused("task.max_train=0", "an error naming task.max_train (0 examples cannot train)",
            "task.max_train=0", r"task\.max_train must be an integer >= 1"),
    refused("budget.recovery_steps=-3", "an error naming budget.recovery_steps",
            "budget.recovery_steps=-3", r"budget\.recovery_steps must be an integer >= 0"),
    refused("budget.lr=0", "an error naming budget.lr",
            "budget.lr=0", r"budget\.lr must be a number > 0"),
    refused("budget.lr=fast (text for a number)", "an error saying budget.lr must be a number, not only > 0",
            "budget.lr=fast", r"budget\.lr must be a number > 0, got 'fast'"),
    refused("bench.shapes=128 (a number for a list)", "an error saying shapes is a list of [batch, seq]",
            "bench.shapes=128", r"shapes must be a list of \[batch, seq\] pairs"),
    refused("bench.shapes=[1,128] (one pair, not a list of pairs)", "an error saying each entry is a pair",
            "bench.shapes=[1,128]", r"shapes: each entry is a \[batch, seq\] pair.*got 1"),
    refused("bench.denominator=torch_fp32 with bench.backends=[ort]", "an error saying torch must be a backend",
            ("bench.denominator=torch_fp32", "bench.backends=[ort]"),
            r"denominator='torch_fp32' needs the torch backend: add torch to bench\.backends"),
    refused("pipeline.steps=finetune (a string for a list)", "an error saying steps is a list",
            "pipeline.steps=finetune", r"pipeline\.steps must be a list of step names"),
    refused("bench.real_length_batch_size=0", "an error naming the setting before training",
            "bench.real_length_batch_size=0", r"real_length_batch_size must be an integer >= 1"),
    refused("bench.max_runs below bench.runs", "an error naming both",
            ("bench.runs=10", "bench.max_runs=5"), r"max_runs=5 is below runs=10"),
    refused("bench.deepsparse.batches=32 (a number for a list)", "an error naming bench.deepsparse batches",
            "bench.deepsparse.batches=32", r"^bench\.deepsparse: batches must be a list"),
    refused("seed=1.5 / seed=2**64", "an error naming seed", "seed=1.5", r"seed must be an integer"),
    refused("seed=1.5 / seed=2**64", "an error naming seed", f"seed={2**64}", r"seed must be an integer"),
    # siblings: limits of the model, machine and install
    refused("task.max_length=600 > 512 positions", "an error naming task.max_length and the limit",
            "task.max_length=600", r"task\.max_length=600 exceeds.*set task\.max_length<=512"),
    refused("bench.shapes seq 1024 > 512 positions",
            "an error naming the bench shape before training (else the bench fails after it)",
            "bench.shapes=[[1,1024]]", r"bench\.shapes seq=1024 exceeds.*512"),
    refused("pipeline.passes.ziplm.seq=1024 > 512 positions",
            "an error naming the pass's seq before the teacher is trained",
            "pipeline.passes.ziplm.seq=1024", r"pipeline\.passes\.ziplm\.seq=1024 exceeds", pipeline="ziplm_2x"),
    # a pass that distils needs a teacher made before it (pipeline.plan.check_teacher_made)
    refused("pipeline.steps=[bibert] (no finetune) with model.finetuned=false",
            "refused at plan time: bibert distils from a teacher and none is made; put finetune first or set "
            "model.finetuned=true (else it distils from the model's untrained head)",
            "pipeline.steps=[bibert]", NO_TEACHER.format(step="bibert"), pipeline="bibert"),
    refused("pipeline.steps=[ziplm,int8] (no finetune; KD recovery) with model.finetuned=false",
            "refused at plan time as for bibert: every pass that distils needs a teacher made before it",
            "pipeline.steps=[ziplm,int8]", NO_TEACHER.format(step="ziplm"), pipeline="ziplm_int8"),
]


@pytest.mark.parametrize("overrides, pipeline, match", REFUSED)
def test_refused_before_work(start, expect_clear, overrides, pipeline, match):
    expect_clear(start(*overrides, pipeline=pipeline), match=match)


# ------------------------------------------------------------------ the cases


@case(name="run.threads=0", kind=1, expected="an error naming `run.threads` before torch's threads are set")
def test_threads_zero(cli_refusal, expect_clear, data, no_model):
    cfg = compose(["+pipeline=int8", "debug=smoke", *data, "run.threads=0"])
    expect_clear(cli_refusal(lambda: cli._main(cfg)), match=r"run\.threads must be an integer >= 1")


@case(name="device=cuda on a CPU-only torch", kind=1, expected="an error naming `device` and what to use")
def test_cuda_missing(start, expect_clear, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expect_clear(start("device=cuda"), match=r"device='cuda'.*device=cpu")


@case(name="read-only output dir", kind=1, expected="an error naming paths.output_dir and the path, nothing written")
def test_read_only_output_dir(start, expect_clear, unwritable):
    expect_clear(start(f"paths.output_dir={unwritable}"), match=rf"paths\.output_dir={unwritable}: cannot write there")


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
def test_cli_read_only_output_dir(cli_refusal, expect_clear, unwritable):
    expect_clear(cli_refusal(lambda: cli.check_command_line(["+pipeline=int8", f"paths.output_dir={unwritable}"])),
                 match=r"compresslab: error: paths\.output_dir=.*cannot write there")


def cli_refused(name: str, expected: str, argv: list[str], match: str) -> Any:
    """One case of :func:`test_cli_refused`: ``python -m compresslab ARGV`` refused by the checks it
    runs before Hydra starts (``cli.check_command_line``), exit 2 with one line matching ``match``."""
    return case_param(argv, match, name=name, kind=1, expected=expected, id=" ".join(argv))


@pytest.mark.parametrize("argv, match", [
    cli_refused("CLI: debug=smok", "exit 2, one line naming debug/smok and the options",
                ["+pipeline=int8", "debug=smok"],
                r"debug=smok: no such option \(no config 'debug/smok'\); choose one with debug=NAME: smoke"),
    cli_refused("CLI: budget=quik", "exit 2 listing the budgets",
                ["+pipeline=int8", "budget=quik"], r"budget=quik: no such option.*bench, quick, smoke"),
    cli_refused("CLI: pipeline=int8 without +", "exit 2 saying to write +pipeline=int8",
                ["pipeline=int8"], r"\+pipeline=int8"),
    cli_refused("CLI: +debug=smoke", "exit 2 saying to write debug=smoke without '+'",
                ["+pipeline=int8", "+debug=smoke"], r"debug=OPTION, without '\+'"),
    cli_refused("CLI: run.thread=2 (a key that does not exist, without +)",
                "exit 2 saying there is no such setting, with a did-you-mean", ["+pipeline=int8", "run.thread=2"],
                r"run\.thread: no such setting \('thread': did you mean 'threads'\?\); check its spelling"),
    cli_refused("CLI: override syntax error", "exit 2 with the parser's one-line message",
                ["+pipeline=int8", "bench.shapes=[[1,128]"], r"compresslab: error: .*bench\.shapes"),
])
def test_cli_refused(cli_refusal, expect_clear, argv, match):
    expect_clear(cli_refusal(lambda: cli.check_command_line(argv)), match=match)


# ------------------------------------------------------------------ siblings: limits of the model, machine and install


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
def test_cache_dir_unwritable(start, expect_clear, unwritable):
    expect_clear(start(f"paths.cache_dir={unwritable}"), match=r"paths\.cache_dir=.*COMPRESSLAB_CACHE")


@case(name="run.dir under a file", kind=1, expected="an error naming run.dir and the path")
def test_run_dir_under_a_file(start, expect_clear, tmp_path):
    (tmp_path / "a-file").write_text("x")
    expect_clear(start(f"run.dir={tmp_path / 'a-file' / 'run'}"), match=r"run\.dir=.*a-file.*cannot write there")


# ------------------------------------------------------------------ a distilling pass, its teacher given

@case(name="pipeline.steps=[bibert] with model.finetuned=true", kind=1, bad_input=False,
      expected="planned: the given (fine-tuned) model is the teacher, so no finetune step is needed")
def test_distilling_pass_with_finetuned_input(observe):
    from compresslab.pipeline import build_steps

    steps = build_steps(compose(["+pipeline=bibert", "debug=smoke", "pipeline.steps=[bibert]", "model.finetuned=true"]))
    assert [s.name for s in steps] == ["bibert"]
    observe(f"steps {[s.name for s in steps]}")


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
