"""The export stage: the final torch model (and the dense teacher, the speed denominator) to ONNX,
parity-checked on real padded inputs, once per run (kept across resumes).

Export, eval, bench and report are fixed stages, not passes (DESIGN.md): each is configured by its
own config group. Scores come from the exported file that is deployed, and speed from that file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from compresslab.manifest import RunManifest
from compresslab.pipeline.state import RunState
from compresslab.types import OnnxModel

log = logging.getLogger(__name__)


def _parity_batches(state: RunState, n: int) -> list[dict]:
    """Real, padded inputs for parity: the first ``n`` dev examples (padding is the hard case)."""
    from compresslab.data.loaders import make_loader

    examples = list(state.task.dev[:n]) or list(state.task.train[:n])
    loader = make_loader(examples, state.tokenizer, 16, state.settings.max_length, kind=state.task.spec.kind)
    return [{k: v for k, v in b.items() if not k.endswith("_b") and k != "labels"} for b in loader]


def export_dir(model: Any, state: RunState, out_dir: Path) -> Any:
    """Export ``model`` into ``out_dir`` (optimum's ORTModel layout) with the run's export settings.

    A model with frozen fake-quant modules also gets ``config.compresslab_quant`` in config.json and
    their scales / zero points in ``quantization.safetensors`` (what ``ort_matmul_nbits`` deploys);
    a dynamic (unfrozen) one is refused. The folder records the run's scoring settings
    (``compresslab_eval.json``: max_length, eval batch size, task kind and metric), which ONNX passes copy
    into their step folders and ``compresslab.evaluate(folder, data)`` scores with by default."""
    from compresslab.eval.scoring_settings import write_scoring_settings
    from compresslab.export.matmul_nbits import export_quantized

    e = state.settings.export
    res = export_quantized(model, state.tokenizer, out_dir, _parity_batches(state, e.parity_examples),
                           optimize=e.optimize, atol=e.atol, opset=e.opset)
    write_scoring_settings(out_dir, run_scoring_settings(state))
    return res


def run_scoring_settings(state: RunState) -> dict[str, Any]:
    """What the run's eval stage scores its files with (:func:`~compresslab.eval.scoring_settings.scoring_settings`)."""
    from compresslab.eval.scoring_settings import scoring_settings

    spec, s = state.task.spec, state.settings
    return scoring_settings(max_length=s.max_length, batch_size=s.eval.batch_size, kind=spec.kind.value,
                            primary_metric=spec.primary_metric, task=spec.name, split=s.eval.split)


def _torch_changed_after_teacher(manifest: RunManifest) -> bool:
    """Did a TORCH pass other than the teacher's change the model? (by each pass's declaration)"""
    from compresslab.registry import get_pass

    return any(s.stage == "torch" and not get_pass(s.pass_config["name"]).makes_teacher for s in manifest.steps)


def export(state: RunState, run_dir: Path, manifest: RunManifest) -> OnnxModel:
    """Export the current torch model (and the dense teacher, the speed denominator) once.

    ``export.fp32`` is the final model's export WHATEVER its precision: the key is older than int8 QAT and
    is kept, since resumed runs and every reader of existing manifests (the bench, deploy and DeepSparse
    stages, the benchmarks) look it up by that name. Its ``precision`` and ``format`` fields say what
    the graph is (``export.onnx.graph_format``: ``int8 QDQ (QAT)`` after int8_qat), and the report
    shows them, not the key.

    Reused only while done with its files' sha256 recorded (checked at the resume's start,
    :mod:`~compresslab.pipeline.stage_files`); else exported again, replacing what is there."""
    from compresslab.pipeline.stage_files import drop_stages, record_stage, stage_done

    section = manifest.data.setdefault("export", {})
    out = run_dir / "export"
    if stage_done(manifest, "export") and (run_dir / section["fp32"]["path"]).is_file():
        return OnnxModel(out, run_dir / section["fp32"]["path"])
    drop_stages(manifest, run_dir, "export")  # no file of an earlier export, nor a stage that read it, is kept
    section = manifest.data.setdefault("export", {})
    log.info("export: ONNX with parity checks")
    res = export_dir(state.model, state, out)
    section["fp32"] = _export_record(res, run_dir)
    if res.binary:
        section["fp32"]["theoretical_flops"] = binary_flops(state.model, state.settings.max_length)
    if _torch_changed_after_teacher(manifest):
        tres = export_dir(state.teacher_or_initial(), state, out / "teacher")
        section["teacher_fp32"] = _export_record(tres, run_dir)
    record_stage(manifest, run_dir, "export")
    manifest.save()
    return OnnxModel(out, res.onnx_path)


def _export_record(res: Any, run_dir: Path) -> dict[str, Any]:
    p = Path(res.onnx_path)
    return {"path": str(p.relative_to(run_dir)), "size_bytes": p.stat().st_size,
            "precision": res.precision, "format": res.format, "exporter": res.exporter,
            "fused_attention_nodes": res.fused_attention_nodes, "attention_heads": res.attention_heads,
            "parity": {k: v for k, v in res.parity.items() if k not in ("unfused", "notes")},
            "parity_unfused": res.parity.get("unfused"), "binary": res.binary, "qdq": res.qdq, "notes": list(res.notes)}


def binary_flops(model: Any, max_length: int) -> dict[str, Any]:
    """BiBERT's theoretical FLOPs accounting (``bench.flops``) at the task's max length and at 128
    (the speed shapes' length), per sequence, without the per-module table."""
    from compresslab.bench.flops import max_seq_len, theoretical_flops

    limit = max_seq_len(model)
    out = {}
    for seq in sorted(s for s in {int(max_length), 128} if limit is None or s <= limit):
        f = theoretical_flops(model, seq)
        out[f"s{seq}"] = {k: v for k, v in f.items() if k != "per_module"}
    return out
