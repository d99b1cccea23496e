"""Sensitivity-guided dynamic int8: which weight MatMuls of the fused graph to leave fp32.

ORT's dynamic int8 quantizes each MatMul's input per tensor, per call; at outlier activations
that costs a few predictions (the flips). Here every weight MatMul of the fused graph (``MatMul``,
the fused ``Attention`` QKV projection, the ``Gemm`` heads ORT rewrites into ``<name>_MatMul``)
is either int8 or fp32, chosen on the validation split against the incoming fp32 graph's outputs:

* sensitivity (activations seen, on real validation batches), two estimates of how much a node's
  int8 costs, as mean KL(p_fp32 || p) (squared error for a one-output head):
  ``single_int8``: the node alone int8, all others fp32 -> its KL;
  ``single_fp32``: all int8 but the node -> the KL it recovers, ``KL(all) - KL(all but it)``;
* latency cost of keeping a node fp32 (a stated model): the whole-model gap ``t_fp32 - t_int8``
  at the latency shape (b32xs128 by default; the pass's ``latency_seq``), measured once on this
  machine, shared by weight MACs per token row;
* the choice: maximise summed benefit (the KL kept away) subject to summed cost <= the budget
  ``t_int8 * (1/ratio - 1)``, i.e. speedup >= ``ratio`` x the all-int8 speedup, by an exact
  branch and bound (ties: the cheaper set, then the lexicographically smaller one).

With ``per_token=True`` each weight MatMul has a third choice, int8 with one activation scale per token
(``export/per_token_int8.py``: batch-independent, closer to fp32, cheaper than fp32); the fused ``Attention``
takes one scale per call (QAttention), so it stays int8 or fp32. The estimates then probe every choice of a
node (``benefit`` of a choice = KL(node per-call int8) - KL(node at that choice), others as the estimate's
base), a third estimate ``single_per_call`` probes around the most accurate cheap model (every MatMul per
token, every Attention fp32), the per-token cost is the whole-model gap ``t_per_token - t_int8`` shared by
the elements a MatMul's activation scaling touches per token row (in + out features), and the choice, one
option per node, is an exact integer program (``ops/knapsack.solve_milp``; the choice step lives in
``quant/guided_choice.py``).

Each estimate's set is built and scored on validation; the best (agreement, then KL) is kept,
the all-int8 model included, and its speed verified by one interleaved measurement. Every timing
records the machine's load; the record's ``latency.machine_load`` combines them (``busy`` when any
was taken while other work ran: the cost model and the check then rest on void timings).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

from compresslab.quant.divergence import Divergence, divergence, run_outputs  # noqa: F401 (re-exported)
from compresslab.quant.guided_choice import Choice, MixedSelection, Selection, choose, choose_fp32  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

LATENCY_SHAPE = (32, 128)  # (batch, seq) of the budget: b32xs128, as the issue states it
_CANDIDATE_OPS = ("MatMul", "Attention")  # op_types names; a Gemm is quantized as a MatMul


class Sensitivity(str, Enum):
    """How a node's int8 cost is estimated (``auto``: both, the better on validation wins)."""

    AUTO = "auto"
    SINGLE_INT8 = "single_int8"  # the node alone int8: its KL
    SINGLE_FP32 = "single_fp32"  # all int8 but the node: the KL it recovers
    # per_token only: every MatMul per token and every Attention fp32 but the node per call: the KL it adds
    SINGLE_PER_CALL = "single_per_call"


@dataclass(frozen=True)
class Candidate:
    """A node ORT's dynamic quantizer turns int8, under the name its ``nodes_to_exclude`` matches."""

    name: str
    op_type: str  # as in the graph: MatMul, Attention or Gemm
    macs_per_row: int  # weight K x N: multiply-accumulates per token row (the seq-independent part)
    in_features: int = 0  # K
    out_features: int = 0  # N
    # the activation input is this node's alone (no other candidate reads it): it can take per-token scales
    # without its neighbours (export/per_token_int8.py rewrites a shared input only when all readers are named)
    own_input: bool = True

    def options(self, per_token: bool) -> tuple[Choice, ...]:
        """The choices this node has: int8 and fp32, and per-token int8 for a MatMul with its own input."""
        if per_token and self.op_type != "Attention" and self.own_input:
            return (Choice.INT8, Choice.PER_TOKEN, Choice.FP32)
        return (Choice.INT8, Choice.FP32)


