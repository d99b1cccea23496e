"""Is the Hessian sensitivity of issue #10 signal or probe noise? Measured on the cached `bench` teacher.

Writes benchmarks/results/hessian_sensitivity.json (resumable: finished items are skipped). Accuracy
items are timing-free; the ``*_s`` figures are wall seconds under whatever load the machine had
(``meta.machine_load`` records it), so they size the work and are not benchmark timings.

    python benchmarks/hessian_sensitivity.py noise       # shared vs per-Linear probes, batch vs probe variance
    python benchmarks/hessian_sensitivity.py validate    # PTQ MP 3 / 2.5 per sensitivity loss, validation split

``noise``: per train batch (16 x 16 examples), the gradient graph of each Hessian loss (``task``: the
mean cross-entropy on labels; ``teacher_kl``: KL to the model's own detached output, whose Hessian is
the Gauss-Newton matrix) is built once and probed (a) with one Rademacher probe shared by all 36
encoder Linears per HVP (the default) and (b) with a probe on one Linear only (its own HVP), for three
Linears. (b)'s per-probe variance is 2(‖H_JJ‖_F² − Σ H_kk²); (a)'s adds the off-diagonal leakage
‖H_{J,J^c}‖_F². For ``teacher_kl`` the exact per-batch block trace is also computed (two classes:
tr H_JJ = (1/B) Σ_n p_n(1−p_n)‖∇_J(z_n1 − z_n0)‖², one backward per example), so probe noise and the
batch-to-batch spread of the trace itself are separated.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
import math
import os
import time
from typing import Any

import numpy as np
import torch

from _hessian_mp_core import BLOCK, HESSIAN, RESULTS as MP_RESULTS, _teacher  # sibling module: the cached teacher
from _results import ResultsFile  # sibling module (script dir)

RESULTS = MP_RESULTS.parent / "hessian_sensitivity.json"
_RESULTS = ResultsFile(RESULTS)
PROBED = ("bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.2.attention.output.dense",
          "bert.encoder.layer.5.intermediate.dense")
log = logging.getLogger("hessian_sensitivity")


def _setup(threads: int) -> tuple[Any, Any, Any]:
    cfg, teacher, ctx = _teacher()
    torch.set_num_threads(threads)  # the machine is shared: _teacher pins the config's count
    return cfg, teacher, ctx


def _loss(name: str):
    from compresslab.training.losses import task_loss, teacher_kl_loss

    return {"task": task_loss, "teacher_kl": teacher_kl_loss}[name]


def _train_batches(ctx, n: int, batch_size: int = 16) -> list[dict]:
    """The first ``n`` shuffled train batches: the ones the hawq pass's sensitivity sees (same seed)."""
    return list(itertools.islice(ctx.train_loader(batch_size=batch_size, shuffle=True), n))


def _exact_ggn_block_traces(model, batch: dict, params: list[torch.Tensor]) -> np.ndarray:
    """tr of each weight's diagonal block of the teacher-KL Hessian on ``batch`` (two-class softmax):
    (1/B) Σ_n p_n0 p_n1 ‖∂(z_n1 − z_n0)/∂W‖², one single-example backward per example. (len(params),)."""
    from compresslab.training.losses import MODEL_INPUTS

    b = batch["input_ids"].shape[0]
    out = np.zeros(len(params))
    for n in range(b):
        one = {k: v[n:n + 1] for k, v in batch.items() if k in MODEL_INPUTS}
        z = model(**one, return_dict=True).logits[0]
        p = torch.softmax(z.detach(), -1)
        gs = torch.autograd.grad(z[1] - z[0], params)
        out += float(p[0] * p[1]) * np.array([float(g.double().pow(2).sum()) for g in gs])
    return out / b


