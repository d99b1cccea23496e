"""GPU latency of the compressed torch models against the dense model, in one process (issue 14, "GPU").

    python3 -m benchmarks.gpu_bench --out $OUT/gpu.json        # on a GPU machine (benchmarks/gpu.sh)
    python -m benchmarks.gpu_bench --rehearse --out /tmp/g.json  # CPU rehearsal: tiny shapes, few rounds

Models come from ``benchmarks/gpu_models/*.json`` (config.json + compresslab's structure stamp)
with random weights (:mod:`benchmarks.gpu_build`); each is run in several precisions: fp32 (TF32
off: the denominator is ``dense_fp32``), TF32, bf16 autocast, fp16 weights, int8 on
``torch._int_mm`` (dynamic per-token activations, per-channel weights: the GEMM torch runs on CUDA)
and ``torch.ao`` dynamic int8 (CPU kernels only: on CUDA its exact error is recorded, not hidden).
All runners of a shape are timed interleaved in one call (:mod:`benchmarks.gpu_timing`), eager mode.

Writes ``{"card", "device", "rehearsal", "models": {name: {"b1_ms", "b32_ms", "b128_ms",
"speedup_b32_vs_dense_fp32", "precision", ...}}, "meta"}``. A CPU run may not write
``benchmarks/results/gpu.json``: results come from a GPU only. Imports torch, transformers and the
standard library only (no compresslab, Hydra, ONNX Runtime or OpenVINO: the GPU image lacks them); an error
is written by compresslab/failure.py's ``error_text``, that file (standard library only) loaded alone.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from benchmarks.gpu_build import SPEC_DIR, ao_dynamic_int8, build_model, count_params, int8_intmm, load_spec, \
    structure_of
from benchmarks.gpu_timing import Runner, summarize, time_interleaved

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "benchmarks" / "results" / "gpu.json"
DENOMINATOR = "dense_fp32"
PRECISIONS = {  # variant -> what the figure's arithmetic is (recorded with every figure)
    "fp32": "fp32 weights and matmuls (TF32 off)",
    "tf32": "fp32 weights, TF32 matmuls (torch.backends.cuda.matmul.fp32_precision='tf32'); CUDA only",
    "bf16_autocast": "fp32 weights, torch.autocast(bfloat16)",
    "fp16": "fp16 weights and activations (model.half())",
    "int8_intmm": "encoder Linears int8 x int8 -> int32 on torch._int_mm (dynamic per-token activation scales, "
                  "per-channel weight scales); attention, LayerNorm, pooler, classifier fp32",
    "int8_ao_dynamic": "torch.ao.quantization.quantize_dynamic qint8, every nn.Linear (fbgemm/onednn CPU kernels)",
}
# the guided int8 selection on SST-2 chose all-int8 (benchmarks/results/guided_int8.json: fp32_matmuls = []),
# so int8 on every encoder Linear is the guided model's layout here
PLAN = {
    "dense": ["fp32", "tf32", "bf16_autocast", "fp16", "int8_intmm", "int8_ao_dynamic"],
    "ziplm_2x": ["fp32", "tf32", "bf16_autocast", "fp16", "int8_intmm"],
    "ziplm_4x": ["fp32", "tf32", "bf16_autocast", "fp16", "int8_intmm"],
}
FP32_FAMILY = ("fp32", "tf32", "bf16_autocast")  # one fp32 copy on the device serves these
DEFAULT_SHAPES = "1x128,32x128,128x128"
REHEARSAL = {"shapes": "1x32,2x32", "warmup": 1, "rounds": 3, "inner": 1}  # 32 rows: torch._int_mm needs > 16
GPU_DEFAULTS = {"warmup": 10, "rounds": 50, "inner": 5}


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"1x128,32x128"`` -> ``[(1, 128), (32, 128)]``; raises ValueError on anything else."""
    shapes = []
    for part in text.split(","):
        try:
            b, s = (int(v) for v in part.strip().lower().split("x"))
        except ValueError:
            raise ValueError(f"shape {part!r} is not BATCHxSEQ (e.g. 32x128)") from None
        if b < 1 or s < 1:
            raise ValueError(f"shape {part!r} needs positive batch and sequence length")
        shapes.append((b, s))
    return shapes


