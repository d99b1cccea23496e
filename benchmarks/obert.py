"""oBERT figures (issue #3) on the cached `bench` teacher, SST-2 dev. Resumable: each finished item
is stored in benchmarks/results/obert.json and skipped on rerun.

    python benchmarks/obert.py oneshot            # one-shot oBERT vs magnitude at 0.5/0.7/0.8 (no recovery)
    python benchmarks/obert.py gradual --steps 400 --grads 128 [--sparsity 0.8]
                                                  # obert_int8 and magnitude_int8 pipelines, same budget
    python benchmarks/obert.py block4             # 4-block oBERT at 80%, one-shot
    python benchmarks/obert.py dampgrid --sparsities 0.7   # one-shot, damp chosen on validation from --grid
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

from compresslab.cli import setup_process
from compresslab.config import compose
from compresslab.manifest import git_sha, library_versions, read_json

from _results import ResultsFile  # sibling module (script dir)

RESULTS = Path(__file__).resolve().parent / "results" / "obert.json"
_RESULTS = ResultsFile(RESULTS)  # every write stamps meta.machine_load


def _load() -> dict:
    return _RESULTS.load()


def _store(key: str, sub: str | None, value) -> None:
    _RESULTS.put([key] if sub is None else [key, sub], value)


def _teacher(extra: list[str]):
    """(cfg, teacher, ctx): the cached bench teacher (a :class:`compresslab.pipeline.Teacher`) and its pass context."""
    from compresslab.pipeline import teacher_of

    cfg = compose(["+pipeline=obert_int8", "budget=bench", *extra])
    setup_process(cfg.run.get("threads"), int(cfg.seed))
    teacher = teacher_of(cfg, Path("/tmp/obert-bench"))  # the cached bench teacher
    ctx = teacher.context(Path("/tmp/obert-bench"), Path("/tmp/obert-bench/step"))
    return cfg, teacher, ctx


def oneshot(args) -> None:
    from compresslab.eval.evaluate import predict, torch_forward
    from compresslab.passes.magnitude import Magnitude
    from compresslab.passes.obert import OBert

    cfg, teacher, ctx = _teacher([])
    spec, dev, tok = teacher.task.spec, teacher.task.dev, teacher.tokenizer
    score = lambda m: predict(torch_forward(m), spec, dev, tok, max_length=int(cfg.task.max_length)).metrics["score"]
    if "teacher_acc" not in _load():
        _store("teacher_acc", None, score(teacher.model))
    for s in args.sparsities:
        key = str(s)
        if key not in _load().get("oneshot_magnitude_acc", {}):
            m = copy.deepcopy(teacher.model)
            Magnitude(sparsity=s, mode="oneshot", recovery={"steps": 0}).apply(m, ctx)
            _store("oneshot_magnitude_acc", key, score(m))
        if key not in _load().get("oneshot_acc", {}):
            m = copy.deepcopy(teacher.model)
            res = OBert(sparsity=s, mode="oneshot", recovery={"steps": 0}, num_grads=args.grads, damp=args.damp,
                        num_recomputations=args.recomputations).apply(m, ctx)
            _store("oneshot_acc", key, score(m))
            fm = {k: v for k, v in res.metrics.items() if k.startswith("fisher")}
            _store("oneshot_fisher", key, {**fm, "num_grads": args.grads, "damp": args.damp,
                                            "num_recomputations": args.recomputations})
            if abs(s - 0.7) < 1e-9 or "fisher_s" not in _load():
                _store("fisher_s", None, fm.get("fisher_s"))
                _store("fisher_peak_mb", None, fm.get("fisher_peak_mb"))


def dampgrid(args) -> None:
    """One-shot oBERT with ``damp`` chosen on the validation split (never dev) from a grid."""
    from compresslab.eval.evaluate import predict, torch_forward
    from compresslab.passes.obert import OBert

    cfg, teacher, ctx = _teacher([])
    for s in args.sparsities:
        key = str(s)
        if key in _load().get("oneshot_damp_grid", {}):
            continue
        m = copy.deepcopy(teacher.model)
        res = OBert(sparsity=s, mode="oneshot", recovery={"steps": 0}, num_grads=args.grads, damp_grid=args.grid,
                    num_recomputations=args.recomputations).apply(m, ctx)
        acc = predict(torch_forward(m), teacher.task.spec, teacher.task.dev, teacher.tokenizer,
                      max_length=int(cfg.task.max_length)).metrics["score"]
        _store("oneshot_damp_grid", key, {"dev_acc_at_chosen_damp": acc, "chosen_damp": res.metrics["damp"],
                                          "grid_on_validation": res.metrics.get("damp_grid"),
                                          "num_grads": args.grads, "fisher_s": res.metrics.get("fisher_s")})


def block4(args) -> None:
    """4-block (1x4 along rows) oBERT at 80%, one-shot (no recovery), B=32 (recipe)."""
    from compresslab.eval.evaluate import predict, torch_forward
    from compresslab.passes.obert import OBert

    if "block4_80_acc" in _load():
        return
    cfg, teacher, ctx = _teacher([])
    m = copy.deepcopy(teacher.model)
    res = OBert(sparsity=0.8, mode="oneshot", recovery={"steps": 0}, num_grads=args.grads, damp=args.damp,
                mask_type="block4").apply(m, ctx)
    acc = predict(torch_forward(m), teacher.task.spec, teacher.task.dev, teacher.tokenizer).metrics["score"]
    _store("block4_80_acc", None, acc)
    _store("block4_80", None, {"mode": "oneshot, no recovery", "num_grads": args.grads, "block_size": 32,
                                "sparsity": res.metrics.get("sparsity")})


def gradual(args) -> None:
    from compresslab.pipeline import run

    s = args.sparsity
    common = ["budget=bench", f"budget.recovery_steps={args.steps}", f"budget.fisher_grads={args.grads}",
              "bench.load_probe=false"]
    runs = {"gradual_acc": ["+pipeline=obert_int8", f"pipeline.passes.obert.sparsity={s}",
                            f"pipeline.passes.obert.num_events={args.events}"],
            "gradual_magnitude_acc": ["+pipeline=magnitude_int8", "pipeline.passes.magnitude.mode=gradual",
                                      f"pipeline.passes.magnitude.sparsity={s}",
                                      f"pipeline.passes.magnitude.num_events={args.events}"]}
    for key, ov in runs.items():
        cfg = compose([*ov, *common])
        setup_process(cfg.run.get("threads"), int(cfg.seed))
        t0 = time.perf_counter()
        m = read_json(run(cfg) / "manifest.json")
        _RESULTS.note_run(f"{key}.{s}", m)  # its bench stage timed the latencies copied below
        step = m["steps"][1]
        _store(key, str(s), step["metrics_after"]["score"])
        _store(key + "_runs", str(s), {"run": m["config_hash"], "pipeline": m["pipeline"], "wall_s": time.perf_counter() - t0,
                                       "deployed_acc": m["eval"]["models"]["deployed"]["score"],
                                       "deployed_agreement": m["eval"]["models"]["deployed"].get("agreement"),
                                       "step_metrics": step["result"]["metrics"], "size": m["size"],
                                       "latency_ms": {k: {sh: v["p50_ms"] for sh, v in d.items()}
                                                      for k, d in m["bench"]["latency"].items()}})
        if key == "gradual_acc" and abs(s - 0.8) < 1e-9:
            _store("obert_int8_onnx_acc", None, m["eval"]["models"]["deployed"]["score"])
            _store("size_bytes", None, m["size"])
            _store("latency_ms", None, {k: {sh: v["p50_ms"] for sh, v in d.items()}
                                        for k, d in m["bench"]["latency"].items()})
    _store("budget", None, {"preset": "bench teacher; recovery reduced to fit 2 cores", "steps": args.steps,
                            "batch_size": 32, "fisher_grads": args.grads, "num_events": args.events,
                            "kd": {"hardness": 1.0, "temperature": 2.0}, "seeds": [42]})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["oneshot", "gradual", "block4", "dampgrid"])
    ap.add_argument("--grid", type=float, nargs="+", default=[1e-4, 1e-5, 1e-6, 1e-7, 1e-8])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.8])
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--grads", type=int, default=512)
    ap.add_argument("--damp", type=float, default=1e-7)
    ap.add_argument("--recomputations", type=int, default=1)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--events", type=int, default=4)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    {"oneshot": oneshot, "gradual": gradual, "block4": block4, "dampgrid": dampgrid}[args.what](args)
    _store("meta", None, {"git_sha": git_sha(), "versions": library_versions(), "split": "SST-2 dev (872)",
                          "command": "python benchmarks/obert.py oneshot; python benchmarks/obert.py gradual ...",
                          "teacher": "finetune preset bench (cached)"})
    print(json.dumps(_load(), indent=2, default=str)[:4000])


if __name__ == "__main__":
    main()
