"""The checks made before any work run from one list per kind, whatever the entry: the CLI's single run
(``check_command_line`` before Hydra starts, then ``pipeline.run``), its multirun check (``cli.check_multirun``,
each swept job) and ``compresslab.compress()``. Design review item 6: the entries used to pick their checks out of
hand-kept lists, so a check added to one list did not reach the others.

Each case turns one shared list into a check that always refuses, as if a check had been added to it, and
asserts that every entry reaches it before any step runs and before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

import compresslab
from compresslab import cli
from compresslab.config import compose
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.models import adapters, inmemory, loading
from compresslab.pipeline import deploy, plan, preflight, state
from compresslab.registry import available_passes, get_pass
from compresslab.testing import tiny_sentiment

ADDED = "a check added to the shared list refused"
PASSES = [{"name": "finetune", "preset": "smoke"}, "ort_int8_dynamic"]  # compress()'s twin of +pipeline=int8


def _refusing(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("a check added to the shared list refused")  # ADDED: run in the patched function's globals


# the shared lists: the one step-list check (plan.build_steps and api.build_steps), the one teacher loop
# (plan.check_teacher_made and api_heads.check_teacher), the per-step settings checks (preflight() and compress()), the
# model checks (the driver, each swept multirun job and compress())
SHARED: dict[str, Callable[..., Any]] = {
    "plan.checked_steps": plan.checked_steps,
    "plan.distils_before_teacher": plan.distils_before_teacher,
    "preflight.check_steps_settings": preflight.check_steps_settings,
    "preflight.check_with_model": preflight.check_with_model,
    "preflight.check_model": preflight.check_model,
}


@pytest.fixture
def no_step_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in available_passes():
        monkeypatch.setattr(get_pass(name), "apply", lambda *a, **k: pytest.fail("a step ran before the check"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny BERT with its tokenizer as a model folder, and a two-label CSV."""
    root = tmp_path_factory.mktemp("inputs")
    src = root / "model"
    tiny_model("bert", num_labels=2).save_pretrained(src)
    tiny_tokenizer(src / "tok").save_pretrained(src)
    data = root / "d.csv"
    data.write_text("text,label\n" + "".join(f"{'good' if i % 2 else 'bad'} film {i},{i % 2}\n" for i in range(40)),
                    encoding="utf-8")
    return src, data


