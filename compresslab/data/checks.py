"""Checks of a task against the model that will run it: the head's labels and the tokenizer.

Both run before any training (``compresslab.compress`` calls them); each raises ``ValueError``
naming what does not fit.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from compresslab.data.schema import Example, TaskData, TaskKind
from compresslab.data.user import NAMED_SOURCES
from compresslab.failure import error_text
from compresslab.validate import check_positive_int

log = logging.getLogger(__name__)


def _model_id2label(config: Any) -> dict[int, str] | None:
    """``config.id2label`` with int keys, or None when absent or the default ``LABEL_<i>`` names."""
    raw = getattr(config, "id2label", None) or {}
    id2label = {int(k): str(v) for k, v in dict(raw).items()}
    if not id2label or all(v == f"LABEL_{k}" for k, v in id2label.items()):
        return None
    return id2label


def head_reload_fix(num_labels: int) -> str:
    """How to load a model with a head of ``num_labels`` outputs (1: regression) in place of its checkpoint's: the
    calls that work. transformers 5 refuses a checkpoint's head of another size unless ``ignore_mismatched_sizes=True``
    (a RuntimeError after its load table), so ``num_labels=`` alone is no fix. The new head is untrained."""
    if num_labels == 1:
        return ("model, tokenizer = compresslab.load_pretrained(DIR, kind='regression'), or AutoModelForSequence"
                "Classification.from_pretrained(DIR, num_labels=1, problem_type='regression', "
                "ignore_mismatched_sizes=True)")
    return (f"model, tokenizer = compresslab.load_pretrained(DIR, num_labels={num_labels}), or AutoModelForSequence"
            f"Classification.from_pretrained(DIR, num_labels={num_labels}, ignore_mismatched_sizes=True)")


def check_labels_match_head(task: TaskData, model_config: Any, *, compare_names: bool = True,
                            names_fix: str | None = None, head_fix: str | None = None) -> None:
    """Raise ``ValueError`` when the model's head cannot be trained / scored on ``task``.

    Checks, from ``model_config`` (a transformers ``PretrainedConfig`` or anything with the same
    attributes): a classification task needs ``num_labels == task.spec.num_labels`` and
    ``problem_type`` None or ``"single_label_classification"`` (``num_labels == 1`` means
    regression to transformers); a regression task needs ``num_labels == 1`` and ``problem_type``
    None or ``"regression"``. When the config has non-default ``id2label`` names and the task's
    class names came from names (``info["label_source"]`` is ``label2id``, ``class_label`` or
    ``sorted_strings``), each id must carry the same name (compared case-insensitively).
    Embedding tasks use no head and pass. ``compare_names=False`` skips the name comparison (the
    caller's explicit ``label2id`` decides what the ids mean). ``head_fix`` ends the message for a head
    of another size or kind (default: load the model with the task's head, :func:`head_reload_fix`);
    ``names_fix`` the one for other class names. Returns None.
    """
    spec, name = task.spec, task.spec.name
    if spec.kind is TaskKind.EMBEDDING:
        return
    num = getattr(model_config, "num_labels", None)
    problem = getattr(model_config, "problem_type", None)
    head = f"the model head has num_labels={num}, problem_type={problem!r}"
    if spec.kind is TaskKind.REGRESSION:
        if num != 1 or problem not in (None, "regression"):
            raise ValueError(f"task {name!r} is regression (one score per example) but {head}; "
                             f"{head_fix or f'load the model with a 1-output head: {head_reload_fix(1)}'}, or pass "
                             "kind='classification' if the labels are classes")
        return
    reload = head_fix or f"load the model with a {spec.num_labels}-label head: {head_reload_fix(spec.num_labels)}"
    if num == 1 or problem == "regression":
        raise ValueError(f"task {name!r} is classification with {spec.num_labels} classes but {head} (a "
                         f"regression head); {reload}")
    if problem not in (None, "single_label_classification"):
        raise ValueError(f"task {name!r} is single-label classification but {head}; only single-label "
                         f"classification and regression heads are supported")
    if num != spec.num_labels:
        raise ValueError(f"task {name!r} has {spec.num_labels} classes {list(spec.label_names)} but {head}; "
                         f"{reload}; or fix the labels")
    id2label = _model_id2label(model_config)
    if not compare_names or id2label is None or task.info.get("label_source") not in NAMED_SOURCES:
        return
    wrong = [(i, n, id2label.get(i)) for i, n in enumerate(spec.label_names)
             if str(id2label.get(i, "")).casefold() != n.casefold()]
    if wrong:
        listed = "; ".join(f"id {i}: data {n!r}, model {m!r}" for i, n, m in wrong)
        fix = names_fix or "pass label2id=model.config.label2id so the data uses the model's ids"
        raise ValueError(f"task {name!r}: class names disagree with the model's config.id2label ({listed}); {fix}")


def note_unnamed_head(task: TaskData, model_config: Any, what: str, fix: str, *, order_given: bool = False,
                      saves: bool = True) -> None:
    """Say (a warning) that a trained head without class names (transformers' ``LABEL_<i>``) reads data class i as
    its id i. That is the only mapping there is, so it is taken, not refused; but a head trained with another order
    scores low as a teacher and, where the caller saves models (``saves``), every saved config.json names its ids
    wrongly, and nothing else would say why. ``what`` names the head's model (``model.finetuned=true: DIR``,
    ``teacher=``); ``fix`` is the setting that gives the head's order. Nothing for other kinds, named heads, classes
    that are integer ids, or a head whose ids the caller named (``order_given``: label2id= for this head): nothing is
    assumed."""
    names = list(task.spec.label_names)
    if (order_given or task.spec.kind is not TaskKind.CLASSIFICATION or _model_id2label(model_config) is not None
            or task.info.get("label_source") not in NAMED_SOURCES or names == [str(i) for i in range(len(names))]):
        return
    mapping = ", ".join(f"{i}={n!r}" for i, n in enumerate(names))
    harm = "it scores low and the saved config.json files name its ids wrongly" if saves else "it scores low"
    log.warning("%s: the head has no class names (config.id2label is LABEL_0..LABEL_%d), so data class i is taken as "
                "head id i: %s. If the head was trained with another order, %s: %s", what, len(names) - 1, mapping,
                harm, fix)


def _encode(tokenizer: Any, examples: Sequence[Example], max_length: int) -> list[list[int]]:
    """Content token ids (no special tokens) per text, after encoding each example as the loaders do.

    The joint call (pairs together, truncated to ``max_length``) is what training sees and is what
    may raise; the second call, every text on its own, finds texts that leave no tokens at all.
    """
    for paired in (False, True):
        part = [e for e in examples if (e.text_b is not None) == paired]
        if part:
            tokenizer([e.text_a for e in part], [e.text_b for e in part] if paired else None,
                      truncation=True, max_length=max_length, padding=False)
    texts = [t for e in examples for t in (e.text_a, e.text_b) if t is not None]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False, truncation=True,
                                           max_length=max_length, padding=False)["input_ids"]]


def check_tokenizable(task: TaskData, tokenizer: Any, max_length: int, *, chunk: int = 1024) -> None:
    """Raise ``ValueError`` naming the first example (split, index, repr) that cannot be tokenized.

    Looks at train, validation and dev in that order: every ``text_a`` (and ``text_b`` when not
    None) must be a non-empty, non-blank ``str``; the tokenizer must encode each example as the
    loaders do (pairs jointly, truncated to ``max_length``) without raising, and each text must
    yield at least one non-special token (text made only of characters the tokenizer drops fails).
    Tokenizes in batches of ``chunk``; re-encodes one by one only to find a failing example.
    """
    check_positive_int(max_length, "max_length")
    name = task.spec.name
    for split in ("train", "validation", "dev"):
        examples = list(getattr(task, split))
        for i, e in enumerate(examples):
            for text, role in ((e.text_a, "text_a"), (e.text_b, "text_b")):
                if (role == "text_a" or text is not None) and (not isinstance(text, str) or not text.strip()):
                    raise ValueError(f"task {name!r}: {split}[{i}] {role} must be a non-empty str, got "
                                     f"{text!r}: {e!r}")
        for start in range(0, len(examples), chunk):
            part = examples[start:start + chunk]
            try:
                content = _encode(tokenizer, part, max_length)
            except Exception as batch_err:  # noqa: BLE001 - any tokenizer failure names its example
                for j, e in enumerate(part):
                    try:
                        _encode(tokenizer, [e], max_length)
                    except Exception as err:  # noqa: BLE001
                        raise ValueError(f"task {name!r}: the tokenizer failed on {split}[{start + j}] {e!r}: "
                                         f"{error_text(err)}") from err
                raise ValueError(f"task {name!r}: the tokenizer failed on {split}[{start}:{start + len(part)}] "
                                 f"but on no single example: {error_text(batch_err)}") from batch_err
            sides = [(start + j, t, e) for j, e in enumerate(part) for t in (e.text_a, e.text_b) if t is not None]
            for (i, text, e), ids in zip(sides, content):
                if not ids:
                    raise ValueError(f"task {name!r}: {split}[{i}] text {text!r} yields no tokens "
                                     f"(only characters the tokenizer drops): {e!r}")


__all__ = ["check_labels_match_head", "check_tokenizable", "head_reload_fix", "note_unnamed_head"]
