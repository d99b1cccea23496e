"""Is the Hessian bit map a property of the model, or of the Hutchinson probe seed? (issue #10)

    python benchmarks/hessian_probes.py --carve grouped --val-size 500          # probes 64 and 512, seeds 42 1 2
    python benchmarks/hessian_probes.py --carve grouped --val-size 500 --probes 64,256,512

HAWQ-V2's default here (``hawq.hessian``: 16 train batches x 4 shared Rademacher probes = 64 HVPs, task
loss) never meets its own stopping rule on MiniLM (rel. SE <= 0.1): the standard errors are 0.3-10x the
traces (``results/hessian_mp.json``). If the traces are mostly probe noise, the bit map they give moves
with the seed, and the allocation is close to a random one. This script measures that directly, on the
SST-2 ``bench`` teacher of the named validation carve (found by content in the teacher cache):

* per probe count P and seed s: the default Hutchinson estimate with ``batches = P / 4`` and
  ``min_probes = P`` (so exactly P probes; the seed draws both the train batches and the probes, and
  P = 64 is the first 16 batches of P = 512 at the same seed), its wall seconds, how many of the 36
  encoder Linears have |trace| >= 2 SE, how many traces are negative (clamped to 0 by the pass), the
  bit map at ``--avg-bits`` (the pass's integer program over {2, 3, 4, 8, fp32}, block 64), and that
  map's post-training accuracy and agreement with the teacher on SST-2 dev;
* per seed: a random allocation at the same average bits (the issue's control, the pass's
  ``allocate=random``), scored the same way;
* ``summary``: per P, the mean pairwise fraction of Linears whose width is the same between two seeds,
  the mean pairwise Spearman correlation of the per-Linear average traces, and the PTQ accuracy mean
  and std over seeds; the random control's mean and std.

Wall seconds are the Hutchinson estimate alone, under the load ``meta.machine_load`` records (a cost,
not a benchmark timing). Resumable: each (P, seed) is stored when done and skipped on rerun.
Writes ``results/hessian_probes[_<carve><size>].json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
SEED = 42  # the teacher's seed (the cached bench teacher of the carve)
THREADS = 2
BLOCK = 64  # MatMulNBits block along the input dimension: hessian_mp.json's setting
PROBES_PER_BATCH = 4  # hawq.hessian.probes_per_batch (the default)
CHOICES = (2, 3, 4, 8, 32)
QAT_LR = 5e-5  # hessian_mp.py qat's

log = logging.getLogger("hessian_probes")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _pairwise(values: list[Any], fn) -> float | None:
    pairs = list(itertools.combinations(values, 2))
    return float(np.mean([fn(a, b) for a, b in pairs])) if pairs else None


def _same_width(a: dict[str, int], b: dict[str, int]) -> float:
    return float(np.mean([a[n] == b[n] for n in a]))


def _spearman(a: dict[str, float], b: dict[str, float]) -> float:
    from scipy.stats import spearmanr

    names = sorted(a)
    return float(spearmanr([a[n] for n in names], [b[n] for n in names]).statistic)


def summarize(runs: dict[str, dict[str, Any]], random: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The cross-seed statistics of the stored ``runs`` (``p<P>`` -> ``s<seed>`` -> record) and the
    ``random`` control (``s<seed>`` -> record)."""
    out: dict[str, Any] = {}
    for pkey, by_seed in sorted(runs.items(), key=lambda kv: int(kv[0][1:])):
        recs = list(by_seed.values())
        accs = [r["acc"] for r in recs]
        out[pkey] = {
            "seeds": len(recs),
            "same_width_pairwise": _pairwise([r["bits"] for r in recs], _same_width),
            "trace_spearman_pairwise": _pairwise([r["avg_trace"] for r in recs], _spearman),
            "acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
            "agreement_mean": float(np.mean([r["agreement"] for r in recs])),
            "significant_2se_mean": float(np.mean([r["significant_2se"] for r in recs])),
            "negative_mean": float(np.mean([r["negative"] for r in recs])),
            "wall_s_mean": (float(np.mean([r["wall_s"] for r in recs]))
                            if all(r["wall_s"] is not None for r in recs) else None),
        }
    if random:
        accs = [r["acc"] for r in random.values()]
        out["random"] = {"seeds": len(accs), "acc_mean": float(np.mean(accs)),
                         "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
                         "same_width_pairwise": _pairwise([r["bits"] for r in random.values()], _same_width)}
        for pkey in runs:
            std = out["random"]["acc_std"]
            out[pkey]["minus_random"] = out[pkey]["acc_mean"] - out["random"]["acc_mean"]
            out[pkey]["two_std_random"] = None if std is None else 2 * std
    return out


