"""Running one pipeline: plan -> state -> steps (resume) -> export -> eval -> bench -> report.

This face keeps ``import compresslab.pipeline`` light (no torch): the driver imports the state,
the steps and the stages inside :func:`run`.

Scripts that compare methods (``benchmarks/``) use this face only, never a run's state: :func:`teacher_of` (a
pipeline's teacher, as a :class:`Teacher` record), :func:`task_data` (a config's task data),
:func:`teacher_onnx` / :func:`teacher_int8` (a finished run's dense teacher as ONNX).
"""

from compresslab.config import available_pipelines
from compresslab.pipeline.driver import restore, run, run_pipeline, task_data
from compresslab.pipeline.plan import (
    PipelineError, RunDirConflictError, Step, build_steps, config_hash, resolve_run_dir)
from compresslab.pipeline.rundir import prepare_run_dir
from compresslab.pipeline.settings import SettingsError
from compresslab.pipeline.teacher import Teacher, teacher_of
from compresslab.pipeline.teacher_files import teacher_int8, teacher_onnx

__all__ = ["PipelineError", "RunDirConflictError", "SettingsError", "Step", "Teacher", "available_pipelines",
           "build_steps", "config_hash", "prepare_run_dir", "resolve_run_dir", "restore", "run", "run_pipeline",
           "task_data", "teacher_int8", "teacher_of", "teacher_onnx"]