# --------------------------------------------------------------------------------------- the graph
def quantizable_matmuls(path: str | Path, op_types: Sequence[str] | None = None,
                        exclude: Collection[str] = ()) -> list[Candidate]:
    """Weight MatMuls of ``path`` that ``quantize_dynamic`` makes int8, in graph order, but those named in
    ``exclude`` (kept fp32 by the caller: they neither are candidates nor share an input that matters).

    ``op_types`` as given to the quantizer (None: all): ``MatMul`` (also covers a ``Gemm`` with
    alpha = beta = 1 and no transA, which ORT rewrites into ``<name>_MatMul``) and ``Attention``.
    MatMuls of two activations (none in the fused graph) and other quantized ops (embeddings)
    are not candidates: they stay as the plain int8 pass leaves them.
    """
    import onnx
    from onnx import helper

    allowed = set(_CANDIDATE_OPS if op_types is None else op_types)
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}
    found = []
    for n in graph.node:
        w = dims.get(n.input[1]) if len(n.input) > 1 else None
        if w is None or len(w) != 2 or not n.name:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type in ("MatMul", "Attention") and n.op_type in allowed:
            found.append((Candidate(n.name, n.op_type, w[0] * w[1], w[0], w[1]), n.input[0]))
        elif (n.op_type == "Gemm" and "MatMul" in allowed and attrs.get("alpha", 1.0) == 1.0
              and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)):
            found.append((Candidate(f"{n.name}_MatMul", "Gemm", w[0] * w[1], w[0], w[1]), n.input[0]))
    found = [(c, a) for c, a in found if c.name not in exclude]
    # an fp32 reader of the same input (an excluded node) does not stop per-token scales: it never reads the codes
    readers: dict[str, int] = {}
    for _, a in found:
        readers[a] = readers.get(a, 0) + 1
    return [replace(c, own_input=readers[a] == 1) for c, a in found]


# ---------------------------------------------------------------------------------- sensitivities
Quantize = Callable[..., Any]  # quantize(src, dst, nodes_to_exclude=..., nodes_to_quantize=...)
Evaluate = Callable[[Path], Divergence]
# build(choice, dst, only): write the model with each named node at its choice; ``only``: quantize just the
# non-fp32 nodes (ORT's nodes_to_quantize: nothing else of the graph int8), else exclude the fp32 ones
Build = Callable[[Mapping[str, Choice], Path, bool], Any]


def make_build(src: Path, quantize: Quantize, work: Path) -> Build:
    """The :data:`Build` of ``src``: ``quantize`` (per-call dynamic int8 with node lists), then the per-token
    rewrite of the PER_TOKEN nodes (``export/per_token_int8.py``). Returns the quantizer's metrics, with
    ``per_token`` (the rewrite's record) where any node is per token."""
    from compresslab.export.per_token_int8 import per_token_activations

    def build(choice: Mapping[str, Choice], dst: Path, only: bool = False) -> Any:
        fp32 = sorted(n for n, o in choice.items() if o is Choice.FP32)
        tok = sorted(n for n, o in choice.items() if o is Choice.PER_TOKEN)
        nodes = ({"nodes_to_quantize": sorted(n for n, o in choice.items() if o is not Choice.FP32)} if only
                 else {"nodes_to_exclude": fp32})
        if not tok:
            return quantize(src, dst, **nodes)
        per_call = work / f"{Path(dst).stem}_per_call.onnx"
        metrics = quantize(src, per_call, **nodes)
        rewrite = per_token_activations(per_call, dst, matmuls=tok)
        per_call.unlink()
        return {**(metrics or {}), "per_token": rewrite}

    return build


