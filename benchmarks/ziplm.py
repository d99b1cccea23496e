"""ZipLM figures on the cached `bench` teacher, SST-2 dev: ZipLM vs structured L1 vs layer drop at
measured speedups 1.5/2/3/4x over ``ort_fp32``, plus the ziplm_int8 pipeline. Resumable: every
finished item is stored in benchmarks/results/ziplm.json (models and exports under
/tmp/ziplm-bench, each tagged with what it was made from) and skipped on rerun.

    python benchmarks/ziplm.py [--targets 1.5 2 3 4] [--recovery 0] [--calibration 512] [--runs 30] [--skip-int8]

Order: teacher (finetune pass, cache) and its dev score -> dense export (``ort_fp32``) -> latency
table (built first, so ``family_oneshot_s`` times ZipLM with the table cached) -> ZipLM.apply once
for the whole family -> structured_l1 family (same settings) -> layer drop to 1..L-1 layers ->
KD recovery of every compared model when ``--recovery`` > 0 (same steps for all) -> dev scores of
the torch models -> export + fuse each (parity-checked against that torch model) -> ONE interleaved
measure_latency call per shape (b32xs128, b1xs128) with ort_fp32, torch_fp32 and every candidate
-> layer drop depth closest to each target -> ziplm_int8 pipeline -> JSON.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from compresslab.cli import setup_process
from compresslab.config import compose
from compresslab.manifest import git_sha, library_versions, read_json

from _ziplm_store import (RESULTS, ROOT, _fresh, _load, _note_run, _put, _tag, _write_all,  # sibling module
                          model_sha, tk)

WORK = Path("/tmp/ziplm-bench")
SHAPES = ((32, 128), (1, 128))  # b32 first: the shape the targets are defined at
WARMUP, B1_MIN_TIME_S = 5, 10.0  # b1 calls are fast: keep adding rounds until 10 s (cap 10 x runs)
ISSUE_KEYS = ("teacher_acc", "targets", "ziplm_int8_speedup_vs_ort_fp32_b32", "ziplm_int8_acc",
              "family_oneshot_s", "latency_table_s", "budget", "meta")


def say(msg: str) -> None:
    print(f"[ziplm-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    """The teacher, its task and the contexts; every stage below is a method that skips itself
    when its outputs exist and were made from the same inputs."""

    def __init__(self, args: argparse.Namespace) -> None:
        from hydra.utils import instantiate

        from compresslab.bench.env import resolve_threads
        from compresslab.passes.finetune import Finetune
        from compresslab.passes.ziplm import ZipLM
        from compresslab.pipeline import teacher_of

        self.args, self.R, self.C = args, int(args.recovery), int(args.calibration)
        self.cfg = compose(["+pipeline=ziplm_2x", "budget=bench"])
        self.torch_threads = setup_process(self.cfg.run.get("threads"), int(self.cfg.seed))
        t = teacher_of(self.cfg, WORK / "teacher")  # the cached bench teacher (trains it once if missing)
        ft: Finetune = instantiate(self.cfg.pipeline.passes.finetune)
        self.record, self.teacher, self.tok = t, t.model, t.tokenizer
        self.finetune = {"preset": ft.preset, "cache_key": ft.cache_key(self.ctx("teacher"))}
        # one ZipLM config; structured_l1 and the recoveries copy its settings (same treatment)
        self.zp: ZipLM = instantiate(self.cfg.pipeline.passes.ziplm, num_calibration=self.C,
                                    _convert_="all")
        self.recovery = self.zp.recovery  # the YAML's KD recipe; the families are pruned without it
        self.zp = replace(self.zp, recovery=replace(self.recovery, steps=0))
        self.threads = resolve_threads(self.zp.threads)  # ORT intra-op threads, = physical cores
        self.vocab = int(self.teacher.config.vocab_size)
        self.max_length = int(self.cfg.task.max_length)
        self.spec, self.dev = t.task.spec, t.task.dev

    def ctx(self, name: str):
        return self.record.context(WORK / name, WORK / name / "step")

    # ------------------------------------------------------------------ teacher, table
    def teacher_dir(self) -> Path:
        from compresslab.checkpoint import save

        d, prov = WORK / "models" / "teacher", {"finetune_key": self.finetune["cache_key"]}
        if not _fresh(d, prov):
            shutil.rmtree(d, ignore_errors=True)
            save(self.teacher, d, self.tok)
            _tag(d, prov)
        return d

    def latency_table(self, dense_onnx: Path) -> Any:
        from compresslab.bench.latency_table import build_latency_table

        say("latency table (built before ZipLM runs, so the family timing has it cached)")
        t0 = time.perf_counter()
        table, info = build_latency_table(self.teacher, dense_onnx, self.zp.table_settings(),
                                          cache_dir=Path(self.cfg.paths.cache_dir),
                                          progress=self.ctx("table").progress)  # the run's tqdm reporter
        if "latency_table_s" not in _load() or not info.get("cached"):
            _put("latency_table_s", info.get("measure_s"))
            _put("latency_table", {"measured_by_this_run": not info.get("cached"), "cache_file": info.get("cache_file"),
                                   "wall_s_this_run": round(time.perf_counter() - t0, 2),
                                   "settings": {k: v for k, v in vars(self.zp.table_settings()).items()},
                                   "note": "latency_table_s is the table's measuring time (from its cache entry "
                                           "when it was measured earlier)"})
        return table

    # ------------------------------------------------------------------ model families
    def family(self, method: str, targets: list[float]) -> dict[float, Path]:
        """ZipLM or structured_l1 to every target in ONE apply (one-shot, no recovery)."""
        from compresslab.pruning.speedup import SpeedupSettings
        from compresslab.passes.structured_l1 import StructuredL1

        shared = {f.name: getattr(self.zp, f.name) for f in fields(SpeedupSettings)}
        shared.update(speedup=max(targets), family=list(targets))  # self.zp.recovery: steps=0
        p = self.zp.__class__(**shared, mode=self.zp.mode, damp=self.zp.damp) if method == "ziplm" else StructuredL1(**shared)
        prov = {"teacher": self.finetune["cache_key"], "method": method, "targets": list(targets),
                "num_calibration": self.C, "pass": {k: str(v) for k, v in vars(p).items()}}
        dirs = {t: WORK / "models" / "pruned" / f"{method}_{tk(t)}x" for t in targets}
        key = f"{method}_family"
        if _load().get(key, {}).get("provenance") == prov and all(_fresh(d, prov) for d in dirs.values()):
            say(f"{method} family: done earlier, reusing {WORK / 'models' / 'pruned'}")
            return dirs
        run = WORK / f"{method}_run"
        shutil.rmtree(run, ignore_errors=True)
        model = copy.deepcopy(self.teacher)
        for w in model.parameters():
            w.requires_grad_(True)
        say(f"{method}: one-shot family {targets} (num_calibration={self.C}, recovery 0)")
        t0 = time.perf_counter()
        res = p.apply(model, self.ctx(f"{method}_run"))
        wall = time.perf_counter() - t0
        say(f"{method}: family done in {wall:.1f} s")
        for t, d in dirs.items():
            shutil.rmtree(d, ignore_errors=True)
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(run / "family" / "step" / f"{tk(t)}x"), d)
            _tag(d, prov)
        m = res.metrics
        if not (m.get("latency_table") or {}).get("cached"):
            say(f"WARNING: {method} measured the latency table itself: its wall time includes it")
        _put(key, {"provenance": prov, "wall_s": round(wall, 2), "latency_table": m.get("latency_table"),
                   "max_speedup": m.get("max_speedup"), "dense_ms_predicted": m.get("dense_ms_predicted"),
                   "members": {s: {k: v for k, v in r.items() if k != "saved"} for s, r in m.get("family", {}).items()}})
        if method == "ziplm":
            _put("family_oneshot_s", round(wall, 2))
        shutil.rmtree(run, ignore_errors=True)
        return dirs

    def layer_drops(self) -> dict[int, Path]:
        from compresslab.models.adapters import get_adapter
        from compresslab.checkpoint import save
        from compresslab.passes.layer_drop import LayerDrop, evenly_spaced

        out, total = {}, get_adapter(self.teacher).num_layers
        for k in range(1, total):
            d = WORK / "models" / "pruned" / f"layer_drop_{k}L"
            prov = {"teacher": self.finetune["cache_key"], "method": "layer_drop", "num_layers": k}
            if not _fresh(d, prov):
                m = copy.deepcopy(self.teacher)
                LayerDrop(num_layers=k).apply(m, self.ctx("layer_drop_run"))
                shutil.rmtree(d, ignore_errors=True)
                save(m, d, self.tok)
                _tag(d, prov)
            _put("layer_drop", str(k), {"kept_layers": evenly_spaced(total, k)})
            out[k] = d
        return out

    def recovered(self, name: str, src: Path) -> Path:
        """``src`` after ``--recovery`` KD steps (the same recipe for every method); ``src`` if 0."""
        from compresslab.checkpoint import load, save
        from compresslab.pruning.speedup import recover

        if self.R == 0:
            return src
        rp = replace(self.recovery, steps=self.R)
        d = WORK / "models" / f"r{self.R}" / name
        prov = {"source": model_sha(src), "recovery_steps": self.R, "lr": rp.lr, "hardness": rp.hardness,
                "temperature": rp.temperature, "hidden_weight": rp.hidden_weight}
        if not _fresh(d, prov):
            say(f"recovery: {name}, {self.R} KD steps")
            m = load(src)
            t0 = time.perf_counter()
            rec = recover(m, self.ctx("recovery_run"), rp, self.teacher, f"{name} recovery")
            shutil.rmtree(d, ignore_errors=True)
            save(m, d, self.tok)
            _tag(d, prov)
            _put("recovery", name, {"wall_s": round(time.perf_counter() - t0, 2),
                                    **{k: v for k, v in rec.items() if k != "losses"}})
        return d

    # ------------------------------------------------------------------ score, export, time
    def score(self, name: str, d: Path) -> dict:
        import numpy as np

        from compresslab.data.metrics import mcnemar_pvalue
        from compresslab.eval.evaluate import predict, torch_forward
        from compresslab.checkpoint import load
        from compresslab.pruning.speedup import structure_of

        got = _load().get("scores", {}).get(name)
        if got and got.get("model_sha") == model_sha(d):
            return got
        m = self.teacher if name == "teacher" else load(d)
        sc = predict(torch_forward(m), self.spec, self.dev, self.tok, max_length=self.max_length)
        preds = np.asarray(sc.predictions).astype(int)
        out = {"model_sha": model_sha(d), "acc": sc.metrics["score"], "metrics": sc.metrics,
               "structure": structure_of(m), "params": sum(p.numel() for p in m.parameters()),
               "preds": "".join(map(str, preds.tolist()))}
        if name != "teacher":
            ref = self._preds("teacher")
            out["agreement"] = float(np.mean(preds == ref))
            out["mcnemar_p_vs_teacher"] = mcnemar_pvalue(preds == sc.labels, ref == sc.labels)
        _put("scores", name, out)
        say(f"score {name}: {out['acc']:.4f}")
        return out

    def _preds(self, name: str):
        import numpy as np

        return np.array([int(c) for c in _load()["scores"][name]["preds"]])

    def export(self, d: Path) -> Path:
        """The fused, parity-checked ONNX of the model in ``d`` (reused while ``d`` is unchanged)."""
        from compresslab.export import export_model
        from compresslab.checkpoint import load
        from compresslab.pruning.speedup import sample_batches

        out = WORK / "onnx" / d.relative_to(WORK / "models")
        prov = {"model_sha": model_sha(d)}
        if not (_fresh(out, prov) and (out / "model.onnx").is_file()):
            shutil.rmtree(out, ignore_errors=True)
            if not hasattr(self, "_samples"):
                self._samples = sample_batches(self.ctx("export"), 16)
            res = export_model(load(d), self.tok, out, self._samples, threads=self.threads, keep_unfused=False)
            _tag(out, prov)
            _put("exports", str(d.relative_to(WORK / "models")),
                 {"max_abs_diff": res.parity.get("max_abs_diff"), "fused_attention_nodes": res.fused_attention_nodes,
                  "exporter": res.exporter})
        return out / "model.onnx"

    def measure(self, key: str, onnx: dict[str, Path], shas: dict[str, str], shapes=SHAPES) -> dict[str, dict[str, float]]:
        """ONE interleaved measure_latency call per shape over every runner; speedups vs ort_fp32."""
        from compresslab.bench import OrtRunner, TorchRunner, measure_latency, speedups
        from compresslab.bench.latency import shape_key

        shas = {**shas, "torch_fp32": shas["ort_fp32"]}
        rec = _load().get(key)
        if not rec or rec.get("models") != shas:
            rec = {"models": shas, "threads": self.threads, "latency": {}, "settings": {}}
        for b, s in shapes:
            sk = shape_key(b, s)
            if sk in rec["latency"]:
                say(f"{key} {sk}: measured earlier, reusing")
                continue
            runners: dict[str, Any] = {n: OrtRunner(p, self.threads, vocab_size=self.vocab) for n, p in onnx.items()}
            runners["torch_fp32"] = TorchRunner(self.teacher, self.threads)
            say(f"{key} {sk}: {len(runners)} runners interleaved, {self.threads} threads, runs>={self.args.runs}")
            t0 = time.perf_counter()
            lat = measure_latency(runners, [(b, s)], warmup=WARMUP, runs=int(self.args.runs),
                                  min_time_s=B1_MIN_TIME_S if b == 1 else 0.0, seed=0, vocab_size=self.vocab)
            rec["latency"][sk] = {n: r[sk] for n, r in lat["results"].items()}
            rec["settings"][sk] = {**lat["settings"], "wall_s": round(time.perf_counter() - t0, 2)}
            rec["runners"] = lat["runners"]
            del runners
            _put(key, rec)
        table = {n: {sk: rec["latency"][sk][n] for sk in rec["latency"]} for n in shas}
        sp = speedups(table, "ort_fp32")
        _put(key, "speedups_vs_ort_fp32", sp)
        return sp

    # ------------------------------------------------------------------ int8 pipeline
    def int8(self) -> None:
        from compresslab.pipeline import run

        ov = ["+pipeline=ziplm_int8", "budget=bench", f"budget.recovery_steps={self.R}",
              f"pipeline.passes.ziplm.num_calibration={self.C}", "bench.load_probe=false"]
        if _load().get("ziplm_int8_run", {}).get("overrides") == ov:
            say("ziplm_int8 pipeline: done earlier, reusing")
            return
        say(f"ziplm_int8 pipeline: {' '.join(ov)}")
        cfg = compose(ov)
        setup_process(cfg.run.get("threads"), int(cfg.seed))
        t0 = time.perf_counter()
        run_dir = run(cfg)
        m = read_json(run_dir / "manifest.json")
        _note_run("ziplm_int8", m)  # its bench stage timed the speedup copied below
        dep, b = m["eval"]["models"]["deployed"], m["bench"]
        zstep = next(s for s in m["steps"] if s["name"] == "ziplm")["result"]["metrics"]
        _put("ziplm_int8_speedup_vs_ort_fp32_b32", b["speedups"]["deployed"]["b32xs128"])
        _put("ziplm_int8_acc", dep["score"])
        _put("ziplm_int8_run", {
            "overrides": ov, "run_dir": str(run_dir), "config_hash": m.get("config_hash"),
            "wall_s_this_call": round(time.perf_counter() - t0, 2), "deployed": dep,
            "torch_final": m["eval"]["models"].get("torch_final"), "speedups": b["speedups"],
            "torch_speedups": b.get("torch_speedups"), "threads": b.get("threads"), "size": m.get("size"),
            "ziplm_step": {k: zstep.get(k) for k in ("predicted_speedup", "measured_speedup_b32", "met_target",
                                                      "recovery", "params")},
            "note": "its own process and bench stage (interleaved ort_fp32 vs deployed int8 file), not the "
                    "joint call of the fp32 candidates"})


def run_all(args: argparse.Namespace) -> None:
    import numpy as np

    from compresslab.bench.env import hardware_fingerprint
    from compresslab.models.adapters import get_adapter
    from compresslab.pruning.speedup import smallest_head_count

    config = {"recovery_steps": int(args.recovery), "num_calibration": int(args.calibration)}
    old = _load().get("config")
    if old and old != config:
        raise SystemExit(f"{RESULTS} holds results made with {old}, not {config}: move it away first "
                         "(items are only reused within one configuration)")
    _put("config", config)
    WORK.mkdir(parents=True, exist_ok=True)
    B = Bench(args)
    say(f"teacher: finetune preset {B.finetune['preset']} (key {B.finetune['cache_key']}), {B.threads} ORT threads")

    teacher_dir = B.teacher_dir()
    _put("teacher_acc", B.score("teacher", teacher_dir)["acc"])
    dense_onnx = B.export(teacher_dir)  # ort_fp32: the dense teacher, exported and fused
    table = B.latency_table(dense_onnx)
    s = get_adapter(B.teacher).structure()
    full = {"attention": [x["heads"] for x in s], "ffn": [x["ffn"] for x in s]}
    # the fastest structure both passes may choose: neither removes every head, and structured_l1's layers stay
    # uniform, so one head per layer and no FFN neuron (StructuredL1.fastest_structure; ZipLM's floor is lower)
    floor = {"attention": [smallest_head_count(table, min(full["attention"]))] * len(s), "ffn": [0] * len(s)}
    fastest = table.predict(floor)
    max_sp = table.predict(full) / fastest if fastest > 0 else float("inf")
    targets = sorted(float(t) for t in args.targets)
    reach = [t for t in targets if t < max_sp]
    for t in sorted(set(targets) - set(reach)):
        say(f"target {tk(t)}x is beyond the {max_sp:.2f}x of one head per layer and no FFN neuron: skipped")
        _put("targets", tk(t), {"unreachable": True, "max_speedup": max_sp})
    _put("max_speedup_predicted", max_sp)
    if not reach:
        raise SystemExit(f"no reachable target among {targets} (at most {max_sp:.2f}x predicted)")

    pruned = {f"ziplm_{tk(t)}x": d for t, d in B.family("ziplm", reach).items()}
    pruned |= {f"l1_{tk(t)}x": d for t, d in B.family("structured_l1", reach).items()}
    drops = B.layer_drops()
    final = {n: B.recovered(n, d) for n, d in pruned.items()}

    # layer drop: with recovery the depths are picked on the pruned exports first (selection
    # call), then the picked ones are recovered; without, every depth is in the joint call
    ld_names = {k: f"layer_drop_{k}L" for k in drops}
    if B.R:
        sel = B.measure("layer_drop_selection", {"ort_fp32": dense_onnx, **{ld_names[k]: B.export(d) for k, d in drops.items()}},
                        {"ort_fp32": model_sha(teacher_dir), **{ld_names[k]: model_sha(d) for k, d in drops.items()}},
                        shapes=SHAPES[:1])
        picked = {t: _closest({k: sel[ld_names[k]]["b32xs128"] for k in drops}, t) for t in reach}
        final |= {ld_names[k]: B.recovered(ld_names[k], drops[k]) for k in set(picked.values())}
    else:
        final |= {ld_names[k]: d for k, d in drops.items()}

    for n, d in final.items():
        B.score(n, d)
    onnx = {"ort_fp32": dense_onnx, **{n: B.export(d) for n, d in final.items()}}
    sp = B.measure("speed", onnx, {"ort_fp32": model_sha(teacher_dir), **{n: model_sha(d) for n, d in final.items()}})
    if not B.R:
        picked = {t: _closest({k: sp[ld_names[k]]["b32xs128"] for k in drops}, t) for t in reach}
    _put("torch_fp32_speedup_vs_ort_fp32", sp["torch_fp32"])
    labels = np.array([e.label for e in B.dev])
    for t in reach:
        _put("targets", tk(t), _target_entry(t, picked[t], sp, ld_names, labels))

    if args.skip_int8:
        say("--skip-int8: ziplm_int8 pipeline not run")
    else:
        B.int8()

    R = B.R
    _put("budget", {
        "preset": "bench (teacher: finetune preset bench, cached; same teacher for every model)",
        "recovery_steps": R,
        "recovery": ("none: one-shot (0 optimizer steps) for ZipLM, structured_l1 and layer_drop alike" if R == 0 else
                     f"{R} KD optimizer steps for EVERY compared model separately (each ZipLM member, each "
                     "structured_l1 member, each picked layer_drop depth): batch 32, lr "
                     f"{B.recovery.lr}, hardness {B.recovery.hardness}, temperature {B.recovery.temperature}, "
                     f"hidden_weight {B.recovery.hidden_weight}, seed {B.cfg.seed}, same data order"),
        "family_oneshot_s_excludes": "recovery training (see 'recovery' wall times) and the latency table "
                                     "(latency_table_s, built before)",
        "ziplm_num_calibration": B.C, "ziplm_damp": B.zp.damp, "ziplm_mode": str(B.zp.mode.value),
        "structured_l1": "no calibration (L1 norms); same latency table, search and measured-speedup check as ZipLM",
        "layer_drop": "evenly spaced layers, top layer kept; depth whose measured b32 speedup is closest to the target",
        "ziplm_int8": None if args.skip_int8 else f"pipeline ziplm_int8, budget=bench, budget.recovery_steps={R} "
                                                  f"(its 2x model gets {R} KD steps), num_calibration={B.C}",
        "batch_size": int(B.cfg.budget.batch_size), "seeds": [int(B.cfg.seed)],
        "note": "one seed; SST-2 dev SE ~1.1 pt: see agreement and McNemar p-values per target"})
    _put("meta", {
        "git_sha": git_sha(), "git_dirty": _dirty(), "versions": library_versions(),
        "hardware": hardware_fingerprint(B.threads), "threads": {"ort_intra_op": B.threads, "torch": B.torch_threads},
        "command": "python benchmarks/ziplm.py " + " ".join(sys.argv[1:]), "split": f"SST-2 dev ({len(B.dev)})",
        "teacher": B.finetune, "work_dir": str(WORK),
        "measurement": {"shapes": [f"b{b}xs{s}" for b, s in SHAPES], "warmup": WARMUP, "runs": int(args.runs),
                        "b1_min_time_s": B1_MIN_TIME_S, "statistic": "p50 ratios vs ort_fp32, one interleaved call "
                        "per shape", "accuracy": "torch model of the exported file (parity <= 1e-4 at export)"}})
    data = _load()
    _write_all({**{k: data[k] for k in ISSUE_KEYS if k in data}, **{k: v for k, v in data.items() if k not in ISSUE_KEYS}})


def _closest(speed: dict[int, float], target: float) -> int:
    """The depth whose measured speedup is closest to ``target`` (ties: keep more layers)."""
    return min(speed, key=lambda k: (abs(speed[k] - target), -k))


def _target_entry(t: float, depth: int, sp: dict, ld_names: dict[int, str], labels: Any) -> dict:
    """One target's row: ZipLM, structured_l1 and the picked layer_drop depth, all from one call."""
    import numpy as np

    from compresslab.data.metrics import mcnemar_pvalue

    data = _load()
    sc = data["scores"]
    fam = data["ziplm_family"]["members"].get(f"{tk(t)}x", {})
    l1fam = data["structured_l1_family"]["members"].get(f"{tk(t)}x", {})
    z, l, d = f"ziplm_{tk(t)}x", f"l1_{tk(t)}x", ld_names[depth]
    correct = {n: np.array([int(c) for c in sc[n]["preds"]]) == labels for n in (z, l, d)}
    return {
        "measured_speedup_b32": sp[z]["b32xs128"], "measured_speedup_b1": sp[z]["b1xs128"],
        "acc": sc[z]["acc"], "agreement": sc[z]["agreement"], "mcnemar_p_vs_teacher": sc[z]["mcnemar_p_vs_teacher"],
        "heads": sc[z]["structure"]["heads"], "ffn": sc[z]["structure"]["ffn"], "params": sc[z]["params"],
        "predicted_speedup": fam.get("predicted_speedup"), "pass_check_speedup_b32": fam.get("measured_speedup_b32"),
        "met_target": fam.get("met_target"),
        "acc_l1": sc[l]["acc"], "l1_measured_speedup_b32": sp[l]["b32xs128"], "l1_measured_speedup_b1": sp[l]["b1xs128"],
        "l1_heads": sc[l]["structure"]["heads"], "l1_ffn": sc[l]["structure"]["ffn"], "l1_agreement": sc[l]["agreement"],
        "l1_pass_check_speedup_b32": l1fam.get("measured_speedup_b32"),
        "mcnemar_p_ziplm_vs_l1": mcnemar_pvalue(correct[z], correct[l]),
        "acc_layer_drop": sc[d]["acc"], "layer_drop_num_layers": depth,
        "layer_drop_kept_layers": data.get("layer_drop", {}).get(str(depth), {}).get("kept_layers"),
        "layer_drop_measured_speedup_b32": sp[d]["b32xs128"], "layer_drop_measured_speedup_b1": sp[d]["b1xs128"],
        "layer_drop_agreement": sc[d]["agreement"],
        "mcnemar_p_ziplm_vs_layer_drop": mcnemar_pvalue(correct[z], correct[d]),
    }


