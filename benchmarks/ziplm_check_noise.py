"""The spread of ZipLM's speedup check (issue #13): how much of a first try's miss is the check's own noise.

ZipLM accepts a structure when one check (``check_runs`` interleaved rounds of the dense and the shrunk fused
ONNX, or the files of the runtime the run's table timed: ``latency_runtime``; ratio of medians) says it meets
the target. This repeats exactly that check on saved family members of
one retries run, ``--repeats`` times each, on a quiet machine, and stores per member the speedups, their mean,
standard deviation and the range, beside the speedup the run itself recorded::

    python benchmarks/ziplm_check_noise.py --run outputs/ziplm_2x/<run> --members 1.5x,4x --repeats 10

into ``ziplm_check_noise`` of ``results/compound.json``. Same code path as the pass
(:func:`compresslab.bench.latency_runtimes.measure_speedup` with the pass's table settings; the member exported
fused with :func:`compresslab.export.export_model`, the dense model is the run's fused teacher export).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from compresslab.manifest import read_json

from _results import ResultsFile  # sibling module (script dir)

ROOT = Path(__file__).resolve().parent
RESULTS_PATH = ROOT / "results" / "compound.json"


def spread(speedups: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation, coefficient of variation and range of repeated speedup checks."""
    mean = statistics.fmean(speedups)
    sd = statistics.stdev(speedups) if len(speedups) > 1 else 0.0
    return {"mean": mean, "std": sd, "cv": sd / mean, "min": min(speedups), "max": max(speedups),
            "max_over_min": max(speedups) / min(speedups)}


def _samples(tokenizer: Any) -> list[dict]:
    """Two padded batches of real-looking text for tracing and parity (the timing uses random ids)."""
    texts = ["the film is a quiet, thoughtful look at grief .", "an utterly forgettable sequel ."] * 4
    return [dict(tokenizer(texts, padding="max_length", truncation=True, max_length=32, return_tensors="pt"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished ziplm_2x run with a saved family")
    ap.add_argument("--members", default="1.5x,4x", help="comma-separated family members (e.g. 1.5x,4x)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--results", default=str(RESULTS_PATH))
    a = ap.parse_args()
    if a.repeats < 2:
        raise SystemExit("--repeats must be >= 2 (a spread needs two checks)")
    import shutil

    import compresslab
    from compresslab.bench.latency_runtimes import as_deployed, measure_speedup, reads_plain
    from compresslab.bench.openvino_runner import plain_export
    from compresslab.export import export_model
    from compresslab.pruning.speedup import SpeedupSettings
    from transformers import AutoConfig, AutoTokenizer

    run = Path(a.run)
    manifest = read_json(run / "manifest.json")
    step = next(s for s in manifest["steps"] if s.get("name") == "ziplm" and s.get("status") == "done")
    p = SpeedupSettings(**{k: v for k, v in step["pass"].items()
                           if k in SpeedupSettings.__dataclass_fields__ and k != "recovery"})
    # the runtime the run's table and checks timed: recorded since 2026-12-05 (a list of candidates resolves to
    # one there); before, the pass's one runtime
    runtime = (step["result"]["metrics"].get("latency_table") or {}).get("runtime")
    if runtime is None and not isinstance(p.latency_runtime, str):
        raise SystemExit(f"{run}: the ziplm step chose among {p.latency_runtime} but did not record which")
    settings = p.table_settings(runtime or p.latency_runtime)
    plain = reads_plain(settings.runtime)
    family = step["result"]["metrics"]["family"]
    dense_src = run / "export" / "teacher" / "model.onnx"
    dense_src = plain_export(dense_src) if plain else dense_src
    members = [m.strip() for m in a.members.split(",") if m.strip()]
    unknown = [m for m in members if m not in family]
    if not members or unknown or not dense_src.is_file() or (plain and dense_src.name != "model_unfused.onnx"):
        raise SystemExit(f"members {unknown} not in the run's family {sorted(family)}, or no "
                         f"{'plain ' if plain else ''}teacher export {dense_src}")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="check-noise-") as work:
        (Path(work) / "dense").mkdir()
        vocab = int(AutoConfig.from_pretrained(next((run / "family").glob(f"*/{members[0]}"))).vocab_size)
        # the runtime's file of the teacher (ORT int8 or the OpenVINO IR are written beside a copy, not the run)
        dense = as_deployed(shutil.copy2(dense_src, Path(work) / "dense" / dense_src.name), settings, vocab)
        for m in members:
            src = next((run / "family").glob(f"*/{m}"))
            model = compresslab.load(src).eval()
            tok = AutoTokenizer.from_pretrained(src)
            res = export_model(model, tok, Path(work) / m, _samples(tok), threads=p.threads, keep_unfused=plain)
            onnx = as_deployed((res.unfused_path or res.onnx_path) if plain else res.onnx_path, settings, vocab)
            checks = [measure_speedup(dense, onnx, settings, runs=p.check_runs,
                                      vocab_size=int(model.config.vocab_size)) for _ in range(a.repeats)]
            speedups = [c["speedup"] for c in checks]
            out[m] = {"speedups": speedups, **spread(speedups), "recorded": family[m].get("measured_speedup_b32"),
                      "busy_checks": sum(bool(c.get("busy")) for c in checks)}
            print(m, {k: round(v, 4) for k, v in out[m].items() if isinstance(v, float)})
    from compresslab.bench.env import hardware_fingerprint

    cpu = hardware_fingerprint().get("cpu") or {}
    results = ResultsFile(a.results)
    results.put(["ziplm_check_noise"], {
        "run_dir": str(run), "check_runs": p.check_runs, "repeats": a.repeats, "shape": [p.batch, p.seq],
        "runtime": settings.runtime,
        "members": out, "cpu": cpu.get("model"), "isa": sorted(k for k, v in (cpu.get("isa") or {}).items() if v),
        "command": "python benchmarks/ziplm_check_noise.py --run " + str(run) + f" --members {a.members} "
                   f"--repeats {a.repeats}"})


if __name__ == "__main__":
    main()