def base_choice(method: Sensitivity, candidates: Sequence[Candidate], per_token: bool) -> dict[str, Choice]:
    """The model an estimate probes around: all fp32 (``single_int8``), all int8 (``single_fp32``), or every
    node at its most accurate choice short of fp32 where it has one (``single_per_call``: per-token MatMuls,
    fp32 Attention)."""
    if method is Sensitivity.SINGLE_INT8:
        return {c.name: Choice.FP32 for c in candidates}
    if method is Sensitivity.SINGLE_FP32:
        return {c.name: Choice.INT8 for c in candidates}
    if method is Sensitivity.SINGLE_PER_CALL:
        if not per_token:
            raise ValueError("sensitivity single_per_call probes around per-token MatMuls: it needs per_token=True")
        return {c.name: Choice.PER_TOKEN if Choice.PER_TOKEN in c.options(True) else Choice.FP32 for c in candidates}
    raise ValueError(f"sensitivities() needs single_int8, single_fp32 or single_per_call, got {method!r}")


def sensitivities(method: Sensitivity, candidates: Sequence[Candidate], build: Build, evaluate: Evaluate,
                  work: Path, base: Divergence, track: Callable[..., Any] = lambda it, **_: it,
                  per_token: bool = False) -> dict[str, dict[str, Any]]:
    """Per candidate: its probes and the ``benefit`` of each choice (KL kept away, against per-call int8).

    ``candidates``: every candidate of the model (the base is set over them; a node not listed would stay
    per-call int8 in every probe). Every choice of a node other than the estimate's base (:func:`base_choice`)
    is probed with the others at the base; ``base`` is the base model's divergence (unused for ``single_int8``: its base is the reference
    itself, KL 0). ``benefit[o] = max(KL(node int8) - KL(node at o), 0)``. So ``single_int8``: the fp32
    benefit is the KL of the node alone int8; ``single_fp32``: KL(all int8) - KL(all int8 but the node).

    Returns ``{name: {"kl", "flips", "n", "agreement"`` of the node's main probe (int8, or fp32 where the
    base is int8), ``"benefit"``: the fp32 benefit, ``"benefits"``: ``{choice: benefit}`` for every choice
    but int8, ``"probes"``: ``{choice: divergence}``}``.
    """
    ref = Divergence(0.0, 0, base.n) if method is Sensitivity.SINGLE_INT8 else base
    start = base_choice(method, candidates, per_token)
    only = method is Sensitivity.SINGLE_INT8
    out = {}
    probe = work / f"probe_{method.value}.onnx"
    for c in track(candidates, total=len(candidates), desc=f"sensitivity {method.value}"):
        probes = {start[c.name]: ref}
        for o in c.options(per_token):
            if o is not start[c.name]:
                build({**start, c.name: o}, probe, only)
                probes[o] = evaluate(probe)
        kl8 = probes[Choice.INT8].kl
        benefits = {o.value: max(kl8 - d.kl, 0.0) for o, d in probes.items() if o is not Choice.INT8}
        main = probes[Choice.INT8 if start[c.name] is not Choice.INT8 else Choice.FP32]
        out[c.name] = {**main.to_dict(), "benefit": benefits[Choice.FP32.value], "benefits": benefits,
                       "probes": {o.value: d.to_dict() for o, d in probes.items()}}
    return out


# ---------------------------------------------------------------------------------- cost and budget
def fp32_costs(candidates: Sequence[Candidate], t_fp32: float, t_int8: float) -> dict[str, float]:
    """Seconds a node adds when kept fp32 (the model): its share of weight MACs times the
    whole-model gap ``t_fp32 - t_int8`` (0 where int8 is not faster)."""
    total = sum(c.macs_per_row for c in candidates)
    gap = max(float(t_fp32) - float(t_int8), 0.0)
    return {c.name: gap * c.macs_per_row / total if total else 0.0 for c in candidates}


# the per-token gap is never taken below this fraction of t_int8: a noisy timing that put per token at no cost
# would make it free in every round (the rounds scale costs, and 0 scales to 0). Measured on MiniLM, b32xs128,
# AVX2: +57 ms over 528 ms, ~11 % (benchmarks/RESULTS.md, guided int8 with per-token)
PER_TOKEN_GAP_FLOOR = 0.02


