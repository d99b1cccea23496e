"""Issue #12, the gaps a new-user review found between the API and the CLI: one rule each, both entries.

* ``compress(output_dir=)`` (and ``CompressResult.export/save``) check the directory as the CLI's
  preflight does (``preflight.check_writable``), before any data is read;
* a teacher with an untrained head is refused by the API as the CLI refuses ``model.finetuned=true``
  on one (``state.check_teacher_head``), and ``teacher_of`` (benchmarks) honours
  ``model.finetuned`` through the step loop's own code (``steps.apply_torch_pass``);
* a misspelled key gets a did-you-mean in every config group, set with or without ``+``;
* ``-m`` multiruns have every job checked before the first starts (``cli.check_multirun``);
* the manifest records the overrides of the latest invocation, the report's rerun command
  reproduces the run (quoted for a shell, from its working directory).

Tiny random models, a 64-row CSV (``_runs.py``); runs stop before their first step
(``run.stop_after=0``); two subprocesses of the real CLI (a refused and a working multirun).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from _cases import case_param
from _runs import REPO, cli_args, command_overrides, make_inputs
from compresslab import cli
from compresslab.config import compose, config_environment
from compresslab.models.tiny import tiny_model
from compresslab.testing import tiny_sentiment

case = pytest.mark.case
NOT_CAUGHT = "the data was read: the bad input was not caught before any work"


def _trained(model: torch.nn.Module) -> torch.nn.Module:
    """Mark the head as trained (transformers initialises a fresh head's bias to zero)."""
    with torch.no_grad():
        model.classifier.bias.add_(0.05)
    return model


def _pairs(n: int = 40, seed: int = 0) -> list[tuple[str, int]]:
    return [(e.text_a, e.label) for e in tiny_sentiment(n, seed)]


class Reached(Exception):
    """Raised where the expensive work would start: every up-front check passed."""


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the user's data raises a RuntimeError (not a clear error): an API call stops there."""
    import compresslab.data.user as user

    def read(*a: Any, **k: Any) -> None:
        raise RuntimeError(NOT_CAUGHT)

    monkeypatch.setattr(user, "task_from_user_data", read)


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``compress`` raises :class:`Reached` where its step loop would start."""
    import compresslab.api as api

    def reached(*a: Any, **k: Any) -> None:
        raise Reached("the step loop would start")

    monkeypatch.setattr(api, "_run", reached)


def _compress(model: Any, tok: Any, passes: list[Any], **kw: Any) -> Callable[[], Any]:
    import compresslab

    return lambda: compresslab.compress(model, tok, passes, data=_pairs(), max_length=32, batch_size=8,
                                        progress=False, **kw)


NO_KD = {"name": "magnitude", "sparsity": 0.5, "recovery": {"steps": 0}}


# ------------------------------------------------------------------ 1. the API's output_dir, checked first

def _listing(d: Path) -> list[Path] | None:
    """``d``'s entries, sorted; under /proc (root's unwritable dir) without the process folders, which come and go
    with every process on the machine (a parallel test worker made the comparison flaky)."""
    if not d.is_dir():
        return None
    return sorted(p for p in d.iterdir() if not (d == Path("/proc") and p.name.isdigit()))


def _bad_dir(tmp_path: Path, unwritable: Path, where: str) -> Path:
    """A directory path that cannot be written: ``read-only`` (a new dir under a read-only one),
    ``read-only itself`` (that dir; under /proc for root, who may write anywhere else), ``under a
    file`` or ``a file``."""
    if where == "read-only":
        return unwritable
    if where == "read-only itself":
        return unwritable.parent
    (tmp_path / "a-file").write_text("x")
    return tmp_path / "a-file" / "run" if where == "under a file" else tmp_path / "a-file"


@pytest.mark.parametrize("where, match", [
    pytest.param("read-only", r"output_dir={out}: cannot write there.*set output_dir to a directory you can write to",
                 marks=case(name="compress(output_dir=<a read-only dir>)", kind=1,
                            expected="refused before the data is read, naming output_dir and the path (the CLI's "
                                     "preflight rule)")),
    pytest.param("under a file", r"output_dir={out}: cannot write there \(Not a directory\)",
                 marks=case(name="compress(output_dir=<a path under a file>)", kind=1,
                            expected="refused before the data is read, naming output_dir (not a NotADirectoryError "
                                     "traceback)")),
    pytest.param("a file", r"output_dir={out}: cannot write there",
                 marks=case(name="compress(output_dir=<an existing file>)", kind=1,
                            expected="refused before the data is read, naming output_dir")),
])
def test_api_output_dir_unwritable(tiny_tok, tmp_path, unwritable, no_data, expect_clear, where, match):
    out = _bad_dir(tmp_path, unwritable, where)
    expect_clear(_compress(tiny_model(), tiny_tok, [NO_KD], output_dir=out),
                 match=match.format(out=re.escape(str(out))))


@pytest.fixture(scope="module")
def result(tiny_tok: Any) -> Any:
    """One tiny compress result (magnitude without recovery: no training), for export/save."""
    r = _compress(tiny_model(), tiny_tok, [NO_KD])()
    yield r
    r.close()


@case(name="CompressResult.export(<a dir under a read-only dir>)", kind=1,
      expected="refused before the export, naming out_dir (not a PermissionError from mkdtemp)")
def test_api_export_unwritable(result, unwritable, expect_clear):
    out = unwritable / "export"
    expect_clear(lambda: result.export(out), match=rf"out_dir={out}: cannot write in .*set out_dir")


@case(name="CompressResult.save(<a path under a file>)", kind=1,
      expected="refused before saving, naming out_dir")
def test_api_save_under_a_file(result, tmp_path, expect_clear):
    (tmp_path / "a-file").write_text("x")
    expect_clear(lambda: result.save(tmp_path / "a-file" / "ck"), match=r"out_dir=.*a-file/ck: cannot write in")


@pytest.mark.parametrize("where, match", [
    pytest.param("read-only itself", r"out_dir={out}: cannot write (there|in )", marks=case(
        name="compresslab.save(model, <a read-only dir>)", kind=1,
        expected="refused before any file is written, naming out_dir (not a raw PermissionError from mkdtemp)")),
    pytest.param("read-only", r"out_dir={out}: cannot write in .*set out_dir to a directory you can write to",
                 marks=case(name="compresslab.save(model, <a new dir under a read-only dir>)", kind=1,
                            expected="refused before any file is written, naming out_dir and the dir it is written "
                                     "in")),
    pytest.param("a file", r"out_dir={out}: cannot write there \(File exists\)", marks=case(
        name="compresslab.save(model, <an existing file>)", kind=1,
        expected="refused before any file is written, naming out_dir (not a FileExistsError after the weights)")),
])
def test_save_unwritable(tmp_path, unwritable, expect_clear, where, match):
    import compresslab

    out = _bad_dir(tmp_path, unwritable, where)
    before = _listing(out.parent)
    expect_clear(lambda: compresslab.save(tiny_model(), out), match=match.format(out=re.escape(str(out))))
    assert _listing(out.parent) == before  # no temp dir left behind


# ------------------------------------------------------------------ 2. the teacher's head, one rule

@case(name="compress(teacher=<a model with a fresh head>)", kind="own",
      expected="refused before any pass: teacher= has no trained head, pass a fine-tuned teacher or use finetune")
def test_api_teacher_with_fresh_head(tiny_tok, no_run, expect_clear):
    expect_clear(_compress(_trained(tiny_model()), tiny_tok, [NO_KD], teacher=tiny_model(seed=1)),
                 match=r"teacher= has no trained classification head.*cannot be the teacher.*'finetune' first")


@case(name="compress(teacher=<the checkpoint dir of a bare encoder>)", kind="own",
      expected="refused before any pass: the loaded teacher's head is fresh")
def test_api_teacher_dir_with_fresh_head(tiny_tok, tmp_path, no_run, expect_clear):
    plain = tiny_model(seed=2)
    plain.save_pretrained(tmp_path / "plain")
    tiny_tok.save_pretrained(tmp_path / "plain")
    expect_clear(_compress(_trained(tiny_model()), tiny_tok, [NO_KD], teacher=str(tmp_path / "plain")),
                 match=r"teacher= has no trained classification head")


@case(name="compress(<a fresh-head model>, no finetune pass, eval_data=...)", kind="own",
      expected="refused before any pass: the model as given is the teacher eval_data is scored against "
               "(the API's model.finetuned=true), but its head is fresh")
def test_api_model_as_teacher_with_fresh_head_scored(tiny_tok, no_run, expect_clear):
    expect_clear(_compress(tiny_model(), tiny_tok, ["ort_int8_dynamic"], eval_data=_pairs(8, 1)),
                 match=r"eval_data is scored against the teacher, which is the model as given.*no trained "
                       r"classification head.*put 'finetune' first in passes")


@pytest.mark.parametrize("spec", [
    pytest.param({"name": "magnitude", "sparsity": 0.5, "recovery": {"steps": 2}}, marks=case(
        name="compress(<a fresh-head model>, a distilling pass, no teacher)", kind="own",
        expected="refused before any pass (the rule the CLI's model.finetuned=true shares)")),
    pytest.param({"name": "bibert", "recovery": {"steps": 2}, "batch_size": 8}, marks=case(
        name="compress(<a fresh-head model>, ['bibert'], no teacher)", kind="own",
        expected="refused before any pass: bibert declares needs_teacher (all its losses are KD), as the plan "
                 "reads it")),
])
def test_api_distilling_without_teacher(tiny_tok, no_run, expect_clear, spec):
    expect_clear(_compress(tiny_model(), tiny_tok, [spec]),
                 match=rf"step '{spec['name']}' distils from a teacher, but none can be built.*no trained "
                       r"classification head.*'finetune' first")


@case(name="compress(<a fresh-head model>) with finetune first, or a trained teacher, or no teacher use",
      kind="own", bad_input=False,
      expected="accepted: the teacher is trained first, given trained, or not used (no KD, no eval_data)")
def test_api_fresh_head_accepted_when_the_teacher_is_sound(tiny_tok, no_run, observe):
    accepted = []
    for label, call in (
            ("finetune first + eval_data", _compress(tiny_model(), tiny_tok, ["finetune", "ort_int8_dynamic"],
                                                     eval_data=_pairs(8, 1))),
            ("a trained teacher= + eval_data", _compress(tiny_model(), tiny_tok, [NO_KD], eval_data=_pairs(8, 1),
                                                         teacher=_trained(tiny_model(seed=3)))),
            ("no KD, no eval_data", _compress(tiny_model(), tiny_tok, [NO_KD]))):
        with pytest.raises(Reached):
            call()
        accepted.append(label)
    observe(f"reached the step loop: {accepted}")


# ------------------------------------------------------------------ 3. teacher_of honours model.finetuned

def _local_cfg(root: Path, out: Path, source: Path, *extra: str) -> Any:
    args = [a for a in cli_args(root, out) if not a.startswith("model.source=")]
    return compose([*args, f"model.source={source}", *extra])


def _saved(model: torch.nn.Module, tok: Any, d: Path) -> Path:
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``_runs.make_inputs``: a tiny BERT folder and a two-label CSV task, in a folder with a space."""
    return make_inputs(tmp_path_factory.mktemp("api cli") / "in put")