def _dirty() -> bool | None:
    try:
        out = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10, cwd=ROOT)
        return bool(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=float, nargs="+", default=[1.5, 2.0, 3.0, 4.0],
                    help="measured b32xs128 speedups over ort_fp32 (default: 1.5 2 3 4)")
    ap.add_argument("--recovery", type=int, default=0,
                    help="KD recovery steps given to EVERY compared model (default 0: one-shot)")
    ap.add_argument("--calibration", type=int, default=512, help="ZipLM calibration examples (default 512)")
    ap.add_argument("--runs", type=int, default=30, help="interleaved timing rounds per shape (default 30)")
    ap.add_argument("--skip-int8", action="store_true", help="do not run the ziplm_int8 pipeline")
    args = ap.parse_args()
    if args.recovery < 0 or args.calibration < 1 or args.runs < 1 or not args.targets:
        ap.error("need --recovery >= 0, --calibration >= 1, --runs >= 1 and at least one target")
    os.chdir(ROOT)  # the config's cache and output paths are relative to the repo root
    logging.basicConfig(level=logging.WARNING)  # ORT quantization logs every tensor at INFO
    logging.getLogger("compresslab").setLevel(logging.INFO)
    t0 = time.perf_counter()
    run_all(args)
    say(f"done in {time.perf_counter() - t0:.0f} s: {RESULTS}")
    data = _load()
    print(json_summary(data))


def json_summary(data: dict) -> str:
    import json

    keep = {k: data.get(k) for k in ISSUE_KEYS if k not in ("meta",)}
    return json.dumps(keep, indent=1, default=str)[:6000]


if __name__ == "__main__":
    main()
