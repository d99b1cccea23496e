"""Messages a fresh user met in trial 48b: each names the way forward it implies.

* A ``pipeline.steps=[...]`` override naming a step the pipeline has no settings for was refused with the defined
  steps only; the override that adds them (``+pass@pipeline.passes.<step>=<pass>``) is named, and it works.
* ``compress()`` without ``output_dir`` works in a temporary folder removed with the result: its repr says so, so a
  path copied from it is not a surprise later.
"""

from pathlib import Path

import pytest

from compresslab.api import CompressResult
from compresslab.config import compose
from compresslab.pipeline.plan import PipelineError, build_steps


def test_a_step_without_settings_names_the_override_that_adds_them():
    steps = "pipeline.steps=[finetune,obert,int8]"
    with pytest.raises(PipelineError, match=r"\+pass@pipeline\.passes\.obert=PASS"):
        build_steps(compose(["+pipeline=int8", "debug=smoke", steps]))
    # the override the message names composes and builds the step
    built = build_steps(compose(["+pipeline=int8", "debug=smoke", steps, "+pass@pipeline.passes.obert=obert"]))
    assert [s.name for s in built] == ["finetune", "obert", "int8"]


@pytest.mark.parametrize("cleanup, temporary", [(lambda: None, True), (None, False)])
def test_the_repr_says_when_the_run_dir_is_temporary(cleanup, temporary, tmp_path: Path):
    r = CompressResult(model=None, tokenizer=None, metrics={}, run_dir=tmp_path, _cleanup=cleanup)
    assert ("temporary: removed by close()" in repr(r)) is temporary
    assert "result.export(DIR) keeps it" in repr(r) or not temporary
