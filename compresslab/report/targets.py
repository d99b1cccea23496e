"""The report's "Speedup targets" section: what a speedup-targeted pass (ZipLM, structured L1) was asked for, the
runtime its latency was priced on (and, for a list, the dense timings that chose it), what it predicted and
measured, and whether the latency table it rests on was cached, busy or noisy when measured.

A speedup is a fact about one runtime on one machine: 2.5x priced on ORT's int8 is not 2.5x on ORT fp32, so the
runtime is stated beside every figure; a cached table flagged noisy is named here as well as in the log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from compresslab.report import facts as F
from compresslab.report.fmt import DASH, plain, secs
from compresslab.report.render import Block, Heading, Table


def _x(v: Any) -> str:
    x = F.num(v)
    return f"{x:.3f}x" if x is not None else DASH


def _runtime(lt: Mapping[str, Any]) -> str:
    """``ort_int8``, or ``ort_int8 (fastest of ...)`` / ``(kept: ...)`` with the dense medians of a list."""
    rt = plain(lt.get("runtime")) if lt.get("runtime") is not None else "ort (default)"
    choice = F.as_dict(lt.get("runtime_choice"))
    key = next((k for k in choice if k.endswith("_ms")), None)  # "b32xs128_ms": {runtime: median ms}
    medians = F.as_dict(choice.get(key)) if key else {}
    if not medians:
        return rt
    shape = key[:-3]
    timed = ", ".join(f"{k} {F.num(v):.1f} ms" for k, v in medians.items() if F.num(v) is not None)
    fastest = min(medians, key=lambda k: F.num(medians[k]) or float("inf"))
    how = "fastest" if fastest == choice.get("chosen") else f"kept: listed first, {fastest} within the margin"
    busy = "; chosen on a BUSY machine" if choice.get("busy") else ""
    return f"{rt} ({how} for the dense model at {shape}: {timed}{busy})"


def _table_source(lt: Mapping[str, Any]) -> str:
    """Measured here or cached, and whether the measurement was busy or noisy."""
    load = F.as_dict(lt.get("machine_load"))
    spread = F.as_dict(load.get("spread"))
    took = secs(F.num(lt.get("measure_s")))
    out = f"cached (measured earlier in {took})" if lt.get("cached") else f"measured in this run ({took})"
    if load.get("busy"):
        out += "; BUSY when measured: " + "; ".join(str(r) for r in load.get("reasons") or [])
    if spread.get("noisy") is True:
        worst = F.num(spread.get("max"))
        out += (f"; flagged noisy when measured ({plain(spread.get('runner'))} at {plain(spread.get('shape'))}"
                + (f": {100 * worst:.0f}% median to p90)" if worst is not None else ")"))
    return out


def _older_key(rec: Mapping[str, Any]) -> tuple[str, Any] | None:
    """``("b<batch>", value)`` of the ``measured_speedup_b<batch>`` key manifests wrote before ``measured_speedup``."""
    for key, value in rec.items():
        if (m := re.fullmatch(r"measured_speedup_(b\d+)", str(key))) is not None:
            return m.group(1), value
    return None


def _measured(rec: Mapping[str, Any]) -> Any:
    """A target's measured speedup: ``measured_speedup`` (any shape), else the batch-named key older manifests hold."""
    if "measured_speedup" in rec:
        return rec["measured_speedup"]
    older = _older_key(rec)
    return older[1] if older else None


def _shape(rec: Mapping[str, Any]) -> str:
    """``b32xs128``: the shape the target was priced and checked at (older manifests: the batch their key names)."""
    shape = rec.get("shape")
    if isinstance(shape, list) and len(shape) == 2 and all(F.num(v) is not None for v in shape):
        return F.shape_key(int(shape[0]), int(shape[1]))
    older = _older_key(rec)
    return older[0] if older else "b32"


def speedup_targets(m: Mapping[str, Any]) -> list[Block]:
    """One facts table per step that was given a speedup target; nothing when no step was."""
    out: list[Block] = []
    for s in F.steps(m):
        met = F.as_dict(F.get(s, "result", "metrics"))
        if "target_speedup" not in met:
            continue
        lt = F.as_dict(met.get("latency_table"))
        verdict = "met" if met.get("met_target") else "NOT met"
        facts = [[f"target ({_shape(met)}, on the runtime below)", _x(met.get("target_speedup"))],
                 ["latency runtime", _runtime(lt)],
                 ["predicted / measured", f"{_x(met.get('predicted_speedup'))} / {_x(_measured(met))}"
                                          f" ({verdict}; retries {plain(met.get('retries', 0))})"],
                 ["latency model", plain(lt.get("model"))],
                 ["latency table", _table_source(lt)]]
        skipped = met.get("skipped_layers")
        if isinstance(skipped, list) and skipped:  # legitimate, but the depth changed: say which layers
            facts.append(["layers skipped (no head, no FFN neuron left)", ", ".join(map(plain, skipped))])
        if F.num(met.get("busy_checks")):
            facts.append(["speedup checks on a busy machine", plain(met.get("busy_checks"))])
        family = {k: v for k, v in F.as_dict(met.get("family")).items()
                  if F.num(F.get(v, "target_speedup")) != F.num(met.get("target_speedup"))}
        for name, member in family.items():
            facts.append([f"family member {name}: predicted / measured",
                          f"{_x(F.get(member, 'predicted_speedup'))} / {_x(_measured(F.as_dict(member)))}"])
        label = F.step_label(s)
        out.append(Table(["fact", label], facts, f"{label}: speedup target, priced and checked on one runtime"))
    return [Heading("Speedup targets"), *out] if out else []
