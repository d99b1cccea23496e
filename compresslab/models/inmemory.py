"""Models held in memory (``compress(model=...)``, ``teacher=``): what a model loaded from a directory has by
construction and one built in memory may lack, and the copies compresslab makes of a model.

* **weights**: a model built under ``torch.device("meta")`` (or loaded with ``device_map`` and never
  materialized) has shapes but no values; hashing, copying or running it fails deep inside with
  "Cannot copy out of meta tensor". :func:`check_has_weights` refuses it up front, naming a tensor.
* **copies**: ``copy.deepcopy`` pickles every attribute of every module, so one attribute it cannot copy
  (a ``threading.Lock``, an open file, a tensor with a ``grad_fn``) fails the whole copy. :func:`clone` copies the
  model and shares those objects with the original by reference: compresslab never reads them, and a lock or
  a file is one object by nature. Every copy compresslab makes of a model (the API's working copy, the frozen
  teacher (:func:`frozen`), a pass's trial copies) goes through it.
* **gradients**: :func:`unfreeze_if_all_frozen`; a model with every parameter frozen cannot be trained at all
  (autograd fails on the first backward), while a partly frozen one keeps its frozen parts, which are part of its
  run's identity (:func:`frozen_parameters`).
"""

from __future__ import annotations

import copy
import logging
from itertools import chain
from typing import Any

from torch import nn
from torch.nn.parameter import UninitializedTensorMixin

log = logging.getLogger(__name__)

_DEPTH = 4  # how deep into dicts / lists of an attribute the search for the object that cannot be copied goes


def check_has_weights(model: nn.Module, what: str) -> None:
    """ValueError naming the first parameter or buffer of ``model`` (called ``what``) without values: on the
    ``meta`` device, or a lazy module's uninitialized parameter."""
    for name, t in chain(model.named_parameters(), model.named_buffers()):
        if t.is_meta or isinstance(t, UninitializedTensorMixin):
            where = "an uninitialized (lazy) parameter" if isinstance(t, UninitializedTensorMixin) else \
                "on the meta device"
            raise ValueError(f"{what} has no weights: {name} is {where} (built under torch.device('meta'), or loaded "
                             "with device_map / low_cpu_mem_usage and never materialized). Load it with its weights "
                             "first, e.g. AutoModelForSequenceClassification.from_pretrained(DIR), or pass the "
                             "checkpoint directory itself")


def _uncopyable(obj: Any, where: str, found: dict[str, Any], depth: int = 0) -> None:
    """Add to ``found`` (path -> object) the innermost objects under ``obj`` that ``copy.deepcopy`` cannot copy:
    in a dict or a list only the failing items, so the rest of it is still copied (a module's hook dict stays
    its own)."""
    try:
        copy.deepcopy(obj)
        return
    except Exception:  # noqa: BLE001 - deepcopy raises whatever the object's pickling raises (TypeError, RuntimeError)
        pass
    before = len(found)
    if depth < _DEPTH and isinstance(obj, dict):
        for k, v in obj.items():
            _uncopyable(v, f"{where}[{k!r}]", found, depth + 1)
    elif depth < _DEPTH and isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(obj):
            _uncopyable(v, f"{where}[{i}]", found, depth + 1)
    if len(found) == before:  # not a container, or a key (not a value) is what fails: the whole object
        found[where] = obj


def uncopyable_attributes(model: nn.Module, what: str = "model") -> dict[str, Any]:
    """``{"model.my_lock": <the object>}``: the objects held by ``model``'s modules (their attributes, and inside
    dicts and lists of them) that ``copy.deepcopy`` cannot copy. Parameters and buffers are not searched."""
    found: dict[str, Any] = {}
    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            if key not in ("_parameters", "_buffers", "_modules"):  # submodules are visited by named_modules
                _uncopyable(value, ".".join(p for p in (what, prefix, key) if p), found)
    return found


def clone_sharing(model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """A deep copy of ``model``, and what it shares with ``model``: the objects ``copy.deepcopy`` cannot copy
    (:func:`uncopyable_attributes`), which the copy holds by reference; ``{}`` when the whole model copies."""
    try:
        return copy.deepcopy(model), {}
    except Exception:  # noqa: BLE001 - see _uncopyable
        shared = uncopyable_attributes(model)
        if not shared:
            raise
    # deepcopy returns what its memo maps an object's id to: those objects themselves
    return copy.deepcopy(model, {id(v): v for v in shared.values()}), shared


def clone(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that shares with it only what cannot be copied (:func:`clone_sharing`)."""
    return clone_sharing(model)[0]


def frozen(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (:func:`clone`) in eval mode with no gradients: a teacher that never changes."""
    t = clone(model).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def unfreeze_if_all_frozen(model: nn.Module) -> bool:
    """When every parameter of ``model`` has ``requires_grad=False``, turn them all on and return True (the caller
    says so); a model with any trainable parameter is left as it is (its frozen parts stay frozen)."""
    params = list(model.parameters())
    if not params or any(p.requires_grad for p in params):
        return False
    for p in params:
        p.requires_grad_(True)
    return True


def frozen_parameters(model: nn.Module) -> dict[str, bool]:
    """``{name: False}``: the ``requires_grad`` of each parameter of ``model`` that is frozen, in model order; ``{}``
    when none is. Part of a ``compress()`` run's identity: two calls on the same weights that freeze different
    parameters train different models, so neither may resume the other's steps. Names, not tensors: cheap."""
    return {name: False for name, p in model.named_parameters() if not p.requires_grad}


def working_copy(model: nn.Module) -> nn.Module:
    """The copy compress() works on (the caller's model is never changed); an attribute ``copy.deepcopy`` cannot copy
    (a lock, an open file) is shared with the caller's model, with a warning naming it (:func:`clone_sharing`)."""
    work, shared = clone_sharing(model)
    if shared:
        log.warning("compress(): %s cannot be copied; the working copy (the result's model) shares %s with the "
                    "model given", ", ".join(f"{k} ({_type_name(v)})" for k, v in shared.items()),
                    "it" if len(shared) == 1 else "them")
    return work


def _type_name(obj: Any) -> str:
    """``_thread.lock``, ``_io.TextIOWrapper``: a type by its module too (``lock`` alone says little)."""
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
