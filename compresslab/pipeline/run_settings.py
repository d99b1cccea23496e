"""The run engine's own blocks of :class:`~compresslab.pipeline.settings.RunSettings`: ``run`` (how a run
executes), ``model`` (what it compresses), ``task`` and ``data`` (what it trains and scores on).

They live apart from ``settings.py`` (the fixed stages' blocks) to keep each module short; ``settings``
re-exports them. The driver, the plan and ``RunState.prepare`` read these, never the raw config, so no
default is written twice: ``RunSettings.from_config`` passes every key the composed config holds, and
the YAML (``conf/compress.yaml``, ``conf/model``, ``conf/task``, ``conf/data``) is the one source of
defaults. The defaults below serve only where a key is absent: a config recorded before the key existed
(``restore`` reads a run's manifest) and the in-process API, which has no run block;
``tests/unit/pipeline/test_run_settings.py`` asserts each equals the YAML's.

Each value is checked by the rule :data:`compresslab.pipeline.schema.VALUE_CHECKS` holds for its dotted
key (the composed config was checked by it too: one rule per key, one message), plus the rules that table
lacks, which the engine used to apply only once it reached them: ``run.keep``'s choices
(:func:`~compresslab.pipeline.disk.check_keep`), ``model.finetuned`` being set, ``task.val_size`` and
``task.val_carve`` (:mod:`compresslab.data.carve`'s, which ``load_task`` applies). So a bad value fails
in preflight, before any work, with its key's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compresslab.data.carve import check_carve, check_count
from compresslab.pipeline.disk import check_keep
from compresslab.pipeline.schema import VALUE_CHECKS

__all__ = ["DataSettings", "ModelSettings", "RunControl", "TaskSettings"]


def _check_fields(block: Any, section: str) -> None:
    """Every field of ``block`` by :data:`VALUE_CHECKS`' rule for ``<section>.<field>`` (a Path as the text
    the config gives), so a value built here is held to the rule the composed config was checked by."""
    for f in dataclasses.fields(block):
        key = f"{section}.{f.name}"
        if key in VALUE_CHECKS:
            value = getattr(block, f.name)
            VALUE_CHECKS[key](str(value) if isinstance(value, Path) else value, key)


@dataclass(frozen=True)
class RunControl:
    """``run`` (``conf/compress.yaml``): how a run executes, never what it computes (left out of its identity,
    ``plan._CONTROL_KEYS``). ``dir``: the run dir (None: ``<paths.output_dir>/<pipeline>/<config hash>``);
    ``overwrite``: move an existing run dir aside and start over; ``keep``: ``minimal`` (identical artifacts
    are hard links to one copy) or ``all``; ``stop_after``: stop after this many steps (None: run them all).
    ``run.threads`` is :attr:`RunSettings.threads`: the stages and the API read it there."""

    dir: Path | None = None
    overwrite: bool = False
    keep: str = "minimal"
    stop_after: int | None = None

    def __post_init__(self) -> None:
        _check_fields(self, "run")
        check_keep(self.keep)
        if self.dir is not None:
            object.__setattr__(self, "dir", Path(self.dir))


@dataclass(frozen=True)
class ModelSettings:
    """``conf/model``: the model a run compresses. ``source``: a local model directory or ``embedded``;
    ``name``: its id in the manifest and the report; ``finetuned``: the source, head included, is already
    fine-tuned on the task, so it is the teacher and the finetune step trains nothing."""

    source: str
    name: str
    finetuned: bool = False

    def __post_init__(self) -> None:
        _check_fields(self, "model")
        # the schema's rule lets null through (a key not set); the engine needs a yes or no
        if not isinstance(self.finetuned, bool):
            raise ValueError(f"model.finetuned={self.finetuned!r}: use true (the model is already fine-tuned on this "
                             "task: it is the teacher) or false (fine-tune it first)")


@dataclass(frozen=True)
class TaskSettings:
    """``conf/task``: which data a run loads (``data.tasks.load_task``). ``name``: a GLUE task or ``generic``;
    ``val_size``: examples carved from train for validation (None: ``data.carve.default_val_size``);
    ``val_carve``: ``random`` or ``grouped``; ``max_train`` / ``max_dev``: seeded subsets (smoke runs);
    ``generic``: the reader's options for the user's own files (checked by ``GenericConfig``, its owner,
    when the task loads), None otherwise. ``task.max_length`` is :attr:`RunSettings.max_length`: every stage
    reads it, and the API sets it without a task."""

    name: str
    val_size: int | None = None
    val_carve: str = "random"
    max_train: int | None = None
    max_dev: int | None = None
    generic: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_fields(self, "task")
        check_count(self.val_size, "task.val_size")
        object.__setattr__(self, "val_carve", check_carve(self.val_carve))  # null: random, as load_task reads it
        if self.generic is not None and not isinstance(self.generic, Mapping):
            raise ValueError(f"task.generic must be a mapping of the reader's options (task.generic.train=FILE ...), "
                             f"got {self.generic!r}")
        object.__setattr__(self, "generic", dict(self.generic) if self.generic else None)


@dataclass(frozen=True)
class DataSettings:
    """``conf/data``: ``root``, the folder holding ``glue/<TASK>/`` (None: ``$COMPRESSLAB_DATA``, ``./data``,
    ``../shared/data`` beside the working directory or the checkout, as ``data.tasks.resolve_data_root`` looks).
    A generic task's files are named in ``task.generic``; relative ones are also looked for under ``root``."""

    root: str | None = None

    def __post_init__(self) -> None:
        _check_fields(self, "data")