def noise(args) -> None:
    from compresslab.ops.loss_hessian import block_quadratic, rademacher
    from compresslab.quant.hvp import batch_hvps
    from compresslab.targets import select_modules

    _, teacher, ctx = _setup(args.threads)
    batches = _train_batches(ctx, args.batches)
    for loss_name in args.losses:
        key = f"noise.{loss_name}"
        if _RESULTS.has(key.split(".")):
            continue
        model = copy.deepcopy(teacher.model)
        mods = select_modules(model)
        names = list(mods)
        params = [m.weight for m in mods.values()]
        idx = [names.index(n) for n in PROBED]
        gen = torch.Generator().manual_seed(int(ctx.seed) * 65537)
        shared = np.zeros((len(batches), args.probes, len(names)))  # samples z_jᵀ(Hz)_j, shared probe
        own = np.zeros((len(batches), args.probes, len(PROBED)))  # probe on the one Linear only
        exact = np.full((len(batches), len(names)), np.nan)
        t0 = time.perf_counter()
        hvp_s = 0.0
        with batch_hvps(model, params) as hvps:
            for bi, batch in enumerate(batches):
                fn = hvps(batch, _loss(loss_name))  # the batch's gradient graph, probed below
                ts = time.perf_counter()
                for p in range(args.probes):
                    z = rademacher(params, gen)
                    shared[bi, p] = block_quadratic(z, fn(z), [1] * len(params)).numpy()
                hvp_s += time.perf_counter() - ts
                for k, j in enumerate(idx):
                    for p in range(args.probes):
                        z = [torch.zeros_like(t) for t in params]
                        z[j] = rademacher([params[j]], gen)[0]
                        own[bi, p, k] = float(block_quadratic([z[j]], [fn(z)[j]], [1])[0])
                del fn  # frees the graph
                if loss_name == "teacher_kl":
                    exact[bi] = _exact_ggn_block_traces(model, batch, params)
                log.info("%s batch %d/%d %.0f s", loss_name, bi + 1, len(batches), time.perf_counter() - t0)
        per_hvp_s = hvp_s / (len(batches) * args.probes)
        _RESULTS.put(key.split("."), _noise_summary(names, idx, shared, own, exact, args, per_hvp_s))


def _noise_summary(names, idx, shared, own, exact, args, per_hvp_s: float) -> dict[str, Any]:
    """Per probed Linear: trace, per-probe std (shared vs own; within a batch), the leakage share of the
    shared-probe variance, the spread of the trace over batches, and the SE each scheme reaches at the
    default's HVP budget (16 batches x 4 probes = 64 HVPs for all 36 Linears)."""
    nb, npr = shared.shape[:2]
    hvps = 64
    out: dict[str, Any] = {}
    for k, j in enumerate(idx):
        s, o = shared[:, :, j], own[:, :, k]
        var_s = float(np.mean(s.var(axis=1, ddof=1)))  # within-batch: probe noise only
        var_o = float(np.mean(o.var(axis=1, ddof=1)))
        batch_means = o.mean(axis=1)
        # spread of the per-batch trace itself: var of batch means minus their probe noise
        if np.isfinite(exact[:, j]).all():
            var_b = float(np.var(exact[:, j], ddof=1))
            tr = float(exact[:, j].mean())
        else:
            var_b = max(0.0, float(np.var(batch_means, ddof=1)) - var_o / npr)
            tr = float(np.mean(np.concatenate([s.ravel(), o.ravel()])))
        # SE of the mean trace over 16 batches with 64 HVPs: shared = 4 probes per batch for all Linears;
        # per-Linear probes = 64/36 probes per Linear in all (at most one per batch, so fewer batches too)
        se_shared = math.sqrt(var_s / hvps + var_b / 16)
        own_probes = hvps / len(names)
        se_own = math.sqrt(var_o / own_probes + var_b / min(16, own_probes))
        out[names[j]] = {
            "trace": tr, "per_probe_std_shared": math.sqrt(var_s), "per_probe_std_own": math.sqrt(var_o),
            "leakage_share_of_shared_variance": 1.0 - var_o / var_s if var_s > 0 else None,
            "batch_std_of_trace": math.sqrt(var_b),
            "batch_traces": (exact[:, j] if np.isfinite(exact[:, j]).all() else batch_means).tolist(),
            "se_at_64_hvps_shared": se_shared, "se_at_64_hvps_own": se_own,
            "rel_se_at_64_hvps_shared": se_shared / abs(tr) if tr else None,
            "probes_for_rel_se_0.1_shared": (var_s / (0.1 * tr) ** 2) if tr else None,
        }
    all_s = shared.reshape(nb * npr, -1)
    mean, se = all_s.mean(0), all_s.std(0, ddof=1) / math.sqrt(nb * npr)
    ex = {"exact_mean_trace": exact.mean(0).tolist()} if np.isfinite(exact).all() else {}
    return {"linears": out, "batches": nb, "probes_per_batch": npr, "hvp_s": round(per_hvp_s, 2),
            "all_36_shared": {"names": names, "trace": mean.tolist(), "se": se.tolist(),
                              "rel_se_le_0.1": int(np.sum(se <= 0.1 * np.abs(mean))),
                              "negative": int(np.sum(mean < 0)), "negative_beyond_2se": int(np.sum(mean < -2 * se)),
                              **ex}}


