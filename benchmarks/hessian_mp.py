"""Hessian mixed precision figures (issue #10) on the cached `bench` teacher, SST-2 dev.

Resumable: every finished item is stored in benchmarks/results/hessian_mp.json and skipped on
rerun. Nothing here may run while anything else uses the CPU if its timings are to count (the
``deploy`` latency table and ``hessian_s``); the accuracy items are timing-free.

    python benchmarks/hessian_mp.py hessian            # default Hutchinson run (hessian_s), determinism, eigen cost
    python benchmarks/hessian_mp.py ptq                # uniform 8/4/3/2, MP 4/3/2.5, random x3 at 3, groups
    python benchmarks/hessian_mp.py qat --steps 400    # MP 3, uniform 3, MP 2.5 with KD (same budget); McNemar
    python benchmarks/hessian_mp.py deploy             # the QAT'd MP-3 -> ONNX MatMulNBits: parity, size, latency
    python benchmarks/hessian_mp.py baselines          # ORT MatMulNBitsQuantizer RTN 4-bit; NNCF compress_weights 4/8
    python benchmarks/guided_int8.py && python benchmarks/hessian_mp.py guided   # guided int8 (quiet machine)
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

RESULTS = Path(__file__).resolve().parent / "results" / "hessian_mp.json"
_RESULTS = ResultsFile(RESULTS)
WORK = Path(os.environ.get("HAWQ_BENCH_DIR", "outputs/hawq_bench")).resolve()
BLOCK = 64
# the sensitivities --hessian-loss names: hawq's hessian settings (task = the default, the keys)
HESSIAN = {"task": {"loss": "task"}, "teacher_kl": {"loss": "teacher_kl"},
           "teacher_kl_exact": {"loss": "teacher_kl", "estimator": "exact"}}
log = logging.getLogger("hessian_mp")


def _load() -> dict:
    return _RESULTS.load()


def _keys(path: str) -> list[str]:
    """Dotted path -> keys; a number such as 2.5 stays one key ("acc_mp.2.5" -> acc_mp, 2.5)."""
    out: list[str] = []
    for part in path.split("."):
        if out and part.isdigit() and out[-1].isdigit():
            out[-1] += "." + part
        else:
            out.append(part)
    return out


def _store(path: str, value: Any) -> None:
    """Store ``value`` at dotted ``path`` (e.g. "acc_uniform.4", "acc_mp.2.5")."""
    _RESULTS.put(_keys(path), value)


def _has(path: str) -> bool:
    return _RESULTS.has(_keys(path))


_STATE: dict[str, Any] = {}


def _teacher():
    """(cfg, state, ctx) over the cached bench teacher (trained once, then found by content hash)."""
    if not _STATE:
        from compresslab.pipeline import teacher_state

        cfg = compose(["+pipeline=hawq_mp3", "budget=bench"])
        setup_process(cfg.run.get("threads"), int(cfg.seed))
        state = teacher_state(cfg, WORK / "teacher")
        ctx = state.context(WORK, WORK / "step")
        _STATE.update(cfg=cfg, state=state, ctx=ctx)
    return _STATE["cfg"], _STATE["state"], _STATE["ctx"]


def _scored(model) -> Any:
    from compresslab.eval.evaluate import predict, torch_forward

    cfg, state, _ = _teacher()
    return predict(torch_forward(model), state.task.spec, state.task.dev, state.tokenizer,
                   max_length=int(cfg.task.max_length))


def _teacher_preds() -> np.ndarray:
    if "teacher_preds" not in _STATE:
        s = _scored(_teacher()[1].teacher)
        _STATE["teacher_preds"] = s.predictions
        if not _has("teacher_acc"):
            _store("teacher_acc", s.metrics["score"])
    return _STATE["teacher_preds"]


def _quantize(seed: int | None = None, **kw) -> tuple[Any, Any]:
    """A copy of the teacher through the hawq pass with ``kw`` (``seed``: the context's run seed instead of the
    config's); (model, PassResult)."""
    import dataclasses

    from compresslab.passes.hawq import Hawq

    _, state, ctx = _teacher()
    if seed is not None:
        ctx = dataclasses.replace(ctx, seed=int(seed))
    model = copy.deepcopy(state.teacher)
    for p in model.parameters():
        p.requires_grad_(True)
    kw.setdefault("recovery", {"steps": 0})
    res = Hawq(block_size=BLOCK, **kw).apply(model, ctx)
    return model, res


def _score_record(model, res) -> dict[str, Any]:
    from compresslab.data.metrics import agreement

    s = _scored(model)
    rec = {"acc": s.metrics["score"], "agreement": agreement(s.predictions, _teacher_preds()),
           "avg_bits": res.metrics["avg_bits"], "bits_per_layer": res.metrics.get("bits_per_layer")}
    return rec, s


# ---------------------------------------------------------------------------------------- hessian
def hessian(args) -> None:
    from compresslab.passes.hawq import Hawq, HessianSettings
    from compresslab.targets import select_modules

    _, state, ctx = _teacher()
    _teacher_preds()
    if not _has("hessian_s"):
        p = Hawq(avg_bits=3.0, block_size=BLOCK)
        model = copy.deepcopy(state.teacher)
        mods = select_modules(model)
        runs = []
        for _ in range(2):  # the same seed twice: the bit map must not move
            t0 = time.perf_counter()
            omega, rec = p._estimate(model, ctx, mods)
            runs.append((omega, rec, time.perf_counter() - t0))
        bits = []
        for omega, _, _ in runs:
            from compresslab.ops.quant import quant_error
            from compresslab.quant.allocate import allocate_bits

            errors = {n: {b: (0.0 if b == 32 else quant_error(m.weight, b, BLOCK)) for b in p.choices}
                      for n, m in mods.items()}
            bits.append(allocate_bits(omega, errors, {n: m.weight.numel() for n, m in mods.items()},
                                      choices=p.choices, avg_bits=3.0).bits)
        omega, rec, wall = runs[0]
        _store("hessian_s", round(wall, 1))
        _store("hessian_setting", {"batches": p.hessian.batches, "probes": rec.get("probes"),
                                   "probes_per_batch": p.hessian.probes_per_batch,
                                   "batch_size": p.hessian.batch_size, "rel_se_tol": p.hessian.rel_se_tol,
                                   "converged": rec.get("converged"), "not_converged": rec.get("not_converged"),
                                   "batches_used": rec.get("batches")})
        _store("hessian_peak_mb", rec.get("peak_mb"))
        _store("hessian_traces", {n: {k: rec["traces"][n][k] for k in ("avg_trace", "trace", "se", "numel",
                                                                        "converged")} for n in mods})
        _store("bitmap_deterministic", bits[0] == bits[1] and runs[0][0] == runs[1][0])
        _store("hessian_s_second_run", round(runs[1][2], 1))
    if not _has("eigen_s_per_layer"):
        from compresslab.quant.sensitivity import layer_eigenvalues

        model = copy.deepcopy(state.teacher)
        loader = ctx.train_loader(batch_size=16, shuffle=True)
        batch = next(iter(loader))
        t0 = time.perf_counter()
        res = layer_eigenvalues(model, [batch], max_batches=1, max_iter=args.eigen_iters, tol=1e-3, seed=ctx.seed)
        wall = time.perf_counter() - t0
        n_layers = len(res["layers"])
        _store("eigen_s_per_layer", round(wall / n_layers, 1))
        _store("eigen_setting", {"batches": 1, "batch_size": 16, "max_iter": args.eigen_iters, "tol": 1e-3,
                                 "layers": res["layers"],
                                 "note": "one batch; Q-BERT's distribution over batches multiplies this by the "
                                         "batch count; per-Linear eigenvalues would cost 6x more (36 chains)"})


# ---------------------------------------------------------------------------------------- ptq
def ptq(args) -> None:
    _teacher_preds()
    for b in (8, 4, 3, 2):
        if not _has(f"acc_uniform.{b}"):
            m, r = _quantize(bits=b)
            rec, _ = _score_record(m, r)
            _store(f"acc_uniform.{b}", rec["acc"])
            _store(f"ptq_detail.uniform_{b}", rec)
    sfx = _loss_suffix(args)
    for avg in (4.0, 3.0, 2.5):
        key = f"{avg:g}"
        if not _has(f"acc_mp{sfx}.{key}"):
            m, r = _quantize(avg_bits=avg, hessian=HESSIAN[args.hessian_loss])
            rec, _ = _score_record(m, r)
            _store(f"acc_mp{sfx}.{key}", rec["acc"])
            _store(f"ptq_detail.mp_{key}{sfx}", {**rec, "bits": r.metrics["bits"],
                                                 "hessian_loss": args.hessian_loss})
    if not _has("acc_random_alloc.3"):
        accs = []
        for seed in (0, 1, 2):
            from compresslab.passes.hawq import Hawq
            from compresslab.quant.allocate import random_allocation
            from compresslab.targets import select_modules

            _, state, _ = _teacher()
            mods = select_modules(state.teacher)
            bits = random_allocation({n: m.weight.numel() for n, m in mods.items()}, avg_bits=3.0,
                                     choices=[2, 3, 4, 8, 32], seed=seed)
            m = copy.deepcopy(state.teacher)
            from compresslab.models.quantized import average_bits, freeze_all, quantize_modules

            quantize_modules(m, {n: {"bits": b, "block_size": BLOCK} for n, b in bits.items() if b != 32})
            freeze_all(m)
            acc = _scored(m).metrics["score"]
            accs.append(acc)
            _store(f"ptq_detail.random_3_seed{seed}", {"acc": acc, "avg_bits": average_bits(m, list(mods)),
                                                        "bits": bits})
        _store("acc_random_alloc.3", float(np.mean(accs)))
        _store("acc_random_alloc.3_std", float(np.std(accs, ddof=1)))
    for g, kw in {"layer": {"group": "layer"}, "head": {"group": "head"}, "row": {"group": "row"},
                  "block64": {"group": "block"}}.items():
        if not _has(f"acc_groups.{g}"):
            m, r = _quantize(bits=args.group_bits, **kw)
            _store(f"acc_groups.{g}", _scored(m).metrics["score"])
    _store("acc_groups_bits", args.group_bits)


# ---------------------------------------------------------------------------------------- qat
def qat(args) -> None:
    from compresslab.data.metrics import mcnemar_pvalue

    import compresslab

    cfg, state, _ = _teacher()
    teacher_preds = _teacher_preds()
    labels = np.array([e.label for e in state.task.dev])
    sfx = _loss_suffix(args)
    seed = int(cfg.seed) if args.seed is None else int(args.seed)
    base_seed = seed == int(cfg.seed)
    # the config's seed keeps the keys; other seeds (the seed study) go under qat{sfx}_seeds.<seed>
    key_root = f"qat{sfx}" if base_seed else f"qat{sfx}_seeds.{seed}"
    seed_dir = "" if base_seed else f"_seed{seed}"
    hess = {"hessian": HESSIAN[args.hessian_loss]}
    runs = {"acc_mp_3": {"avg_bits": 3.0, **hess}, "acc_uniform_3": {"bits": 3},
            "acc_mp_2_5": {"avg_bits": 2.5, **hess}}
    rec = {"steps": args.steps, "lr": args.lr, "batch_size": int(cfg.budget.batch_size), "hardness": 1.0,
           "temperature": 2.0, "embedding_bits": args.embedding_bits, "hessian_loss": args.hessian_loss}
    dirs = {k: WORK / f"qat{sfx}{seed_dir}" / k for k in runs}
    # uniform 3 has no Hessian: the task-loss run's model of the same seed (steps and data) is every loss's control
    dirs["acc_uniform_3"] = WORK / f"qat{seed_dir}" / "acc_uniform_3"
    for key, kw in runs.items():
        out = dirs[key]
        if (out / "preds.npy").is_file() and (_has(f"{key_root}.{key}") or key == "acc_uniform_3"):
            continue
        t0 = time.perf_counter()
        m, r = _quantize(recovery={"steps": args.steps, "lr": args.lr}, embedding_bits=args.embedding_bits,
                         seed=seed, **kw)
        s = _scored(m)
        compresslab.save(m, out, tokenizer=state.tokenizer, formats=["packed_nbits"])
        np.save(out / "preds.npy", s.predictions)
        from compresslab.data.metrics import agreement

        _store(f"{key_root}.{key}", s.metrics["score"])
        _store(f"{key_root}_detail.{key}" if base_seed else f"{key_root}.detail.{key}", {"seed": seed,"acc": s.metrics["score"],
                                          "agreement": agreement(s.predictions, teacher_preds),
                                          "avg_bits": r.metrics["avg_bits"],
                                          "bits_per_layer": r.metrics["bits_per_layer"],
                                          "wall_s": round(time.perf_counter() - t0, 1), "checkpoint": str(out),
                                          "train_s": r.metrics["qat"].get("wall_s")})
    p = {k: np.load(dirs[k] / "preds.npy") for k in runs}
    _store(f"{key_root}.acc_uniform_3", float(np.mean(p["acc_uniform_3"] == labels)))
    _store(f"{key_root}.mcnemar_p_mp3_vs_uniform3",
           mcnemar_pvalue(p["acc_mp_3"] == labels, p["acc_uniform_3"] == labels))
    if base_seed:
        _store(f"qat{sfx}_budget", {**rec, "preset": "bench teacher; QAT budget named here (steps x batch)",
                                    "seeds": [seed], "uniform_3_from": str(dirs["acc_uniform_3"])})
    _seed_summary(sfx, int(cfg.seed), labels)


def _seed_summary(sfx: str, base_seed: int, labels: np.ndarray) -> None:
    """qat{sfx}_seed_summary: per arm the mean and sample std of dev accuracy over every seed run so far (the
    config's seed from the issue's keys, others from qat{sfx}_seeds), per-seed McNemar MP 3 vs uniform 3, and a
    pooled McNemar over all seeds' paired dev predictions (each seed's examples counted once per seed)."""
    from compresslab.data.metrics import mcnemar_pvalue

    seeds = {base_seed: WORK / f"qat{sfx}", **{int(k): WORK / f"qat{sfx}_seed{k}"
                                              for k in (_load().get(f"qat{sfx}_seeds") or {})}}
    arms = ("acc_mp_3", "acc_uniform_3", "acc_mp_2_5")
    accs: dict[str, list[float]] = {a: [] for a in arms}
    correct: dict[str, list[np.ndarray]] = {a: [] for a in arms}
    done = []
    for seed, root in sorted(seeds.items()):
        uni = (WORK / ("qat" if seed == base_seed else f"qat_seed{seed}")) / "acc_uniform_3"
        files = {a: (uni if a == "acc_uniform_3" else root / a) / "preds.npy" for a in arms}
        if not all(f.is_file() for f in files.values()):
            continue
        done.append(seed)
        for a, f in files.items():
            ok = np.load(f) == labels
            correct[a].append(ok)
            accs[a].append(float(ok.mean()))
    if len(done) < 2:
        return
    out: dict[str, Any] = {"seeds": done}
    for a in arms:
        out[a] = {"per_seed": accs[a], "mean": float(np.mean(accs[a])), "std": float(np.std(accs[a], ddof=1))}
    out["mcnemar_p_mp3_vs_uniform3_per_seed"] = [mcnemar_pvalue(m, u) for m, u in
                                                 zip(correct["acc_mp_3"], correct["acc_uniform_3"])]
    out["mcnemar_p_mp3_vs_uniform3_pooled"] = mcnemar_pvalue(np.concatenate(correct["acc_mp_3"]),
                                                             np.concatenate(correct["acc_uniform_3"]))
    _store(f"qat{sfx}_seed_summary", out)


def _loss_suffix(args) -> str:
    """Result keys of a non-default Hessian loss get a suffix ("acc_mp_teacher_kl"): the issue's keys keep the
    default's figures."""
    return "" if args.hessian_loss == "task" else f"_{args.hessian_loss}"


# ---------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["hessian", "ptq", "qat", "deploy", "baselines", "guided"])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--eigen-iters", type=int, default=20)
    ap.add_argument("--group-bits", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--embedding-bits", type=int, default=8, help="QAT runs: word embeddings too (Q-BERT: 8)")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--hessian-loss", choices=sorted(HESSIAN), default="task",
                    help="ptq/qat: the sensitivity (hawq hessian.loss / hessian.estimator); all but task get their "
                         "own result keys")
    ap.add_argument("--seed", type=int, default=None,
                    help="qat: the run seed (Hessian batches and probes, QAT data order); default the config's, "
                         "whose figures are the issue's keys; others go under qat_seeds (3-seed study)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's run.threads)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.threads:
        import torch

        _teacher()
        torch.set_num_threads(args.threads)  # a shared machine: fewer than the config's cores
    {"hessian": hessian, "ptq": ptq, "qat": qat, "deploy": deploy, "baselines": baselines,
     "guided": guided}[args.what](args)
    from compresslab.bench.env import hardware_fingerprint

    hw = hardware_fingerprint()
    # items are measured by different commands, sessions and machines: each command's last run keeps its own
    # machine and commit (meta.hardware is only the latest run's)
    by_cmd = dict((_load().get("meta") or {}).get("runs_by_command") or {})
    cpu = hw.get("cpu") or {}
    by_cmd[args.what if args.what != "qat" else f"qat{_loss_suffix(args)}"] = {
        "git_sha": git_sha(), "date": time.strftime("%Y-%m-%d"), "cpu": cpu.get("model"),
        "isa": sorted(k for k, v in (cpu.get("isa") or {}).items() if v)}
    _store("meta", {"git_sha": git_sha(), "versions": library_versions(), "split": "SST-2 dev (872)",
                    "teacher": "finetune preset bench (cached)", "hardware": hw, "block_size": BLOCK,
                    "runs_by_command": by_cmd,
                    "command": "python benchmarks/hessian_mp.py hessian|ptq|qat|deploy|baselines"})
    print(json.dumps(_load(), indent=1, default=str)[:3000])


def _dev_batches(n: int | None = None, batch_size: int = 32) -> list[dict]:
    from compresslab.data.loaders import make_loader

    cfg, state, _ = _teacher()
    ex = list(state.task.dev if n is None else state.task.dev[:n])
    return [{k: v for k, v in b.items() if k != "labels"}
            for b in make_loader(ex, state.tokenizer, batch_size, int(cfg.task.max_length), kind=state.task.spec.kind)]


def _onnx_scored(path: Path) -> Any:
    from compresslab.eval.evaluate import onnx_forward, predict
    from compresslab.eval.onnx_runner import OnnxRunner

    cfg, state, _ = _teacher()
    return predict(onnx_forward(OnnxRunner(path, threads=2)), state.task.spec, state.task.dev, state.tokenizer,
                   max_length=int(cfg.task.max_length))


def deploy(args) -> None:
    """The QAT'd MP-3 checkpoint -> ONNX (MatMulNBits at accuracy_level 0 and 4): parity, scores, sizes, latency."""
    import torch

    import compresslab
    from compresslab.bench.latency import measure_latency
    from compresslab.bench.runners import OrtRunner
    from compresslab.checkpoint.packed import packed_sizes
    from compresslab.data.metrics import agreement
    from compresslab.export.matmul_nbits import (KERNEL_2BIT, export_quantized, probe_kernel_path, read_quant_sidecar,
                                                 to_matmul_nbits)
    from compresslab.export.onnx import export_model
    from compresslab.export.size import onnx_size_breakdown

    cfg, state, _ = _teacher()
    teacher_preds = _teacher_preds()
    src = WORK / "qat" / "acc_mp_3"
    if not src.is_dir():
        raise SystemExit(f"{src} missing: run `python benchmarks/hessian_mp.py qat` first")
    out = WORK / "deploy"
    model = compresslab.load(src, attn_implementation="eager")
    parity_batches = _dev_batches(32, 16)
    if not (out / "export" / "model_unfused.onnx").is_file():
        export_quantized(model, state.tokenizer, out / "export", parity_batches)
    if not (out / "teacher" / "model.onnx").is_file():
        export_model(state.teacher, state.tokenizer, out / "teacher", parity_batches)
    stamp = read_json(out / "export" / "config.json")["compresslab_quant"]
    params = read_quant_sidecar(out / "export")
    paths, conv = {}, {}
    for level in (0, 4):
        paths[level] = out / f"nbits_level{level}" / "model.onnx"
        conv[level] = to_matmul_nbits(out / "export" / "model_unfused.onnx", paths[level], stamp, params,
                                      accuracy_level=level)
    # parity at level 0 against the fake-quant torch model, over the whole dev split
    from compresslab.eval.onnx_runner import OnnxRunner

    runner = OnnxRunner(paths[0], threads=2)
    worst = 0.0
    with torch.no_grad():
        for b in _dev_batches():
            ref = model(**{k: v for k, v in b.items()}).logits.numpy()
            got = runner.session.run(runner.output_names[:1], runner.feeds(b))[0]
            worst = max(worst, float(np.abs(got - ref).max()))
    s0, s4 = _onnx_scored(paths[0]), _onnx_scored(paths[4])
    fp32 = onnx_size_breakdown(out / "teacher" / "model_unfused.onnx")
    dep = onnx_size_breakdown(paths[0])
    packed = packed_sizes(model)
    lin = [m for m in conv[0]["modules"].values() if m["op"] == "MatMulNBits"]
    n_lin = sum(m["numel"] for m in lin)
    mp3 = {"avg_bits": sum(m["numel"] * m["bits"] for m in lin) / n_lin,
           "avg_deployed_bits": sum(m["numel"] * m["deployed_bits"] for m in lin) / n_lin,
           "avg_bits_scope": "the 36 encoder Linears (the 8-bit word embeddings are outside the budget)",
           "onnx_acc": s0.metrics["score"], "onnx_agreement": agreement(s0.predictions, teacher_preds),
           "onnx_parity_max_abs_level0": worst, "agreement_level4": agreement(s4.predictions, teacher_preds),
           "acc_level4": s4.metrics["score"],
           "compression_encoder": fp32["encoder"] / dep["encoder"], "compression_total": fp32["file"] / dep["file"],
           "compression_packed_encoder": packed["ratio"]["encoder"],
           "size_bytes": {"fp32": fp32, "deployed": dep, "packed": packed},
           "kernel_paths": {f"bits{b}_block{BLOCK}_level{lv}": probe_kernel_path(b, BLOCK, lv)
                            for b in (2, 4, 8) for lv in (0, 4)},
           "kernel_2bit": KERNEL_2BIT,
           "files": {str(k): str(v) for k, v in paths.items()},
           "note": "deployed graph is the unfused export (ORT's attention fuser does not recognise MatMulNBits); "
                   "the ort_fp32 denominator is the fused dense teacher"}
    if not args.no_timing:
        load0 = os.getloadavg()
        runners = {"ort_fp32": OrtRunner(out / "teacher" / "model.onnx", 2),
                   "ort_fp32_unfused": OrtRunner(out / "teacher" / "model_unfused.onnx", 2),
                   "mp3_level0": OrtRunner(paths[0], 2), "mp3_level4": OrtRunner(paths[4], 2)}
        lat = measure_latency(runners, [(32, 128), (1, 128)], warmup=3, runs=args.runs,
                              vocab_size=state.tokenizer.vocab_size)
        mp3["latency_ms"] = {n: {sh: v["p50_ms"] for sh, v in d.items()} for n, d in lat["results"].items()}
        mp3["latency_p90_ms"] = {n: {sh: v["p90_ms"] for sh, v in d.items()} for n, d in lat["results"].items()}
        mp3["latency_load"] = {"before": load0, "after": os.getloadavg()}
    _store("mp_3", mp3)


def baselines(args) -> None:
    """ORT's own MatMulNBitsQuantizer (RTN) at 4 bits, and NNCF compress_weights 4/8 on OpenVINO."""
    from compresslab.data.metrics import agreement
    from compresslab.export.onnx import export_model

    _, state, _ = _teacher()
    teacher_preds = _teacher_preds()
    out = WORK / "baselines"
    plain = WORK / "deploy" / "teacher" / "model_unfused.onnx"
    if not plain.is_file():
        export_model(state.teacher, state.tokenizer, WORK / "deploy" / "teacher", _dev_batches(32, 16))
    if not _has("baselines.ort_rtn_4"):
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: benchmarks.peers
        from benchmarks.peers.ort_nbits import rtn_nbits  # the one copy of the peer's call (the suite's too)

        dst = rtn_nbits(plain, out / "ort_rtn_4" / "model.onnx", bits=4, block_size=BLOCK, symmetric=False)
        s = _onnx_scored(dst)
        _store("baselines.ort_rtn_4", s.metrics["score"])
        _store("baselines_detail.ort_rtn_4", {"agreement": agreement(s.predictions, teacher_preds),
                                              "block_size": BLOCK, "symmetric": False, "algo": "RTN",
                                              "file_bytes": dst.stat().st_size,
                                              "note": "MatMulNBitsQuantizer also quantizes the classifier/pooler "
                                                      "MatMuls it finds; PTQ, no data"})
    if not _has("baselines.nncf_4_8"):
        try:
            rec = _nncf_4_8(plain, out / "nncf_4_8", teacher_preds)
            _store("baselines.nncf_4_8", rec["acc"])
            _store("baselines_detail.nncf_4_8", rec)
        except Exception as e:  # a peer that fails gets its exact error, not silence
            _store("baselines.nncf_4_8", None)
            _store("baselines_detail.nncf_4_8", {"error": f"{type(e).__name__}: {e}"})


def _nncf_4_8(plain: Path, out: Path, teacher_preds: np.ndarray) -> dict[str, Any]:
    """NNCF compress_weights, INT4_ASYM group 64 with the rest INT8_ASYM, its Hessian-input-activation
    sensitivity on 128 train examples, ratio 0.8 (NNCF's documented starting point), on OpenVINO."""
    import nncf
    import openvino as ov

    from compresslab.bench.openvino_runner import OpenVinoRunner
    from compresslab.data.metrics import agreement
    from compresslab.eval.evaluate import onnx_forward, predict

    cfg, state, ctx = _teacher()
    core = ov.Core()
    model = core.read_model(str(plain))
    names = [i.get_any_name() for i in model.inputs]
    feeds = [{k: v.numpy() for k, v in b.items() if k in names} for b in ctx.calibration_batches(128, batch_size=1)]
    t0 = time.perf_counter()
    cm = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, ratio=0.8, group_size=BLOCK,
                               dataset=nncf.Dataset(feeds),
                               sensitivity_metric=nncf.SensitivityMetric.HESSIAN_INPUT_ACTIVATION)
    wall = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(cm, str(out / "openvino_model.xml"))
    runner = OpenVinoRunner(out / "openvino_model.xml", 2, "f32")
    s = predict(onnx_forward(runner), state.task.spec, state.task.dev, state.tokenizer,
                max_length=int(cfg.task.max_length))
    return {"acc": s.metrics["score"], "agreement": agreement(s.predictions, teacher_preds), "ratio": 0.8,
            "group_size": BLOCK, "mode": "INT4_ASYM + INT8_ASYM", "sensitivity": "HESSIAN_INPUT_ACTIVATION",
            "calibration_examples": 128, "compress_s": round(wall, 1), "nncf": nncf.__version__,
            "openvino": ov.__version__}


def guided(args) -> None:
    """Copy the issue's keys from results/guided_int8.json (benchmarks/guided_int8.py measures them)."""
    src = RESULTS.parent / "guided_int8.json"
    if not src.is_file():
        raise SystemExit(f"{src} missing: run `python benchmarks/guided_int8.py` on a quiet machine first")
    g = read_json(src)
    _RESULTS.note_run("guided_int8.json", g)  # copied figures keep the load they were timed under
    keys = ("agreement", "acc", "speedup_b32_vs_ort_fp32", "speedup_vs_all_int8", "fp32_matmuls", "sensitivity")
    _store("guided_int8", {**{k: g["guided_int8"].get(k) for k in keys}, "source": "results/guided_int8.json",
                           "all_int8": {k: g["all_int8"].get(k) for k in keys if k in g["all_int8"]}})


if __name__ == "__main__":
    main()
