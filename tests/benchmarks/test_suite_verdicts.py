"""benchmarks/verdicts.py (issue 14) on hand-made systems: rule (a) needs b32 <= the peer's AND a higher score
with McNemar p < 0.05 (classification) or >= 1 pt (regression); rule (b) needs the same score (agreement
>= 0.99 with the peer's predictions, or within 0.3 pt) AND <= 0.9x the peer's b32 latency. Each boundary is
tested on both sides, so loosening 0.9, 0.05, 1 pt, 0.99 or 0.3 pt fails a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from compresslab.testing import import_benchmarks

REPO = Path(__file__).resolve().parents[2]
V = import_benchmarks("verdicts", REPO)
S, P = V.System, V.Pair
PEER = S("peer", 0.900, 100.0)


def judge(ours, pair, classification=True):
    return V.judge(ours, PEER, pair, classification=classification)


@pytest.mark.parametrize("ms, ok", [(90.0, True), (89.9, True), (90.1, False), (95.0, False)])
def test_rule_b_needs_at_most_0_9x_the_peers_latency(ms, ok) -> None:
    hit = judge(S("ours", 0.900, ms), P(1.0, 0.995))
    assert (hit is not None) == ok
    if ok:
        assert hit["rule"] == "b" and hit["latency_ratio"] == pytest.approx(ms / 100)


@pytest.mark.parametrize("agreement, score, ok", [(0.99, 0.880, True), (0.989, 0.880, False),
                                                  (0.95, 0.897, True), (0.95, 0.8969, False), (0.95, 0.903, True),
                                                  (None, 0.9031, True)])  # higher by more: never a loss
def test_rule_b_same_score_is_agreement_0_99_or_within_0_3_pt(agreement, score, ok) -> None:
    assert (judge(S("ours", score, 80.0), P(1.0, agreement)) is not None) == ok


def test_a_higher_score_that_is_not_significant_counts_as_the_same_never_as_a_loss() -> None:
    hit = judge(S("ours", 0.9072, 50.0), P(0.3, 0.85))  # 0.72 pt higher (RTE: two examples), p 0.3, 0.5x
    assert hit["rule"] == "b" and "0.72 pt higher, not significant" in hit["why"]
    assert judge(S("ours", 0.9072, 95.0), P(0.3, 0.85)) is None  # rule b still needs <= 0.9x


@pytest.mark.parametrize("classification", [True, False])
@pytest.mark.parametrize("ms", [50.0, 89.0, 90.0, 95.0, 100.0, 101.0])
@pytest.mark.parametrize("p", [None, 0.01, 0.3])
def test_a_better_score_never_turns_a_win_into_a_loss(classification, ms, p) -> None:
    """The class of fault: for any latency and pair, raising our score keeps every win a win."""
    scores = [0.85 + 0.0005 * i for i in range(200)]
    wins = [judge(S("ours", x, ms), P(p if classification else None, 0.9 if classification else None),
                  classification=classification) is not None for x in scores]
    first = wins.index(True) if True in wins else len(wins)
    assert all(wins[first:]), f"a win at {scores[first]:.4f} turned into a loss at a higher score"


@pytest.mark.parametrize("p, ok", [(0.049, True), (0.05, False), (0.2, False), (None, False)])
def test_rule_a_classification_needs_mcnemar_p_below_0_05(p, ok) -> None:
    hit = judge(S("ours", 0.920, 100.0), P(p, 0.9, (20, 3)))  # as fast as the peer, 2 pt higher, agreement low
    assert (hit is not None) == ok
    if ok:
        assert hit["rule"] == "a"


def test_rule_a_needs_at_most_the_peers_latency_and_a_higher_score() -> None:
    assert judge(S("ours", 0.920, 100.1), P(0.001, 0.9, (30, 2))) is None  # slower, however significant
    assert judge(S("ours", 0.880, 50.0), P(0.001, 0.9, (2, 30))) is None  # significantly WORSE and faster: not a win
    assert judge(S("ours", 0.900, 100.0), P(0.001, 0.9, (30, 2))) is None  # not higher


@pytest.mark.parametrize("score, ok", [(0.910, True), (0.9099, False)])
def test_rule_a_regression_needs_one_point(score, ok) -> None:
    hit = judge(S("ours", score, 100.0), P(None, None), classification=False)
    assert (hit is not None) == ok


def test_regression_same_score_is_within_0_3_pt_only() -> None:
    assert judge(S("ours", 0.8975, 85.0), P(None, None), classification=False)["rule"] == "b"
    assert judge(S("ours", 0.8965, 85.0), P(None, None), classification=False) is None


def test_verdict_lists_every_winner_fastest_first_and_a_peer_can_win() -> None:
    ours = [S("slow_same", 0.900, 89.0), S("fast_same", 0.899, 40.0), S("worse", 0.850, 10.0)]
    pairs = {"slow_same": P(1.0, 0.999), "fast_same": P(1.0, 0.97), "worse": P(1e-9, 0.8)}
    v = V.verdict(ours, PEER, pairs, classification=True)
    assert v["status"] == "beaten" and [h["system"] for h in v["beaten_by"]] == ["fast_same", "slow_same"]
    lost = V.verdict([S("worse", 0.850, 10.0), S("slower", 0.905, 95.0)], PEER,
                     {"worse": P(1e-9, 0.8), "slower": P(0.5, 0.97)}, classification=True)
    assert lost["status"] == "peer wins" and "slower 0.9050" in lost["why"]
    # the nearest miss is named: the fastest of ours at the same score, and how far it is from 0.9x
    assert "our fastest at the same score: slower 0.9050 at 0.95x" in lost["why"]
    tie = V.verdict([S("tie_fast", 0.898, 91.0), S("tie_slow", 0.899, 99.0), S("worse", 0.850, 10.0)], PEER,
                    {"tie_fast": P(0.6, 0.95), "tie_slow": P(0.6, 0.95), "worse": P(1e-9, 0.8)}, classification=True)
    assert tie["status"] == "peer wins" and "same score: tie_fast 0.8980 at 0.91x" in tie["why"]
    none = V.verdict([S("worse", 0.850, 10.0)], PEER, {"worse": P(1e-9, 0.8)}, classification=True)
    assert "none of ours has the same score" in none["why"]


def test_undecided_without_timings_never_a_silent_win() -> None:
    assert V.verdict([S("ours", 0.95, 1.0)], S("peer", 0.9, None), {}, classification=True)["status"] == "undecided"
    v = V.verdict([S("ours", 0.95, None)], PEER, {}, classification=True)
    assert v["status"] == "undecided" and "not timed: ours" in v["why"]


def test_task_verdicts_reads_the_suite_systems() -> None:
    systems = {"int8": {"method": "compresslab", "score": 0.90, "latency_ms_b32": 50.0, "mcnemar_p_vs": {"ortq": 1.0}},
               "ortq": {"method": "peer", "score": 0.90, "latency_ms_b32": 100.0, "error": None},
               "broken": {"method": "peer", "score": None, "latency_ms_b32": None, "error": "ValueError: no"}}
    out = V.task_verdicts(systems, {"int8": {"ortq": 0.995}}, classification=True)
    assert set(out) == {"ortq"}  # a peer that did not run gets no verdict (its error is in the table)
    assert out["ortq"]["status"] == "beaten" and out["ortq"]["beaten_by"][0]["rule"] == "b"


def test_degenerate_systems_are_compared_with_nothing() -> None:
    """A model that predicts one class for every example (INC's documented dynamic recipe, session 9: 0.509 on
    SST-2 = the positive share) is neither beaten nor allowed to beat: 'beaten' must mean something."""
    deg = "every dev example gets the same prediction (1): a broken model; no verdict is drawn from it"
    systems = {"ziplm": {"method": "compresslab", "score": 0.88, "latency_ms_b32": 50.0, "mcnemar_p_vs": {"inc": 1e-50}},
               "const": {"method": "compresslab", "score": 0.51, "latency_ms_b32": 1.0, "degenerate": deg,
                         "mcnemar_p_vs": {"ortq": 1e-40}},
               "inc": {"method": "peer", "score": 0.51, "latency_ms_b32": 500.0, "error": None, "degenerate": deg},
               "ortq": {"method": "peer", "score": 0.89, "latency_ms_b32": 100.0, "error": None}}
    out = V.task_verdicts(systems, {"ziplm": {"inc": 0.5, "ortq": 0.9}, "const": {"ortq": 0.5}}, classification=True)
    assert out["inc"] == {"status": "not compared", "beaten_by": [], "why": deg}
    assert all(b["system"] != "const" for b in out["ortq"]["beaten_by"])  # a broken model of ours beats nobody


def test_suite_flags_constant_predictions(tmp_path) -> None:
    """systems() marks a cell whose dev predictions are all one class (and leaves a normal one alone)."""
    import numpy as np
    from types import SimpleNamespace

    suite = import_benchmarks("suite", REPO)
    labels = [0, 1, 1, 0, 1]
    preds = {"ok": np.array([0, 1, 1, 0, 0]), "const": np.array([1, 1, 1, 1, 1])}
    store = SimpleNamespace(preds=lambda n, k: preds[n])
    from compresslab.data.tasks import TaskKind
    teacher = SimpleNamespace(task=SimpleNamespace(spec=SimpleNamespace(kind=TaskKind.CLASSIFICATION)),
                              dev=[SimpleNamespace(label=v) for v in labels], preds=np.array(labels))
    cells = {n: {"status": "finished", "key": n, "method": "peer", "tool": "t", "score": 0.6} for n in preds}
    out = suite.systems(cells, store, teacher)
    assert "degenerate" not in out["ok"] and "same prediction (1)" in out["const"]["degenerate"]


def test_a_latency_rule_must_hold_round_by_round_where_rounds_were_kept() -> None:
    """A ratio of medians can pair rounds from two VM speed states (the peer's fast rounds at 80 ms): a system whose
    per-round ratio is 0.95x must not pass rule b (<= 0.9x) on a 0.89x ratio of medians. Without round times (files
    timed before 2026-12-05, peers timed in their own process) the medians decide as before."""
    peer_t = (100.0, 100.0, 100.0, 80.0, 80.0)          # median 100
    ours_t = (95.0, 95.0, 89.0, 60.0, 60.0)              # median 89; per round .95 .95 .89 .75 .75
    peer = S("peer", 0.900, 100.0, peer_t)
    ours = S("ours", 0.900, 89.0, ours_t)
    assert V.paired_ratio(ours, peer) == pytest.approx(0.89)  # sorted .75 .75 .89 .95 .95: rule b holds
    hit = V.judge(ours, peer, P(1.0, 0.995), classification=True)
    assert hit is not None and hit["latency_ratio_paired"] == pytest.approx(0.89)
    assert "at 0.89x, 0.89x round by round the peer's latency" in hit["why"]
    # stated median 89 (as if taken in the fast state); per round .95 .95 .95 .75 1.11 -> .95
    slow_rounds = S("ours", 0.900, 89.0, (95.0, 95.0, 95.0, 60.0, 89.0))
    assert V.paired_ratio(slow_rounds, peer) == pytest.approx(0.95)
    assert V.judge(slow_rounds, peer, P(1.0, 0.995), classification=True) is None
    assert V.judge(S("ours", 0.900, 89.0), peer, P(1.0, 0.995), classification=True) is not None  # no rounds: medians
    # rule a too: at most as slow round by round
    higher = S("ours", 0.95, 99.0, (99.0, 99.0, 99.0, 99.0, 99.0))  # median 0.99x, but slower in the 80 ms rounds
    assert V.paired_ratio(higher, peer) == pytest.approx(0.99)
    assert V.judge(higher, peer, P(0.001, 0.9, (30, 2)), classification=True)["rule"] == "a"
    late = S("ours", 0.95, 99.0, (99.0, 99.0, 85.0, 85.0, 85.0))  # per round .99 .99 .85 1.06 1.06 -> median .99
    assert V.judge(late, peer, P(0.001, 0.9, (30, 2)), classification=True)["rule"] == "a"
    later = S("ours", 0.95, 99.0, (99.0, 101.0, 101.0, 85.0, 99.0))  # .99 1.01 1.01 1.06 1.24 -> 1.01 > 1
    assert V.judge(later, peer, P(0.001, 0.9, (30, 2)), classification=True) is None
    assert V.paired_ratio(S("x", 0.9, 1.0, (1.0,)), peer) is None  # unequal round lists never pair


def test_suite_systems_carry_round_times_into_the_verdicts_and_keep_them_with_their_phase() -> None:
    T = import_benchmarks("suite_timing", REPO)
    sysd = {"ours": {"method": "compresslab", "score": 0.9, "precision": "int8"},
            "peer": {"method": "peer", "score": 0.9, "precision": "int8"}}
    timed = {"ours": {"latency_ms_b1": 1.0, "latency_ms_b32": 95.0, "throughput_real": 1.0, "timing": "x",
                      "latency_b32_times_ms": [95.0, 95.0, 95.0, 60.0, 89.0]},
             "peer": {"latency_ms_b1": 1.0, "latency_ms_b32": 100.0, "throughput_real": 1.0, "timing": "x",
                      "latency_b32_times_ms": [100.0, 100.0, 100.0, 80.0, 80.0]}}
    T.apply_timing(sysd, timed)
    sysd["ours"]["latency_ms_b32"] = 89.0
    v = V.task_verdicts(sysd, {"ours": {"peer": 0.995}}, classification=True)
    assert v["peer"]["status"] == "peer wins"  # 0.89x by medians, 0.95x by rounds
    assert "ours 0.9000 at 0.89x, 0.95x round by round (rule b needs <= 0.9x)" in v["peer"]["why"]
    # a later run that is not timed keeps this file's timing of an unchanged cell, rounds included: every timing in
    # a suite file is from its one phase, so the kept cells still pair with each other (and nothing else)
    new = {"ours": {"method": "compresslab", "score": 0.9, "latency_b32_times_ms": [1.0] * 5},
           "peer": {"method": "peer", "score": 0.9}}
    kept = T.keep_earlier_timings(new, {"ours": "k", "peer": "p"},
                                  {"meta": {"cell_keys": {"ours": "k", "peer": "p"}}, "systems": sysd})
    assert kept == ["ours", "peer"] and new["ours"]["latency_ms_b32"] == 89.0
    assert new["ours"]["latency_b32_times_ms"] == [95.0, 95.0, 95.0, 60.0, 89.0]
    assert V.task_verdicts(new, {"ours": {"peer": 0.995}}, classification=True)["peer"]["status"] == "peer wins"
