"""The bench stage: latency of the deployed file and the dense teacher on ORT, OpenVINO and torch, vs
``ort_fp32`` (canonical) and ``best_dense`` (the fastest dense teacher here), per MEASURE.md."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from compresslab.bench.load_probe import PROBE_SEQ  # standard library only: the probe child's own module
from compresslab.export.precision import precision_label
from compresslab.export.size import artifact_bytes
from compresslab.failure import error_text
from compresslab.manifest import RunManifest, atomic_write_json
from compresslab.pipeline.deepsparse import deepsparse
from compresslab.pipeline.settings import BenchSettings
from compresslab.pipeline.stage_files import record_stage
from compresslab.pipeline.state import RunState
from compresslab.pipeline.teacher_files import teacher_int8, teacher_onnx

log = logging.getLogger(__name__)


def _real_batches(state: RunState, batch_size: int, max_batches: int | None) -> list[dict]:
    """Dev set batches with dynamic padding: the task's real token-length distribution."""
    from compresslab.data.loaders import make_loader

    loader = make_loader(list(state.task.dev), state.tokenizer, batch_size, state.settings.max_length,
                         kind=state.task.spec.kind)
    out = []
    for i, b in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        out.append({k: v.numpy() for k, v in b.items() if k != "labels" and not k.endswith("_b")})
    return out


def bench(state: RunState, run_dir: Path, manifest: RunManifest, threads: int) -> None:
    """Time the deployed file and the dense teacher on every enabled backend, interleaved; write
    ``bench/latency.json`` with speedups vs ``ort_fp32`` (canonical) and vs ``best_dense`` (honest).

    The dense cells: ``ort_fp32``, ``openvino_<precision>``, ``torch_fp32`` and (``bench.dense_int8``) ``ort_int8``,
    the teacher's ORT dynamic int8; ``best_dense`` is the fastest of them per shape. Cells other than the deployed
    file and ``ort_fp32`` are scored here (``scores``); ``size_bytes`` holds each timed file's bytes on disk.

    The whole stage is one timing window: it waits for any training to finish (or refuses with
    MachineBusyError, see :mod:`compresslab.runlock`), and the section's ``machine_load`` records
    other processes' CPU use before and during, and ``busy`` (then a loud warning is logged).
    """
    from compresslab.bench.machine_load import timing_window

    with timing_window("bench stage") as window:
        section = _measure(state, run_dir, manifest, threads)
    section["machine_load"] = window.record()
    if section["machine_load"]["busy"]:
        section["notes"].append("MACHINE BUSY: " + "; ".join(section["machine_load"]["reasons"]) +
                                ". These timings are void; rerun the bench on a quiet machine.")
    manifest.data["bench"] = section
    atomic_write_json(run_dir / "bench" / "latency.json", section)
    record_stage(manifest, run_dir, "bench")
    manifest.save()


