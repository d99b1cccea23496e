"""Running one pipeline: plan -> state -> steps (resume) -> export -> eval -> bench -> report.

This face keeps ``import compresslab.pipeline`` light (no torch): the driver imports the state,
the steps and the stages inside :func:`run`.
"""

from compresslab.config import available_pipelines
from compresslab.pipeline.driver import restore, run, run_pipeline, teacher_state
from compresslab.pipeline.plan import (
    PipelineError, RunDirConflictError, Step, build_steps, config_hash, prepare_run_dir, resolve_run_dir)
from compresslab.pipeline.settings import SettingsError
from compresslab.pipeline.teacher_files import teacher_int8, teacher_onnx

__all__ = ["PipelineError", "RunDirConflictError", "SettingsError", "Step", "available_pipelines", "build_steps",
           "config_hash", "prepare_run_dir", "resolve_run_dir", "restore", "run", "run_pipeline", "teacher_int8",
           "teacher_onnx", "teacher_state"]
