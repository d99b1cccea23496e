"""The issue-14 verdict, per task and per peer that ran: is some compresslab system

(a) at most as slow (b32 p50) with a higher score: McNemar p < 0.05 on a classification task (paired on
    the same dev examples), or at least 1 pt (0.01) higher on a regression task (STS-B); or
(b) the same score: agreement >= 0.99 with the PEER's predictions (classification) or within 0.3 pt
    (0.003), at <= 0.9x the peer's b32 latency? A score HIGHER by more than 0.3 pt counts as "the same"
    here too (not significant for rule a, but never a loss: a better score must not lose what an equal one
    wins).

If one is, the peer is ``beaten`` (every system of ours that does it is listed, with the rule and its
figures); if none is, the peer ``wins`` (stated plainly in the report); without b32 latencies of the
peer, or of every one of ours, it is ``undecided`` and says why. Pure functions over plain numbers.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Mapping

P_MAX = 0.05  # rule (a), classification: McNemar p below this
MIN_GAIN_REGRESSION = 0.01  # rule (a), regression: at least 1 pt higher
SAME_AGREEMENT = 0.99  # rule (b): agreement with the peer's predictions at least this ...
SAME_WITHIN = 0.003  # ... or the score within 0.3 pt
SPEED_RATIO = 0.9  # rule (b): at most this fraction of the peer's b32 latency
EPS = 1e-9  # scores are fractions: 0.900 - 0.897 is 0.0030000000000000027 in floats, and within 0.3 pt


@dataclass(frozen=True)
class System:
    """What the rule reads of one system: its dev score and b32 p50 latency (ms; None when not timed)."""

    name: str
    score: float | None
    latency_ms_b32: float | None
    # per-round b32 times (ms) from the interleaved timing phase, where kept (suite files since 2026-12-05; not for
    # peers timed in their own worker process): then a latency ratio must also hold round by round (paired_ratio)
    b32_times_ms: tuple[float, ...] | None = None


def paired_ratio(ours: System, peer: System) -> float | None:
    """The median over interleaved rounds of ours / peer at b32, or None without two equal round lists.

    A ratio of two medians can pair medians from the VM's two speed states (benchmarks/RESULTS.md, compound on
    avx512_bf16); the per-round ratio cannot."""
    a, b = ours.b32_times_ms, peer.b32_times_ms
    if not a or not b or len(a) != len(b):
        return None
    return float(statistics.median(x / y for x, y in zip(a, b)))


@dataclass(frozen=True)
class Pair:
    """What the rule reads of one of ours against one peer: McNemar p (classification; None on regression)
    and the fraction of dev examples where ours predicts what the peer predicts (None on regression)."""

    p_value: float | None
    agreement: float | None


def _same_by_agreement(pair: Pair, classification: bool) -> bool:
    return classification and pair.agreement is not None and pair.agreement >= SAME_AGREEMENT


def same_score(ours: System, peer: System, pair: Pair, *, classification: bool) -> bool:
    """Rule (b)'s "same score": agreement >= 0.99 with the peer's predictions (classification), or the score
    within 0.3 pt below the peer's, or any amount above. False when either score is missing."""
    if ours.score is None or peer.score is None:
        return False
    return _same_by_agreement(pair, classification) or ours.score - peer.score >= -(SAME_WITHIN + EPS)


def judge(ours: System, peer: System, pair: Pair, *, classification: bool) -> dict[str, Any] | None:
    """The rule ``ours`` meets against ``peer`` (``{"rule": "a"|"b", ...figures}``), or None."""
    if None in (ours.score, peer.score, ours.latency_ms_b32, peer.latency_ms_b32):
        return None
    ratio = ours.latency_ms_b32 / peer.latency_ms_b32
    paired = paired_ratio(ours, peer)
    delta = ours.score - peer.score
    figs = {"system": ours.name, "score": ours.score, "peer_score": peer.score, "delta": round(delta, 6),
            "latency_ms_b32": ours.latency_ms_b32, "peer_latency_ms_b32": peer.latency_ms_b32,
            "latency_ratio": round(ratio, 4), "p_value": pair.p_value, "agreement_with_peer": pair.agreement}
    if paired is not None:
        figs["latency_ratio_paired"] = round(paired, 4)

    def at_most(x: float) -> bool:  # the latency ratio as a ratio of medians and, where kept, round by round
        return ratio <= x + EPS and (paired is None or paired <= x + EPS)

    # the ratio as the verdict states it: both figures where round times were kept
    rtxt = f"{ratio:.2f}x" if paired is None else f"{ratio:.2f}x, {paired:.2f}x round by round"

    if at_most(1.0) and delta > 0:
        if classification and pair.p_value is not None and pair.p_value < P_MAX:
            return {"rule": "a", "why": f"at most as slow ({rtxt}) and higher (McNemar p={pair.p_value:.3g})",
                    **figs}
        if not classification and delta >= MIN_GAIN_REGRESSION - EPS:
            return {"rule": "a", "why": f"at most as slow ({rtxt}) and {100 * delta:.2f} pt higher", **figs}
    same_agree = _same_by_agreement(pair, classification)
    if same_score(ours, peer, pair, classification=classification) and at_most(SPEED_RATIO):
        how = (f"agreement {pair.agreement:.3f}" if same_agree else f"within {100 * abs(delta):.2f} pt"
               if delta <= SAME_WITHIN + EPS else f"{100 * delta:.2f} pt higher, not significant")
        what = "same score" if delta <= SAME_WITHIN + EPS else "same or higher score"
        return {"rule": "b", "why": f"{what} ({how}) at {rtxt} the peer's latency", **figs}
    return None


