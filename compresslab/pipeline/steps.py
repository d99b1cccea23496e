"""The step loop: run each pass in order with a checkpoint and an atomic manifest after each, and
resume after the last finished step, reusing a finished step only while its files are the ones it
wrote (:mod:`compresslab.pipeline.step_files`; a step that fails is redone, with every later one).

What a pass produces is declared by the pass (``makes_teacher``, ``PassResult.formats``) and
applied by :func:`apply_declarations` for a fresh step and a restored one alike, so a renamed
finetune step resumes with the right teacher.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from compresslab.manifest import RunManifest, StepRecord, atomic_write_json, now, sha256_dir
from compresslab.pipeline.evaluate import score_torch
from compresslab.pipeline.export import export
from compresslab.pipeline.plan import PipelineError, Step
from compresslab.pipeline.state import RunState, frozen
from compresslab.pipeline.stage_files import redo_stages_from
from compresslab.pipeline.step_files import Broken, first_broken, redo_from
from compresslab.types import OnnxModel, PassResult, Stage

log = logging.getLogger(__name__)

PASS_FILE = "pass.json"


def step_record(step: Step) -> StepRecord:
    from compresslab.registry import pass_to_dict

    return StepRecord(index=step.index, name=step.name, stage=step.pass_.stage.value, dir=f"steps/{step.dir_name}",
                      pass_config=pass_to_dict(step.pass_))


def finish_step(manifest: RunManifest, rec: StepRecord, step_dir: Path, t0: float) -> None:
    rec.status = "done"
    rec.finished = now()
    rec.wall_s = round(time.perf_counter() - t0, 2)
    rec.artifacts = sha256_dir(step_dir) if step_dir.exists() else {}
    manifest.set_step(rec)
    manifest.save()


def done_steps(manifest: RunManifest | None) -> dict[int, StepRecord]:
    if manifest is None:
        return {}
    return {s.index: s for s in manifest.steps if s.status == "done"}


def apply_declarations(state: RunState, step: Step) -> None:
    """What the pass declares it produces, applied to the in-memory state (fresh or restored step)."""
    if step.pass_.makes_teacher and state.model is not None:
        state.teacher = frozen(state.model)


def apply_torch_pass(state: RunState, step: Step, step_dir: Path, run_dir: Path) -> PassResult:
    """Apply a TORCH pass to ``state.model`` in place, then what it declares (the teacher); nothing
    saved. The pass that makes the teacher trains nothing when the input is the teacher
    (``model.finetuned=true``). The step loop and ``teacher_of`` (benchmarks) both call this."""
    assert state.model is not None
    if step.pass_.makes_teacher and state.input_is_teacher:
        # model.finetuned=true: the loaded model is already the teacher; training it again would only
        # replace the user's model by a different one under the name "teacher"
        result = PassResult(metrics={"trained": False, "input_is_teacher": True, "cached": False})
    else:
        result = step.pass_.apply(state.model, state.context(run_dir, step_dir))
    state.model.eval()
    apply_declarations(state, step)
    return result


def run_torch_pass(state: RunState, step: Step, step_dir: Path, run_dir: Path) -> tuple[PassResult, dict[str, Any]]:
    """Apply a TORCH pass to ``state.model``, save the checkpoint (+ declared formats); (result, metrics)."""
    from compresslab.checkpoint import check_formats, save

    result = apply_torch_pass(state, step, step_dir, run_dir)
    assert state.model is not None
    save(state.model, step_dir, state.tokenizer, formats=check_formats(result.formats, f"step {step.name!r}"))
    metrics = {**score_torch(state, f"step:{step.name}"), "params": sum(p.numel() for p in state.model.parameters()),
               "size_bytes": (step_dir / "model.safetensors").stat().st_size}
    return result, metrics


def run_onnx_pass(state: RunState, step: Step, step_dir: Path, run_dir: Path) -> tuple[PassResult, dict[str, Any]]:
    """Apply an ONNX pass to the current export; the graph it writes becomes ``state.onnx``."""
    result = step.pass_.apply(state.onnx, state.context(run_dir, step_dir))
    if not result.onnx_path:
        raise PipelineError(f"ONNX pass {step.name!r} returned no onnx_path")
    state.onnx = OnnxModel(dir=step_dir, onnx_path=Path(result.onnx_path))
    return result, {"size_bytes": Path(result.onnx_path).stat().st_size}


def run_step(state: RunState, step: Step, run_dir: Path, manifest: RunManifest) -> None:
    """Run one pass and record it: ``pass.json`` in its dir first, the manifest entry when done."""
    from compresslab.registry import pass_to_dict

    log.info("step %d: %s (%s)", step.index, step.name, step.pass_.stage.value)
    step_dir = run_dir / "steps" / step.dir_name
    rec = step_record(step)
    rec.metrics_before = manifest.steps[-1].metrics_after if manifest.steps else {}
    manifest.set_step(rec)
    manifest.save()
    t0 = time.perf_counter()
    step_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(step_dir / PASS_FILE, {"step": step.name, "index": step.index, "pass": pass_to_dict(step.pass_)})
    runner = run_torch_pass if step.pass_.stage == Stage.TORCH else run_onnx_pass
    result, rec.metrics_after = runner(state, step, step_dir, run_dir)
    for mod, why in result.skipped.items():
        log.warning("step %s skipped %s: %s", step.name, mod, why)
    rec.result = result.to_dict()
    if result.onnx_path:
        rec.result["onnx_path"] = str(Path(result.onnx_path).relative_to(run_dir))
    finish_step(manifest, rec, step_dir, t0)


def restore_step(state: RunState, step: Step, rec: StepRecord, run_dir: Path) -> None:
    """Bring the in-memory state to what it was right after a finished step."""
    from compresslab.checkpoint import load

    log.info("step %d: %s already done, resuming past it", step.index, step.name)
    if rec.stage == Stage.TORCH.value:
        state.model = load(run_dir / rec.dir)
        apply_declarations(state, step)
    else:
        state.onnx = OnnxModel(dir=run_dir / rec.dir, onnx_path=run_dir / rec.result["onnx_path"])


def redo_broken(manifest: RunManifest, run_dir: Path, steps: list[Step], broken: Broken | None) -> None:
    """Apply what a resume's check found (:func:`~compresslab.pipeline.step_files.first_broken`): a broken step is
    redone with every later one and every stage after the steps (:func:`step_files.redo_from`), a broken stage with
    every later stage (:func:`stage_files.redo_stages_from`); each warns naming each file and why."""
    if broken is None:
        return
    if broken.step is not None:
        redo_from(manifest, run_dir, broken.step, broken.problems, step_dirs=_dirs_from(steps, broken.step.index))
    elif broken.stage is not None:
        redo_stages_from(manifest, run_dir, broken.stage, broken.problems)


def _dirs_from(steps: list[Step], index: int) -> list[str]:
    return [f"steps/{s.dir_name}" for s in steps if s.index >= index]


def run_steps(state: RunState, steps: list[Step], run_dir: Path, manifest: RunManifest,
              stop_after: int | None = None, checked: bool = False) -> bool:
    """Run (or restore) every step; False when stopped early by ``stop_after`` finished steps.

    The first ONNX pass gets the export of the final torch model (exported once, parity-checked).
    A finished step, and a file of a stage after the steps, is reused only when its sha256 is the
    one recorded (checked here once, :func:`redo_broken`; ``checked``: the caller did it), and a step
    that still cannot be read (a checkpoint this version cannot load, a file that turned unreadable)
    is redone as a changed one is.
    """
    from compresslab.models.loading import CheckpointError

    if not checked:
        redo_broken(manifest, run_dir, steps, first_broken(manifest, run_dir))
    done = done_steps(manifest)
    for step in steps:
        manifest.at_stage(None)  # a running step names itself in the manifest
        if step.index in done:
            manifest.at_stage(f"the restore of finished step {step.name}")
            try:
                restore_step(state, step, done[step.index], run_dir)
                continue
            except (CheckpointError, OSError) as e:  # its hashes matched (or none were recorded), yet unreadable
                rec = done[step.index]
                redo_from(manifest, run_dir, rec, [f"{rec.dir} is unreadable: {e}"],
                          step_dirs=_dirs_from(steps, step.index))
                done = done_steps(manifest)
                manifest.at_stage(None)
        if stop_after is not None and len(done_steps(manifest)) >= int(stop_after):
            manifest.mark_ended("stopped")
            log.info("stopping after %d step(s) (run.stop_after); rerun the same command to resume", stop_after)
            return False
        if step.pass_.stage == Stage.ONNX and state.onnx is None:
            manifest.at_stage(f"export (before step {step.name})")
            state.onnx = export(state, run_dir, manifest)
            manifest.at_stage(None)
        run_step(state, step, run_dir, manifest)
    manifest.at_stage(None)
    return True
