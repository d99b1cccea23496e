"""``debug=smoke`` checks a pipeline's plumbing in about a minute, oBERT's too (trial 47b, B4: ``+pipeline=obert_int8
debug=smoke`` on MiniLM spent 6 min 49 s in the obert step, in 3 Fisher rebuilds of 36 tensors' 50x50 block
inverses). The inversions cost about ``numel * B^2`` per rebuild and hold ``4 * B`` bytes per weight, so smoke sets
the block size (``budget.fisher_block``): the same code, smaller blocks. Every shipped pipeline with an obert step
is held to a bound on MiniLM-L6's shapes, and still runs more than one Fisher rebuild (the later ones on a pruned
model: the masked sums). Other budgets keep the recipe's blocks, and the runs made before keep their hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from compresslab.config import compose
from compresslab.pipeline.plan import build_steps, config_hash

PIPELINES = sorted(p.stem for p in (Path(__file__).resolve().parents[3] / "compresslab/conf/pipeline").glob("*.yaml"))
# MiniLM-L6 (the embedded model): 6 layers of q, k, v, o (384x384) and ffn_in, ffn_out (384x1536)
MINILM_TARGETED = 6 * (4 * 384 * 384 + 2 * 384 * 1536)
# numel * B^2 summed over smoke's rebuilds: B=50 with 3 rebuilds was 8e10 (~6 min on 2 busy cores); a tenth of that
MAX_SMOKE_WORK = 8e9
MAX_SMOKE_STATE_MB = 512  # the Fisher sums held at once (fp32, 4*B bytes per weight): 2 GB at B=50


def _oberts(pipeline: str, *over: str) -> list:
    cfg = compose([f"+pipeline={pipeline}", *over])
    return [s.pass_ for s in build_steps(cfg) if type(s.pass_).__name__ == "OBert"]


def _rebuilds(p) -> int:
    """Fisher rebuilds of one obert pass: one per pruning (sub-)step (pruning/unstructured.run_pruning)."""
    from compresslab.pruning.unstructured import Mode, plan_events

    if p.mode is Mode.ONESHOT:
        return p.num_recomputations
    return len(plan_events(p.recovery.steps, p.num_events, p.init_sparsity, p.sparsity)[2]) * p.num_recomputations


@pytest.mark.parametrize("pipeline", [p for p in PIPELINES if _oberts(p, "debug=smoke")])
def test_smoke_keeps_obert_s_fisher_work_small_on_minilm(pipeline: str) -> None:
    for p in _oberts(pipeline, "debug=smoke"):
        work = _rebuilds(p) * MINILM_TARGETED * p.block_size ** 2
        state_mb = MINILM_TARGETED * p.block_size * 4 / 2**20
        assert work <= MAX_SMOKE_WORK and state_mb <= MAX_SMOKE_STATE_MB, (pipeline, p.block_size, _rebuilds(p))
        assert _rebuilds(p) >= 2 or p.mode.value == "oneshot"  # a later rebuild sees the pruned weights


def test_other_budgets_keep_the_recipe_s_blocks() -> None:
    assert [p.block_size for p in _oberts("obert_int8")] == [50]
    assert [p.block_size for p in _oberts("obert_int8", "budget=bench")] == [50]
    assert [p.block_size for p in _oberts("obert_int8", "debug=smoke", "pipeline.passes.obert.mask_type=block4")] == [8]
    assert [p.block_size for p in _oberts("obert_int8", "debug=smoke", "pipeline.passes.obert.block_size=16")] == [16]


# computed from the code before budget.fisher_block (219575a), COMPRESSLAB_DATA unset (data.root is in the identity)
HASHES = {("+pipeline=obert_int8",): "4a4cf3645863", ("+pipeline=obert_int8", "budget=quick"): "4a4cf3645863",
          ("+pipeline=int8", "debug=smoke"): "ed3a83894360", ("+pipeline=ziplm_int8", "debug=smoke"): "319ce838f0ee"}


@pytest.mark.parametrize("over, want", HASHES.items())
def test_runs_without_smoke_s_obert_keep_their_hashes(over: tuple[str, ...], want: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPRESSLAB_DATA", raising=False)
    assert config_hash(compose(list(over))) == want