def summarize_qat(qat: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per arm (``p<P>`` or ``random`` -> ``s<seed>`` -> record) the accuracy mean and sample std over seeds;
    per probe arm its gap to the random arm against the issue's bar (> 2 x the random arm's std, 3+ seeds)."""
    out: dict[str, Any] = {}
    for arm, by_seed in qat.items():
        accs = [r["acc"] for r in by_seed.values()]
        out[arm] = {"seeds": len(accs), "per_seed": {k: r["acc"] for k, r in by_seed.items()},
                    "acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else None}
    rnd = out.get("random")
    for arm, rec in out.items():
        if arm == "random" or rnd is None or rnd["acc_std"] is None:
            continue
        gap = rec["acc_mean"] - rnd["acc_mean"]
        rec["minus_random"] = gap
        rec["bar_met"] = bool(min(rec["seeds"], rnd["seeds"]) >= 3 and gap > 2 * rnd["acc_std"])
    return out


def main(argv: list[str]) -> None:
    from compresslab.bench.env import hardware_fingerprint
    from compresslab.cli import setup_process
    from compresslab.data.metrics import agreement
    from compresslab.eval.evaluate import predict, torch_forward
    from compresslab.manifest import git_sha, library_versions
    from compresslab.models.quantized import freeze_all, quantize_modules
    from compresslab.passes.hawq import Hawq
    from compresslab.quant.allocate import allocate_bits, random_allocation
    from compresslab.ops.quant import quant_error
    from compresslab.targets import select_modules

    from _carve_teacher import add_carve_args, carve_label, carve_teacher, teacher_meta  # sibling modules
    from _results import ResultsFile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_carve_args(ap)
    ap.add_argument("--probes", type=_ints, default=[64, 512], help="probe counts (multiples of 4)")
    ap.add_argument("--seeds", type=_ints, default=[42, 1, 2])
    ap.add_argument("--avg-bits", type=float, default=3.0)
    ap.add_argument("--qat-steps", type=int, default=0, help="also QAT each map (and the random one) this many steps")
    ap.add_argument("--max-dev", type=int, default=None, help="a smoke run on the first N dev sentences")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    bad = [p for p in a.probes if p < 2 * PROBES_PER_BATCH or p % PROBES_PER_BATCH]
    if bad:
        raise SystemExit(f"--probes {bad}: each must be a multiple of {PROBES_PER_BATCH} and >= {2 * PROBES_PER_BATCH}")
    if a.max_dev is not None and a.out is None:
        raise SystemExit("--max-dev is a smoke run: give --out (results/ holds full-dev figures only)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out_path = a.out or (ROOT / "results" / f"hessian_probes{carve_label(a)}.json")
    results = ResultsFile(out_path)
    setup_process(THREADS, SEED)

    work = Path("outputs/hessian_probes").resolve()
    carved = carve_teacher(a, SEED, work)
    teacher, tok, task = carved.model.eval(), carved.tokenizer, carved.task
    dev = list(task.dev)[: a.max_dev]
    max_length = 128

    def scored(model) -> Any:
        return predict(torch_forward(model), task.spec, dev, tok, max_length=max_length)

    teacher_s = scored(teacher)
    mods = select_modules(teacher)
    numel = {n: m.weight.numel() for n, m in mods.items()}
    errors = {n: {b: (0.0 if b == 32 else quant_error(m.weight, b, BLOCK)) for b in CHOICES} for n, m in mods.items()}
    results.put(["teacher_acc"], teacher_s.metrics["score"])
    results.put(["setting"], {"avg_bits": a.avg_bits, "choices": list(CHOICES), "block_size": BLOCK,
                              "probes_per_batch": PROBES_PER_BATCH, "hessian_batch_size": 16, "loss": "task",
                              "dev_sentences": len(dev), "linears": len(mods)})
    results.put(["meta"], {"git_sha": git_sha(), "versions": library_versions(), "hardware": hardware_fingerprint(),
                           "threads": THREADS, **teacher_meta(carved, a),
                           "command": "python benchmarks/hessian_probes.py " + " ".join(argv)})

    def ptq(bits: dict[str, int]) -> tuple[float, float]:
        m = copy.deepcopy(teacher)
        quantize_modules(m, {n: {"bits": b, "block_size": BLOCK} for n, b in bits.items() if b != 32})
        freeze_all(m)
        s = scored(m)
        return float(s.metrics["score"]), float(agreement(s.predictions, teacher_s.predictions))

    for seed in a.seeds:
        if not results.has(["random", f"s{seed}"]):
            bits = random_allocation(numel, avg_bits=a.avg_bits, choices=list(CHOICES), seed=seed)
            acc, agr = ptq(bits)
            results.put(["random", f"s{seed}"], {"acc": acc, "agreement": agr, "bits": bits})
            log.info("random seed %d: acc %.4f", seed, acc)
        for probes in a.probes:
            key = ["runs", f"p{probes}", f"s{seed}"]
            if results.has(key):
                continue
            batches = probes // PROBES_PER_BATCH
            ctx = dataclasses.replace(carved.context(work, work / "step"), seed=seed)
            p = Hawq(avg_bits=a.avg_bits, block_size=BLOCK,
                     hessian={"batches": batches, "probes_per_batch": PROBES_PER_BATCH, "min_probes": probes})
            model = copy.deepcopy(teacher)
            t0 = time.perf_counter()
            # through the pass's content-keyed cache: the QAT arms below reuse this estimate
            omega, rec = p._sensitivity(model, ctx, select_modules(model))
            wall = None if rec.get("cached") else round(time.perf_counter() - t0, 1)
            traces = rec["traces"]
            bits = allocate_bits(omega, errors, numel, choices=list(CHOICES), avg_bits=a.avg_bits).bits
            acc, agr = ptq(bits)
            results.put(key, {
                "probes": rec.get("probes"), "batches": rec.get("batches"), "wall_s": wall,
                "cached": rec.get("cached"),
                "significant_2se": sum(abs(t["trace"]) >= 2 * t["se"] for t in traces.values()),
                "converged_rel_se_0_1": sum(bool(t["converged"]) for t in traces.values()),
                "negative": len(rec.get("negative_clamped_to_0", [])),
                "avg_trace": {n: t["avg_trace"] for n, t in traces.items()},
                "se_over_abs_trace": {n: (t["se"] / abs(t["trace"]) if t["trace"] else None) for n, t in traces.items()},
                "bits": bits, "acc": acc, "agreement": agr})
            log.info("probes %d seed %d: %s s, acc %.4f", probes, seed, wall, acc)
    data = results.load()
    results.put(["summary"], summarize(data.get("runs", {}), data.get("random", {})))
    log.info("summary: %s", results.get(["summary"]))
    if a.qat_steps <= 0:
        return
    # QAT with KD (the pass's own recovery; 8-bit word embeddings, as hessian_mp.py's qat arms) of each probe
    # count's map and of the random map, per seed: the bar is the Hessian map above random after QAT
    results.put(["qat_setting"], {"steps": a.qat_steps, "lr": QAT_LR, "embedding_bits": 8,
                                  "batch_size": carved.context(work, work / "step").batch_size})
    for seed in a.seeds:
        arms = {f"p{probes}": {"hessian": {"batches": probes // PROBES_PER_BATCH,
                                           "probes_per_batch": PROBES_PER_BATCH, "min_probes": probes}}
                for probes in a.probes}
        arms["random"] = {"allocate": "random"}
        for arm, kw in arms.items():
            key = ["qat", arm, f"s{seed}"]
            if results.has(key):
                continue
            step_dir = work / "qat_step" / f"{arm}_s{seed}"  # each arm resumes only its own QAT checkpoint
            step_dir.mkdir(parents=True, exist_ok=True)
            ctx = dataclasses.replace(carved.context(work, work / "step"), seed=seed, step_dir=step_dir)
            model = copy.deepcopy(teacher)
            for prm in model.parameters():
                prm.requires_grad_(True)
            res = Hawq(avg_bits=a.avg_bits, block_size=BLOCK, embedding_bits=8,
                       recovery={"steps": a.qat_steps, "lr": QAT_LR}, **kw).apply(model, ctx)
            model.eval()
            s = scored(model)
            results.put(key, {"acc": float(s.metrics["score"]),
                              "agreement": float(agreement(s.predictions, teacher_s.predictions)),
                              "avg_bits": res.metrics["avg_bits"], "bits": res.metrics.get("bits"),
                              "train_s": (res.metrics.get("qat") or {}).get("wall_s")})
            log.info("QAT %s seed %d: acc %.4f", arm, seed, s.metrics["score"])
    data = results.load()
    results.put(["qat_summary"], summarize_qat(data.get("qat", {})))
    log.info("QAT summary: %s", results.get(["qat_summary"]))


if __name__ == "__main__":
    main(sys.argv[1:])
