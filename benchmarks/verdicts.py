"""The issue-14 verdict, per task and per peer that ran: is some compresslab system

(a) at most as slow (b32 p50) with a higher score: McNemar p < 0.05 on a classification task (paired on
    the same dev examples) AND right on more of the examples where exactly one of the two is right (the
    test is two-sided and about correctness, while the score may be F1 or MCC), or at least 1 pt (0.01)
    higher on a regression task (STS-B); or
(b) the same score: agreement >= 0.99 with the PEER's predictions (classification) or within 0.3 pt
    (0.003), at <= 0.9x the peer's b32 latency? A score HIGHER by more than 0.3 pt counts as "the same"
    here too (not significant for rule a, but never a loss: a better score must not lose what an equal one
    wins). The issue's words leave that case open; every such win says "higher, not significant".

If one is, the peer is ``beaten`` (every system of ours that does it is listed, with the rule and its
figures); if none is, the peer ``wins`` (stated plainly in the report). It is ``undecided``, and says why,
when the peer has no b32 latency, when any system of ours that scored was not timed (it might have won),
when no system of ours scored at all, or when the timing phase was busy (:func:`void_if_busy`).

A peer timed in its own worker process is compared through the dense teacher timed in both processes
(``Bridge``): MEASURE.md takes ratios within one process, so ours/peer is
(ours / teacher here) x (teacher there / peer there). Pure functions over plain numbers.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from typing import Any, Mapping

from compresslab.failure import error_text

log = logging.getLogger(__name__)

P_MAX = 0.05  # rule (a), classification: McNemar p below this
MIN_GAIN_REGRESSION = 0.01  # rule (a), regression: at least 1 pt higher
SAME_AGREEMENT = 0.99  # rule (b): agreement with the peer's predictions at least this ...
SAME_WITHIN = 0.003  # ... or the score within 0.3 pt
SPEED_RATIO = 0.9  # rule (b): at most this fraction of the peer's b32 latency
EPS = 1e-9  # scores are fractions: 0.900 - 0.897 is 0.0030000000000000027 in floats, and within 0.3 pt


def finite(x: Any) -> float | None:
    """``x`` as a finite float, else None (a NaN score or an "n/a" figure is no figure)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def positive(x: Any) -> float | None:
    """``x`` as a finite float > 0, else None (a latency of 0 ms is a broken timing, never a win at 0.00x)."""
    v = finite(x)
    return v if v is not None and v > 0 else None


@dataclass(frozen=True)
class System:
    """What the rule reads of one system: its dev score and b32 p50 latency (ms; None when not timed)."""

    name: str
    score: float | None
    latency_ms_b32: float | None
    # per-round b32 times (ms) from the interleaved timing phase, where kept (suite files since 2026-12-05; not for
    # peers timed in their own worker process): then a latency ratio must also hold round by round (paired_ratio)
    b32_times_ms: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Bridge:
    """A peer timed in another process: the dense teacher's b32 p50 (ms) in this process and beside the peer
    there. The peer's latency in this process's terms is ``peer x here / there``."""

    reference: str
    here_ms: float
    there_ms: float

    def apply(self, peer: System) -> System:
        if peer.latency_ms_b32 is None:
            return peer
        return System(peer.name, peer.score, peer.latency_ms_b32 * self.here_ms / self.there_ms, None)


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
    """What the rule reads of one of ours against one peer: McNemar p (classification; None on regression),
    the fraction of dev examples where ours predicts what the peer predicts (None on regression) and the
    discordant pairs ``(only ours right, only the peer right)`` (None: unknown, so rule a cannot hold)."""

    p_value: float | None
    agreement: float | None
    discordant: tuple[int, int] | None = None

    def ours_more_often_right(self) -> bool:
        return self.discordant is not None and self.discordant[0] > self.discordant[1]


def _same_by_agreement(pair: Pair, classification: bool) -> bool:
    return classification and pair.agreement is not None and pair.agreement >= SAME_AGREEMENT


