"""Issue #12, the gaps a new-user review found between the API and the CLI: one rule each, both entries.

* ``compress(output_dir=)`` (and ``CompressResult.export/save``) check the directory as the CLI's
  preflight does (``preflight.check_writable``), before any data is read;
* a teacher with an untrained head is refused by the API as the CLI refuses ``model.finetuned=true``
  on one (``state.check_teacher_head``), and ``teacher_of`` (benchmarks) honours
  ``model.finetuned`` through the step loop's own code (``steps.apply_torch_pass``).

The CLI's own refusals (did-you-mean, ``-m``) are in ``test_cli_refusals.py``; the recorded overrides and the
report's rerun command in ``test_rerun_command.py``.

Tiny random models, a 64-row CSV (``_runs.py``, the ``inputs`` fixture of ``conftest.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from _runs import cli_args
from compresslab.config import compose
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
