"""Agreement with the teacher on the VALIDATION split: what every deploy-time choice is made on.

The deploy stage (``pipeline/deploy.py``) chooses the SmoothQuant strength of our int8 IR, ours vs NNCF's
int8 and ORT vs OpenVINO by it, never on dev; the peer suite's OpenVINO cells (``benchmarks/suite_openvino.py``)
choose the strength the same way. The teacher's validation predictions are computed once per instance.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from compresslab.pipeline.state import RunState

if TYPE_CHECKING:
    from torch import nn

    from compresslab.data.tasks import TaskData


class ValidationAgreement:
    """The validation split of ``task`` and the reference model's predictions on it (``reference()``, called and
    scored on first use). ``key``: the figure a choice ranks by, ``agreement`` (fraction of equal labels) for
    classification, ``agreement_pearson`` otherwise. Examples are scored in batches of ``batch_size`` truncated at
    ``max_length``; IRs are compiled at ``precision`` unless a call asks for another. A run's: :meth:`of_run`."""

    def __init__(self, task: "TaskData", tokenizer: Any, reference: Callable[[], "nn.Module"], *, batch_size: int,
                 max_length: int, precision: str) -> None:
        self.task, self.tokenizer, self._reference = task, tokenizer, reference
        self.batch_size, self.max_length, self.precision = batch_size, max_length, precision
        self.examples = list(task.validation)
        self._teacher: Any = None
        kind = task.spec.kind.value
        self.key = "agreement" if kind == "classification" else "agreement_pearson"

    @classmethod
    def of_run(cls, state: RunState) -> "ValidationAgreement":
        """A run's: its task and tokenizer, its teacher (``state.teacher_or_initial()``: the dense input model where
        no pass made a teacher), ``eval.batch_size``, ``task.max_length`` and ``deploy.precision``."""
        s = state.settings
        return cls(state.task, state.tokenizer, state.teacher_or_initial, batch_size=s.eval.batch_size,
                   max_length=s.max_length, precision=s.deploy.precision)

    def _kw(self) -> dict[str, int]:
        return dict(batch_size=self.batch_size, max_length=self.max_length)

    def teacher(self) -> Any:
        from compresslab.eval.evaluate import predict, torch_forward

        if self._teacher is None:
            self._teacher = predict(torch_forward(self._reference()), self.task.spec, self.examples, self.tokenizer,
                                    **self._kw())
        return self._teacher

    def score(self, forwards: dict[str, Any]) -> dict[str, dict[str, float]]:
        """``compare`` of each forward's validation predictions with the teacher's."""
        from compresslab.eval.evaluate import compare, predict

        return {k: compare(predict(f, self.task.spec, self.examples, self.tokenizer, **self._kw()), self.teacher(),
                           self.task.spec) for k, f in forwards.items()}

    def agreement(self, irs: dict[str, Path], threads: int, precision: str | None = None) -> dict[str, dict[str, float]]:
        """Validation scores of OpenVINO IRs, compiled at ``precision`` (default: this instance's, a run's
        ``deploy.precision``)."""
        from compresslab.bench.openvino_runner import OpenVinoRunner
        from compresslab.eval.evaluate import onnx_forward

        p = precision or self.precision
        return self.score({k: onnx_forward(OpenVinoRunner(x, threads, p)) for k, x in irs.items()})

    def ir_scorer(self, threads: int, precision: str | None = None) -> Callable[[dict[str, Path]], dict[str, float]]:
        """label -> IR path in, label -> ``key`` out: the ``score`` argument of
        :func:`compresslab.export.openvino_int8.ours_int8_ir_chosen` (IRs compiled at ``precision``,
        default this instance's, a run's ``deploy.precision``)."""
        return lambda irs: {k: v[self.key] for k, v in self.agreement(irs, threads, precision).items()}

    def labelled_feeds(self) -> list[tuple[dict[str, np.ndarray], np.ndarray]] | None:
        """(feed, teacher label) batches of the validation split for NNCF's accuracy control;
        None for tasks without class labels (accuracy control is then skipped)."""
        from compresslab.data.loaders import make_loader

        if self.key != "agreement" or not self.examples:
            return None
        labels = self.teacher().predictions
        loader = make_loader(self.examples, self.tokenizer, self.batch_size, self.max_length, shuffle=False)
        out, i = [], 0
        for b in loader:
            n = len(b["input_ids"])
            out.append(({k: v.numpy() for k, v in b.items() if k != "labels"}, labels[i:i + n]))
            i += n
        return out