def same_score(ours: System, peer: System, pair: Pair, *, classification: bool) -> bool:
    """Rule (b)'s "same score": agreement >= 0.99 with the peer's predictions (classification), or the score
    within 0.3 pt below the peer's, or any amount above. False when either score is missing, and when ours is
    significantly more often wrong (McNemar p < 0.05 with fewer of the discordant examples right: on F1 or MCC a
    score within 0.3 pt can hide that)."""
    if ours.score is None or peer.score is None:
        return False
    if (classification and pair.p_value is not None and pair.p_value < P_MAX and pair.discordant is not None
            and pair.discordant[0] < pair.discordant[1]):
        return False
    return _same_by_agreement(pair, classification) or ours.score - peer.score >= -(SAME_WITHIN + EPS)


def judge(ours: System, peer: System, pair: Pair, *, classification: bool,
          bridge: Bridge | None = None) -> dict[str, Any] | None:
    """The rule ``ours`` meets against ``peer`` (``{"rule": "a"|"b", ...figures}``), or None. With ``bridge``
    (a peer timed in its own process) the latency ratio is the bridged one; the raw one is kept in the figures."""
    raw = peer
    if bridge is not None:
        peer = bridge.apply(peer)
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
    if bridge is not None:
        figs.update(peer_latency_ms_b32=raw.latency_ms_b32, peer_latency_ms_b32_bridged=round(peer.latency_ms_b32, 4),
                    latency_ratio_unbridged=round(ours.latency_ms_b32 / raw.latency_ms_b32, 4),
                    bridge=f"{bridge.reference}: {bridge.here_ms:.1f} ms here, {bridge.there_ms:.1f} ms beside the peer")

    def at_most(x: float) -> bool:  # the latency ratio as a ratio of medians and, where kept, round by round
        return ratio <= x + EPS and (paired is None or paired <= x + EPS)

    # the ratio as the verdict states it: both figures where round times were kept
    rtxt = (f"{ratio:.2f}x" if paired is None else f"{ratio:.2f}x, {paired:.2f}x round by round") + (
        "" if bridge is None else f" (bridged through {bridge.reference})")

    if at_most(1.0) and delta > 0:
        if classification and pair.p_value is not None and pair.p_value < P_MAX and pair.ours_more_often_right():
            b, c = pair.discordant  # type: ignore[misc]
            return {"rule": "a", "why": f"at most as slow ({rtxt}) and higher (McNemar p={pair.p_value:.3g}; right "
                                        f"where the peer is wrong {b} times, the reverse {c})", **figs}
        if not classification and delta >= MIN_GAIN_REGRESSION - EPS:
            return {"rule": "a", "why": f"at most as slow ({rtxt}) and {100 * delta:.2f} pt higher", **figs}
    same_agree = _same_by_agreement(pair, classification)
    if same_score(ours, peer, pair, classification=classification) and at_most(SPEED_RATIO):
        how = (f"agreement {pair.agreement:.3f}" if same_agree else f"within {100 * abs(delta):.2f} pt"
               if delta <= SAME_WITHIN + EPS else f"{100 * delta:.2f} pt higher, " + (
                   "under rule a's 1 pt" if not classification else "not significant" if pair.p_value is not None
                   else "significance unknown"))
        what = "same score" if delta <= SAME_WITHIN + EPS else "same or higher score"
        return {"rule": "b", "why": f"{what} ({how}) at {rtxt} the peer's latency", **figs}
    return None


