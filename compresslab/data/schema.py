"""The data vocabulary shared by tasks, readers, loaders and metrics.

Kept apart from ``tasks.py`` so the readers can use these types without an import cycle;
``compresslab.data.tasks`` re-exports everything here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, SupportsIndex, overload


class TaskNotSupportedError(ValueError):
    """A pass cannot run on this KIND of task (an embedding task for a method that needs labels), as
    opposed to a bad setting: callers may skip the pass for the task (the peer suite does), never a
    bad setting."""


class TaskKind(str, Enum):
    """What the model outputs: class logits, one score, or a sentence embedding."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    EMBEDDING = "embedding"


# Metric names compute_metrics knows, per kind (the primary metric must be one of them).
KNOWN_METRICS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.CLASSIFICATION: ("accuracy", "f1", "matthews_corr"),
    TaskKind.REGRESSION: ("pearson", "spearman"),
    TaskKind.EMBEDDING: ("pearson", "spearman"),
}


class DataNotFoundError(FileNotFoundError):
    """A data root or data file is missing; the message says where we looked and how to fix it."""


class DataFormatError(ValueError):
    """A data file does not have the columns or values its task expects (message names file:line)."""


class SplitUnavailableError(ValueError):
    """A caller needs a split the task does not ship (e.g. QNLI train)."""


@dataclass(frozen=True)
class Example:
    """One labelled input: a sentence or a sentence pair.

    ``label`` is an ``int`` class id for classification and a ``float`` for regression and
    embedding tasks; the loaders pick the label tensor dtype from that.
    """

    text_a: str
    text_b: str | None
    label: float | int


@dataclass(frozen=True)
class TaskSpec:
    """How to read a task's files and score it.

    ``columns`` names the columns of header-less files (CoLA); otherwise the header is used.
    ``string_labels`` means the label column holds ``label_names`` strings (RTE, QNLI), mapped to
    their index; otherwise it holds integer ids (classification) or floats (regression).
    """

    name: str
    kind: TaskKind
    num_labels: int
    primary_metric: str
    metrics: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ()
    string_labels: bool = False
    glue_dir: str | None = None
    train_file: str | None = "train.tsv"
    dev_file: str | None = "dev.tsv"
    columns: tuple[str, ...] | None = None
    text_a: str = "sentence"
    text_b: str | None = None
    label: str = "label"
    encoding: str = "utf-8"
    description: str = ""

    def __post_init__(self) -> None:
        # Convert strings to enums first, then validate (so YAML strings get the same checks).
        try:
            kind = TaskKind(self.kind)
        except ValueError:
            allowed = ", ".join(k.value for k in TaskKind)
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; allowed: {allowed}") from None
        object.__setattr__(self, "kind", kind)
        metrics = tuple(self.metrics) or (self.primary_metric,)
        if self.primary_metric not in metrics:
            metrics = (self.primary_metric, *metrics)
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "label_names", tuple(self.label_names))
        allowed_metrics = KNOWN_METRICS[kind]
        unknown = [m for m in metrics if m not in allowed_metrics]
        if unknown:
            raise ValueError(
                f"task {self.name!r}: metric(s) {unknown} do not apply to {kind.value} tasks; "
                f"allowed: {', '.join(allowed_metrics)}"
            )
        if kind is TaskKind.CLASSIFICATION and self.num_labels < 2:
            raise ValueError(f"task {self.name!r}: classification needs num_labels >= 2, got {self.num_labels}")
        if kind is not TaskKind.CLASSIFICATION and self.num_labels != 1:
            raise ValueError(f"task {self.name!r}: {kind.value} tasks have num_labels == 1, got {self.num_labels}")
        if self.string_labels and len(self.label_names) != self.num_labels:
            raise ValueError(f"task {self.name!r}: string_labels needs {self.num_labels} label_names")


class MissingSplit(list):  # type: ignore[type-arg]
    """An empty split that remembers why it is empty.

    It behaves as an empty list (len 0, slicing keeps the reason), so a task without a train
    split (QNLI) loads fine; the loaders raise :class:`SplitUnavailableError` with ``reason``
    only when a caller actually needs examples from it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    @overload
    def __getitem__(self, index: SupportsIndex) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> "MissingSplit": ...
    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return MissingSplit(self.reason)
        return super().__getitem__(index)

    def __repr__(self) -> str:
        return f"MissingSplit({self.reason!r})"


def require_examples(examples: Any, purpose: str) -> list[Example]:
    """Return ``examples`` as a list, or raise a clear error if there are none to use."""
    if isinstance(examples, MissingSplit):
        raise SplitUnavailableError(f"cannot {purpose}: {examples.reason}")
    examples = list(examples)
    if not examples:
        raise ValueError(f"cannot {purpose}: no examples were given (an empty split?)")
    return examples


@dataclass
class TaskData:
    """A loaded task: train (validation removed), validation (carved from train), dev (our test set).

    ``info`` holds what the manifest records: sizes, the validation seed, the data root and the
    sha256 of every file read.
    """

    spec: TaskSpec
    train: list[Example]
    validation: list[Example]
    dev: list[Example]
    info: dict[str, Any] = field(default_factory=dict)
    # split -> the positions (0-based, among the file's examples as read) of the rows a seeded subset kept
    # (task.max_dev); a split kept whole is absent. Too long for the manifest: the eval stage writes eval/rows.json
    rows: dict[str, list[int]] = field(default_factory=dict)

    def require_train(self) -> list[Example]:
        """The train split, or :class:`SplitUnavailableError` when the task ships none."""
        return require_examples(self.train, f"use the train split of task {self.spec.name!r}")