def _measure(state: RunState, run_dir: Path, manifest: RunManifest, threads: int) -> dict[str, Any]:
    """Every timing of the bench stage: the ``bench`` section of the manifest."""
    from compresslab.bench import (OrtRunner, TorchRunner, measure_latency, measure_real_lengths,
                                   real_length_speedups, speedups)

    b = state.settings.bench
    vocab = int(getattr(state.model.config, "vocab_size", 100))
    ir = _deployed_ir(manifest, run_dir)
    # ``deployed`` is what the deploy stage chose: the ONNX file on ORT, or the OpenVINO IR; in the
    # latter case the pipeline's ONNX file (not always the IR's source) is still timed on ORT as
    # ``deployed_onnx_ort``.
    files = {"ort_fp32": teacher_onnx(run_dir, manifest),
             "deployed_onnx_ort" if ir else "deployed": Path(state.onnx.onnx_path)}
    runners: dict[str, Any] = {name: OrtRunner(p, threads, vocab_size=vocab) for name, p in files.items()}
    ran = {name: (p, precision_label(p)) for name, p in files.items()}
    dense = ["ort_fp32"]
    notes: list[str] = []
    same_file = False  # the deployed file is ort_int8's byte for byte
    if ir is not None:
        from compresslab.bench.openvino_runner import OpenVinoRunner

        path, precision = ir
        runners["deployed"] = OpenVinoRunner(path, threads, precision, vocab_size=vocab)
        ran["deployed"] = (path, _openvino_precision(runners["deployed"]))
        notes.append(deployed_ir_note(manifest.data, path, runners["deployed"].compiled_precision, run_dir))
    skipped: dict[str, str] = {}
    if "openvino" in b.backends:
        deployed_compiled = (ir[0], runners["deployed"].compiled_precision) if ir is not None else None
        ov, reason = _openvino_runners(state, run_dir, manifest, threads, vocab, notes, deployed_ir=deployed_compiled)
        if reason:
            skipped["openvino"] = reason
            log.warning("bench: openvino skipped: %s", reason)
        for name, r in ov.items():
            runners[name] = r
            ran[name] = (r.onnx_path, _openvino_precision(r))
            if name.startswith("openvino_"):  # the teacher's cells; deployed_* / final_fp32_* are the model's
                dense.append(name)
    if "torch" in b.backends:
        runners["torch_fp32"] = TorchRunner(state.teacher_or_initial(), threads)
        ran["torch_fp32"] = (None, "fp32")
        dense.append("torch_fp32")
    if b.dense_int8:
        try:
            int8_path = teacher_int8(run_dir, manifest)
            runners["ort_int8"] = OrtRunner(int8_path, threads, vocab_size=vocab)
        except Exception as e:  # a graph ORT's quantizer cannot take: the other cells still run
            skipped["ort_int8"] = error_text(e, limit=300)
            log.warning("bench: ort_int8 (the teacher's ORT int8) skipped: %s", skipped["ort_int8"])
        else:
            ran["ort_int8"] = (int8_path, "int8")
            dense.append("ort_int8")
            # with an IR deployed, the same bytes as ort_int8 would be deployed_onnx_ort's, not the deployed file's
            note, same = _dense_int8_note(int8_path, Path(state.onnx.onnx_path), run_dir,
                                          "deployed_onnx_ort" if ir is not None else "deployed")
            notes.append(note)
            same_file = same and ir is None
    # a binary model's OpenVINO cells compile as f32 whatever was asked (openvino_runner.resolve_precision)
    notes += precision_notes(runners)
    shapes = list(b.shapes)
    log.info("bench: %s at %s, %d threads, interleaved", list(runners), shapes, threads)
    lat = measure_latency(runners, shapes, warmup=b.warmup, runs=b.runs, min_time_s=b.min_time_s,
                          seed=b.seed, vocab_size=vocab, max_runs=b.max_runs, log_as="bench")
    best = best_dense(lat["results"], dense)
    section: dict[str, Any] = {"threads": threads, "shapes": [list(s) for s in shapes], "denominator": b.denominator,
                               "backends": list(b.backends), "skipped": skipped, "dense_runners": dense,
                               "latency": lat["results"], "speedups": speedups(lat, b.denominator),
                               "best_dense": best, "speedups_best_dense": speedups_vs_best(lat["results"], best),
                               "torch_speedups": speedups(lat, "torch_fp32") if "torch_fp32" in runners else {},
                               "runners": lat.get("runners"),
                               "files": {n: _rel(p, run_dir) for n, (p, _) in ran.items()},
                               "precision": {n: prec for n, (_, prec) in ran.items()},
                               "size_bytes": {n: artifact_bytes(p) for n, (p, _) in ran.items() if p is not None},
                               "deployed_same_file_as": "ort_int8" if same_file else None, "notes": notes}
    if b.real_length:
        batches = _real_batches(state, b.real_length_batch_size, b.real_length_max_batches)
        rl = measure_real_lengths(dict(runners), batches, rounds=b.real_length_rounds, log_as="bench")
        section["real_length"] = rl.get("results", rl)
        section["real_length_speedups"] = real_length_speedups(rl, b.denominator)
        rbest = max(dense, key=lambda n: section["real_length"][n]["sentences_per_s"])
        section["real_length_best_dense"] = rbest
        section["real_length_speedups_best_dense"] = real_length_speedups(rl, rbest)
    # the deployed file and ort_fp32 are scored by the eval stage; the other cells here, on the same split
    scored = [n for n in runners if "openvino" in n or n == "ort_int8"]
    if scored and state.settings.eval.enabled:
        log.info("bench: scoring %s on %s (%d examples), with the runners just timed", ", ".join(scored),
                 state.settings.eval.split, len(state.eval_examples))
        section["scores"] = _score_cells(state, {n: runners[n] for n in scored})
        if "ort_int8" in section["scores"]:
            from compresslab.pipeline.evaluate import teacher_scored

            note = int8_drop_note(teacher_scored(state).metrics.get("score"),
                                  section["scores"]["ort_int8"].get("score"), state.settings.eval.max_drop)
            if note:
                section["notes"].append(note)
    if b.load_probe:
        # b1 x s128 (MEASURE.md), shorter only for a model with fewer positions (a tiny test model): else it fails
        seq = min(PROBE_SEQ, int(getattr(state.model.config, "max_position_embeddings", PROBE_SEQ)))
        section["load"] = load_probes(files, runners, threads, vocab, seq)
    section["gpu"] = _gpu(state, files, shapes, b, vocab)
    section["deepsparse"] = deepsparse(state, run_dir, manifest, threads)
    if any("sparse_int8" in (s.result.get("formats") or ()) for s in manifest.steps):
        section["notes"].append("ONNX Runtime runs sparse weights with dense kernels: sparsity shrinks the "
                                "compressed size, not the ORT latency.")
    return section


