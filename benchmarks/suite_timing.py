"""The suite's one timing phase for a task (``benchmarks/suite.py``): every finished cell timed together at the
end, on a quiet machine, in ONE process and interleaved (MEASURE.md), then the peers that run only in their
own venv, each by its worker (alternating processes; interleaved there with the dense teacher). Also: timings
copied into the systems, and the timings of unchanged cells kept from an earlier file when this run's
timing was refused or skipped."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Mapping

from compresslab.failure import error_text

from ._results import ResultsFile, jsonable, since
from .artifacts import Artifact, timing_runner
from .suite_phase import BUILDS, NO_TIMING, REFUSED, SKIPPED, TIMED, figures_phase, phase_what

if TYPE_CHECKING:
    from .suite import Teacher
    from .suite_plan import TaskPlan

INTERLEAVED = "interleaved in one process"
log = logging.getLogger("suite")


def timing_phase(results: ResultsFile, cells: Mapping[str, Mapping[str, Any]], sysd: dict[str, dict[str, Any]],
                 keys: Mapping[str, str], old: Mapping[str, Any], teacher: "Teacher", p: "TaskPlan", *,
                 timing: bool, quiet: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The task's timing phase, or why there was none, as ``meta.timing``; the figures go into ``sysd``.

    Whatever happens, the windows the builds closed (ZipLM's latency table while it trained, ...) are filed as the
    builds' own (:meth:`ResultsFile.restart_timings`): they time no figure of the file, so they never void one.
    ``timed``: every finished cell timed now, with when, the git sha and the phase's window ids. Otherwise
    (``skipped``: ``--no-timing``; ``refused``: the machine was busy, with the check's message) the timings of
    unchanged cells are kept (``kept_from_earlier_run``) with the phase they come from (``earlier_phase``), whose
    windows stay the file's only timings."""
    from compresslab.bench.machine_load import closed_windows
    from compresslab.manifest import git_sha
    from compresslab.runlock import MachineBusyError

    meta: dict[str, Any] = {"status": SKIPPED, "reason": NO_TIMING}
    if timing:
        start = len(closed_windows())
        try:
            t = time_cells(cells, teacher, p, quiet=quiet)
        except MachineBusyError as e:
            log.error("%s", e)
            meta = {"status": REFUSED, "reason": str(e)}
        else:
            results.restart_timings(before=start, builds=BUILDS)
            apply_timing(sysd, t["results"])
            return {"status": TIMED, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_sha": git_sha(),
                    "windows": [w["id"] for w in closed_windows(start)], **t["meta"]}
    meta["kept_from_earlier_run"] = keep_earlier_timings(sysd, keys, old)
    earlier = figures_phase(old, p.task) if meta["kept_from_earlier_run"] else {}
    if earlier:  # the kept figures' own phase (when, git sha, quiet check, bridging references) stays with them
        meta["earlier_phase"] = earlier
    results.restart_timings(builds=BUILDS, keep=earlier.get("windows") or ())
    return meta


