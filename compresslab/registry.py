"""An explicit pass registry: discovery for the CLI, the report and the contract tests."""

from __future__ import annotations

import dataclasses
import importlib
from enum import Enum
from typing import Any, Callable, TypeVar

from compresslab.types import Pass
from compresslab.validate import coerce_enum as coerce_enum  # re-export: the old import path
from compresslab.validate import did_you_mean, nested_settings, typed_post_init

T = TypeVar("T")

_PASSES: dict[str, type] = {}

# Every pass module, imported on first lookup so `import compresslab` stays light.
_PASS_MODULES = (
    "compresslab.passes.finetune",
    "compresslab.passes.magnitude",
    "compresslab.passes.layer_drop",
    "compresslab.passes.obert",
    "compresslab.passes.ziplm",
    "compresslab.passes.structured_l1",
    "compresslab.passes.ort_int8_dynamic",
    "compresslab.passes.ort_int8_static",
    "compresslab.passes.hawq",
    "compresslab.passes.ort_matmul_nbits",
    "compresslab.passes.bibert",
    "compresslab.passes.int8_qat",
)


class UnknownPassError(KeyError):
    """Raised for a pass name that is not registered; lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


def register_pass(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a pass dataclass under ``name`` (== its module and YAML name)."""

    def deco(cls: type[T]) -> type[T]:
        if name in _PASSES and _PASSES[name] is not cls:
            raise ValueError(f"pass {name!r} is registered twice")
        cls.name = name  # type: ignore[attr-defined]
        # every pass, the ones still to be written included: a setting of the wrong type is a FieldTypeError naming
        # <pass>.<field> (its own checks' message stands for values of the right type); numpy scalars are taken
        typed_post_init(cls, f"{name}.")
        _PASSES[name] = cls
        return cls

    return deco


def _load_all() -> None:
    for mod in _PASS_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # a real missing dependency, not a pass module still to be written
                raise


def available_passes() -> list[str]:
    """Names of every registered pass, sorted."""
    _load_all()
    return sorted(_PASSES)


def get_pass(name: str) -> type:
    """The pass class registered under ``name``; a clear error listing the known names otherwise."""
    _load_all()
    try:
        return _PASSES[name]
    except KeyError:
        raise UnknownPassError(f"unknown pass {name!r}; known passes: {', '.join(sorted(_PASSES))}") from None


def build_pass(name: str, **kwargs: Any) -> Pass:
    """Construct a pass by name from plain keyword arguments (validated by the dataclass)."""
    cls = get_pass(name)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - names)
    if unknown:  # a key that moved into a block (bibert's steps: recovery.steps) is named with its path
        hint = did_you_mean(unknown, names, nested_settings(cls))
        raise ValueError(f"pass {name!r} has no option(s) {unknown}{hint}; options: {sorted(names)}")
    return cls(**kwargs)


def _plain(v: Any) -> Any:
    """Enums to their values and nested settings blocks (``Recovery``) to dicts, recursively."""
    if isinstance(v, Enum):
        return v.value
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


# Version of the dict written by pass_to_dict: 1 = before #8 (recovery fields flat on the pass),
# 2 = a nested ``recovery`` block. pass_from_dict reads both, and BiBERT's schema-2 dicts from before it had a
# recovery block (design review item 7: its flat eval_every / eval_examples are select_every / select_examples).
PASS_SCHEMA = 2
_FLAT_RECOVERY = {"steps": "steps", "recovery_steps": "steps", "lr": "lr", "hardness": "hardness",
                  "temperature": "temperature", "hidden_weight": "hidden_weight", "eval_every": "select_every",
                  "eval_examples": "select_examples"}


def pass_to_dict(p: Any) -> dict[str, Any]:
    """JSON-able dict of a pass's settings, with its name and ``schema`` version, for manifests,
    ``pass.json`` and round trips.

    A nested settings block (``recovery``) becomes a dict; the pass's ``__post_init__`` turns it
    back into its dataclass, so :func:`pass_from_dict` rebuilds an equal pass.
    """
    out: dict[str, Any] = {"name": p.name, "schema": PASS_SCHEMA}
    for f in dataclasses.fields(p):
        out[f.name] = _plain(getattr(p, f.name))
    return out


def pass_from_dict(d: dict[str, Any]) -> Pass:
    """Inverse of :func:`pass_to_dict`; also reads the dicts of passes whose recovery fields were flat (schema
    1; BiBERT's before its recovery block, schema 2).

    Raises ValueError for a schema newer than this version knows, UnknownPassError for a name.
    """
    d = dict(d)
    schema = int(d.pop("schema", 1))
    if schema > PASS_SCHEMA:
        raise ValueError(f"pass dict schema {schema} is newer than this compresslab reads ({PASS_SCHEMA}); upgrade")
    name = d.pop("name")
    d = nest_flat_recovery(get_pass(name), d)
    return build_pass(name, **d)


def nest_flat_recovery(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """A pass's settings written before it had a ``recovery`` block (no ``recovery`` key, its fields flat: an old
    ``pass.json``, a run's recorded config) with those fields nested as the pass reads them now; ``d`` as it is
    otherwise. Keys other than the moved ones (``_target_``) are kept."""
    if "recovery" not in {f.name for f in dataclasses.fields(cls)} or "recovery" in d:
        return d
    rec = {new: d.pop(old) for old, new in _FLAT_RECOVERY.items() if old in d}
    return {**d, "recovery": rec} if rec else d  # none: the pass's own default recovery