def verdict(ours: list[System], peer: System, pairs: Mapping[str, Pair], *, classification: bool,
            bridge: Bridge | None = None) -> dict[str, Any]:
    """One peer's verdict: ``status`` (``beaten`` | ``peer wins`` | ``undecided``), ``beaten_by`` (the
    systems of ours meeting rule a or b, fastest first), ``why``. ``bridge``: the peer was timed in its own
    process (:class:`Bridge`)."""
    if peer.score is None:
        return {"status": "undecided", "beaten_by": [], "why": "the peer has no score"}
    if peer.latency_ms_b32 is None:
        return {"status": "undecided", "beaten_by": [], "why": "the peer has no b32 latency (not timed)"}
    ours = [o for o in ours if o.score is not None]
    if not ours:
        return {"status": "undecided", "beaten_by": [], "why": "no system of ours has a score in this file"}
    timed = [o for o in ours if o.latency_ms_b32 is not None]
    hits = [h for o in timed if (h := judge(o, peer, pairs.get(o.name, Pair(None, None)),
                                            classification=classification, bridge=bridge))]
    hits.sort(key=lambda h: h["latency_ms_b32"])
    if hits:
        return {"status": "beaten", "beaten_by": hits, "why": f"{hits[0]['system']}: {hits[0]['why']}"}
    untimed = [o.name for o in ours if o.latency_ms_b32 is None]
    cmp = peer if bridge is None else bridge.apply(peer)
    bridged = "" if bridge is None else f" (bridged through {bridge.reference})"
    why = ("no system of ours is at most as slow with a significantly higher score, or the same score at "
           f"<= {SPEED_RATIO}x its latency")
    best = max(timed, key=lambda o: o.score or 0.0, default=None)
    if best is not None:
        why += (f"; our best score: {best.name} {best.score:.4f} vs {peer.score:.4f} at "
                f"{best.latency_ms_b32 / cmp.latency_ms_b32:.2f}x its b32 latency{bridged}")
    same = [o for o in timed if same_score(o, peer, pairs.get(o.name, Pair(None, None)), classification=classification)]
    if same:  # the nearest miss: the same score, but not fast enough
        near = min(same, key=lambda o: o.latency_ms_b32)
        pr = paired_ratio(near, cmp)
        why += (f"; our fastest at the same score: {near.name} {near.score:.4f} at "
                f"{near.latency_ms_b32 / cmp.latency_ms_b32:.2f}x"
                f"{'' if pr is None else f', {pr:.2f}x round by round'}{bridged} (rule b needs <= {SPEED_RATIO}x)")
    elif timed:
        why += "; none of ours has the same score"
    fast = [o for o in timed if o.latency_ms_b32 / cmp.latency_ms_b32 <= SPEED_RATIO + EPS
            and ((pr := paired_ratio(o, cmp)) is None or pr <= SPEED_RATIO + EPS)
            and not same_score(o, peer, pairs.get(o.name, Pair(None, None)), classification=classification)]
    if fast:  # the other nearest miss: fast enough for rule b, but not the same score
        top = max(fast, key=lambda o: o.score or 0.0)
        tp = pairs.get(top.name, Pair(None, None))
        miss = (f"{100 * (peer.score - top.score):.2f} pt below (rule b needs within {100 * SAME_WITHIN:.1f} pt"
                + (f", or agreement >= {SAME_AGREEMENT} with the peer: {tp.agreement:.3f})" if tp.agreement is not None
                   else ")")
                if peer.score - top.score > SAME_WITHIN + EPS else
                f"significantly more often wrong than the peer (McNemar p={tp.p_value:.3g})")
        why += (f"; our best score at <= {SPEED_RATIO}x: {top.name} {top.score:.4f} at "
                f"{top.latency_ms_b32 / cmp.latency_ms_b32:.2f}x{bridged}, {miss}")
    if untimed:  # one of them might have won: no "peer wins" without every scored system of ours timed
        return {"status": "undecided", "beaten_by": [],
                "why": f"not timed: {', '.join(untimed)}" + (f"; of the timed ones: {why}" if timed else "")}
    return {"status": "peer wins", "beaten_by": [], "why": why}


def bridges(systems: Mapping[str, Mapping[str, Any]], external: Mapping[str, Mapping[str, Any]]) -> dict[str, Bridge]:
    """Peer name -> :class:`Bridge` for each peer timed in its own process (``meta.timing.external``: its
    ``reference`` timings of the dense teacher there) whose reference was also timed in this process."""
    out: dict[str, Bridge] = {}
    for name, rec in (external or {}).items():
        refs = rec.get("reference") if isinstance(rec, Mapping) else None
        for ref, figs in (refs.items() if isinstance(refs, Mapping) else ()):
            here = positive((systems.get(ref) or {}).get("latency_ms_b32") if isinstance(systems.get(ref), Mapping) else None)
            there = positive(figs.get("latency_ms_b32") if isinstance(figs, Mapping) else None)
            if here and there:
                out[name] = Bridge(ref, float(here), float(there))
                break
    return out