def time_cells(cells: Mapping[str, Mapping[str, Any]], teacher: "Teacher", p: "TaskPlan",
               *, quiet: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """ONE interleaved timing of every finished cell (fixed shapes, then real lengths over dev). Refuses
    first (MachineBusyError) when the machine is not quiet. Returns ``{"results": name -> figures or
    {"error"}, "meta": {...}}``; a runner that cannot be built keeps its error, the rest are timed."""
    from compresslab.bench import measure_latency, measure_real_lengths
    from compresslab.bench.latency import shape_key
    from compresslab.bench.machine_load import timing_window
    from compresslab.bench.quiet import require_quiet
    from compresslab.data.loaders import make_loader

    quiet = dict(quiet or {})
    window_kw = quiet.pop("window", {})  # tests: a fake CPU reader for the timing window too
    report = require_quiet(f"suite {p.task}: timing", **quiet)
    tok = teacher.tokenizer
    vocab = int(tok.vocab_size)
    out: dict[str, Any] = {}
    runners: dict[str, Any] = {}
    external: dict[str, Artifact] = {}
    for name, c in cells.items():
        if c.get("status") != "finished":
            continue
        a = Artifact.from_dict(c["artifact"])
        if a.backend == "external":
            external[name] = a
            continue
        try:
            runners[name] = timing_runner(a, p.threads, vocab)
        except Exception as e:
            out[name] = {"error": f"timing: {error_text(e)}"}
    if not runners and not external:
        return {"results": out, "meta": {"quiet": report, "timed": []}}
    shapes = [tuple(int(x) for x in s) for s in p.timing["shapes"]]
    loader = make_loader(teacher.dev, tok, 32, teacher.max_length, shuffle=False, kind=teacher.task.spec.kind)
    batches = [{k: v.numpy() for k, v in b.items() if k != "labels"} for b in loader]
    t0 = time.perf_counter()
    lat: dict[str, Any] = {"results": {}, "settings": None, "runners": {}}
    rl: dict[str, Any] = {"results": {}, "settings": None}
    with timing_window(phase_what(p.task), **window_kw):
        if runners:
            lat = measure_latency(runners, shapes, warmup=int(p.timing["warmup"]), runs=int(p.timing["runs"]),
                                  vocab_size=vocab, keep_times=True)
            rl = measure_real_lengths(runners, batches, rounds=int(p.timing["rounds"]))
        out.update(time_external(external, p, vocab))  # after ours, one worker process at a time
    by_batch = {b: shape_key(b, s) for b, s in shapes}
    for name, r in runners.items():
        res = lat["results"][name]
        info = r.info() if hasattr(r, "info") else {}
        out[name] = {"latency_ms_b1": res[by_batch[1]]["p50_ms"] if 1 in by_batch else None,
                     "latency_ms_b32": res[by_batch[32]]["p50_ms"] if 32 in by_batch else None,
                     # per round, in round order for every runner: the verdicts' paired latency ratios
                     "latency_b32_times_ms": res[by_batch[32]].get("times_ms") if 32 in by_batch else None,
                     "throughput_real": rl["results"][name]["sentences_per_s"], "timing": INTERLEAVED,
                     "compiled_precision": info.get("precision") if info.get("kind") == "openvino" else None}
    timed = [*runners, *(n for n in external if "error" not in out.get(n, {"error": 1}))]
    return {"results": out,
            "meta": {"quiet": report, "timed": timed, "shapes": [list(s) for s in shapes],
                     "external": {n: {k: v for k, v in out[n].items() if k in ("reference", "order", "source", "error")}
                                  for n in external},
                     "latency_settings": lat["settings"], "real_length": rl["settings"], "timing_s": since(t0),
                     "runners": {k: jsonable(v) for k, v in lat["runners"].items()},
                     "order": "one process, every cell interleaved (A B C A B C ...), medians"}}


def time_external(external: Mapping[str, Artifact], p: "TaskPlan", vocab: int) -> dict[str, Any]:
    """Each peer whose artifact runs only in its venv, timed by its worker (alternating processes); name ->
    figures (with ``reference``: the dense teacher timed beside it there), or ``{"error"}``."""
    from .peers import PEERS

    out: dict[str, Any] = {}
    for name, a in external.items():
        try:
            out[name] = PEERS[name].time(a, p.timing, vocab)
        except Exception as e:  # the worker's exact failure is the cell's timing error; the others go on
            out[name] = {"error": f"timing: {error_text(e)}"}
    return out


def apply_timing(sysd: dict[str, dict[str, Any]], timed: Mapping[str, Any]) -> None:
    for name, t in timed.items():
        if "error" in t:
            sysd[name]["error"] = t["error"]
            continue
        for k in ("latency_ms_b1", "latency_ms_b32", "throughput_real", "timing"):
            sysd[name][k] = t[k]
        if t.get("latency_b32_times_ms"):
            sysd[name]["latency_b32_times_ms"] = t["latency_b32_times_ms"]
        if t.get("compiled_precision"):
            sysd[name]["precision"] = f"{sysd[name]['precision']} (compiled {t['compiled_precision']})"


def keep_earlier_timings(sysd: dict[str, dict[str, Any]], keys: Mapping[str, str], old: Mapping[str, Any]) -> list[str]:
    """Copy the timings of cells whose key did not change, and whose deployed files did not either
    (``file_sha256``, where both files record it: a cell rebuilt under the same key is a new file), from the
    previous file; the names kept.

    Round times are kept too: every timing in a suite file comes from that file's one timing phase (a timed run
    times all its cells together and rewrites the file; a run that is not timed adds no timing), so the kept
    cells are still paired round by round with each other, and with nothing else."""
    old_keys = (old.get("meta") or {}).get("cell_keys") or {}
    kept = []
    for name, s in sysd.items():
        prev = (old.get("systems") or {}).get(name)
        if not (prev and keys.get(name) and old_keys.get(name) == keys[name] and prev.get("latency_ms_b32") is not None):
            continue
        if prev.get("file_sha256") and s.get("file_sha256") and prev["file_sha256"] != s["file_sha256"]:
            continue  # rebuilt under the same key (a deleted cell store): the score is the new file's, so is the speed
        for k in ("latency_ms_b1", "latency_ms_b32", "throughput_real", "precision", "timing"):
            s[k] = prev.get(k)
        s.pop("latency_b32_times_ms", None)
        if prev.get("latency_b32_times_ms"):
            s["latency_b32_times_ms"] = prev["latency_b32_times_ms"]
        kept.append(name)
    return kept
