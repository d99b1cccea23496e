"""DeepSparse figures (issue #3) for finished pipeline runs, without redoing their passes.

Restores the run's teacher and final model from its checkpoints, runs the DeepSparse part of the
bench stage (``compresslab.pipeline.deepsparse``) with ``bench.deepsparse.enabled=true``, stores the
section in the run's manifest and rebuilds its report; with ``--store KEY`` also into
benchmarks/results/obert.json. Needs the DeepSparse venv (``make deepsparse``).

    python benchmarks/deepsparse_bench.py outputs/obert_int8/<hash> --store obert_80
    python benchmarks/deepsparse_bench.py outputs/obert_qat_int8/<hash> --recorded --store KEY --issue-keys

``--recorded`` times nothing: it takes the section the run's own bench stage measured (``bench.deepsparse``
enabled in the pipeline), so the figures stay those of the run's timing window.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from compresslab.manifest import RunManifest, read_json

from _results import ResultsFile  # sibling module (script dir)

RESULTS = ResultsFile(Path(__file__).resolve().parent / "results" / "obert.json")  # stamps meta.machine_load


def rebench(run_dir: Path, overrides: list[str], full: bool = False) -> dict:
    from compresslab.bench.env import resolve_threads
    from compresslab.bench.machine_load import timing_window
    from compresslab.cli import setup_process
    from compresslab.pipeline import restore
    from compresslab.pipeline.deepsparse import deepsparse
    from compresslab.pipeline.stage_files import record_stage
    from compresslab.report import build_report

    manifest = RunManifest.load(run_dir)
    if manifest.data.get("status") != "finished":
        raise SystemExit(f"{run_dir} is not a finished run (status {manifest.data.get('status')!r})")
    overrides = ["bench.deepsparse.enabled=true", *overrides]
    cfg = OmegaConf.merge(OmegaConf.create(manifest.data["config"]), OmegaConf.from_dotlist(overrides))
    threads = resolve_threads(cfg.bench.get("threads"))
    setup_process(threads, int(cfg.seed))
    state, manifest = restore(run_dir, overrides)
    if full:  # the whole bench stage again (ORT runners too), DeepSparse included
        from compresslab.pipeline.bench import bench

        bench(state, run_dir, manifest, threads)
        section = manifest.data["bench"]["deepsparse"]
    else:  # outside the bench stage's timing window: open one, and keep its record with the section
        with timing_window("deepsparse rebench") as window:
            section = deepsparse(state, run_dir, manifest, threads)
        section["machine_load"] = window.record()
        manifest.data.setdefault("bench", {})["deepsparse"] = section
    manifest.save()
    build_report(run_dir)
    if (manifest.data.get("stage_files") or {}).get("report") is not None:  # the rerun checks them: the new ones
        record_stage(manifest, run_dir, "report")
        manifest.save()
    return section


def recorded(run_dir: Path) -> dict:
    """The ``bench.deepsparse`` section a finished run's bench stage measured; SystemExit when it has none."""
    manifest = RunManifest.load(run_dir)
    if manifest.data.get("status") != "finished":
        raise SystemExit(f"{run_dir} is not a finished run (status {manifest.data.get('status')!r})")
    section = (manifest.data.get("bench") or {}).get("deepsparse") or {}
    if "latency" not in section:
        why = section.get("skipped") or "no bench.deepsparse section"
        raise SystemExit(f"{run_dir} has no DeepSparse figures of its own ({why}): rerun without --recorded")
    return section


def fastest_int8(section: dict) -> tuple[str, str]:
    """``(runner, shape)``: the compressed model's scored int8 DeepSparse file (``deepsparse_int8*``, never the
    dense teacher's) that is fastest at the largest batch, so speed and score name one file. SystemExit when the
    section has none."""
    cands = [k for k in section["latency"] if k.startswith("deepsparse_int8") and k in section.get("scores", {})]
    if not cands:
        raise SystemExit("no scored int8 DeepSparse file of the compressed model in this section")
    from compresslab.search.objective import largest_batch

    big = largest_batch(section["latency"][cands[0]])
    return min(cands, key=lambda k: section["latency"][k][big]["p50_ms"]), big


