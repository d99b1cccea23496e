"""Dev scores of a search's chosen candidate, for the report only (dev is never selected on).

A candidate's run was scored on validation (``eval=validation``). Its dev score comes from the same
deployed file (the ONNX graph on ORT, or the OpenVINO IR the deploy stage chose), and the teacher's
from the run's own teacher, restored from its checkpoints: the same file and the same teacher that
the validation figures came from. Nothing in the run dir is rewritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def dev_scores(run_dir: str | Path) -> dict[str, Any]:
    """``{"split": "dev", "n", "primary_metric", "teacher_dev", "dev_score", "dev_drop_pt", "agreement"}``
    of a finished run's deployed artifact and its teacher on the task's dev split.

    Raises SplitUnavailableError (a ValueError) when the task has no dev split, InputsChangedError
    when the model or data files changed since the run, FileNotFoundError when the run dir is gone.
    """
    from compresslab.bench.env import resolve_threads
    from compresslab.eval.evaluate import compare, onnx_forward, predict
    from compresslab.pipeline import restore
    from compresslab.pipeline.evaluate import teacher_scored

    run_dir = Path(run_dir)
    state, manifest = restore(run_dir, ["eval.split=dev"])  # the run's config, scored on dev instead
    ev = manifest.data.get("eval") or {}
    if not ev.get("deployed_path"):
        raise ValueError(f"{run_dir}: the run has no eval section naming its deployed file")
    threads = resolve_threads(state.settings.bench.threads or state.settings.threads)
    path = run_dir / ev["deployed_path"]
    if ev.get("deployed_runtime") == "openvino":
        from compresslab.bench.openvino_runner import OpenVinoRunner

        dep = (manifest.data.get("export") or {}).get("deployed") or {}
        runner: Any = OpenVinoRunner(path, threads, str(dep.get("precision") or "default"))
    else:
        from compresslab.eval.onnx_runner import OnnxRunner

        runner = OnnxRunner(path, threads=threads)
    spec, s = state.task.spec, state.settings
    ref = teacher_scored(state)  # state.eval_examples is dev here (eval.split=dev)
    scored = predict(onnx_forward(runner), spec, state.eval_examples, state.tokenizer,
                     batch_size=s.eval.batch_size, max_length=s.max_length)
    model = compare(scored, ref, spec)
    teacher = compare(ref, None, spec)
    return {"split": "dev", "n": len(state.eval_examples), "primary_metric": spec.primary_metric,
            "teacher_dev": float(teacher["score"]), "dev_score": float(model["score"]),
            "dev_drop_pt": (float(teacher["score"]) - float(model["score"])) * 100.0,
            "agreement": model.get("agreement"), "file": str(ev["deployed_path"])}