def verdict(ours: list[System], peer: System, pairs: Mapping[str, Pair], *, classification: bool) -> dict[str, Any]:
    """One peer's verdict: ``status`` (``beaten`` | ``peer wins`` | ``undecided``), ``beaten_by`` (the
    systems of ours meeting rule a or b, fastest first), ``why``."""
    if peer.score is None:
        return {"status": "undecided", "beaten_by": [], "why": "the peer has no score"}
    if peer.latency_ms_b32 is None:
        return {"status": "undecided", "beaten_by": [], "why": "the peer has no b32 latency (not timed)"}
    timed = [o for o in ours if o.score is not None and o.latency_ms_b32 is not None]
    hits = [h for o in timed if (h := judge(o, peer, pairs.get(o.name, Pair(None, None)),
                                            classification=classification))]
    hits.sort(key=lambda h: h["latency_ms_b32"])
    if hits:
        return {"status": "beaten", "beaten_by": hits, "why": f"{hits[0]['system']}: {hits[0]['why']}"}
    untimed = [o.name for o in ours if o.latency_ms_b32 is None]
    if untimed and not timed:
        return {"status": "undecided", "beaten_by": [], "why": f"none of ours was timed ({', '.join(untimed)})"}
    best = max(timed, key=lambda o: o.score or 0.0, default=None)
    why = ("no system of ours is at most as slow with a significantly higher score, or the same score at "
           f"<= {SPEED_RATIO}x its latency")
    if best is not None:
        why += (f"; our best score: {best.name} {best.score:.4f} vs {peer.score:.4f} at "
                f"{best.latency_ms_b32 / peer.latency_ms_b32:.2f}x its b32 latency")
    same = [o for o in timed if same_score(o, peer, pairs.get(o.name, Pair(None, None)), classification=classification)]
    if same:  # the nearest miss: the same score, but not fast enough
        near = min(same, key=lambda o: o.latency_ms_b32)
        pr = paired_ratio(near, peer)
        why += (f"; our fastest at the same score: {near.name} {near.score:.4f} at "
                f"{near.latency_ms_b32 / peer.latency_ms_b32:.2f}x"
                f"{'' if pr is None else f', {pr:.2f}x round by round'} (rule b needs <= {SPEED_RATIO}x)")
    else:
        why += "; none of ours has the same score"
    if untimed:
        why += f"; not timed: {', '.join(untimed)}"
    return {"status": "peer wins", "beaten_by": [], "why": why}


def task_verdicts(systems: Mapping[str, Mapping[str, Any]], agreement_vs: Mapping[str, Mapping[str, float]], *,
                  classification: bool) -> dict[str, dict[str, Any]]:
    """Verdicts for every peer of a suite file's ``systems`` that ran (a score, no error): peer name ->
    :func:`verdict`; a ``degenerate`` system (one prediction for every example) is compared with nothing. ``agreement_vs``: ours -> peer -> agreement of their dev predictions."""
    def sysof(n: str, s: Mapping[str, Any]) -> System:
        times = s.get("latency_b32_times_ms")
        return System(n, s.get("score"), s.get("latency_ms_b32"), tuple(times) if times else None)

    ours = [sysof(n, s) for n, s in systems.items()
            if s.get("method") == "compresslab" and s.get("score") is not None and not s.get("degenerate")]
    out: dict[str, dict[str, Any]] = {}
    for name, s in systems.items():
        if s.get("method") != "peer" or s.get("score") is None or s.get("error"):
            continue
        if s.get("degenerate"):  # beating a broken model proves nothing
            out[name] = {"status": "not compared", "beaten_by": [], "why": s["degenerate"]}
            continue
        pairs = {o.name: Pair((systems[o.name].get("mcnemar_p_vs") or {}).get(name),
                              (agreement_vs.get(o.name) or {}).get(name)) for o in ours}
        out[name] = verdict(ours, sysof(name, s), pairs, classification=classification)
    return out
