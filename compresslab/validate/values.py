"""Checks of one setting's value: each returns the value converted to its canonical type (or raises ``ValueError``
naming the field and what is allowed). YAML gives booleans for ``true``/``false`` and Python's ``bool`` is an
``int``, so :func:`is_number` is the one place that decides a bool is not a number. Nested settings blocks
(``recovery``) are built from mappings here too."""

from __future__ import annotations

import dataclasses
import math
from enum import Enum
from typing import Any, Mapping, TypeVar

from compresslab.validate.hints import choice_hint

E = TypeVar("E", bound=Enum)
S = TypeVar("S")


class SettingsError(ValueError):
    """A setting that is missing, unknown or out of range (names the key and what it may be)."""


def is_number(value: Any) -> bool:
    """An int or float, but not a bool (``True`` is an ``int`` in Python, never a setting's number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """An int, but not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def coerce_enum(enum_cls: type[E], value: Any, field_name: str) -> E:
    """Convert a YAML string to an enum member, or raise ValueError listing the allowed values."""
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum_cls)
        hint = choice_hint(value, [m.value for m in enum_cls])
        raise ValueError(f"{field_name}={value!r} is not valid; allowed: {allowed}{hint}") from None


def coerce_settings(cls: type[S], value: Any, field_name: str, base: S | None = None) -> S:
    """A nested settings dataclass from itself or from a mapping (Hydra and ``pass_from_dict`` give
    dicts); ValueError naming ``field_name`` and the options for anything else or an unknown key.
    ``base``: where a mapping leaves a key out, the value comes from it (a pass's own defaults) rather
    than from ``cls``'s."""
    if isinstance(value, cls):
        return value
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    if not isinstance(value, Mapping):
        raise ValueError(f"{field_name} must be a mapping of {names}, got {value!r}")
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise ValueError(f"{field_name} has no option(s) {unknown}; options: {names}")
    defaults = {n: getattr(base, n) for n in names} if base is not None else {}
    return cls(**{**defaults, **dict(value)})


def coerce_block(owner: Any, name: str, cls: type[S]) -> S:
    """``owner.<name>`` (a nested settings block of a pass: ``recovery``, hawq's ``hessian``) as a ``cls``. A
    mapping that leaves keys out gets them from the owner's own default for that field (obert's
    ``recovery.steps=300``), not from ``cls``'s (``Recovery.steps=0``): ``{"recovery": {"lr": 1e-4}}`` changes the
    learning rate and nothing else, as the same partial block in a YAML override does. ValueError as
    :func:`coerce_settings`."""
    base = field_default(type(owner), name)
    return coerce_settings(cls, getattr(owner, name), name, base if isinstance(base, cls) else None)


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name`` (a fresh one from its ``default_factory``);
    ``dataclasses.MISSING`` when it has none. KeyError for a field ``cls`` does not have."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def check_fraction(value: Any, name: str, *, allow_one: bool = False) -> float:
    """A fraction (a sparsity) in [0, 1), or [0, 1] with ``allow_one``."""
    if not is_number(value):
        raise ValueError(f"{name} must be a number in [0, {'1]' if allow_one else '1)'}, got {value!r}")
    hi_ok = value <= 1.0 if allow_one else value < 1.0
    if not (0.0 <= value and hi_ok):
        raise ValueError(f"{name}={value} must be in [0, {'1]' if allow_one else '1)'}")
    return float(value)


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (1 by default: a count)."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_int(value: Any, name: str) -> int:
    """An integer >= 1."""
    return check_int(value, name, minimum=1)


def check_positive(value: Any, name: str) -> float:
    """A number > 0."""
    if not is_number(value) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def check_nonnegative(value: Any, name: str) -> float:
    """A number >= 0 (a duration, where 0 means none)."""
    if not is_number(value) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def check_finite_nonnegative(value: Any, name: str, *, hint: str = "") -> float:
    """A finite number >= 0 (a coefficient: ``inf`` or ``nan`` makes whatever it scales inf/NaN);
    ``hint`` is added to the message in parentheses."""
    if not is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 and finite{f' ({hint})' if hint else ''}, got {value!r}")
    return float(value)


def check_loss_weight(value: Any, name: str) -> float:
    """A loss term's weight: a finite number >= 0 (0 turns the term off). ``inf`` or ``nan`` makes every
    step's loss inf/NaN (training stops at its first step, hours later, or the term swamps the others)."""
    return check_finite_nonnegative(value, name, hint="0 turns the term off")


def check_finite_positive(value: Any, name: str) -> float:
    """A finite number > 0 (a distillation temperature: ``inf`` flattens both distributions to NaN)."""
    if not is_number(value) or not math.isfinite(value) or not value > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_choice(value: Any, allowed: tuple[Any, ...], name: str) -> Any:
    """One of ``allowed`` (compared by type too, so ``True`` is not ``1`` and ``"true"`` is not ``True``)."""
    if not any(value == a and type(value) is type(a) for a in allowed):
        raise ValueError(f"{name}={value!r} is not valid; allowed: {', '.join(repr(a) for a in allowed)}"
                         f"{choice_hint(value, allowed)}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """A YAML boolean (``true``/``false``); a string such as ``"yes"`` would be truthy, so it is refused."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_text(value: Any, name: str) -> str:
    """A non-empty string (a name or a path); a number or ``null`` where text belongs is refused."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def check_list(value: Any, name: str, what: str = "values") -> list[Any]:
    """A YAML list (``[a, b]``); a scalar where a list belongs (``x=128`` for ``x=[128]``) is refused."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list of {what} (written [a, b]), got {value!r}")
    return list(value)


def check_bools(p: Any, *names: str) -> None:
    """Reject non-bool flags of pass ``p`` (YAML ``"false"`` as a string would be truthy)."""
    for n in names:
        if not isinstance(getattr(p, n), bool):
            raise ValueError(f"{p.name} {n}={getattr(p, n)!r} must be true or false")


def nested_settings(cls: type) -> dict[str, list[str]]:
    """``{field: [its fields]}`` for each field of dataclass ``cls`` that is itself a settings dataclass (a
    pass's ``recovery``), from its default: the ``nested`` of :func:`did_you_mean`."""
    out: dict[str, list[str]] = {}
    for f in dataclasses.fields(cls):
        default = field_default(cls, f.name)
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            out[f.name] = [g.name for g in dataclasses.fields(default)]
    return out