def plan_names(only: str | None) -> list[tuple[str, str]]:
    """The (spec, variant) pairs to run, filtered by ``only`` (comma-separated ``spec_variant`` names).

    Raises ValueError on an unknown name or a filter that drops the denominator.
    """
    pairs = [(m, v) for m, vs in PLAN.items() for v in vs]
    if not only:
        return pairs
    wanted = {n.strip() for n in only.split(",") if n.strip()}
    known = {f"{m}_{v}" for m, v in pairs}
    if unknown := sorted(wanted - known):
        raise ValueError(f"unknown model names {unknown}; choose from {sorted(known)}")
    if DENOMINATOR not in wanted:
        raise ValueError(f"--models must include the denominator {DENOMINATOR}")
    return [(m, v) for m, v in pairs if f"{m}_{v}" in wanted]


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls on or off for one call, restored after (the setting is process-wide).

    torch >= 2.9 has ``matmul.fp32_precision`` ("tf32" / "ieee") and may refuse a mix of it with the
    legacy ``allow_tf32`` flag, so the new one is used where it exists.
    """
    mm = torch.backends.cuda.matmul
    if hasattr(mm, "fp32_precision"):
        saved = mm.fp32_precision
        mm.fp32_precision = "tf32" if enabled else "ieee"
        try:
            yield
        finally:
            mm.fp32_precision = saved
        return
    saved_flag = mm.allow_tf32
    mm.allow_tf32 = enabled
    try:
        yield
    finally:
        mm.allow_tf32 = saved_flag


def prepare(base: nn.Module, variant: str, device: torch.device) -> nn.Module:
    """A copy of ``base`` (left untouched, on CPU) as the variant runs it, on ``device``.

    May raise: the caller records the exact error as the variant's figure.
    """
    if variant in FP32_FAMILY:
        return copy.deepcopy(base).to(device)
    if variant == "fp16":
        return copy.deepcopy(base).half().to(device)
    if variant == "int8_intmm":
        return int8_intmm(base.cpu())[0].to(device)
    if variant == "int8_ao_dynamic":
        return ao_dynamic_int8(base).to(device)
    raise ValueError(f"unknown variant {variant!r}; choose from {sorted(PRECISIONS)}")


def forward_fn(model: nn.Module, variant: str, inputs: dict[str, torch.Tensor],
               device: torch.device) -> Callable[[], torch.Tensor]:
    """One inference forward of ``model`` on ``inputs`` under the variant's precision settings."""
    def fn() -> torch.Tensor:
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if variant == "bf16_autocast"
                    else contextlib.nullcontext())
        with torch.inference_mode(), _tf32(variant == "tf32"), autocast:
            return model(**inputs).logits
    return fn


