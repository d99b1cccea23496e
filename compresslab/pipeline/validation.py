"""Agreement with the teacher on the VALIDATION split: what every deploy-time choice is made on.

The deploy stage (``pipeline/deploy.py``) chooses the SmoothQuant strength of our int8 IR, ours vs NNCF's
int8 and ORT vs OpenVINO by it, never on dev; the peer suite's OpenVINO cells (``benchmarks/suite_openvino.py``)
choose the strength the same way. The teacher's validation predictions are computed once per instance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from compresslab.pipeline.state import RunState


class ValidationAgreement:
    """The validation split of ``state.task`` and the teacher's predictions on it (``state.teacher_or_initial()``,
    computed on first use). ``key``: the figure a choice ranks by, ``agreement`` (fraction of equal labels)
    for classification, ``agreement_pearson`` otherwise."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.examples = list(state.task.validation)
        self._teacher: Any = None
        kind = state.task.spec.kind.value
        self.key = "agreement" if kind == "classification" else "agreement_pearson"

    def _kw(self) -> dict[str, int]:
        return dict(batch_size=self.state.settings.eval.batch_size, max_length=self.state.settings.max_length)

    def teacher(self) -> Any:
        from compresslab.eval.evaluate import predict, torch_forward

        if self._teacher is None:
            s = self.state
            self._teacher = predict(torch_forward(s.teacher_or_initial()), s.task.spec, self.examples, s.tokenizer,
                                    **self._kw())
        return self._teacher

    def score(self, forwards: dict[str, Any]) -> dict[str, dict[str, float]]:
        """``compare`` of each forward's validation predictions with the teacher's."""
        from compresslab.eval.evaluate import compare, predict

        s = self.state
        return {k: compare(predict(f, s.task.spec, self.examples, s.tokenizer, **self._kw()), self.teacher(),
                           s.task.spec) for k, f in forwards.items()}

    def agreement(self, irs: dict[str, Path], threads: int, precision: str | None = None) -> dict[str, dict[str, float]]:
        """Validation scores of OpenVINO IRs, compiled at ``precision`` (default: ``deploy.precision``)."""
        from compresslab.bench.openvino_runner import OpenVinoRunner
        from compresslab.eval.evaluate import onnx_forward

        p = precision or self.state.settings.deploy.precision
        return self.score({k: onnx_forward(OpenVinoRunner(x, threads, p)) for k, x in irs.items()})

    def ir_scorer(self, threads: int, precision: str | None = None) -> Callable[[dict[str, Path]], dict[str, float]]:
        """label -> IR path in, label -> ``key`` out: the ``score`` argument of
        :func:`compresslab.export.openvino_int8.ours_int8_ir_chosen` (IRs compiled at ``precision``,
        default ``deploy.precision``)."""
        return lambda irs: {k: v[self.key] for k, v in self.agreement(irs, threads, precision).items()}

    def labelled_feeds(self) -> list[tuple[dict[str, np.ndarray], np.ndarray]] | None:
        """(feed, teacher label) batches of the validation split for NNCF's accuracy control;
        None for tasks without class labels (accuracy control is then skipped)."""
        from compresslab.data.loaders import make_loader

        s = self.state
        if self.key != "agreement" or not self.examples:
            return None
        labels = self.teacher().predictions
        loader = make_loader(self.examples, s.tokenizer, s.settings.eval.batch_size, s.settings.max_length,
                             shuffle=False)
        out, i = [], 0
        for b in loader:
            n = len(b["input_ids"])
            out.append(({k: v.numpy() for k, v in b.items() if k != "labels"}, labels[i:i + n]))
            i += n
        return out
