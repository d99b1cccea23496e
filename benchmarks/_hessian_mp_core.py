"""The state every ``hessian_mp.py`` subcommand shares: the results file (benchmarks/results/hessian_mp.json),
the cached bench teacher and its dev predictions, and the dev-split scorers.

It lives apart from the entry script so the subcommand modules (``hessian_mp_deploy``,
``hessian_mp_baselines``) and ``hessian_sensitivity.py`` share one copy of it: importing
``hessian_mp`` from a sibling while it runs as ``__main__`` would load it a second time, with a
second teacher cache.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from compresslab.cli import setup_process
from compresslab.config import compose

from _results import ResultsFile  # sibling module (script dir)

RESULTS = Path(__file__).resolve().parent / "results" / "hessian_mp.json"
_RESULTS = ResultsFile(RESULTS)
WORK = Path(os.environ.get("HAWQ_BENCH_DIR", "outputs/hawq_bench")).resolve()
BLOCK = 64
# the sensitivities --hessian-loss names: hawq's hessian settings (task = the default, the keys)
HESSIAN = {"task": {"loss": "task"}, "teacher_kl": {"loss": "teacher_kl"},
           "teacher_kl_exact": {"loss": "teacher_kl", "estimator": "exact"}}


# the validation carve whose bench teacher every subcommand uses (use_carve); "" label = the default random carve
_CARVE: dict[str, Any] = {"carve": "random", "val_size": None, "label": ""}


def use_carve(args: Any) -> None:
    """Point every subcommand at the ``bench`` teacher of ``args``' validation carve (the flags of
    ``_carve_teacher.add_carve_args``). A non-default carve gets its own results file
    (``hessian_mp_grouped500.json``) and work folder (``outputs/hawq_bench_grouped500``), so two carves' teachers
    never share a figure or a QAT checkpoint. Call it before anything loads the teacher."""
    from _carve_teacher import carve_label  # sibling module

    if _STATE:
        raise RuntimeError("use_carve() after the teacher was loaded: its figures would mix two teachers")
    label = carve_label(args)
    _CARVE.update(carve=args.carve, val_size=args.val_size, label=label)
    _RESULTS.path = RESULTS.with_stem(RESULTS.stem + label)


def carve_overrides() -> list[str]:
    """The config overrides that select the carve (none for the default, whose teacher cache key they keep)."""
    if not _CARVE["label"]:
        return []
    out = [f"task.val_carve={_CARVE['carve']}"]
    if _CARVE["val_size"] is not None:
        out.append(f"task.val_size={_CARVE['val_size']}")
    return out


def work_dir() -> Path:
    """Where this carve's models live (``WORK``, suffixed by the carve's label)."""
    return WORK.with_name(WORK.name + _CARVE["label"])


def _load() -> dict:
    return _RESULTS.load()


def _keys(path: str) -> list[str]:
    """Dotted path -> keys; a number such as 2.5 stays one key, alone or ending a name ("acc_mp.2.5" -> acc_mp,
    2.5; "ptq_detail.mp_2.5" -> ptq_detail, mp_2.5)."""
    out: list[str] = []
    for part in path.split("."):
        if out and part.isdigit() and out[-1][-1:].isdigit():
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
    """(cfg, teacher, ctx) over the cached bench teacher (trained once, then found by content hash): ``teacher`` a
    :class:`compresslab.pipeline.Teacher`, ``ctx`` its pass context in the work dir."""
    if not _STATE:
        from compresslab.pipeline import teacher_of

        cfg = compose(["+pipeline=hawq_mp3", "budget=bench", *carve_overrides()])
        setup_process(cfg.run.get("threads"), int(cfg.seed))
        teacher = teacher_of(cfg, work_dir() / "teacher")
        ctx = teacher.context(work_dir(), work_dir() / "step")
        _STATE.update(cfg=cfg, teacher=teacher, ctx=ctx)
    return _STATE["cfg"], _STATE["teacher"], _STATE["ctx"]


def _scored(model) -> Any:
    from compresslab.eval.evaluate import predict, torch_forward

    cfg, teacher, _ = _teacher()
    return predict(torch_forward(model), teacher.task.spec, teacher.task.dev, teacher.tokenizer,
                   max_length=int(cfg.task.max_length))


def _teacher_preds() -> np.ndarray:
    if "teacher_preds" not in _STATE:
        s = _scored(_teacher()[1].model)
        _STATE["teacher_preds"] = s.predictions
        if not _has("teacher_acc"):
            _store("teacher_acc", s.metrics["score"])
    return _STATE["teacher_preds"]


def _dev_batches(n: int | None = None, batch_size: int = 32) -> list[dict]:
    from compresslab.data.loaders import make_loader

    cfg, teacher, _ = _teacher()
    ex = list(teacher.task.dev if n is None else teacher.task.dev[:n])
    return [{k: v for k, v in b.items() if k != "labels"}
            for b in make_loader(ex, teacher.tokenizer, batch_size, int(cfg.task.max_length),
                                 kind=teacher.task.spec.kind)]


def _onnx_scored(path: Path) -> Any:
    from compresslab.eval.evaluate import onnx_forward, predict
    from compresslab.eval.onnx_runner import OnnxRunner

    cfg, teacher, _ = _teacher()
    return predict(onnx_forward(OnnxRunner(path, threads=2)), teacher.task.spec, teacher.task.dev, teacher.tokenizer,
                   max_length=int(cfg.task.max_length))