def load_probes(files: dict[str, Path], runners: dict[str, Any], threads: int, vocab: int,
                seq: int = PROBE_SEQ) -> dict[str, Any]:
    """Load time and peak RSS of each ORT file (``files``) and of the OpenVINO cells that ship or compare: the
    deployed IR when it is ``deployed`` and the dense teacher's ``openvino_<p>`` (the ratio's other side), each in a
    fresh process compiled with its runner's properties (threads, the precision hint it compiled with)."""
    from compresslab.bench import probe_load

    ov = {n: r for n, r in runners.items() if n.startswith("openvino_") or (n == "deployed" and n not in files)}
    log.info("bench: load probe (each file's load time and memory, in a fresh process): %s",
             ", ".join([*files, *ov]))
    out = {name: probe_load(p, threads, seq=seq, vocab_size=vocab) for name, p in files.items()}
    for name, r in ov.items():
        out[name] = probe_load(r.onnx_path, r.threads, runtime="openvino", precision_hint=r.hint,
                               sparse_rate=r.sparse_rate, seq=seq, vocab_size=vocab)
    return out


def precision_notes(runners: dict[str, Any]) -> list[str]:
    """One note per OpenVINO runner whose precision was forced (a binary model's ``default`` -> f32)."""
    return [f"{name}: {r.precision_note}" for name, r in runners.items() if getattr(r, "precision_note", None)]


def deployed_ir_note(data: dict[str, Any], path: Path, compiled: str, run_dir: Path) -> str:
    """What the ``deployed`` cell runs when the deploy stage chose the OpenVINO IR ``path``, and by which setting:
    as the user gave it (``deploy.runtime=auto: chose openvino``), never the chosen runtime as if it were set."""
    from compresslab.report.export import runtime_choice

    return (f"deployed is the OpenVINO IR {_rel(path, run_dir)} "
            f"({runtime_choice(data, detail=False) or 'deploy.runtime=openvino'}), compiled as {compiled}; the "
            "pipeline's ONNX file runs on ORT as deployed_onnx_ort.")


def _deployed_ir(manifest: RunManifest, run_dir: Path) -> tuple[Path, str] | None:
    """(IR path, precision asked) when the deploy stage chose the OpenVINO IR, else None."""
    dep = manifest.data.get("export", {}).get("deployed") or {}
    if dep.get("runtime") != "openvino":
        return None
    return run_dir / dep["path"], str(dep.get("precision") or "default")


def best_dense(results: dict[str, Any], dense: list[str]) -> dict[str, dict[str, Any]]:
    """Per shape, the fastest dense-teacher runner (MEASURE.md's honest denominator) and its p50."""
    out: dict[str, dict[str, Any]] = {}
    for shape in results[dense[0]]:
        have = [n for n in dense if shape in results.get(n, {})]
        name = min(have, key=lambda n: results[n][shape]["p50_ms"])
        out[shape] = {"runner": name, "p50_ms": results[name][shape]["p50_ms"]}
    return out


