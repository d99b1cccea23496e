"""The report's Speed section: latency per shape, real-length throughput, load time and memory,
GPU and DeepSparse timings, and how busy the machine was while they were taken.

Every table here is long-form (one row per model and shape) so it stays narrow however many
runners and shapes a run timed; the headline shows only the largest shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compresslab.report import facts as F
from compresslab.report.fmt import DASH, mb, ms, pct, plain, rate, times
from compresslab.report.render import Block, Bullets, Heading, Para, Table


def _missing(what: str, m: Mapping[str, Any]) -> Para:
    if F.switched_off(m, what):
        return Para(f"Not run: {what}.enabled=false in this run's config.")
    return Para(f"Not available: the manifest has no `{what}` section.")


def busy_banner(m: Mapping[str, Any]) -> list[Block]:
    """A warning at the top of the report when any timing of the run (bench, a latency table,
    ``deploy=auto``, guided int8: :func:`facts.run_load`) was taken on a busy machine."""
    load = F.run_load(m)
    if not load.get("busy"):
        return []
    why = "; ".join(str(r) for r in load.get("reasons") or []) or "other processes used the CPUs"
    n = f" ({load['busy_windows']} of {load['windows']} timings)" if load.get("windows", 0) > 1 else ""
    return [Para(f"MACHINE BUSY while timing{n}: {why}. What was timed then is void (a timing taken while anything "
                 "else runs is: README, 'Timing on a shared machine'): its speed figures, and any choice made from "
                 "them (a latency table, the runtime deployed); rerun on a quiet machine.", kind="warn")]


def _load_line(load: Mapping[str, Any]) -> Para | None:
    """One sentence on the machine's load during the timings (the busy verdict is the banner)."""
    if not load:
        return None
    before, during, spread = (F.as_dict(load.get(k)) for k in ("before", "during", "spread"))
    verdict = "BUSY" if load.get("busy") else "quiet"
    text = (f"Machine load while timing: {verdict}. Other processes used {plain(before.get('other_cpu'))} CPU s per s "
            f"before timing and up to {plain(during.get('max_other_cpu'))} during it (threshold "
            f"{plain(load.get('threshold_other_cpu'))}; {loadavg_text(F.get(during, 'loadavg'))}).")
    if F.num(spread.get("max")) is not None:
        text += (f" Widest spread of repeated runs (p90 − p50) / p50: {pct(F.num(spread.get('max')), 0)}% "
                 f"({plain(spread.get('runner'))} at {plain(spread.get('shape'))})"
                 f"{', noisy' if spread.get('noisy') else ''}.")
    return Para(text, kind="warn" if load.get("busy") else "text")


def loadavg_text(v: Any) -> str:
    """A recorded load average in words: the OS's 1/5/15-minute triple (``machine_load.loadavg``) named as such, so
    the three figures do not read as one 1-minute value; a single figure (older records) as the 1-minute one."""
    if isinstance(v, list | tuple) and len(v) == 3:
        return f"load average over 1, 5 and 15 minutes {plain(list(v))}"
    return f"1-minute load average {plain(v)}" if F.num(v) is not None else f"load average {plain(v)}"


def _latency(bench: Mapping[str, Any], m: Mapping[str, Any]) -> Table | None:
    prec, files = F.as_dict(bench.get("precision")), F.as_dict(bench.get("files"))
    rows_by_key = {r.key: r for r in F.model_rows(m)}
    rows = []
    for model, per in F.as_dict(bench.get("latency")).items():
        r = rows_by_key.get(model)
        for shape, v in F.as_dict(per).items():
            rows.append([F.cell_label(m, model), plain(prec.get(model)), shape, ms(F.num(F.get(v, "p50_ms"))),
                         ms(F.num(F.get(v, "p90_ms"))), rate(F.num(F.get(v, "throughput"))),
                         times(r.speedup.get(shape) if r else None),
                         times(r.speedup_best.get(shape) if r else None),
                         plain(F.run_relative(files.get(model), m))])
    if not rows:
        return None
    denom = bench.get("denominator") or "ort_fp32"
    return Table(["model", "precision", "shape", "p50 (ms)", "p90 (ms)", "seq/s", f"× {denom}", "× best_dense",
                  "file"], rows, "Median (p50) and 90th percentile per call at batch × sequence length, random "
                 "token ids; × = p50 of the reference / p50 of the model (> 1: faster).")


def _real_length(bench: Mapping[str, Any], m: Mapping[str, Any]) -> Table | None:
    """Throughput over real dev batches: one row per runner, the per-batch medians left out."""
    sec = F.as_dict(bench.get("real_length"))
    if not sec:
        return None
    prec = F.as_dict(bench.get("precision"))
    spd = F.as_dict(bench.get("real_length_speedups"))
    best = F.as_dict(bench.get("real_length_speedups_best_dense"))
    rows = []
    for model, v in sec.items():
        v = F.as_dict(v)
        n_batches = len(v["p50_ms"]) if isinstance(v.get("p50_ms"), list) else None
        rows.append([F.cell_label(m, model), plain(prec.get(model)), rate(F.num(v.get("sentences_per_s"))),
                     plain(F.num(v.get("total_wall_s"))), plain(n_batches), times(F.num(spd.get(model))),
                     times(F.num(best.get(model)))])
    cfg = F.as_dict(F.get(m, "config", "bench"))
    denom = bench.get("denominator") or "ort_fp32"
    caption = (f"Real token lengths: dev sentences in batches of {plain(cfg.get('real_length_batch_size'))}, each "
               f"padded to its longest sentence (dynamic padding), median wall time of "
               f"{plain(cfg.get('real_length_rounds'))} rounds over the batches; best dense here: "
               f"{plain(bench.get('real_length_best_dense'))}.")
    return Table(["model", "precision", "sentences/s", "wall (s)", "batches", f"× {denom}", "× best_dense"],
                 rows, caption)


