"""BiBERT figures (issue #11) on the cached `bench` teacher, SST-2 (max length 64).

Every run goes through the ``bibert`` pass (the one KD recovery, ``training.recover``: step checkpoints
every 200 steps, so a stopped run resumes where it was when the same command is given again). Selection
is on the validation split carved from train (since design review item 7 the binarized weights before
the first step are scored too, as every recovery does: ``history`` starts at step 0); dev is scored once
per finished run. Resumable: finished items live in benchmarks/results/bibert.json and are skipped on rerun.

    python benchmarks/bibert.py probe --steps 60              # s/step of each variant: sizes the budget
    python benchmarks/bibert.py grid --variant bibert --steps 600 --lrs 1e-3 3e-3 1e-2
    python benchmarks/bibert.py full --variant bibert --steps 3000   # LR = the variant's grid winner
    python benchmarks/bibert.py summary                       # McNemar, ONNX, sizes, FLOPs, XNOR GEMM

Variants (same budget, same LR grid): ``bibert`` (Bi-Attention + pred + hidden + DMD), ``naive``
(softmax kept, logit KD only), ``no_biattention`` (softmax kept), ``no_dmd`` (DMD off).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from compresslab.cli import setup_process
from compresslab.config import compose
from compresslab.manifest import git_sha, library_versions, read_json

from _results import ResultsFile  # sibling module (script dir)

RESULTS = Path(__file__).resolve().parent / "results" / "bibert.json"
_RESULTS = ResultsFile(RESULTS)
WORK = Path(os.environ.get("BIBERT_BENCH_DIR", "outputs/bibert_bench")).resolve()
VARIANTS: dict[str, dict[str, Any]] = {
    "bibert": {},
    "naive": {"attention": "softmax", "prediction": "logit_kd", "dmd_weight": 0.0, "recovery": {"hidden_weight": 0.0}},
    "no_biattention": {"attention": "softmax"},
    "no_dmd": {"dmd_weight": 0.0},
}
BATCH, MAX_LEN = 16, 64
log = logging.getLogger("bibert_bench")


def _load() -> dict:
    return _RESULTS.load()


def _store(path: str, value: Any) -> None:
    """Store ``value`` at the slash-separated ``path`` (e.g. "lr_grid/bibert/0.001")."""
    _RESULTS.put(path.split("/"), value)


def _get(path: str) -> Any:
    return _RESULTS.get(path.split("/"))


_STATE: dict[str, Any] = {}


def _teacher():
    """(cfg, teacher) over the cached bench teacher (trained once, then found by content hash): ``teacher`` a
    :class:`compresslab.pipeline.Teacher`."""
    if not _STATE:
        from compresslab.pipeline import teacher_of

        cfg = compose(["+pipeline=bibert", "budget=bench"])
        setup_process(cfg.run.get("threads"), int(cfg.seed))
        teacher = teacher_of(cfg, WORK / "teacher")
        _STATE.update(cfg=cfg, teacher=teacher)
    return _STATE["cfg"], _STATE["teacher"]


def _dev(model) -> Any:
    from compresslab.eval.evaluate import predict, torch_forward

    cfg, teacher = _teacher()
    return predict(torch_forward(model), teacher.task.spec, teacher.task.dev, teacher.tokenizer,
                   max_length=int(cfg.task.max_length))


def _run(name: str, variant: str, lr: float, steps: int, eval_every: int,
         select_examples: int | None = None) -> tuple[Any, Any]:
    """One bibert pass run on a copy of the teacher; its step checkpoints live in WORK/name/step."""
    import torch

    from compresslab.passes.bibert import BiBert

    _, teacher = _teacher()
    model = copy.deepcopy(teacher.model)
    for p in model.parameters():
        p.requires_grad_(True)
    ctx = teacher.context(WORK / name, WORK / name / "step")
    (WORK / name / "step").mkdir(parents=True, exist_ok=True)
    settings = dict(VARIANTS[variant])
    recovery = {**settings.pop("recovery", {}), "lr": lr, "steps": steps, "select_every": eval_every,
                "select_examples": select_examples}
    p = BiBert(batch_size=BATCH, max_length=MAX_LEN, recovery=recovery, **settings)
    log.info("%s: %s lr=%g steps=%d threads=%d", name, variant, lr, steps, torch.get_num_threads())
    return model, p.apply(model, ctx)


def _machine() -> dict[str, Any]:
    from compresslab.bench.env import hardware_fingerprint

    return {"hardware": hardware_fingerprint(), "load_avg": os.getloadavg()}


def probe(args) -> None:
    """Seconds per optimizer step of each variant (batch 16, length 64): sizes the budget."""
    for v in args.variants:
        key = f"budget/probe/{v}"
        if _get(key) and not args.force:
            continue
        t0 = time.perf_counter()
        _, res = _run(f"probe_{v}", v, 1e-4, args.steps, eval_every=args.steps, select_examples=16)
        tr = res.metrics["train"]
        _store(key, {"steps": args.steps, "train_s": tr["wall_s"], "s_per_step": round(tr["wall_s"] / args.steps, 3),
                     "cpu_s": tr["cpu_s_this_session"], "wall_s_with_eval": round(time.perf_counter() - t0, 1),
                     **_machine()})


def grid(args) -> None:
    """Short runs at each LR; the validation score (best over the eval points) picks the LR."""
    for lr in args.lrs:
        key = f"lr_grid/{args.variant}/{lr:g}"
        if _get(key):
            continue
        _, res = _run(f"grid_{args.variant}_{lr:g}_{args.steps}", args.variant, lr, args.steps, args.eval_every)
        tr = res.metrics["train"]
        _store(key, {"validation_score": res.metrics["selection"]["history"][-1]["score"],
                     "best_validation_score": max(h["score"] for h in res.metrics["selection"]["history"]),
                     "best_step": res.metrics["selection"]["best_step"], "steps": args.steps, "batch_size": BATCH,
                     "train_s": tr["wall_s"], "cpu_s": tr["cpu_s_this_session"], **_machine()})


def _best_lr(variant: str) -> float:
    g = _get(f"lr_grid/{variant}")
    if not g:
        raise SystemExit(f"no LR grid for {variant}: run `grid --variant {variant}` first")
    return float(max(g, key=lambda lr: g[lr]["best_validation_score"]))


def full(args) -> None:
    """The full run of one variant at its grid-chosen LR; dev scored once at the end."""
    import compresslab
    from compresslab.data.metrics import agreement

    if _get(f"runs/{args.variant}") and not args.force:
        return
    lr = args.lr or _best_lr(args.variant)
    name = f"full_{args.variant}_{lr:g}_{args.steps}"
    model, res = _run(name, args.variant, lr, args.steps, args.eval_every)
    cfg, teacher = _teacher()
    s = _dev(model)
    t = _dev(teacher.model)
    out = WORK / name / "model"
    compresslab.save(model, out, tokenizer=teacher.tokenizer, formats=res.formats)
    np.save(WORK / name / "dev_preds.npy", s.predictions)
    tr = res.metrics["train"]
    _store("teacher_acc", t.metrics["score"])
    _store(f"acc_{args.variant}", s.metrics["score"])
    _store(f"runs/{args.variant}", {"steps": args.steps, "batch_size": BATCH, "lr": lr, "train_s": tr["wall_s"],
                                    "cpu_s": tr["cpu_s_this_session"], "max_length": MAX_LEN,
                                    "agreement_with_teacher": agreement(s.predictions, t.predictions),
                                    "validation": res.metrics["validation_score"],
                                    "best_step": res.metrics["selection"]["best_step"],
                                    "history": res.metrics["selection"]["history"], "checkpoint": str(out),
                                    **_machine()})


def _dev_batches(n: int, batch_size: int = 16) -> list[dict]:
    from compresslab.data.loaders import make_loader

    cfg, teacher = _teacher()
    return [{k: v for k, v in b.items() if k != "labels"}
            for b in make_loader(list(teacher.task.dev[:n]), teacher.tokenizer, batch_size, int(cfg.task.max_length),
                                 kind=teacher.task.spec.kind)]


def summary(args) -> None:
    """From the finished full runs: McNemar of each ablation vs BiBERT, the BiBERT ONNX export (parity,
    dev score, agreement with torch), tie handling, sizes, theoretical FLOPs, the XNOR GEMM figures."""
    import compresslab
    from compresslab.checkpoint.packed_binary import binary_sizes
    from compresslab.data.metrics import agreement, mcnemar_pvalue
    from compresslab.eval.evaluate import onnx_forward, predict
    from compresslab.eval.onnx_runner import OnnxRunner
    from compresslab.export.onnx import export_model
    from compresslab.models.binary import binary_modules
    from compresslab.pipeline.export import binary_flops

    cfg, teacher = _teacher()
    labels = np.array([e.label for e in teacher.task.dev])
    runs = _get("runs") or {}
    if "bibert" not in runs:
        raise SystemExit("no full BiBERT run yet: `full --variant bibert` first")
    preds = {v: np.load(Path(r["checkpoint"]).parent / "dev_preds.npy") for v, r in runs.items()}
    _store("mcnemar_p", {v: mcnemar_pvalue(preds[v] == labels, preds["bibert"] == labels)
                         for v in ("no_biattention", "no_dmd", "naive") if v in preds})
    src = Path(runs["bibert"]["checkpoint"])
    model = compresslab.load(src)
    out = src.parent / "onnx"
    if not (out / "model.onnx").is_file():
        export_model(model, teacher.tokenizer, out, _dev_batches(64), optimize=False)
    parity = read_json(out / "parity.json") if (out / "parity.json").is_file() else None
    onnx_pred = predict(onnx_forward(OnnxRunner(out / "model.onnx", threads=2)), teacher.task.spec, teacher.task.dev,
                        teacher.tokenizer, max_length=int(cfg.task.max_length))
    _store("onnx_acc", onnx_pred.metrics["score"])
    _store("onnx_agreement_with_torch", agreement(onnx_pred.predictions, preds["bibert"]))
    _store("onnx", {"file": str(out / "model.onnx"), "parity": parity,
                    "note": "ONNX Runtime has no 1-bit kernels: the graph runs fp32 MatMuls on +-1 values"})
    # ties: the frozen model maps sign(0) -> +1; the same weights with torch.sign ties (0 stays 0)
    for m in binary_modules(model).values():
        m.ties = "zero"
    for lv_mod in model.modules():
        if hasattr(lv_mod, "binary_ties"):
            lv_mod.binary_ties = "zero"
    zero = _dev(model)
    _store("ties", {"acc_ties_plus": float((preds["bibert"] == labels).mean()), "acc_ties_zero": zero.metrics["score"],
                    "agreement": agreement(zero.predictions, preds["bibert"]),
                    "trained_with": "plus (0 -> +1, as deployed)"})
    model = compresslab.load(src)
    sizes = binary_sizes(model)
    _store("size_bytes_packed", {"encoder": sizes["packed_binary"]["encoder"], "total": sizes["packed_binary"]["file"]})
    _store("size_bytes_fp32", {"encoder": sizes["fp32"]["encoder"], "total": sizes["fp32"]["file"]})
    _store("size_ratio", {"encoder": sizes["fp32"]["encoder"] / sizes["packed_binary"]["encoder"],
                          "total": sizes["fp32"]["file"] / sizes["packed_binary"]["file"]})
    flops = binary_flops(model, MAX_LEN)  # theoretical (BOPs/64), per sequence, at s64 and s128
    _store("flops", flops)
    _store("flops_ratio", flops[f"s{MAX_LEN}"]["flops_ratio"])
    xnor = Path(__file__).resolve().parent / "results" / "xnor_gemm.json"
    if xnor.is_file():
        x = read_json(xnor)
        for k in ("xnor_gemm_speedup_vs_fp32", "xnor_gemm_speedup_vs_int8"):
            _store(k, x.get(k))
    _store("budget/full", {"steps": args.steps, "batch_size": BATCH, "max_length": MAX_LEN,
                           "grid_steps": args.grid_steps, "lr_grid": args.lrs})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["probe", "grid", "full", "summary"])
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="bibert")
    ap.add_argument("--variants", nargs="+", default=sorted(VARIANTS))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--grid-steps", type=int, default=None, help="summary: the grid runs' steps (recorded)")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    {"probe": probe, "grid": grid, "full": full, "summary": summary}[args.what](args)
    _store("meta", {"git_sha": git_sha(), "versions": library_versions(), "split": "SST-2 dev (872); selection on "
                    "validation (carved from train)", "teacher": "finetune preset bench (cached)",
                    "batch_size": BATCH, "max_length": MAX_LEN, **_machine(),
                    "command": "python benchmarks/bibert.py probe|grid|full|summary"})
    print(json.dumps({k: v for k, v in _load().items() if k != "meta"}, indent=1, default=str)[:3000])


if __name__ == "__main__":
    main()