def speedups_vs_best(results: dict[str, Any], best: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50(best dense at that shape) / p50(runner), per runner and shape; > 1 beats every dense backend."""
    return {name: {shape: best[shape]["p50_ms"] / st["p50_ms"] for shape, st in per.items()
                   if shape in best and st["p50_ms"] > 0}
            for name, per in results.items()}


def int8_drop_note(teacher: float | None, int8: float | None, max_drop: float) -> str | None:
    """A note when the teacher's ORT int8 scores more than ``max_drop`` (a fraction) below the teacher: best_dense
    still counts it (a user gets it in one call), so "× best_dense" is then against a baseline this run's own
    tolerance would not ship (the figure is conservative, not inflated)."""
    if teacher is None or int8 is None or teacher - int8 <= max_drop + 1e-12:  # as the report flags a drop
        return None
    return (f"ort_int8 scores {100 * (teacher - int8):.2f} pt below the teacher, more than eval.max_drop "
            f"({100 * max_drop:.2f} pt): best_dense still counts it, so x best_dense is measured against a baseline "
            "this tolerance would not ship.")


def _dense_int8_note(teacher_int8: Path, deployed: Path, run_dir: Path, cell: str = "deployed") -> tuple[str, bool]:
    """What ``ort_int8`` is, and whether it is byte for byte ``deployed`` (the file of ``cell``; then their gap is
    noise)."""
    import filecmp

    note = (f"ort_int8: the dense teacher's ORT dynamic int8 ({_rel(teacher_int8, run_dir)}; per-channel int8 "
            "weights, activations quantized per call): one call of ONNX Runtime's quantizer, so it counts for "
            "best_dense (bench.dense_int8).")
    same = deployed.is_file() and filecmp.cmp(deployed, teacher_int8, shallow=False)  # sizes first, then bytes
    if same:
        note += (f" It is {cell}'s file ({_rel(deployed, run_dir)}) byte for byte (no torch pass changed the model "
                 "and the int8 pass ran as one call of ORT's quantizer, embeddings: per_tensor): their gap is noise.")
    return note, same


def _rel(p: Path | None, run_dir: Path) -> str | None:
    if p is None:
        return None
    try:
        return str(Path(p).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(p)


def _openvino_precision(runner: Any) -> str:
    """What an OpenVINO cell computes in: its compiled precision (``f32`` / ``bf16``), prefixed ``int8+`` when the
    graph is quantized (``OpenVinoRunner.int8``): the int8 ops run int8, the rest compiled as said. An int8 IR
    labelled only ``f32`` read as an fp32 model slower than the dense one."""
    return f"int8+{runner.compiled_precision}" if runner.int8 else str(runner.compiled_precision)


def int8_ir_tail(ir: dict[str, Any], plain: Path, run_dir: Path) -> str:
    """The end of the note on ``deployed_openvino_*`` when they run the deploy stage's int8 IR (``ir``:
    ``export.openvino``) instead of the deployed ONNX file, whose plain graph is ``plain``: the IR is that file's
    only when the deploy stage converted its plain twin; else it made the IR from ``ir["source"]``, the final
    model's fp32 export (a static int8 of it), and the note names that file."""
    source, method = ir.get("source"), ir.get("method", "compresslab")
    if not source or (run_dir / source).resolve() == Path(plain).resolve():
        return f": deployed_openvino_* run the int8 IR the deploy stage made of it ({ir['path']}, {method})."
    return (f": deployed_openvino_* run the int8 IR the deploy stage made from {source}, not from it ({ir['path']}, "
            f"{method}: a static int8 of that fp32 export).")