def _load(bench: Mapping[str, Any], m: Mapping[str, Any]) -> Table | None:
    """Load time and memory, one row per model file (its path once, relative to the run)."""
    sec = F.as_dict(bench.get("load"))
    if not sec:
        return None
    files = F.as_dict(bench.get("files"))
    rows, facts, providers = [], {}, []
    for model, v in sec.items():
        v = F.as_dict(v)
        peak, base = F.num(v.get("peak_rss_mb")), F.num(v.get("baseline_rss_mb"))
        rows.append([F.cell_label(m, model),
                     plain(F.run_relative(v.get("model"), m) or F.run_relative(files.get(model), m)),
                     mb(F.num(v.get("bytes"))), ms(_ms(F.num(v.get("load_s")))), ms(F.num(v.get("first_run_ms"))),
                     rate(peak), rate(peak - base if peak is not None and base is not None else None)])
        for k in ("threads", "shape"):
            facts.setdefault(k, v.get(k))
        # an OpenVINO row (the deployed IR, the dense openvino_* cells) names the precision it compiled as
        prov = plain(v.get("provider")) + (f" {v['precision']}" if v.get("runtime") == "openvino" else "")
        providers += [] if prov in providers else [prov]
    shape = facts.get("shape")
    shape = "×".join(str(x) for x in shape) if isinstance(shape, list) else plain(shape)
    ov = any(F.as_dict(v).get("runtime") == "openvino" for v in sec.values())
    caption = (f"Load time and peak memory, each model in a fresh process ({', '.join(providers)}; "
               f"{plain(facts.get('threads'))} threads), then one {shape} inference; model RSS = peak RSS minus "
               f"the interpreter with {'its runtime (onnxruntime or openvino)' if ov else 'onnxruntime'} loaded"
               f"{'; OpenVINO load = read + compile' if ov else ''}.")
    return Table(["model", "file", "size (MB)", "load (ms)", "first run (ms)", "peak RSS (MB)", "model RSS (MB)"],
                 rows, caption)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _gpu(bench: Mapping[str, Any]) -> list[Block]:
    gpu = F.as_dict(bench.get("gpu"))
    if "skipped" in gpu:
        why = str(gpu["skipped"])
        return [Para("GPU benchmark skipped: " + (why[len("skipped:"):].strip() if why.startswith("skipped:")
                                                   else why))]
    if not gpu:
        return []
    rows = [[model, shape, ms(F.num(F.get(v, "p50_ms"))), ms(F.num(F.get(v, "p90_ms")))]
            for model, per in F.as_dict(gpu.get("latency")).items()
            for shape, v in F.as_dict(per).items()]
    return [Table(["model", "shape", "p50 (ms)", "p90 (ms)"], rows,
                  f"GPU: {plain(gpu.get('backend'))} on {plain(gpu.get('device'))}")]


def _deepsparse(ds: Mapping[str, Any]) -> list[Block]:
    """DeepSparse engine timings (own process, interleaved with ort_fp32) and scores of those engines."""
    if not ds or "skipped" in ds:
        return []
    speed = F.runner_major(F.as_dict(ds.get("speedups")))
    scores, files = F.as_dict(ds.get("scores")), F.as_dict(ds.get("files"))
    rows = [[model, shape, ms(F.num(F.get(v, "p50_ms"))), times(F.num(F.get(speed, model, shape))),
             pct(F.num(F.get(scores, model, "score"))), pct(F.num(F.get(scores, model, "agreement"))),
             plain(files.get(model)) if files.get(model) else DASH]  # which file each figure is from
            for model, per in F.runner_major(F.as_dict(ds.get("latency"))).items()
            for shape, v in F.as_dict(per).items()]
    out: list[Block] = [Table(["model", "shape", "p50 (ms)", "vs ort_fp32", "dev score", "agreement", "file"], rows,
                              f"DeepSparse {plain(ds.get('deepsparse_version'))} (static shapes, seq "
                              f"{plain(ds.get('seq'))})")]
    notes = [str(n) for n in ds.get("notes") or []]
    return out + ([Bullets(notes)] if notes else [])


def speed_section(m: Mapping[str, Any]) -> list[Block]:
    """The Speed section, or a sentence saying bench did not run."""
    out: list[Block] = [Heading("Speed")]
    bench = F.as_dict(m.get("bench"))
    if not bench:
        return out + [_missing("bench", m)]
    n, source = F.threads(m)
    best = ", ".join(f"{s}: {plain(F.get(v, 'runner'))}" for s, v in F.as_dict(bench.get("best_dense")).items())
    denom = str(bench.get("denominator") or "ort_fp32")
    out.append(Para(f"Threads: {plain(n)} ({source}). Reference (×): {plain(denom)}, {F.denominator_text(denom)}. "
                    f"best_dense: the fastest dense teacher over every backend and precision timed here "
                    f"({best or DASH}): a speed a user gets without compressing. The rows ort_fp32, ort_int8, "
                    f"openvino_<precision> and torch_fp32 time the dense teacher; {F.deployed_label(m)} (the file the "
                    f"run ships), deployed_* and final_fp32_* time this run's model."))
    if (line := _load_line(F.machine_load(m))) is not None:
        out.append(line)
    for table in (_latency(bench, m), _real_length(bench, m), _load(bench, m)):
        if table is not None:
            out.append(table)
    for backend, why in F.as_dict(bench.get("skipped")).items():
        out.append(Para(f"{backend} skipped: {plain(why)}"))
    return out + _gpu(bench) + _deepsparse(F.as_dict(bench.get("deepsparse")))
