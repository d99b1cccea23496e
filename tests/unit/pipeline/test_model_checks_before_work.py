"""A setting that only the model can refute (targets, ignore, block shapes, which Linears a sensitivity covers) is
refused before any step runs, for every step the loaded model can answer for: the steps up to the first one
that may change module names or shapes. Masking passes (oBERT, magnitude) keep both, so the steps after them
are checked too (a review found int8_qat's targets after oBERT refused only after oBERT's Fisher and recovery)."""

from __future__ import annotations

import pytest

import compresslab
from compresslab.models.tiny import tiny_model
from compresslab.registry import available_passes, get_pass
from compresslab.testing import tiny_sentiment

FT = {"name": "finetune", "preset": "smoke"}
OB = {"name": "obert", "num_grads": 2, "grad_batch_size": 8}  # the data checks pass on 32 examples


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    return [(e.text_a, ["neg", "pos"][e.label]) for e in tiny_sentiment(n, seed)]


CASES = {
    "obert targets": ([FT, {**OB, "targets": ["qurey"]}], "qurey"),
    "obert ignore": ([FT, {**OB, "ignore": ["clasifier"]}], "clasifier"),
    "magnitude targets": ([FT, {"name": "magnitude", "targets": ["qurey"]}], "qurey"),
    "int8_qat after obert": ([FT, {**OB, "sparsity": 0.5},
                              {"name": "int8_qat", "targets": ["attention.self.qurey"]}], "qurey"),
    "int8_qat after magnitude": ([FT, {"name": "magnitude", "sparsity": 0.5},
                                  {"name": "int8_qat", "ignore": ["clasifier"]}], "clasifier"),
    "hawq eigen outside the layers": ([FT, {"name": "hawq", "sensitivity": "eigen", "block_size": 16,
                                                     "targets": ["q", "pooler.dense"]}],
                                      "sensitivity=eigen covers the encoder layers"),
}


@pytest.fixture
def no_step_runs(monkeypatch):
    for name in available_passes():
        monkeypatch.setattr(get_pass(name), "apply", lambda *a, **k: pytest.fail("a step ran before the check"))


@pytest.mark.parametrize("case", list(CASES))
def test_a_model_dependent_setting_is_refused_before_any_step_with_nothing_written(case, tiny_tok, tmp_path,
                                                                                   no_step_runs):
    passes, match = CASES[case]
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        compresslab.compress(tiny_model(), tiny_tok, passes, data=_pairs(32, 0), output_dir=out, max_length=32,
                             batch_size=8, progress=False)
    assert not out.exists()


def test_a_step_after_one_that_changes_the_structure_is_left_to_its_own_apply(tiny_tok):
    # ZipLM removes heads and neurons: the loaded model cannot answer for hawq's blocks after it
    from compresslab.api import build_steps
    from compresslab.pipeline.state import check_steps_model

    steps = build_steps([FT, {"name": "ziplm", "speedup": 1.5}, {"name": "hawq", "bits": 4, "block_size": 24}])
    check_steps_model(steps, tiny_model())  # no error: hawq's apply checks the shrunk model
    with pytest.raises(ValueError, match="block_size=24"):
        check_steps_model(build_steps([FT, {"name": "hawq", "bits": 4, "block_size": 24}]), tiny_model())


def test_keeps_structure_is_declared_by_the_masking_passes_only():
    keep = {n for n in available_passes() if getattr(get_pass(n), "keeps_structure", False)}
    assert keep == {"obert", "magnitude"}


def test_eval_on_an_empty_validation_split_is_refused_before_training(tmp_path):
    from compresslab.config import compose
    from compresslab.data.schema import SplitUnavailableError
    from compresslab.models.tiny import tiny_model as model_of, tiny_tokenizer
    from compresslab.pipeline import build_steps
    from compresslab.pipeline.state import RunState

    src = tmp_path / "model"
    model_of("bert", num_labels=2).save_pretrained(src)
    tiny_tokenizer(src / "tok").save_pretrained(src)
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"film {i},{i % 2}\n" for i in range(20)), encoding="utf-8")
    args = ["+pipeline=int8", "debug=smoke", "model=local", f"model.source={src}", "task=generic",
            f"task.generic.train={data}", f"task.generic.dev={data}", "task.max_length=32",
            f"paths.output_dir={tmp_path}/out", "eval=validation"]
    cfg = compose([*args, "task.val_size=0"])
    with pytest.raises(SplitUnavailableError, match="eval.split=validation, but the task has no validation split"):
        RunState.prepare(cfg, build_steps(cfg))
    cfg = compose([*args, "task.val_size=4"])
    assert len(RunState.prepare(cfg, build_steps(cfg)).task.validation) == 4


@pytest.mark.parametrize("passes,export,match", [
    ([FT, {"name": "ziplm", "speedup": 1.5, "seq": 4096}], None, "pipeline.passes.ziplm.seq"),
    ([FT, {"name": "ort_int8_dynamic", "outliers": "split", "optimize": False}], {"optimize": False},
     "outliers=split rewrites the fused graph"),
])
def test_compress_runs_the_cli_preflight_checks_of_each_step(passes, export, match, tiny_tok, tmp_path, no_step_runs):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        compresslab.compress(tiny_model(), tiny_tok, passes, data=_pairs(32, 0), output_dir=out, max_length=32,
                             batch_size=8, progress=False, **({"export": export} if export else {}))
    assert not out.exists()


def test_a_given_teacher_and_a_finetune_step_are_refused_together(tiny_tok, tmp_path, no_step_runs):
    # finetune's output would replace the given teacher for KD and agreement without a word (a review found it)
    teacher = tiny_model()
    with pytest.raises(ValueError, match="teacher= was given and step 'finetune' makes the run's teacher too"):
        compresslab.compress(tiny_model(), tiny_tok, [FT, {"name": "magnitude", "sparsity": 0.5}], data=_pairs(32, 0),
                             teacher=teacher, output_dir=tmp_path / "run", max_length=32, batch_size=8, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("first,then,ok", [(32, 64, False), (64, 32, True), (32, 32, True), (96, 32, True)])
def test_a_structured_step_after_another_needs_a_grid_that_divides_the_earlier_one(first, then, ok):
    # the later step's latency table holds widths on its own grid only; a review found the mismatch surfacing
    # as "no latency entry" after the Hessians
    from compresslab.api import build_steps
    from compresslab.pipeline.plan import PipelineError

    passes = [FT, {"name": "structured_l1", "ffn_grid": first}, {"name": "ziplm", "ffn_grid": then}]
    if ok:
        build_steps(passes)
        return
    with pytest.raises(PipelineError, match=f"step 'ziplm': ffn_grid={then} does not divide the earlier structured_l1"):
        build_steps(passes)