@case(name="teacher_of(cfg) with model.finetuned=true", kind="own", bad_input=False,
      expected="the given model (its own head) is the teacher, nothing trained: the pipeline's finetune step code")
def test_teacher_of_uses_the_given_model(inputs, tiny_tok, tmp_path, monkeypatch, observe):
    from compresslab.passes.finetune import Finetune
    from compresslab.pipeline import teacher_of

    def trained(*a: Any, **k: Any) -> None:
        raise AssertionError("finetune trained the given model again")

    monkeypatch.setattr(Finetune, "apply", trained)
    own = _trained(tiny_model(seed=4))
    own.config.id2label, own.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    src = _saved(own, tiny_tok, tmp_path / "own")
    teacher = teacher_of(_local_cfg(inputs, tmp_path / "out", src, "model.finetuned=true"), tmp_path / "work")
    want = own.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in teacher.model.state_dict().items())  # head included
    assert teacher.given and teacher.source == src and teacher.cache_key is None
    observe("teacher.model == the given model, head included; Finetune.apply not called")


@case(name="teacher_of(cfg) with model.finetuned=true on a fresh head", kind="own",
      expected="refused as the pipeline refuses it: no trained classification head, set model.finetuned=false")
def test_teacher_of_refuses_a_fresh_head(inputs, tiny_tok, tmp_path, expect_clear):
    from compresslab.pipeline import teacher_of

    src = _saved(tiny_model(seed=5), tiny_tok, tmp_path / "plain")
    cfg = _local_cfg(inputs, tmp_path / "out", src, "model.finetuned=true")
    expect_clear(lambda: teacher_of(cfg, tmp_path / "work"),
                 match=r"model\.finetuned=true.*no trained classification head.*model\.finetuned=false")