def task_verdicts(systems: Mapping[str, Mapping[str, Any]], agreement_vs: Mapping[str, Mapping[str, float]], *,
                  classification: bool, external: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Verdicts for every peer of a suite file's ``systems`` that ran (a score): peer name -> :func:`verdict`; a
    ``degenerate`` system (one prediction for every example) is compared with nothing; a peer that scored but
    whose timing failed is ``undecided`` with its error. ``agreement_vs``: ours -> peer -> agreement of their
    dev predictions. ``external``: ``meta.timing.external`` (peers timed in their own process, bridged)."""
    def sysof(n: str, s: Mapping[str, Any]) -> System:
        times = [positive(t) for t in (s.get("latency_b32_times_ms") or [])]
        return System(n, finite(s.get("score")), positive(s.get("latency_ms_b32")),
                      tuple(times) if times and None not in times else None)  # type: ignore[arg-type]

    def discordant(d: Any) -> tuple[int, int] | None:
        try:
            b, c = (int(x) for x in d)
        except (TypeError, ValueError):
            return None
        return (b, c) if b >= 0 and c >= 0 else None

    agreement_vs = agreement_vs or {}

    ours = [sysof(n, s) for n, s in systems.items()
            if s.get("method") == "compresslab" and finite(s.get("score")) is not None and not s.get("degenerate")]
    links = bridges(systems, external or {})
    out: dict[str, dict[str, Any]] = {}
    for name, s in systems.items():
        if s.get("method") != "peer" or finite(s.get("score")) is None:
            continue
        if s.get("degenerate"):  # beating a broken model proves nothing
            out[name] = {"status": "not compared", "beaten_by": [], "why": s["degenerate"]}
            continue
        if s.get("error"):  # it scored, then failed (its timing): it ran, so it gets a verdict
            out[name] = {"status": "undecided", "beaten_by": [], "why": f"the peer scored but failed: {s['error']}"}
            continue

        def pair(o: System) -> Pair:
            d = (systems[o.name].get("mcnemar_discordant_vs") or {}).get(name)
            return Pair(finite((systems[o.name].get("mcnemar_p_vs") or {}).get(name)),
                        finite((agreement_vs.get(o.name) or {}).get(name)), discordant(d))

        if external and name in external and name not in links:  # MEASURE.md: no ratio across processes unbridged
            out[name] = {"status": "undecided", "beaten_by": [],
                         "why": "timed in its own process, and the dense teacher timed beside it there has no timing "
                                "in this process to bridge the two (MEASURE.md: ratios within one process)"}
            continue
        out[name] = verdict(ours, sysof(name, s), {o.name: pair(o) for o in ours}, classification=classification,
                            bridge=links.get(name))
    return out


def guarded_task_verdicts(systems: Mapping[str, Mapping[str, Any]], agreement_vs: Mapping[str, Mapping[str, float]],
                          **kw: Any) -> dict[str, Any]:
    """:func:`task_verdicts`, or ``{"error": ...}``: the suite writes the verdicts with the scores and the timing
    phase, and a fault in them must never lose those (the verdicts can be derived again with --no-timing)."""
    try:
        return task_verdicts(systems, agreement_vs, **kw)
    except Exception as e:  # noqa: BLE001 - recorded in the file and logged; the run's figures are written
        log.exception("verdicts failed; the figures are written without them")
        return {"error": error_text(e)}


def void_if_busy(verdicts: Mapping[str, Mapping[str, Any]], busy: list[str]) -> dict[str, dict[str, Any]]:
    """The verdicts when the timing phase their latencies come from was ``busy`` (its windows' reasons; MEASURE.md:
    a figure timed beside other work is void): every ``beaten`` or ``peer wins`` is ``undecided``, keeping what it
    would have been under ``if_quiet``. Unchanged when ``busy`` is empty."""
    busy = [busy] if isinstance(busy, str) else [str(b) for b in busy if b]
    if not busy:
        return {k: dict(v) for k, v in verdicts.items()}
    out: dict[str, Any] = {}
    for name, v in verdicts.items():
        if not isinstance(v, Mapping):  # {"error": "..."}: no verdict was drawn (suite._verdicts)
            out[name] = v
        elif v.get("status") in ("beaten", "peer wins"):
            out[name] = {"status": "undecided", "beaten_by": [], "if_quiet": dict(v),
                         "why": f"the timing phase was busy ({'; '.join(busy)}): its speed figures are void"}
        else:
            out[name] = dict(v)
    return out
