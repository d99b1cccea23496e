"""The SST-2 ``bench`` teacher of a named validation carve, for the benchmarks that select on validation
(guided_int8.py, int8_batch_dependence.py): one copy of the flags, the result-file label and the lookup."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compresslab.pipeline import Teacher


def add_carve_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--carve", choices=["random", "grouped"], default="random",
                    help="the validation carve the teacher is trained beside (and selections are made on)")
    ap.add_argument("--val-size", type=int, default=None, help="the carve's size (default: the task's)")


def carve_label(a: argparse.Namespace) -> str:
    """The results-file suffix: "" for the default random carve, else ``_<carve><size>``."""
    return "" if a.carve == "random" and a.val_size is None else f"_{a.carve}{a.val_size or ''}"


def carve_teacher(a: argparse.Namespace, seed: int, work: Path) -> "Teacher":
    """The teacher a ``budget=bench`` pipeline on this carve uses (:func:`compresslab.pipeline.teacher_of`), found
    in the teacher cache by its content key (trained if missing): never a guess such as "the one trained on most
    examples", which can hold another carve's validation examples."""
    from compresslab.config import compose
    from compresslab.pipeline import teacher_of

    overrides = ["+pipeline=int8", "task=sst2", "budget=bench", f"seed={seed}", f"task.val_carve={a.carve}"]
    if a.val_size is not None:
        overrides.append(f"task.val_size={a.val_size}")
    return teacher_of(compose(overrides), work / "teacher")


def teacher_meta(teacher: "Teacher", a: argparse.Namespace) -> dict[str, Any]:
    """``meta.teacher`` and ``meta.task`` of a results file: the teacher's cache key and recipe, the carve."""
    return {"teacher": {k: teacher.metrics.get(k) for k in ("cache_key", "recipe", "validation", "train_examples")},
            "task": {"val_carve": a.carve,
                     **{k: v for k, v in teacher.task.info.items() if k in ("val_size", "sizes")}}}