def _openvino_runners(state: RunState, run_dir: Path, manifest: RunManifest, threads: int, vocab: int,
                      notes: list[str], deployed_ir: tuple[Path, str] | None = None
                      ) -> tuple[dict[str, Any], str | None]:
    """``openvino_<p>`` (dense teacher) and, per precision ``p``, the pipeline's model on OpenVINO, or the reason
    to skip.

    ``deployed_openvino_<p>``: the deployed file's plain twin when OpenVINO reads it, else the int8 IR the deploy
    stage made (``export.openvino``, deploy.runtime=openvino|auto), the note naming its source: of an ORT-only
    dynamic int8 file, that is the final model's fp32 export statically quantized, not the file itself. When the
    deployed file is ORT-only (dynamic int8 MatMulInteger, MatMulNBits) and no such IR exists, the cells are
    ``final_fp32_openvino_<p>``: the final torch model's plain fp32 export, named so that no figure of it passes for
    the deployed file's. When that file is the teacher's own (no torch pass changed the model) the model gets no
    cells of its own: a note says ``openvino_*`` stand for them. Nor is ``deployed_openvino_<p>`` timed when it is the ``deployed`` cell
    itself (``deployed_ir``: the IR deploy.runtime=openvino chose and the precision it compiled as; ``p`` resolved
    as the teacher's ``openvino_<p>`` compiled on this CPU).
    """
    from compresslab.bench.openvino_runner import OpenVinoRunner, openvino_missing_reason, plain_export, unreadable_ops

    reason = openvino_missing_reason()
    if reason:
        return {}, reason
    teacher = plain_export(teacher_onnx(run_dir, manifest))
    deployed = Path(state.onnx.onnx_path)
    dep, prefix = plain_export(deployed), "deployed_openvino"
    bad = unreadable_ops(dep)
    head = tail = ""  # the note: why the model's cells run what they run
    if bad:
        head = f"OpenVINO cannot read the deployed {_rel(deployed, run_dir)} (ops {', '.join(bad)})"
        ir = manifest.data.get("export", {}).get("openvino") or {}
        if ir.get("int8") and ir.get("path") and (run_dir / ir["path"]).is_file():
            tail = int8_ir_tail(ir, dep, run_dir)
            dep = run_dir / ir["path"]
        else:
            dep, prefix = plain_export(run_dir / manifest.data["export"]["fp32"]["path"]), "final_fp32_openvino"
            nbits = any(o.endswith(("MatMulNBits", "GatherBlockQuantized")) for o in bad)
            head += (" and OpenVINO has no form of its n-bit weights" if nbits else
                     " and the run made no int8 IR of it (deploy.runtime=openvino or auto makes one)")
            tail = (f": final_fp32_openvino_* run the final torch model's plain fp32 export {_rel(dep, run_dir)}, "
                    "not the deployed file.")
    same = dep.resolve() == teacher.resolve()
    if same:  # timing one file twice buys noise, not a figure
        head, tail = head + ". " if head else "", (
            f"{prefix}_* are not timed: they would run the teacher's own file ({_rel(dep, run_dir)}; no torch pass "
            "changed the model), so openvino_* stand for them.")
    if head or tail:
        notes.append(head + tail)
    runs_deployed_ir = deployed_ir is not None and dep.resolve() == Path(deployed_ir[0]).resolve()
    out: dict[str, Any] = {}
    for p in state.settings.bench.openvino_precisions:
        out[f"openvino_{p}"] = OpenVinoRunner(teacher, threads, p, vocab_size=vocab)
        if same:
            continue
        compiled = out[f"openvino_{p}"].compiled_precision  # what p resolves to on this CPU (default: f32 or bf16)
        if runs_deployed_ir and compiled == deployed_ir[1]:
            notes.append(f"{prefix}_{p} is not timed: it is the deployed cell itself ({_rel(dep, run_dir)} compiled "
                         f"as {compiled}).")
            continue
        out[f"{prefix}_{p}"] = OpenVinoRunner(dep, threads, p, vocab_size=vocab)
    if "openvino_default" in out:
        notes.append(f"OpenVINO's default precision compiled as {out['openvino_default'].compiled_precision} "
                     "on this CPU.")
    return out, None


def _score_cells(state: RunState, runners: dict[str, Any]) -> dict[str, Any]:
    """Eval-split score + agreement with the torch teacher of each cell, from the runner that was timed (the same
    compiled model or ORT session)."""
    from compresslab.eval.evaluate import compare, onnx_forward, predict
    from compresslab.pipeline.evaluate import teacher_scored

    kw = dict(batch_size=state.settings.eval.batch_size, max_length=state.settings.max_length)
    ref = teacher_scored(state)
    out = {}
    for name, r in runners.items():
        scored = predict(onnx_forward(r), state.task.spec, state.eval_examples, state.tokenizer, **kw)
        out[name] = compare(scored, ref, state.task.spec)
    return out


def _gpu(state: RunState, files: dict[str, Path], shapes: list, b: BenchSettings, vocab: int) -> dict[str, Any]:
    """ORT's CUDA provider when installed, else the torch models on CUDA (and say so), else skip."""
    from compresslab.bench import OrtRunner, TorchRunner, measure_latency, select_gpu_backend, speedups

    sel = select_gpu_backend(b.gpu)
    if sel["backend"] is None:
        return {"skipped": sel["reason"]}
    if sel["backend"] == "ort_cuda":
        runners = {n: OrtRunner(p, None, provider="CUDAExecutionProvider", vocab_size=vocab) for n, p in files.items()}
        note = "ONNX Runtime CUDA provider"
    else:
        from compresslab.models.inmemory import clone

        runners = {"torch_fp32": TorchRunner(clone(state.teacher_or_initial()), None, device="cuda"),
                   "torch_final": TorchRunner(clone(state.model), None, device="cuda")}
        note = "onnxruntime-gpu not installed: the torch models run on CUDA instead"
    lat = measure_latency(runners, shapes, warmup=b.warmup, runs=b.runs, min_time_s=b.min_time_s,
                          seed=b.seed, vocab_size=vocab, log_as=f"bench (GPU, {sel['backend']})")
    denom = "ort_fp32" if "ort_fp32" in runners else "torch_fp32"
    return {"backend": sel["backend"], "note": note, "device": sel.get("reason"), "latency": lat["results"],
            "speedups": speedups(lat, denom)}
