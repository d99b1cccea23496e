"""Type checks of a settings dataclass's fields against their annotations (bool, int, float, str, lists and
mappings of them, unions with None, nested blocks), run before and after a class's own checks
(:func:`typed_post_init`), with numpy scalars and 1-D arrays taken as the Python values they equal."""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import sys
import types
import typing
from typing import Any, Callable, Mapping, TypeVar

from compresslab.validate.values import field_default, is_int, is_number

S = TypeVar("S")


class FieldTypeError(ValueError):
    """A setting whose value is not of a type its field takes (:func:`check_values`). ``path``: the field, dotted
    from the checked class (``recovery.lr``); ``reason``: ``must be <types>, got <value>``; the message is
    ``<where><path> <reason><note>``, so a caller can name the setting by its own full key instead. ``note``:
    `` (default 'ort')`` (:func:`default_note`) or ''; a caller naming another key (the setting an interpolation
    reads) drops it, since the default is the reading field's."""

    def __init__(self, where: str, path: str, reason: str, note: str = "") -> None:
        super().__init__(f"{where}{path} {reason}{note}")
        self.path, self.reason, self.note = path, reason, note


_SIMPLE = {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "null"}
_ITEMS = {bool: "true/false values", int: "integers", float: "numbers", str: "texts"}


