"""``pipeline.passes.<step>`` keys are checked against the pass's fields before it is built."""

from __future__ import annotations

import pytest

from compresslab.passes.ort_int8_dynamic import OrtInt8Dynamic
from compresslab.pipeline.plan import PipelineError, check_pass_keys


def test_misspelled_pass_key_gets_a_did_you_mean() -> None:
    with pytest.raises(PipelineError, match=r"pipeline\.passes\.int8: unknown setting\(s\) \['per_chanel'\] "
                                            r"\('per_chanel': did you mean 'per_channel'\?\); the pass has: "):
        check_pass_keys(OrtInt8Dynamic, {"_target_": "x", "per_chanel": False}, "int8")
    check_pass_keys(OrtInt8Dynamic, {"_target_": "x", "per_channel": False}, "int8")  # keys starting '_' are Hydra's