@case(name="teacher_of(cfg) with model.finetuned=false", kind="own", bad_input=False,
      expected="the finetune pass trains the teacher (as before)")
def test_teacher_of_finetunes_otherwise(inputs, tmp_path, monkeypatch, observe):
    from compresslab.passes.finetune import Finetune
    from compresslab.pipeline import teacher_of
    from compresslab.types import PassResult

    calls, trained_bias = [], []

    def apply(self: Any, model: torch.nn.Module, ctx: Any) -> PassResult:
        calls.append(ctx.step_dir)
        with torch.no_grad():
            model.classifier.bias.add_(1.0)  # "trained"
        trained_bias.append(model.classifier.bias.detach().clone())
        return PassResult(metrics={"trained": True, "cache_key": "k"})

    monkeypatch.setattr(Finetune, "apply", apply)
    teacher = teacher_of(_local_cfg(inputs, tmp_path / "out", inputs / "model"), tmp_path / "work")
    assert len(calls) == 1 and not teacher.given
    assert teacher.metrics == {"trained": True, "cache_key": "k"}  # what benchmarks record as the teacher
    assert teacher.cache_key == "k"
    assert torch.equal(teacher.model.classifier.bias, trained_bias[0])  # the pass's output, frozen
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    observe(f"Finetune.apply called once in {calls[0].name}/; the teacher is its output")


