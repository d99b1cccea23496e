"""benchmarks/compound_seeds.py's summary math (issue 13 seeds) on hand-made predictions: accuracies come
from the stored predictions, the spread is the SAMPLE std (ddof=1), arm a is a and b is b, McNemar is exact
per seed and pooled over the discordant pairs of every seed; meta.pending.seeds stays until 3 seeds are in."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seeds():
    from compresslab.testing import import_benchmark

    return import_benchmark("compound_seeds", ROOT)


LABELS = "1111111111"  # 10 examples, all positive: a prediction's accuracy is its count of 1s / 10


def run(a_right: int, b_right: int, both_wrong_first: int = 0) -> dict:
    """One seed: a right on its first ``a_right`` examples after ``both_wrong_first``, b likewise."""
    def preds(k: int) -> str:
        return "0" * both_wrong_first + "1" * k + "0" * (10 - both_wrong_first - k)
    return {"labels": LABELS, "a": {"preds": preds(a_right)}, "b": {"preds": preds(b_right)}}


def test_mean_sample_std_and_sides(seeds) -> None:
    s = seeds.summarize({"42": run(9, 6), "1": run(8, 6), "2": run(7, 5)})
    assert s["a_mean"] == pytest.approx(0.8) and s["b_mean"] == pytest.approx(17 / 30)  # not swapped
    assert s["a_std"] == pytest.approx(0.1)  # ddof=1; ddof=0 would give 0.0816
    assert s["b_std"] == pytest.approx(math.sqrt(((0.6 - 17 / 30) ** 2 * 2 + (0.5 - 17 / 30) ** 2) / 2))
    assert s["diff_mean"] == pytest.approx(0.8 - 17 / 30) and s["diff_std"] == pytest.approx(0.0577350, rel=1e-5)
    assert s["a_acc"] == {"42": 0.9, "1": 0.8, "2": 0.7} and s["seeds_done"] == [42, 1, 2]


def test_mcnemar_per_seed_and_pooled(seeds) -> None:
    # seed 42: a right on 3 examples b gets wrong, never the reverse -> exact two-sided p = 2 * 0.5**3
    # seed 1: the same models (no discordant pair) -> 1.0; pooled: 3 + 2 discordant pairs, all a's -> 2 * 0.5**5
    s = seeds.summarize({"42": run(5, 2), "1": run(4, 4, both_wrong_first=1), "2": run(6, 4)})
    assert s["mcnemar_p"]["42"] == pytest.approx(0.25)
    assert s["mcnemar_p"]["1"] == 1.0
    assert s["mcnemar_p"]["2"] == pytest.approx(0.5)
    assert s["mcnemar_p_pooled"] == pytest.approx(2 * 0.5 ** 5)


def test_a_seed_with_one_arm_is_left_out_and_one_seed_has_no_spread(seeds) -> None:
    half = run(9, 6)
    del half["b"]
    s = seeds.summarize({"42": run(9, 6), "1": half})
    assert s["seeds_done"] == [42] and s["a_mean"] == pytest.approx(0.9)
    assert s["a_std"] is None and s["b_std"] is None  # one seed: no sample std


def test_predictions_of_another_length_are_refused(seeds) -> None:
    bad = run(9, 6)
    bad["b"]["preds"] = "1" * 9
    with pytest.raises(ValueError, match="differ in length"):
        seeds.summarize({"42": bad})


def test_pending_until_every_asked_seed_and_three(seeds) -> None:
    names = ["ziplm_vs_l1_2x", "obert_vs_magnitude_80"]
    full = {n: {"seeds_done": [42, 1, 2]} for n in names}
    assert seeds.pending_text(full, names, [42, 1, 2]) is None
    part = {**full, "obert_vs_magnitude_80": {"seeds_done": [42]}}
    text = seeds.pending_text(part, names, [42, 1, 2])
    assert "obert_vs_magnitude_80: seeds [1, 2] to run" in text and "ziplm_vs_l1_2x" not in text
    two = {n: {"seeds_done": [42, 1]} for n in names}
    assert "1 more seed(s)" in seeds.pending_text(two, names, [42, 1])  # asked for fewer than 3
    assert "seeds [42, 1, 2] to run" in seeds.pending_text({}, names, [42, 1, 2])


def test_arms_compose_with_the_same_settings_and_only_their_own_pass_settings(seeds) -> None:
    from compresslab.config import compose

    ziplm, l1 = seeds.comparisons(4)["ziplm_vs_l1_2x"]
    user = ["debug=smoke", "pipeline.passes.ziplm.batch=8", "pipeline.passes.structured_l1.batch=8",
            "pipeline.passes.ziplm.max_retries=2"]
    za, lb = compose(seeds._filter(user, ziplm.overrides)), compose(seeds._filter(user, l1.overrides))
    assert list(lb.pipeline.steps) == ["finetune", "structured_l1"] and lb.pipeline.name == "structured_l1_2x"
    assert list(za.pipeline.steps) == ["finetune", "ziplm"]
    for p in (za.pipeline.passes.ziplm, lb.pipeline.passes.structured_l1):
        assert p.max_retries == 0 and p.speedup == 2.0 and p.batch == 8  # the arm's own settings win
        assert p.recovery.steps == za.budget.recovery_steps
    ob, mag = seeds.comparisons(3)["obert_vs_magnitude_80"]
    mb = compose(seeds._filter(["debug=smoke", "pipeline.passes.obert.grad_batch_size=4"], mag.overrides))
    assert mb.pipeline.passes.magnitude.mode == "gradual" and mb.pipeline.passes.magnitude.sparsity == 0.8
    assert mb.pipeline.passes.magnitude.num_events == 3 and "obert" not in mb.pipeline.passes


def test_user_model_overrides_do_not_reach_the_runs(seeds) -> None:
    assert seeds._without_model(["model=local", "model.source=/x", "+model.finetuned=true", "seed=3",
                                 "task=generic"]) == ["seed=3", "task=generic"]


def _grid_file(tmp_path: Path, seeds, steps: int = 400, events: int = 4) -> tuple[object, object]:
    """(ResultsFile with long.chosen_lr and its grid settings at ``steps``/``events``, the base overrides)."""
    import argparse
    import json

    a = argparse.Namespace(budget="bench", steps=400, grads=128, events=4, override=[], only=None,
                           results=str(tmp_path / "c.json"))
    base = seeds.base_overrides(a)
    grid = {"base": [o for o in base if not o.startswith("budget.recovery_steps=")], "steps": steps, "events": events}
    (tmp_path / "c.json").write_text(json.dumps({"long": {"chosen_lr": {"obert": 3e-5, "magnitude": 3e-4},
                                                          "lr_grid_settings": {"obert": grid, "magnitude": grid}}}))
    return seeds.ResultsFile(a.results), a


def test_tuned_comparison_runs_each_arm_at_its_own_chosen_lr(seeds, tmp_path) -> None:
    from compresslab.config import compose

    results, a = _grid_file(tmp_path, seeds)
    lrs = seeds.tuned_lrs(results, a, seeds.base_overrides(a))
    assert lrs == {"obert": 3e-5, "magnitude": 3e-4}
    comps = seeds.comparisons(4, lrs)
    assert set(comps) == set(seeds.NAMES)
    ob, mag = comps[seeds.TUNED]
    oc = compose(seeds._filter(["debug=smoke"], ob.overrides))
    mc = compose(seeds._filter(["debug=smoke"], mag.overrides))
    assert oc.pipeline.passes.obert.recovery.lr == 3e-5 and mc.pipeline.passes.magnitude.recovery.lr == 3e-4
    assert oc.pipeline.passes.obert.sparsity == 0.8 and mc.pipeline.passes.magnitude.num_events == 4
    # without the LRs the untuned pair alone (its arms never carry an LR override)
    assert seeds.TUNED not in seeds.comparisons(4)
    assert not any(".recovery.lr=" in o for arm in seeds.comparisons(4)["obert_vs_magnitude_80"] for o in arm.overrides)


@pytest.mark.parametrize("steps,events", [(800, 4), (400, 2)])
def test_tuned_lrs_chosen_at_another_budget_are_refused(seeds, tmp_path, steps, events) -> None:
    results, a = _grid_file(tmp_path, seeds, steps=steps, events=events)
    assert seeds.tuned_lrs(results, a, seeds.base_overrides(a)) is None  # not asked: left out quietly
    a.only = [seeds.TUNED]
    with pytest.raises(SystemExit, match="chosen at"):
        seeds.tuned_lrs(results, a, seeds.base_overrides(a))
