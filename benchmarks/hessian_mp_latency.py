"""hawq under a latency budget on this machine (issue #10): ``python benchmarks/hessian_mp.py latency --limit L``.

Runs the pipeline a user would (``compresslab.run("hawq_mp3", ...)``: the cached bench teacher, 250 QAT
steps with KD like the ``qat`` item, 8-bit word embeddings, MatMulNBits at the deploy step's
``accuracy_level``) with ``pipeline.passes.hawq.latency_limit=L`` beside ``avg_bits`` (3 unless
``--avg-bits none``), bench on ORT only (the runtime MatMulNBits targets), and stores under
``latency_budget.<label>`` of ``results/hessian_mp.json``:

* the n-bit table the limit was priced with (source measured / cached, ISA, fp32 total, every entry in ms);
* the chosen map's predicted summed MatMul time as a fraction of all-fp32, and the same for the map the
  program picks without the limit (what the limit displaced, and what it costs in the objective);
* the deployed file's dev score and agreement, and its measured whole-model latency vs ``ort_fp32``
  (b1 and b32 x s128): the table prices the targets' MatMuls only, the rest of the graph is unchanged.

A limit no map meets fails before the Hessian (``InfeasibleBudgetError``); that is stored too, with the
smallest achievable fraction, so the next command can ask for a feasible one. Timings: a quiet machine
(the table and the bench stage each refuse or flag a busy one; ``machine_load`` is recorded).
"""

from __future__ import annotations

import collections
from typing import Any

from _hessian_mp_core import _RESULTS, carve_overrides  # sibling module (script dir)

QAT_STEPS = 250  # the qat item's budget: the unconstrained MP 3 arm at the same steps is the reference


def _label(limit: float, avg_bits: float | None, level: int) -> str:
    return f"limit_{limit:g}_avg_{'none' if avg_bits is None else f'{avg_bits:g}'}_level_{level}"


def _infeasible(exc: BaseException) -> Any:
    """The InfeasibleBudgetError behind ``exc`` (the pipeline may wrap it), or None."""
    from compresslab.ops.knapsack import InfeasibleBudgetError

    seen = exc
    while seen is not None:
        if isinstance(seen, InfeasibleBudgetError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _widths(bits: dict[str, int]) -> dict[str, int]:
    return {str(b): n for b, n in sorted(collections.Counter(bits.values()).items())}


def latency(args: Any) -> None:
    import compresslab
    from compresslab.manifest import read_json

    avg = None if str(args.avg_bits).lower() in ("none", "null") else float(args.avg_bits)
    level = int(args.accuracy_level)
    label = _label(args.limit, avg, level)
    overrides = ["budget=bench", f"budget.recovery_steps={QAT_STEPS}", "budget.teacher=bench",
                 f"pipeline.passes.hawq.latency_limit={args.limit}",
                 f"pipeline.passes.hawq.avg_bits={'null' if avg is None else avg}",
                 f"pipeline.passes.nbits.accuracy_level={level}", "bench.backends=[ort]", *carve_overrides()]
    command = "python -m compresslab +pipeline=hawq_mp3 " + " ".join(overrides)
    try:
        run_dir = compresslab.run("hawq_mp3", overrides)
    except Exception as e:  # noqa: BLE001 - only an infeasible budget is a result; anything else re-raised
        inf = _infeasible(e)
        if inf is None or "latency" not in inf.limits:
            raise
        fp32 = inf.limits["latency"] / args.limit
        _RESULTS.put(["latency_budget", label], {
            "command": command, "limit": args.limit, "avg_bits_budget": avg, "accuracy_level": level,
            "feasible": False, "message": str(inf),
            "smallest_achievable_relative": inf.smallest["latency"] / fp32, "fp32_total_ms": fp32 * 1e3})
        print(f"infeasible: {inf}")
        return
    m = read_json(run_dir / "manifest.json")
    _RESULTS.note_run(f"latency_budget_{label}", m)  # the run's machine load and hardware beside its figures
    step = next(s for s in m["steps"] if s["name"] == "hawq")
    met = step["result"]["metrics"]
    lat = met["latency"]
    free = lat.get("without_limit")
    bench = m.get("bench") or {}
    key32, key1 = "b32xs128", "b1xs128"
    res = bench.get("latency") or {}

    def ms(cell: str, key: str) -> float | None:
        return (res.get(cell) or {}).get(key, {}).get("p50_ms")

    deployed = m["eval"]["models"]["deployed"]
    record = {
        "command": command, "run_dir": str(run_dir), "limit": args.limit, "avg_bits_budget": avg,
        "accuracy_level": level, "feasible": True, "qat_steps": QAT_STEPS,
        "table": {"source": lat["source"], "fingerprint": lat["fingerprint"], "settings": lat["settings"],
                  "fp32_total_ms": lat["fp32_total_s"] * 1e3, "limit_ms": lat["limit_s"] * 1e3,
                  "entries_ms": lat["entries_ms"], "machine_load": lat["machine_load"]},
        "predicted_relative": lat["predicted_relative"], "objective": lat.get("objective"),
        "avg_bits": met["avg_bits"], "widths": _widths(met["bits"]),
        "without_limit": None if free is None else {
            "predicted_relative": free["predicted_relative"], "objective": free["objective"],
            "avg_bits": free["avg_bits"], "widths": _widths(free["bits"])},
        "dev_acc": deployed["score"], "agreement": deployed.get("agreement"),
        "latency_ms": {"deployed": {"b1": ms("deployed", key1), "b32": ms("deployed", key32)},
                       "ort_fp32": {"b1": ms("ort_fp32", key1), "b32": ms("ort_fp32", key32)}},
        "speedup_vs_ort_fp32": (bench.get("speedups") or {}).get("deployed"),
        "bench_machine_load": bench.get("machine_load"),
    }
    _RESULTS.put(["latency_budget", label], record)  # a list of keys: the label's dots stay in one key
    print({k: record[k] for k in ("predicted_relative", "avg_bits", "widths", "dev_acc", "speedup_vs_ort_fp32")})
