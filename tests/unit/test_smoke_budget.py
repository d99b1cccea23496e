"""``debug=smoke`` (budget smoke) keeps the speedup passes small too: their latency table and
checks run at 4 x 32 with few rounds (at 32 x 128 and 30 rounds the table alone took ~10 min on 2 cores: a new
user's first try, session 40). Other budgets keep the deployment shape 32 x 128 and the run hashes they had."""

from __future__ import annotations

import pytest

from compresslab.config import compose


@pytest.mark.parametrize("pipeline, step", [("ziplm_int8", "ziplm"), ("ziplm_2x", "ziplm")])
def test_smoke_shrinks_the_latency_work(pipeline: str, step: str) -> None:
    p = compose([f"+pipeline={pipeline}", "debug=smoke"]).pipeline.passes[step]
    assert (p.batch, p.seq, p.latency_runs, p.check_runs) == (4, 32, 5, 3)
    for budget in ([], ["budget=bench"], ["budget=quick"]):
        p = compose([f"+pipeline={pipeline}", *budget]).pipeline.passes[step]
        assert (p.batch, p.seq, p.latency_runs, p.check_runs) == (32, 128, 30, 15)


def test_structured_l1_too() -> None:
    over = ["+pipeline=ziplm_2x", "~pipeline.passes.ziplm", "+pass@pipeline.passes.structured_l1=structured_l1",
            "pipeline.steps=[finetune,structured_l1]"]
    p = compose([*over, "debug=smoke"]).pipeline.passes.structured_l1
    assert (p.batch, p.seq, p.latency_runs, p.check_runs) == (4, 32, 5, 3)
    assert compose(over).pipeline.passes.structured_l1.batch == 32


def test_an_explicit_setting_still_wins() -> None:
    p = compose(["+pipeline=ziplm_int8", "debug=smoke", "pipeline.passes.ziplm.batch=8"]).pipeline.passes.ziplm
    assert p.batch == 8 and p.seq == 32