def per_token_costs(candidates: Sequence[Candidate], t_int8: float, t_per_token: float,
                    seq: int = LATENCY_SHAPE[1]) -> dict[str, float]:
    """Seconds a node adds when its activations are per token instead of per call (the model): the
    whole-model gap ``t_per_token - t_int8`` (every node with a per-token choice per token, the rest int8;
    at least :data:`PER_TOKEN_GAP_FLOOR` x ``t_int8``) shared by ``(in_features + out_features) x rows``, the
    elements its per-token scaling reads and rescales per sentence: ``seq`` rows for a MatMul of the token
    sequence, one for a ``Gemm`` head (pooler, classifier: they see one vector per sentence). Only nodes with a
    per-token choice are listed. Raises ValueError for such a node without its feature counts."""
    able = [c for c in candidates if Choice.PER_TOKEN in c.options(True)]
    bare = [c.name for c in able if c.in_features + c.out_features <= 0]
    if bare:
        raise ValueError(f"per-token cost model needs in_features and out_features; missing for {bare}")
    weight = {c.name: (c.in_features + c.out_features) * (1 if c.op_type == "Gemm" else int(seq)) for c in able}
    total = sum(weight.values())
    gap = max(float(t_per_token) - float(t_int8), PER_TOKEN_GAP_FLOOR * float(t_int8), 0.0)
    return {n: gap * w / total for n, w in weight.items()}


def extra_time_budget(t_int8: float, latency_ratio: float) -> float:
    """Seconds the fp32 set may add to the all-int8 model so that its speedup stays >=
    ``latency_ratio`` x the all-int8 speedup: ``t <= t_int8 / ratio``."""
    if not (0.0 < latency_ratio <= 1.0):
        raise ValueError(f"latency_ratio must be in (0, 1], got {latency_ratio!r}")
    return float(t_int8) * (1.0 / latency_ratio - 1.0)


# ------------------------------------------------------------------------------------- timing
def time_models(paths: Mapping[str, Path], threads: int | None, runs: int,
                vocab_size: int | None = None, loads: list[dict[str, Any]] | None = None,
                shape: tuple[int, int] | None = None) -> dict[str, float]:
    """Median seconds per call of each graph at ``shape`` ``(batch, seq)`` (None: :data:`LATENCY_SHAPE`),
    interleaved after warm-up.

    ``loads`` receives the timing's ``machine_load`` record (busy, reasons, the load before and during).
    """
    from compresslab.bench.latency import measure_latency, shape_key
    from compresslab.bench.machine_load import timing_window
    from compresslab.bench.runners import OrtRunner

    shape = tuple(shape or LATENCY_SHAPE)
    runners = {k: OrtRunner(p, threads, vocab_size=vocab_size) for k, p in paths.items()}
    with timing_window("guided int8: fp32 / int8 candidates") as window:
        lat = measure_latency(runners, [shape], warmup=2, runs=runs, vocab_size=vocab_size)
    if loads is not None:
        loads.append(window.record())
    key = shape_key(*shape)
    return {k: lat["results"][k][key]["p50_ms"] / 1e3 for k in paths}