def _accepts(kind: type, value: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return is_int(value)
    if kind is float:
        return is_number(value)
    return isinstance(value, kind)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """The evaluated annotations of a settings dataclass; {} when one names a type-checking-only import."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - nothing can be checked against an annotation that does not evaluate
        return {}


def _item_kind(kind: Any) -> Any:
    """The plain item type of ``list[float]`` / ``tuple[int, ...]`` / ``Sequence[str]``, else None."""
    if typing.get_origin(kind) not in (list, tuple, collections.abc.Sequence):
        return None
    args = [a for a in typing.get_args(kind) if a is not Ellipsis]
    return args[0] if len(set(args)) == 1 and args[0] in _ITEMS else None


def _map_kinds(kind: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]] | None:
    """``(key types, value types)`` of ``dict[K, V]`` / ``Mapping[K, V]`` where K and V are each plain, a union of
    plain types, or ``Any`` (hawq's ``rules: dict[str, int]``, finetune's ``overrides: dict[str, Any]``), else None."""
    if typing.get_origin(kind) not in (dict, collections.abc.Mapping) or len(typing.get_args(kind)) != 2:
        return None
    keys, values = (_kinds(a) for a in typing.get_args(kind))
    return (keys, values) if all(k is Any or k in _SIMPLE for k in (*keys, *values)) else None


def _plain_kind(kind: Any) -> bool:
    return kind in _SIMPLE or _item_kind(kind) is not None or _map_kinds(kind) is not None


def _accepts_any(kinds: tuple[Any, ...], value: Any) -> bool:
    return any(k is Any or _accepts(k, value) for k in kinds)


def _fits(kind: Any, value: Any) -> bool:
    if (item := _item_kind(kind)) is not None:  # a list (or ListConfig), never a string split into characters
        return (isinstance(value, collections.abc.Sequence) and not isinstance(value, (str, bytes))
                and all(_accepts(item, v) for v in value))
    if (pair := _map_kinds(kind)) is not None:  # a mapping (or DictConfig): each key and each value checked
        return isinstance(value, Mapping) and all(_accepts_any(pair[0], k) and _accepts_any(pair[1], v)
                                                  for k, v in value.items())
    return _accepts(kind, value)


def _plural(kinds: tuple[Any, ...]) -> str:
    """``integers or nulls``: the items a mapping's keys or values may be."""
    return " or ".join("any values" if k is Any else _ITEMS.get(k, "nulls") for k in kinds)


def _described(kind: Any) -> str:
    if (item := _item_kind(kind)) is not None:
        return f"a list of {_ITEMS[item]} (written [a, b])"
    if (pair := _map_kinds(kind)) is not None:
        return f"a mapping of {_plural(pair[0])} to {_plural(pair[1])} (written {{a: b}})"
    return _SIMPLE[kind]


def _shown(value: Any, kinds: tuple[Any, ...]) -> str:
    """``value`` as a type error for a field of ``kinds`` shows it: its repr, or the shape of a numpy array that is
    no list (its repr spans lines and says nothing of why it is refused)."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray) and value.ndim > 1:
        lists = any(_item_kind(k) is not None for k in kinds)
        return f"a {value.ndim}-D numpy array of shape {value.shape}" + (" (a list setting takes a 1-D array)"
                                                                            if lists else "")
    return repr(value)


def _kinds(hint: Any) -> tuple[Any, ...]:
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    return typing.get_args(hint) if union else (hint,)


def _as_annotated(hint: Any, value: Any) -> Any:
    """``value`` as the container a list field holds: a tuple (or a 1-D numpy array, by then a list) given to a
    ``list[...]`` field becomes a list, so it compares, hashes into a run's identity and serialises as the list the
    config gives; ``value`` itself otherwise."""
    lists = any(typing.get_origin(k) is list for k in _kinds(hint))
    return list(value) if lists and isinstance(value, tuple) else value


def _block_class(hint: Any) -> type | None:
    """The nested settings dataclass an annotation names (``Recovery``, ``Recovery | None``), else None."""
    blocks = [k for k in _kinds(hint) if isinstance(k, type) and dataclasses.is_dataclass(k)]
    others = [k for k in _kinds(hint) if k is not type(None) and k not in blocks]
    return blocks[0] if len(blocks) == 1 and not others else None


def default_note(cls: type, name: str) -> str:
    """`` (default 'ort')``: the class default of ``cls``'s field ``name``, told with a type error so
    the user sees a value of the right type (a pass's own message used to list its choices); '' when the field has
    no default, or it is None or not a plain scalar or list of them. Top-level fields only: a nested block's
    default comes from its pass (``Recovery(steps=300)``), not from the block's class."""
    if not dataclasses.is_dataclass(cls) or name not in {f.name for f in dataclasses.fields(cls)}:
        return ""
    d = field_default(cls, name)
    plain = (bool, int, float, str)
    if isinstance(d, plain) or (isinstance(d, (list, tuple)) and d and all(isinstance(v, plain) for v in d)):
        return f" (default {list(d) if isinstance(d, tuple) else d!r})"
    return ""


def check_values(cls: type, values: Mapping[str, Any], where: str = "", _path: str = "") -> None:
    """Check ``values`` (field name -> value, as a config node or a built object holds them) against the
    annotations of the settings dataclass ``cls`` where those are plain (bool, int, float, str, a list of one of
    them, or a union of them with None), and inside nested settings blocks (``recovery``) given as mappings or
    objects. Run before a class's own checks, it turns ``speedup=abc`` into a message instead of the
    ``TypeError`` its first comparison would raise, and ``family="25"`` into one instead of ``[2.0, 5.0]``; run
    after them, it catches a value those checks never look at (``cache=maybe`` is a truthy string). Keys the
    class has no field for are left to the caller (it names the allowed ones). Other annotations (enums, lists
    of anything else) are left to the class. A ``dict[K, V]`` field's keys and values are checked as its plain K and V
    (``Any`` takes anything). FieldTypeError (a ValueError) naming ``where`` + the dotted field."""
    hints = _hints(cls)
    for name, value in values.items():
        hint = hints.get(name)
        if hint is None:
            continue
        kinds = _kinds(hint)
        if kinds and all(_plain_kind(k) for k in kinds):
            if not any(_fits(k, value) for k in kinds):
                allowed = " or ".join(_described(k) for k in kinds)
                raise FieldTypeError(where, f"{_path}{name}", f"must be {allowed}, got {_shown(value, kinds)}",
                                     "" if _path else default_note(cls, name))
        elif (block := _block_class(hint)) is not None:
            if isinstance(value, block):
                check_field_types(value, where, f"{_path}{name}.")
            elif isinstance(value, Mapping):
                check_values(block, value, where, f"{_path}{name}.")


def check_field_types(obj: Any, where: str = "", _path: str = "") -> None:
    """:func:`check_values` on a built settings dataclass's own fields (nested blocks included)."""
    check_values(type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, where, _path)


def python_scalars(value: Any) -> Any:
    """``value`` with each numpy scalar in it (``np.int64(5)``, ``np.bool_(True)``, ``np.float32(0.5)``; items of
    lists and tuples and values of dicts too) as the Python scalar it equals, and each 1-D numpy array as the list
    of Python scalars it holds (a 0-d one as its scalar); ``value`` itself where it holds none. An array of more
    dimensions is left as it is, for the type check to refuse naming its shape (no list setting is a table).
    A setting computed with numpy then meets the checks a Python one does (``np.int64`` is no ``int``, ``np.bool_``
    no ``bool``, ``np.float32`` no ``float``: each was refused) and is stored as what a config or manifest
    serialises. A numpy bool stays a bool (an int field refuses it) and a numpy float a float."""
    np = sys.modules.get("numpy")  # a numpy scalar means numpy is loaded: nothing is imported for anyone else
    if np is None:
        return value
    if isinstance(value, (np.bool_, np.number, np.str_)):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim <= 1:  # a 0-d array is a scalar; a 1-D one, a list
        return value.item() if value.ndim == 0 else [python_scalars(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        items = [python_scalars(v) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        plain = {k: python_scalars(v) for k, v in value.items()}
        return value if all(plain[k] is v for k, v in value.items()) else plain
    return value


def typed_post_init(cls: type, where: str) -> None:
    """Wrap the ``__post_init__`` (its own or inherited) of settings dataclass ``cls``: numpy scalars in its fields
    become Python's and 1-D numpy arrays lists of them (:func:`python_scalars`), a tuple given to a list field a list,
    then a plain-typed field (:func:`check_field_types`: numbers, flags,
    text, lists of them, nested blocks too) holding the wrong type is a FieldTypeError naming ``<where><field>``
    (``ziplm.recovery.lr must be a number, got 'fast'``) before the class's own checks run: those compare and
    convert (``"abc" < 1`` is a TypeError, ``family="25"`` became ``[2.0, 5.0]``) and say what a value of the right
    type means (``recovery.lr must be > 0``), which reads as a range error for ``lr=fast``. The fields are checked
    again after them (what they made of the values). A class without ``__post_init__`` is left as it is: its
    dataclass ``__init__`` calls none."""
    own = getattr(cls, "__post_init__", None)
    if own is None or getattr(cls.__dict__.get("__post_init__"), "_typed", False):
        return

    def __post_init__(self: Any) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (plain := _as_annotated(hints.get(f.name), python_scalars(value))) is not value:
                object.__setattr__(self, f.name, plain)  # a frozen block too
        check_field_types(self, where)
        own(self)
        check_field_types(self, where)

    __post_init__._typed = True  # type: ignore[attr-defined]
    cls.__post_init__ = __post_init__  # type: ignore[attr-defined]


def typed_settings(prefix: str) -> Callable[[type[S]], type[S]]:
    """Class decorator (above ``@dataclass``) for a settings block that passes nest under the field ``prefix``
    (``Recovery``: ``recovery``): :func:`typed_post_init` naming ``<prefix>.<field>``, as the block's own checks do,
    so a block built in Python (``Recovery(lr="fast")``, ``Recovery(steps=np.int64(300))``) is checked as a pass is
    (a pass checks a block given as a mapping itself, naming ``<pass>.<prefix>.<field>``)."""

    def deco(cls: type[S]) -> type[S]:
        typed_post_init(cls, f"{prefix}.")
        return cls

    return deco