# ------------------------------------------------------------------ 4. did-you-mean in every group

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


# ------------------------------------------------------------------ 5. -m: every job checked first

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

def _manifest(d: Path) -> dict[str, Any]:
    return json.loads((d / "manifest.json").read_text())


@case(name="the manifest records the overrides; the report's rerun command reproduces the run", kind="own",
      bad_input=False, expected="overrides, command (shell-quoted: a path with a space, a list) and cwd recorded; "
                                "the command composes the same run identity and run dir")
def test_overrides_recorded_and_rerun_command_exact(inputs, tmp_path, observe):
    from compresslab.pipeline import config_hash, resolve_run_dir, run
    from compresslab.report.sections import build_document

    args = cli_args(inputs, tmp_path / "o u t", "bench.shapes=[[1,16]]", "run.stop_after=0")
    d = run(compose(args), overrides=args)  # what the CLI's _main passes
    m = _manifest(d)
    assert m["overrides"] == args and m["cwd"] == os.getcwd()
    env, words = command_overrides(m["command"])
    assert words == args  # the shell gives back each override
    assert env == m["environment"] == config_environment()  # and sets what the config read from the environment
    again = compose(words)
    assert config_hash(again) == m["config_hash"] and resolve_run_dir(again) == d
    text = build_document(m, set(), {}, str(d)).blocks
    code = next(b for b in text if getattr(b, "text", "").startswith("cd "))
    assert code.text.splitlines() == [f"cd {shlex.quote(os.getcwd())}", m["command"],
                                      f"python -m compresslab.report {shlex.quote(str(d))}"]
    observe(m["command"])


@case(name="a resumed run with other run.* settings: the report shows the latest invocation", kind="own",
      bad_input=False, expected="config and command of the latest invocation; every invocation under invocations")
def test_resumed_run_records_the_latest_invocation(inputs, tmp_path, observe):
    from compresslab.pipeline import run
    from compresslab.report.sections import build_document
    from compresslab.report.render import Code, Para

    first = cli_args(inputs, tmp_path / "out", "run.stop_after=0", "run.threads=1")
    d = run(compose(first), overrides=first)
    second = [a for a in first if a != "run.threads=1"] + ["run.threads=2"]  # not part of the run identity
    assert run(compose(second), overrides=second) == d
    m = _manifest(d)
    assert m["config"]["run"]["threads"] == 2 and m["overrides"] == second
    assert [i["overrides"] for i in m["invocations"]] == [first, second]
    assert "threads: 2" in (d / ".hydra" / "config.yaml").read_text()
    blocks = build_document(m, set(), {}, str(d)).blocks
    assert any(isinstance(b, Code) and "run.threads=2" in b.text for b in blocks)
    assert any(isinstance(b, Para) and "run 2 times" in b.text for b in blocks)
    observe(f"invocations: {len(m['invocations'])}; config run.threads={m['config']['run']['threads']}")


@case(name="CLI: +pipeline=int8 -m seed=1,2 on a tiny model (a working multirun)", kind="own", bad_input=False,
      expected="both jobs run (-m between overrides accepted); each manifest records its own overrides")
def test_cli_multirun_records_each_jobs_overrides(inputs, tmp_path, observe):
    args = cli_args(inputs, tmp_path / "out", "run.stop_after=0")
    out = subprocess.run([sys.executable, "-m", "compresslab", args[0], "-m", *args[1:], "seed=1,2"],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    manifests = [_manifest(p.parent) for p in (tmp_path / "out" / "int8").glob("*/manifest.json")]
    seeds = sorted(m["config"]["seed"] for m in manifests)
    assert seeds == [1, 2]
    from compresslab.pipeline import config_hash

    for m in manifests:
        # Hydra writes a sweep job's overrides in its own grammar (a space in a path escaped: in\ put),
        # which it reads back as the same value: the command composes this job's run identity
        assert len(m["overrides"]) == len(args) + 1 and m["overrides"][-1] == f"seed={m['config']['seed']}"
        _, words = command_overrides(m["command"])
        assert words == m["overrides"] and config_hash(compose(words)) == m["config_hash"]
    observe(f"jobs: {[m['command'].split()[-1] for m in manifests]}")


@case(name="report of a run dir made by compresslab.compress(output_dir=...)", kind="own", bad_input=False,
      expected="says the same compress() call resumes it, not a made-up python -m compresslab command")
def test_api_run_report_rerun_line(observe):
    from compresslab.report.environment import _rerun

    block = _rerun({"pipeline": "compress"}, "runs/my run")
    assert "compresslab.compress(" in block.summary and block.text == "python -m compresslab.report 'runs/my run'"
    observe(block.summary)