def issue_key_problems(manifest: dict) -> list[str]:
    """Why a run's figures may not become results/obert.json's issue keys (the headline of issue #3/#13):
    not the bench budget, not scored on the whole dev split, or timed on a busy machine. [] when none."""
    out = []
    budget = ((manifest.get("config") or {}).get("budget") or {}).get("name")
    if budget != "bench":
        out.append(f"its budget is {budget!r}, not 'bench'")
    ev = manifest.get("eval") or {}
    if ev.get("split") != "dev":
        out.append(f"it was scored on {ev.get('split')!r}, not on dev")
    if ((manifest.get("bench") or {}).get("machine_load") or {}).get("busy"):
        out.append("its bench stage found the machine busy (bench.machine_load.busy)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. bench.deepsparse.runs=40")
    ap.add_argument("--store", help="also store under deepsparse_runs[KEY] in results/obert.json")
    ap.add_argument("--full", action="store_true", help="rerun the whole bench stage (ORT too), not only DeepSparse")
    ap.add_argument("--recorded", action="store_true",
                    help="time nothing: use the bench.deepsparse section the run's own bench stage recorded")
    ap.add_argument("--issue-keys", action="store_true",
                    help="also fill latency_ms.deepsparse and deepsparse_speedup_b32_vs_ort_fp32 from this run "
                         "(the fastest scored int8 file of the compressed model at the largest batch)")
    ap.add_argument("--force", action="store_true",
                    help="with --issue-keys: take the run's figures even when it is not a quiet bench-budget run on dev")
    args = ap.parse_intermixed_args()  # overrides may follow the flags
    logging.basicConfig(level=logging.INFO)
    if args.recorded and (args.overrides or args.full):
        raise SystemExit("--recorded times nothing: it takes no overrides and no --full")
    if args.issue_keys and not args.store:
        raise SystemExit("--issue-keys needs --store KEY (the run is stored under deepsparse_runs[KEY] beside them)")
    if not (args.run_dir / "manifest.json").is_file():
        raise SystemExit(f"{args.run_dir} is not a run dir (no manifest.json): give outputs/<pipeline>/<hash>")
    if args.issue_keys and not args.force and (why := issue_key_problems(read_json(args.run_dir / "manifest.json"))):
        raise SystemExit(f"{args.run_dir} cannot give the issue keys: " + "; ".join(why) +
                         " (--store without --issue-keys keeps it under deepsparse_runs; --force takes it anyway)")
    section = recorded(args.run_dir) if args.recorded else rebench(args.run_dir, args.overrides, full=args.full)
    print(json.dumps({k: v for k, v in section.items() if k in ("latency", "speedups", "scores")}, indent=2))
    if args.store:
        data = RESULTS.load()
        run_manifest = read_json(args.run_dir / "manifest.json")
        isa = ((run_manifest.get("hardware") or {}).get("cpu") or {}).get("isa") or {}
        data.setdefault("deepsparse_runs", {})[args.store] = {
            "run": str(args.run_dir), "cpu_isa": sorted(f for f, on in isa.items() if on), **section}
        if args.recorded or args.issue_keys:  # figures copied from the run: its machine load goes with them
            RESULTS.note_run(args.store, run_manifest)
        if args.issue_keys:
            lat = {m: {shape: v["p50_ms"] for shape, v in per.items()} for m, per in section["latency"].items()}
            bench = run_manifest["bench"]
            ort = {k: {sh: v["p50_ms"] for sh, v in d.items()} for k, d in bench["latency"].items()}
            data["latency_ms"] = {"run": str(args.run_dir), "ort": ort, "deepsparse": lat,
                                  "deepsparse_note": "p50 ms; DeepSparse rows and their ort_fp32 come from one "
                                                     "interleaved worker process (deepsparse_runs.*)"}
            name, big = fastest_int8(section)
            data["deepsparse_speedup_b32_vs_ort_fp32"] = section["speedups"][name][big]
            data["deepsparse_int8_acc"] = section["scores"][name]["score"]
            data["deepsparse_int8_file"] = {"runner": name, "file": section["files"][name], "shape": big}
        RESULTS.write(data)


if __name__ == "__main__":
    main()