def make_inputs(batch: int, seq: int, vocab: int, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """Random token ids (seeded) with a full attention mask: (batch, seq) each."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g)  # past the special tokens
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "token_type_ids": torch.zeros_like(ids).to(device)}


def _error_text() -> Callable[..., str]:
    """compresslab.failure.error_text, loaded from its file: it imports the standard library only (the ground
    floor of tests/unit/test_layers), where importing the compresslab package would import what the GPU image
    lacks."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compresslab_failure",
                                                  Path(__file__).resolve().parents[1] / "compresslab" / "failure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.error_text


error_text = _error_text()


def _error(e: BaseException) -> str:
    lines = error_text(e).splitlines()
    return "\n".join(lines[:6])[:1500]  # torch dispatcher errors list every backend; the head says it


def machine(device: torch.device) -> dict[str, Any]:
    """Card (or CPU), driver and library versions, recorded with every result."""
    import transformers

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "transformers": transformers.__version__, "cuda_runtime": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                            "platform": platform.platform(), "cpu_threads_torch": torch.get_num_threads(),
                            "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(card=torch.cuda.get_device_name(device), memory_total_gib=round(p.total_memory / 2**30, 2),
                    capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = (smi.stdout or smi.stderr).strip()
        info["driver"] = smi.stdout.split(",")[1].strip() if smi.returncode == 0 and "," in smi.stdout else None
    except (OSError, subprocess.SubprocessError) as e:
        info["nvidia_smi"], info["driver"] = _error(e), None
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_sha() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None  # the device machine gets a copy of the tree, maybe without .git


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build, probe and time every planned model; returns the result document (not written)."""
    device = resolve_device(args.device)
    shapes = parse_shapes(args.shapes)
    pairs = plan_names(args.models)
    specs = {m: load_spec(SPEC_DIR / f"{m}.json") for m in dict.fromkeys(m for m, _ in pairs)}
    t0 = time.time()
    load_before = os.getloadavg()  # the device host's load (compresslab's LoadMeter needs hydra, absent there)
    env = machine(device)
    bases = {m: build_model(s["config"], seed=args.seed) for m, s in specs.items()}
    models: dict[str, dict[str, Any]] = {}
    prepared: dict[str, nn.Module] = {}
    shared: dict[str, nn.Module] = {}  # spec -> its fp32 model on the device
    for m, v in pairs:
        name = f"{m}_{v}"
        models[name] = {"spec": m, "variant": v, "precision": PRECISIONS[v], "error": None,
                        "params": count_params(bases[m]), "structure": structure_of(specs[m]["config"]),
                        "latency": {}}
        if v == "tf32" and device.type != "cuda":
            models[name]["error"] = "skipped: TF32 is a CUDA setting"
            continue
        try:
            if v in FP32_FAMILY:
                prepared[name] = shared.get(m) or shared.setdefault(m, prepare(bases[m], v, device))
            else:
                prepared[name] = prepare(bases[m], v, device)
        except Exception as e:  # noqa: BLE001 - any failure to place the model is the figure
            models[name]["error"] = f"prepare: {_error(e)}"
    for batch, seq in shapes:
        key = f"b{batch}xs{seq}"
        runners = []
        for name, model in prepared.items():
            spec = specs[models[name]["spec"]]["config"]
            fn = forward_fn(model, models[name]["variant"], make_inputs(batch, seq, spec["vocab_size"], device,
                                                                         args.seed), device)
            try:  # probe once: a variant torch cannot run here is recorded with its exact error
                out = fn()
                if tuple(out.shape) != (batch, spec.get("num_labels", 2)) or not bool(torch.isfinite(out).all()):
                    raise RuntimeError(f"bad output: shape {tuple(out.shape)}, finite {bool(torch.isfinite(out).all())}")
            except Exception as e:  # noqa: BLE001
                models[name]["latency"][key] = {"error": _error(e)}
                models[name]["error"] = models[name]["error"] or f"{key}: {_error(e)}"
                continue
            runners.append(Runner(name, fn))
        if DENOMINATOR not in {r.name for r in runners}:
            raise RuntimeError(f"the denominator {DENOMINATOR} did not run at {key}: {models[DENOMINATOR]['error']}")
        print(f"[gpu_bench] {key}: timing {len(runners)} runners interleaved", flush=True)
        samples = time_interleaved(runners, warmup=args.warmup, rounds=args.rounds, inner=args.inner,
                                   cuda=device.type == "cuda")
        den = summarize(samples[DENOMINATOR])["p50_ms"]
        for r in runners:
            st = summarize(samples[r.name])
            st["speedup_vs_dense_fp32"] = den / st["p50_ms"]
            st["throughput_per_s"] = batch * 1e3 / st["p50_ms"]
            if r.peak_mem_bytes is not None:
                st["peak_mem_mib"] = round(r.peak_mem_bytes / 2**20, 1)
            models[r.name]["latency"][key] = st
            if seq == 128:  # the keys are for s128 shapes
                models[r.name][f"b{batch}_ms"] = st["p50_ms"]
                models[r.name][f"b{batch}_p90_ms"] = st["p90_ms"]
                models[r.name][f"speedup_b{batch}_vs_dense_fp32"] = st["speedup_vs_dense_fp32"]
    return {
        "card": env.get("card") or f"cpu: {_cpu_name()}",
        "device": device.type,
        "rehearsal": device.type != "cuda",
        "models": models,
        "meta": {
            "git_sha": _git_sha(), "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.gpu_bench",
                                                        *sys.argv[1:]]),
            "machine": env, "denominator": DENOMINATOR, "wall_s": round(time.time() - t0, 1),
            "machine_load": {"loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
                             "how": "os.getloadavg() of the host before and after (GPU timings; the device is lent "
                                    "to this session alone)"},
            "settings": {"shapes": [f"b{b}xs{s}" for b, s in shapes], "warmup": args.warmup, "rounds": args.rounds,
                         "inner": args.inner, "seed": args.seed, "order": "interleaved, rotating each round",
                         "timer": "CUDA events around `inner` forwards after synchronize" if device.type == "cuda"
                         else "time.perf_counter", "mode": "eager, torch.inference_mode",
                         "attn_implementation": next(iter(bases.values())).config._attn_implementation,
                         "inputs": "random token ids (seeded), full attention mask"},
            "weights": "random (torch.manual_seed): latency depends on shapes only; no scores here",
            "specs": {m: {"source": s.get("source"), "sha256": hashlib.sha256(
                (SPEC_DIR / f"{m}.json").read_bytes()).hexdigest()[:16]} for m, s in specs.items()},
            "statistic": "p50 over rounds; speedup = p50(dense_fp32) / p50(model), same interleaved call",
        },
    }


def resolve_device(choice: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU raises SystemExit."""
    if choice not in ("auto", "cuda", "cpu"):
        raise SystemExit(f"--device must be auto, cuda or cpu, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def _table(doc: dict[str, Any]) -> str:
    keys = doc["meta"]["settings"]["shapes"]
    rows = [f"card: {doc['card']} ({doc['device']})" + (
        "  REHEARSAL: CPU timings, not results" if doc["rehearsal"] else ""), "model".ljust(26) + "".join(
        f"{k + ' ms':>14}{'x dense':>9}" for k in keys)]
    for name, m in doc["models"].items():
        cells = "".join(f"{m['latency'][k]['p50_ms']:>14.3f}{m['latency'][k]['speedup_vs_dense_fp32']:>9.2f}"
                        if "p50_ms" in m["latency"].get(k, {}) else f"{'-':>14}{'-':>9}" for k in keys)
        rows.append(name.ljust(26) + cells + (f"   [{m['error'].splitlines()[0][:90]}]" if m["error"] else ""))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(RESULTS_FILE), help="JSON path (default benchmarks/results/gpu.json)")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--rehearse", action="store_true",
                   help=f"CPU rehearsal: device cpu and {REHEARSAL} unless given")
    p.add_argument("--shapes", default=None, help=f"BATCHxSEQ list (default {DEFAULT_SHAPES})")
    p.add_argument("--models", default=None, help="comma-separated names to run (must include dense_fp32)")
    for k in ("warmup", "rounds", "inner"):
        p.add_argument(f"--{k}", type=int, default=None, help=f"default {GPU_DEFAULTS[k]} (rehearsal {REHEARSAL[k]})")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    base = REHEARSAL if args.rehearse else {"shapes": DEFAULT_SHAPES, **GPU_DEFAULTS}
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.rehearse:
        args.device = "cpu"
    out = Path(args.out)
    # refuse before any work: the results file holds GPU figures only
    if resolve_device(args.device).type != "cuda" and out.resolve() == RESULTS_FILE.resolve():
        raise SystemExit(f"refusing to write {RESULTS_FILE.relative_to(REPO)} from a CPU run: results come from a "
                         "GPU only; pass --out elsewhere for a rehearsal")
    parse_shapes(args.shapes), plan_names(args.models)  # bad input fails here, before models are built
    doc = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")  # written whole, then renamed: a stopped run leaves no half file
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, out)
    print(_table(doc))
    print(f"[gpu_bench] wrote {out} ({doc['meta']['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