def _args(inputs: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    src, data = inputs
    return ["+pipeline=int8", "debug=smoke", "model=local", f"model.source={src}", "task=generic",
            f"task.generic.train={data}", f"task.generic.dev={data}", "task.max_length=32", "bench.enabled=false",
            "report=false", f"paths.output_dir={out}", f"paths.cache_dir={out}/cache", *extra]


def _cli_run(inputs: tuple[Path, Path], out: Path, tiny_tok: Any) -> None:
    """``python -m compresslab +pipeline=int8 ...``: the check before Hydra starts, then what ``cli._main`` runs
    (without its process setup)."""
    args = _args(inputs, out)
    cli.check_command_line(args)
    compresslab.pipeline.run(compose(args), overrides=args)


def _cli_multirun(inputs: tuple[Path, Path], out: Path, tiny_tok: Any) -> None:
    """``python -m compresslab -m +pipeline=int8 seed=1,2 ...``: the check before Hydra starts the first job."""
    cli.check_multirun(_args(inputs, out, "seed=1,2"))


def _compress(inputs: tuple[Path, Path] | None, out: Path, tiny_tok: Any) -> None:
    """``compresslab.compress(model, tokenizer, PASSES, ...)`` (it reads no files: ``inputs`` is not used)."""
    pairs = [(e.text_a, e.label) for e in tiny_sentiment(32, 0)]
    compresslab.compress(tiny_model(), tiny_tok, PASSES, data=pairs, eval_data=pairs, output_dir=out, max_length=32,
                         batch_size=8, progress=False)


ENTRIES: dict[str, Callable[..., None]] = {"cli run": _cli_run, "cli multirun": _cli_multirun,
                                           "compress()": _compress}


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("shared", list(SHARED))
def test_a_check_added_to_a_shared_list_reaches_every_entry_before_any_work(shared, entry, inputs, tiny_tok, tmp_path,
                                                                           monkeypatch, no_step_runs):
    _refused_by(SHARED[shared], entry, inputs, tiny_tok, tmp_path, monkeypatch)


def _refused_by(fn: Callable[..., Any], entry: str, inputs: tuple[Path, Path], tiny_tok: Any, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> None:
    """``fn`` made to refuse: ``entry`` reaches it before any step runs and before anything is written."""
    # the function's code is replaced, not the module's name for it: every caller sees the added check, however it
    # imported the function
    monkeypatch.setattr(fn, "__code__", _refusing.__code__)
    monkeypatch.setattr(fn, "__defaults__", None)
    monkeypatch.setattr(fn, "__kwdefaults__", None)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=ADDED):
        ENTRIES[entry](inputs, out, tiny_tok)
    assert not out.exists(), f"{entry} wrote {sorted(p.name for p in out.rglob('*'))} before the check"


# Every check the CLI makes on its model, its tokenizer and its data before any work, by the function that makes it:
# compress() makes each one on the model, tokenizer and data it is given (a trial found check_tokenizer_fits made
# by the CLI alone, in load_pretrained: compress() ran a tokenizer of another model into an IndexError mid-training,
# its output_dir written). Not listed: the checks of files (compress() reads none), and the head checks the CLI makes
# only with model.finetuned=true (check_teacher_head, check_labels_match_head), which compress() makes on its own rule
# (tests/unit/test_api.py). compress() also checks what the CLI does not: every text tokenizes (check_tokenizable).
MODEL_CHECKS: dict[str, Callable[..., Any]] = {
    "adapters.check_supported": adapters.check_supported,  # an architecture with an adapter
    "loading.check_max_length": loading.check_max_length,  # every sequence length vs the position table
    "loading.check_tokenizer_fits": loading.check_tokenizer_fits,  # the tokenizer's ids vs the embedding table
    "inmemory.check_has_weights": inmemory.check_has_weights,  # weights, not meta tensors
    "state.check_steps": state.check_steps,  # each pass's data checks
    "deploy.check_deploy": deploy.check_deploy,  # deploy settings vs the model
    "state.check_steps_model": state.check_steps_model,  # each pass's model checks
}


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("check", list(MODEL_CHECKS))
def test_every_check_of_the_model_tokenizer_and_data_reaches_every_entry_before_any_work(check, entry, inputs,
                                                                                         tiny_tok, tmp_path,
                                                                                         monkeypatch, no_step_runs):
    _refused_by(MODEL_CHECKS[check], entry, inputs, tiny_tok, tmp_path, monkeypatch)


def test_the_entries_pass_the_shared_lists_unpatched(inputs, tiny_tok, tmp_path, no_step_runs):
    # the cases above refuse because of the added check, not because the inputs are bad
    cli.check_command_line(_args(inputs, tmp_path / "out"))
    _cli_multirun(inputs, tmp_path / "out", tiny_tok)
    assert not (tmp_path / "out").exists()


# checks the hand-kept lists left out of compress(), now run there because it runs the lists whole. None of them can
# refuse there today: compress() deploys on ORT (conf/deploy/ort.yaml, no deploy= argument), where each has nothing
# to check; they are reached, so a deploy setting given to compress() later is checked as the CLI checks it.
NEWLY_REACHING = {
    "preflight.check_nbits_deploy": (preflight, "check_nbits_deploy"),  # via check_steps_settings
    "preflight.check_unread_deploy_settings": (preflight, "check_unread_deploy_settings"),  # via check_steps_settings
    "deploy.check_deploy": (deploy, "check_deploy"),  # via check_with_model
}


@pytest.mark.parametrize("check", list(NEWLY_REACHING))
def test_compress_now_runs_the_cli_checks_it_lacked(check, tiny_tok, tmp_path, monkeypatch, no_step_runs):
    module, name = NEWLY_REACHING[check]
    monkeypatch.setattr(module, name, _refusing)
    with pytest.raises(RuntimeError, match=ADDED):
        _compress(None, tmp_path / "out", tiny_tok)
    assert not (tmp_path / "out").exists()