# ------------------------------------------------------------------------------------- the driver
def guided_int8(src: str | Path, dst: str | Path, feeds: Sequence[Mapping[str, Any]], *,
                sensitivity: Sensitivity | str = Sensitivity.AUTO, latency_ratio: float = 0.9,
                threads: int | None = None, latency_runs: int = 10, vocab_size: int | None = None,
                per_channel: bool = True, reduce_range: bool = False, op_types: Sequence[str] | None = None,
                max_rounds: int = 3, track: Callable[..., Any] = lambda it, **_: it,
                latency_shape: tuple[int, int] | None = None, per_token: bool = False,
                exclude: Sequence[str] = (), reference: str | Path | None = None) -> dict[str, Any]:
    """Dynamic int8 of ``src`` into ``dst`` with the fp32 fallback set chosen on ``feeds``
    (validation batches; the reference is the outputs of ``reference``, by default ``src``'s own: pass the fp32
    graph ``src`` was rewritten from when the rewrite is not exact, e.g. ``export/embedding_int8.py``'s int8
    tables). Returns the record (JSON-able).

    ``exclude``: node names that stay fp32 in every model built here and are not candidates (the fp32 side
    MatMuls of ``export/outlier_split.py``).

    ``per_token``: each weight MatMul with an input of its own may also take per-token activation scales
    (module docstring); ``auto`` then runs all three estimates. The chosen model is timed against fp32
    and all-int8 (one interleaved measurement); where it misses the budget, the cost model is scaled by
    measured / predicted extra time (at least x1.05) and the choice redone, up to ``max_rounds`` times;
    every round is recorded. Timing runs at ``latency_shape`` ``(batch, seq)`` (None: :data:`LATENCY_SHAPE`);
    its seq must fit the model's position table (the pass checks it against config.json before any work).
    """
    from compresslab.bench.machine_load import combine
    from compresslab.export.ort_quant import quant_metrics, quantize_dynamic_int8

    method = Sensitivity(sensitivity)
    if method is Sensitivity.SINGLE_PER_CALL and not per_token:
        raise ValueError("sensitivity single_per_call probes around per-token MatMuls: it needs per_token=True")
    asked_per_token = bool(per_token)
    shape = tuple(latency_shape or LATENCY_SHAPE)
    extra_time_budget(1.0, latency_ratio)  # validates the ratio before any work
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ValueError(f"max_rounds must be an integer >= 1, got {max_rounds!r}")
    src, dst = Path(src), Path(dst)
    feeds = list(feeds)
    if not feeds:
        raise ValueError("guided int8 needs at least one validation batch")
    if isinstance(exclude, str):
        raise TypeError(f"exclude must be a collection of node names, not the string {exclude!r}")
    excluded = sorted(set(exclude))
    candidates = quantizable_matmuls(src, op_types, exclude=excluded)
    if not candidates:
        raise ValueError(f"{src.name} has no weight MatMul that dynamic int8 quantizes (op_types={op_types})")
    per_token = asked_per_token and any(Choice.PER_TOKEN in c.options(True) for c in candidates)
    if asked_per_token and not per_token:
        why = (f"no weight MatMul of {src.name} (op_types={op_types}) has an input of its own, so none can take "
               "per-token scales (QAttention takes one per call; Q/K/V of an unfused graph share their input)")
        if method is Sensitivity.SINGLE_PER_CALL:
            raise ValueError(f"sensitivity single_per_call: {why}")
        log.warning("guided int8: per_token asked, but %s; choosing between int8 and fp32 only", why)

    def quantize(s: Path, d: Path, **nodes: Any) -> dict[str, Any]:
        if excluded and "nodes_to_quantize" not in nodes:  # nodes_to_quantize lists candidates only
            nodes = {**nodes, "nodes_to_exclude": sorted({*nodes.get("nodes_to_exclude", ()), *excluded})}
        return quantize_dynamic_int8(s, d, per_channel=per_channel, reduce_range=reduce_range, op_types=op_types,
                                     **nodes)

    reference = run_outputs(Path(reference) if reference is not None else src, feeds, threads)

    def evaluate(path: Path) -> Divergence:
        return divergence(reference, run_outputs(path, feeds, threads))

    with tempfile.TemporaryDirectory(prefix="compresslab-guided-") as tmp:
        work = Path(tmp)
        build = make_build(src, quantize, work)
        all_int8 = work / "all_int8.onnx"
        made = {"all_int8": quantize(src, all_int8)}
        base = evaluate(all_int8)
        methods = [Sensitivity.SINGLE_INT8, Sensitivity.SINGLE_FP32] if method is Sensitivity.AUTO else [method]
        if method is Sensitivity.AUTO and per_token:
            methods.append(Sensitivity.SINGLE_PER_CALL)
        bases = {Sensitivity.SINGLE_FP32: base}
        if Sensitivity.SINGLE_PER_CALL in methods:
            top = work / "per_token_top.onnx"
            build(base_choice(Sensitivity.SINGLE_PER_CALL, candidates, True), top)
            bases[Sensitivity.SINGLE_PER_CALL] = evaluate(top)
        n_probes = sum(len(c.options(per_token)) - 1 for c in candidates) * len(methods)
        log.info("guided int8: %d candidates, choices %s, estimates %s: %d probe models on %d validation examples",
                 len(candidates), "int8/per_token/fp32" if per_token else "int8/fp32",
                 [m.value for m in methods], n_probes, base.n)
        sens = {}
        for m in methods:
            t0 = time.perf_counter()
            sens[m.value] = sensitivities(m, candidates, build, evaluate, work, bases.get(m, base), track, per_token)
            log.info("guided int8: %s estimated in %.0f s", m.value, time.perf_counter() - t0)
        loads: list[dict[str, Any]] = []  # every timing's machine_load, combined into the record
        timed = {"fp32": src, "int8": all_int8}
        if per_token:  # every MatMul that can be per token, the rest as all-int8: the per-token cost model
            all_tok = work / "all_per_token.onnx"
            build({c.name: Choice.PER_TOKEN for c in candidates if Choice.PER_TOKEN in c.options(True)}, all_tok)
            timed["per_token"] = all_tok
        t = time_models(timed, threads, latency_runs, vocab_size, loads=loads, shape=shape)
        model_cost = {n: {"fp32": v} for n, v in fp32_costs(candidates, t["fp32"], t["int8"]).items()}
        if per_token:
            if t["per_token"] - t["int8"] < PER_TOKEN_GAP_FLOOR * t["int8"]:
                log.warning("guided int8: the all-per-token file timed %.1f ms vs all-int8 %.1f ms (noise?); the "
                            "per-token cost model takes the floor of %.0f %% of all-int8", 1e3 * t["per_token"],
                            1e3 * t["int8"], 100 * PER_TOKEN_GAP_FLOOR)
            for n, v in per_token_costs(candidates, t["int8"], t["per_token"], shape[1]).items():
                model_cost[n]["per_token"] = v
        budget = extra_time_budget(t["int8"], latency_ratio)
        rounds: list[dict[str, Any]] = []
        scale = 1.0
        built = {(): (all_int8, made["all_int8"], base)}  # choice key -> (file, quantize metrics, score)
        benefits = {m: {n: v["benefits"] for n, v in s.items()} for m, s in sens.items()}
        for _ in range(max_rounds):
            cost = {n: {o: c * scale for o, c in opts.items()} for n, opts in model_cost.items()}
            selections = {m: choose({n: {o: b[n][o] for o in cost[n]} for n in b}, cost, budget)
                          for m, b in benefits.items()}
            for sel in selections.values():  # a set already built (an earlier round, another method) is reused
                if sel.key not in built:
                    path = work / f"guided_{len(built)}.onnx"
                    metrics = build(sel.choice, path)
                    built[sel.key] = (path, metrics, evaluate(path))
            scores = {"all_int8": base, **{m: built[sel.key][2] for m, sel in selections.items()}}
            # validation decides, the plain all-int8 model included: agreement, then KL, then the list order
            order = list(scores)
            rank = {k: (scores[k].agreement, -scores[k].kl, -order.index(k)) for k in order}
            winner = max(order, key=rank.__getitem__)
            best_sensitivity = max(sens, key=rank.__getitem__)
            chosen = selections[winner] if winner in selections else MixedSelection({}, 0.0, 0.0, budget)
            verify = time_models({"fp32": src, "int8": all_int8, "chosen": built[chosen.key][0]}, threads,
                                 latency_runs, vocab_size, loads=loads, shape=shape)
            met = (verify["fp32"] / verify["chosen"] >= latency_ratio * verify["fp32"] / verify["int8"]
                   or not chosen.choice)
            predicted_extra = chosen.cost
            measured_extra = verify["chosen"] - verify["int8"]
            rounds.append({"cost_scale": scale, "winner": winner, "fp32_matmuls": list(chosen.names(Choice.FP32)),
                           "per_token_matmuls": list(chosen.names(Choice.PER_TOKEN)),
                           "predicted_speedup_vs_int8": t["int8"] / (t["int8"] + predicted_extra),
                           "measured_speedup_vs_int8": verify["int8"] / verify["chosen"],
                           "measured_speedup_vs_fp32": verify["fp32"] / verify["chosen"],
                           "measured_int8_speedup_vs_fp32": verify["fp32"] / verify["int8"],
                           "budget_met_measured": bool(met)})
            if met:
                break
            scale *= max(measured_extra / predicted_extra if predicted_extra > 0 else 1.0, 1.05)
        if not rounds[-1]["budget_met_measured"]:
            log.warning("guided int8: after %d rounds the measured speedup %.3fx is still below %.2f x the all-int8 "
                        "speedup %.3fx (timing noise on a shared machine does this too); keeping the last choice",
                        len(rounds), rounds[-1]["measured_speedup_vs_fp32"], latency_ratio,
                        rounds[-1]["measured_int8_speedup_vs_fp32"])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[chosen.key][0], dst)  # the very file scored and timed (MEASURE.md: same artifact)
        metrics = built[chosen.key][1]
        if chosen.names(Choice.PER_TOKEN):  # sizes and op counts of the file deployed, not its per-call step
            metrics = {**quant_metrics(src, dst, method="dynamic", per_channel=per_channel, reduce_range=reduce_range,
                                       n_excluded=len(chosen.names(Choice.FP32))), "per_token": metrics.get("per_token")}

    predicted_t = t["int8"] + chosen.cost
    load = combine(loads)
    if load["busy"]:
        log.warning("guided int8: the fp32 set was chosen on timings taken on a busy machine (%s); rerun on a "
                    "quiet machine for a trustworthy latency budget", "; ".join(load["reasons"]))
    ranking = sorted(candidates, key=lambda c: (-sens[best_sensitivity][c.name]["benefit"], c.name))
    cost_model = ("fp32 cost of a node = its weight-MAC share x (t_fp32 - t_int8), whole model"
                  + ("; per-token cost = its (in + out features) x rows (seq; 1 for a Gemm head) share x "
                     f"max(t_per_token - t_int8, {PER_TOKEN_GAP_FLOOR} x t_int8)" if per_token else "")
                  + ", x cost_scale (1, raised where a round's measurement missed the budget)")
    return {
        "quantize_metrics": metrics,
        "winner": winner, "sensitivity": best_sensitivity, "sensitivity_requested": method.value,
        "per_token": per_token, "per_token_requested": asked_per_token,
        "fp32_matmuls": list(chosen.names(Choice.FP32)), "per_token_matmuls": list(chosen.names(Choice.PER_TOKEN)),
        "n_candidates": len(candidates),
        "validation": {k: v.to_dict() for k, v in scores.items()},
        "n_validation_examples": base.n,
        **({"per_token_top_validation": bases[Sensitivity.SINGLE_PER_CALL].to_dict()}
           if Sensitivity.SINGLE_PER_CALL in bases else {}),
        "selections": {m: {"fp32_matmuls": list(s.names(Choice.FP32)),
                           "per_token_matmuls": list(s.names(Choice.PER_TOKEN)),
                           "benefit": s.benefit, "predicted_extra_s": s.cost}
                       for m, s in selections.items()},
        "ranking": [{**asdict(c), "fp32_cost_s": cost[c.name]["fp32"],
                     **({"per_token_cost_s": cost[c.name]["per_token"]} if "per_token" in cost[c.name] else {}),
                     **{m: {"benefit": sens[m][c.name]["benefit"], "kl": sens[m][c.name]["kl"],
                            "flips": sens[m][c.name]["flips"],
                            **({"benefits": sens[m][c.name]["benefits"]} if per_token else {})} for m in sens}}
                    for c in ranking],
        "latency": {"shape": list(shape), "threads": threads, "runs": latency_runs, "cost_model": cost_model,
                    "fp32_s": t["fp32"], "int8_s": t["int8"], **({"per_token_s": t["per_token"]} if per_token else {}),
                    "budget_extra_s": budget,
                    "latency_ratio": latency_ratio, "cost_scale": rounds[-1]["cost_scale"],
                    "predicted_s": predicted_t, "predicted_speedup_vs_fp32": t["fp32"] / predicted_t,
                    "predicted_speedup_vs_int8": t["int8"] / predicted_t,
                    "measured": {"fp32_s": verify["fp32"], "int8_s": verify["int8"], "chosen_s": verify["chosen"],
                                 "speedup_int8_vs_fp32": verify["fp32"] / verify["int8"],
                                 "speedup_chosen_vs_fp32": verify["fp32"] / verify["chosen"],
                                 "speedup_chosen_vs_int8": verify["int8"] / verify["chosen"]},
                    "budget_met_measured": rounds[-1]["budget_met_measured"], "rounds": rounds,
                    "busy": load["busy"], "machine_load": load},
    }
