"""How many examples each of a run's tokenizations cuts at ``task.max_length``, said and recorded.

Tokenizing truncates silently (``truncation=True``): a 1080-token dev row was scored on its first 64 tokens with
no line and no count (trial 48). The run counts, per split, the examples longer than ``max_length`` once the task
and tokenizer are loaded (``data.truncated`` in the manifest: train, validation, dev), the eval stage counts the
split it scores (the eval section's ``truncated``, shown beside the eval's n in the report), and calibration
counts the examples it draws (a log line: ``PassContext.calibration_batches``). Each says
``N of M <split> examples truncated at max_length=L``.
"""

from __future__ import annotations

from typing import Any

from compresslab.data.loaders import count_and_say
from compresslab.data.schema import MissingSplit


def record_split_truncation(task: Any, tokenizer: Any, max_length: int, manifest: Any) -> dict[str, Any]:
    """``data.truncated`` in ``manifest`` (not saved): per split the run reads (train, validation, dev), how many
    examples are longer than ``max_length``. A split the task does not ship is left out."""
    out: dict[str, Any] = {}
    for split in ("train", "validation", "dev"):
        examples = getattr(task, split)
        if isinstance(examples, MissingSplit) or not len(examples):
            continue
        out[split] = count_and_say(examples, tokenizer, max_length, split, kind=task.spec.kind)
    manifest.data.setdefault("data", {})["truncated"] = out
    return out


__all__ = ["record_split_truncation"]
