"""The fixed stages of every run, after the passes: export, eval, size, bench, report.

They are not passes (DESIGN.md): each is configured by its own config group and can be switched
off. Scores come from the exported file that is deployed, and speed from that same file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from compresslab.manifest import RunManifest, atomic_write_json, now
from compresslab.types import OnnxModel

log = logging.getLogger(__name__)


def _parity_batches(state: Any, n: int) -> list[dict]:
    """Real, padded inputs for parity: the first ``n`` dev examples (padding is the hard case)."""
    from compresslab.data.loaders import make_loader

    examples = list(state.task.dev[:n]) or list(state.task.train[:n])
    loader = make_loader(examples, state.tokenizer, 16, int(state.cfg.task.max_length), kind=_side_kind(state))
    return [{k: v for k, v in b.items() if not k.endswith("_b") and k != "labels"} for b in loader]


def _side_kind(state: Any) -> Any:
    return state.task.spec.kind


def _export(model: Any, state: Any, out_dir: Path) -> Any:
    from compresslab.export.onnx import export_model

    e = state.cfg.export
    return export_model(model, state.tokenizer, out_dir, _parity_batches(state, int(e.parity_examples)),
                        optimize=bool(e.optimize), atol=float(e.atol), opset=int(e.opset))


def _torch_changed_after_teacher(manifest: RunManifest) -> bool:
    return any(s.stage == "torch" and s.pass_config.get("name") != "finetune" for s in manifest.steps)


def export(state: Any, run_dir: Path, manifest: RunManifest) -> OnnxModel:
    """Export the current torch model (and the dense teacher, the speed denominator) once."""
    section = manifest.data.setdefault("export", {})
    out = run_dir / "export"
    if "fp32" in section and (run_dir / section["fp32"]["path"]).is_file():
        return OnnxModel(out, run_dir / section["fp32"]["path"])
    log.info("export: ONNX (fp32, fused) with parity checks")
    res = _export(state.model, state, out)
    section["fp32"] = _export_record(res, run_dir)
    if _torch_changed_after_teacher(manifest):
        tres = _export(state.teacher_or_initial(), state, out / "teacher")
        section["teacher_fp32"] = _export_record(tres, run_dir)
    manifest.save()
    return OnnxModel(out, res.onnx_path)


def _export_record(res: Any, run_dir: Path) -> dict[str, Any]:
    p = Path(res.onnx_path)
    return {"path": str(p.relative_to(run_dir)), "size_bytes": p.stat().st_size, "exporter": res.exporter,
            "fused_attention_nodes": res.fused_attention_nodes, "attention_heads": res.attention_heads,
            "parity": {k: v for k, v in res.parity.items() if k != "unfused"},
            "parity_unfused": res.parity.get("unfused")}


def teacher_onnx(run_dir: Path, manifest: RunManifest) -> Path:
    sec = manifest.data["export"]
    return run_dir / sec.get("teacher_fp32", sec["fp32"])["path"]


def score_torch(state: Any, label: str) -> dict[str, Any]:
    """Dev score of the current torch model (+ agreement with the teacher): reported, never selected on."""
    from compresslab.eval.evaluate import compare, predict, torch_forward

    if not state.cfg.eval.enabled:
        return {}
    spec = state.task.spec
    kw = dict(batch_size=int(state.cfg.eval.batch_size), max_length=int(state.cfg.task.max_length))
    scored = predict(torch_forward(state.model), spec, state.task.dev, state.tokenizer, **kw)
    if "teacher_torch" not in state.scores:
        state.scores["teacher_torch"] = predict(torch_forward(state.teacher_or_initial()), spec, state.task.dev,
                                                state.tokenizer, **kw)
    state.scores[label] = scored
    return compare(scored, state.scores["teacher_torch"], spec)


def evaluate(state: Any, run_dir: Path, manifest: RunManifest, threads: int) -> None:
    """Score teacher, final torch model, ort_fp32 and the deployed file on dev."""
    from compresslab.eval.evaluate import compare, onnx_forward, predict, torch_forward
    from compresslab.eval.onnx_runner import OnnxRunner

    spec = state.task.spec
    kw = dict(batch_size=int(state.cfg.eval.batch_size), max_length=int(state.cfg.task.max_length))
    dev = state.task.dev
    log.info("eval: scoring teacher, final torch model and ONNX files on %s (%d examples)", spec.name, len(dev))
    scored = {"teacher_torch": state.scores.get("teacher_torch") or
              predict(torch_forward(state.teacher_or_initial()), spec, dev, state.tokenizer, **kw)}
    scored["torch_final"] = predict(torch_forward(state.model), spec, dev, state.tokenizer, **kw)
    files = {"ort_fp32": teacher_onnx(run_dir, manifest), "deployed": state.onnx.onnx_path}
    if files["deployed"] == files["ort_fp32"]:
        files.pop("deployed")
    for label, path in files.items():
        scored[label] = predict(onnx_forward(OnnxRunner(path, threads=threads)), spec, dev, state.tokenizer, **kw)
    if "deployed" not in scored:
        scored["deployed"] = scored["ort_fp32"]
    ref = scored["teacher_torch"]
    models = {k: compare(v, ref, spec) for k, v in scored.items()}
    section = {"split": "dev", "n": len(dev), "primary_metric": spec.primary_metric, "models": models,
               "deployed_path": str(Path(state.onnx.onnx_path).relative_to(run_dir))}
    manifest.data["eval"] = section
    atomic_write_json(run_dir / "eval" / "metrics.json", section)
    manifest.save()


def sizes(state: Any, run_dir: Path, manifest: RunManifest) -> None:
    """Deployed bytes for the encoder and the whole model, per exported file."""
    from compresslab.export.size import onnx_size_breakdown

    out: dict[str, Any] = {}
    for label, path in (("ort_fp32", teacher_onnx(run_dir, manifest)), ("deployed", state.onnx.onnx_path)):
        b = onnx_size_breakdown(path)
        out[label] = {"encoder": b["encoder"], "total": b["file"], "embeddings": b["embeddings"], "head": b["head"]}
    extra = [s.result.get("metrics", {}).get("size") for s in manifest.steps]
    for e in extra:  # passes that know a better deployed format (e.g. sparse bitmask + int8)
        if isinstance(e, dict):
            out.update(e)
    manifest.data["size"] = out
    manifest.save()


def finish(state: Any, run_dir: Path, manifest: RunManifest) -> Path:
    """Export if no ONNX pass did, then eval, size, bench and report; mark the run finished."""
    from compresslab.bench.env import resolve_threads

    if state.onnx is None:
        state.onnx = export(state, run_dir, manifest)
    manifest.data.setdefault("export", {})["deployed"] = {
        "path": str(Path(state.onnx.onnx_path).relative_to(run_dir)),
        "size_bytes": Path(state.onnx.onnx_path).stat().st_size}
    threads = resolve_threads(state.cfg.bench.get("threads") or state.cfg.run.get("threads"))
    if state.cfg.eval.enabled:
        evaluate(state, run_dir, manifest, threads)
    sizes(state, run_dir, manifest)
    if state.cfg.bench.enabled:
        from compresslab.stages_bench import bench

        bench(state, run_dir, manifest, threads)
    manifest.data["status"] = "finished"
    manifest.data["finished"] = now()
    manifest.save()
    if state.cfg.get("report", True):
        from compresslab.report import build_report

        build_report(run_dir)
    return run_dir