def validate(args) -> None:
    """PTQ Hessian MP (ILP) at 3 and 2.5 average bits, one run per sensitivity loss; accuracy and agreement
    with the teacher on the validation split (carved from train; dev is not looked at here)."""
    from compresslab.data.metrics import agreement
    from compresslab.eval.evaluate import predict, torch_forward
    from compresslab.passes.hawq import Hawq

    cfg, t, ctx = _setup(args.threads)
    val = t.task.validation

    def score(m):
        return predict(torch_forward(m), t.task.spec, val, t.tokenizer, max_length=int(cfg.task.max_length))

    teacher = score(t.model)
    _RESULTS.put(["validate", "teacher_acc"], teacher.metrics["score"])
    _RESULTS.put(["validate", "split"], f"validation ({len(val)} examples carved from train)")
    for bits in args.bits:
        key = ["validate", f"uniform_{bits:g}"]
        if float(bits).is_integer() and not _RESULTS.has(key):
            m = copy.deepcopy(t.model)
            Hawq(bits=int(bits), block_size=BLOCK, recovery={"steps": 0}).apply(m, ctx)
            s = score(m)
            _RESULTS.put(key, {"acc": s.metrics["score"], "agreement": agreement(s.predictions, teacher.predictions)})
        for loss_name in args.losses:
            key = ["validate", f"mp_{bits:g}", loss_name]
            if _RESULTS.has(key):
                continue
            m = copy.deepcopy(t.model)
            for p in m.parameters():
                p.requires_grad_(True)
            t0 = time.perf_counter()
            res = Hawq(avg_bits=float(bits), block_size=BLOCK, recovery={"steps": 0},
                       hessian=HESSIAN[loss_name]).apply(m, ctx)
            wall = time.perf_counter() - t0
            s = score(m)
            sens = res.metrics.get("sensitivity", {})
            _RESULTS.put(key, {"acc": s.metrics["score"], "agreement": agreement(s.predictions, teacher.predictions),
                               "avg_bits": res.metrics["avg_bits"], "bits_per_layer": res.metrics["bits_per_layer"],
                               "not_converged": len(sens.get("not_converged") or []), "probes": sens.get("probes"),
                               "negative_clamped_to_0": len(sens.get("negative_clamped_to_0") or []),
                               "wall_s_loaded": round(wall, 1)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["noise", "validate"])
    ap.add_argument("--losses", nargs="+", default=["task", "teacher_kl"],
                    help="noise: task / teacher_kl; validate: also teacher_kl_exact (_hessian_mp_core.HESSIAN)")
    ap.add_argument("--batches", type=int, default=4, help="noise: train batches of 16")
    ap.add_argument("--probes", type=int, default=16, help="noise: probes per batch per scheme")
    ap.add_argument("--bits", type=float, nargs="+", default=[3.0, 2.5])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    {"noise": noise, "validate": validate}[args.what](args)
    from compresslab.manifest import git_sha

    _RESULTS.put(["meta"], {"git_sha": git_sha(), "teacher": "finetune preset bench (cached)", "block_size": BLOCK,
                            "loadavg": os.getloadavg(), "threads": args.threads,
                            "note": "wall seconds measured beside a training job: sizes, not benchmark timings"})


if __name__ == "__main__":
    main()
