"""A pass setting of the wrong type, for every field of every registered pass: a clear error naming the setting,
never the TypeError of the pass's own first comparison (``speedup=abc`` once ended in ``'<' not supported
between 'str' and 'float'`` with a traceback and exit 1).

The cases are read from the registry and the dataclasses' annotations when the tests are collected, so a new
pass or field is covered without touching this file. Each field with a plain annotation (bool, int, float, str
or a union of them with None), and each such field inside a nested settings block (``recovery``), gets a value
none of its types take, on both entries: the config (``build_steps``, what ``python -m compresslab`` runs:
``PipelineError`` naming the step and ``pipeline.passes.<step>.<field> must be <type>, got <value>``) and the Python
API (constructing the pass: ``ValueError`` saying ``<pass>.<field> must be <type>, got <value>``). A wrong type is
always said as one: the pass's own check (``recovery.lr must be > 0``) speaks for values of the right type only.

A value a pass field reads through an interpolation (``${budget.lr}``, hawq's
``${oc.select:pipeline.passes.nbits.accuracy_level,0}``) is named where it is written, the key the user set, for
every interpolation the shipped pass configs hold. Numpy scalars (``np.int64``, ``np.bool_``, ``np.float32``) are
taken where the Python scalar they equal is, and stored as it; of the wrong type they are refused as Python's are.
A list field takes a 1-D numpy array or a tuple as the list of Python scalars it holds, and refuses an n-D array
naming its shape; a mapping field (hawq's ``rules: dict[str, int]``) has its keys and values checked by type.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import functools
import json
import re
import typing
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from omegaconf import OmegaConf, open_dict

from compresslab import cli
from compresslab.config import compose, config_dir
from compresslab.pipeline.plan import PipelineError, build_steps
from compresslab.registry import available_passes, get_pass, pass_to_dict
from compresslab.validate.fields import (default_note, _block_class, _described, _fits, _hints, _item_kind, _kinds,
                                         _map_kinds, _plain_kind)

case = pytest.mark.case
BAD = ("abc", 3.5, ["x"])  # in turn: the first that none of a field's types take
BAD_LIST = ([True], "25")  # a list field: a wrong item, and a string (once split into characters: [2.0, 5.0])
# a mapping field (hawq's rules: {pattern: width}): a value of the wrong type, a key of the wrong type, no mapping
BAD_MAP = ({"query": "abc"}, {"query": True}, {7: "abc"}, "abc")


def _bad(kinds: tuple[Any, ...]) -> list[Any]:
    """Values none of the field's types take."""
    if any(_item_kind(k) is not None for k in kinds):
        return [v for v in BAD_LIST if not any(_fits(k, v) for k in kinds)]
    if any(_map_kinds(k) is not None for k in kinds):
        return [v for v in BAD_MAP if not any(_fits(k, v) for k in kinds)]
    return [next(v for v in BAD if not any(_fits(k, v) for k in kinds))]


def _plain(cls: type) -> Iterator[tuple[str, Any, str]]:
    """``(dotted field, bad value, the types it takes as the message words them)`` for every plain-typed field of
    ``cls`` and of its nested blocks."""
    for name, hint in _hints(cls).items():
        kinds = _kinds(hint)
        if kinds and all(_plain_kind(k) for k in kinds):
            yield from ((name, bad, " or ".join(_described(k) for k in kinds)) for bad in _bad(kinds))
        elif (block := _block_class(hint)) is not None:
            yield from ((f"{name}.{sub}", v, allowed) for sub, v, allowed in _plain(block))


def _config(name: str, *overrides: str) -> Any:
    """A config whose steps are finetune and the pass (its shipped YAML, under its own name), as a user adds a
    pass no shipped pipeline runs (``structured_l1``)."""
    group = [] if name == "finetune" else [f"+pass@pipeline.passes.{name}={name}"]
    steps = "[finetune]" if name == "finetune" else f"[finetune,{name}]"
    return compose(["+pipeline=int8", *group, f"pipeline.steps={steps}", *overrides])


CASES = [pytest.param(name, field, bad, allowed, id=f"{name}.{field}={bad!r}")
         for name in available_passes() for field, bad, allowed in _plain(get_pass(name))]


def test_every_pass_has_a_case() -> None:
    """Every registered pass has plain-typed fields to check, so none is left out of the cases; every field annotated
    as a mapping (hawq's ``rules: dict[str, int]``) is one, its keys and values checked by their types."""
    assert {c.values[0] for c in CASES} == set(available_passes())
    mappings = {(name, field) for name in available_passes() for field, hint in _hints(get_pass(name)).items()
                if any(typing.get_origin(k) in (dict, collections.abc.Mapping) for k in _kinds(hint))}
    assert ("hawq", "rules") in mappings and mappings <= {tuple(c.values[:2]) for c in CASES}, mappings


def _kwargs(name: str) -> dict[str, Any]:
    """The pass's shipped settings, resolved, as keyword arguments (what the Python API takes); a fresh copy."""
    return copy.deepcopy(_shipped(name))


@functools.cache
def _shipped(name: str) -> dict[str, Any]:
    node = _config(name).pipeline.passes[name]
    return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}


def _with(name: str, field: str, value: Any) -> dict[str, Any]:
    """The pass's shipped keyword arguments with ``field`` (``recovery.lr``: a key of a block's mapping) at ``value``."""
    kwargs = _kwargs(name)
    head, _, sub = field.partition(".")
    kwargs[head] = {**kwargs.get(head, {}), sub: value} if sub else value
    return kwargs


def _set(node: Any, dotted: str, value: Any) -> None:
    with open_dict(node):
        OmegaConf.update(node, dotted, value, merge=False)


def _note(name: str, field: str) -> str:
    """What the type error adds after the value: the pass class's default of a top-level field, never a nested one's."""
    return "" if "." in field else default_note(get_pass(name), field)


@pytest.mark.parametrize("name, field, bad, allowed", CASES)
@case(name="a pass setting of the wrong type (pipeline.passes.ziplm.speedup=abc), every field of every pass",
      kind=1, expected="PipelineError naming the step and the setting, before any work")
def test_config_refuses_the_wrong_type(name, field, bad, allowed, expect_clear) -> None:
    cfg = _config(name)
    _set(cfg.pipeline.passes[name], field, bad)
    expect_clear(lambda: build_steps(cfg), errors=(PipelineError,),
                 match=rf"step '{name}': {re.escape(f'pipeline.passes.{name}.{field} must be {allowed}, got {bad!r}{_note(name, field)}')}$")


@pytest.mark.parametrize("name, field, bad, allowed", CASES)
@case(name="a pass built in Python with a setting of the wrong type (ZipLM(speedup='abc')), every field",
      kind=1, expected="ValueError naming the setting, never the TypeError of the pass's own checks")
def test_api_refuses_the_wrong_type(name, field, bad, allowed, expect_clear) -> None:
    kwargs = _with(name, field, bad)
    expect_clear(lambda: get_pass(name)(**kwargs), errors=(ValueError,),
                 match=rf"^{re.escape(f'{name}.{field} must be {allowed}, got {bad!r}{_note(name, field)}')}$")


def test_a_right_value_still_builds() -> None:
    """The check takes what the types allow: ints for floats, None for optional fields, the shipped defaults."""
    for name in available_passes():
        assert type(get_pass(name)(**_kwargs(name))) is get_pass(name)
    cfg = compose(["+pipeline=ziplm_trim_int8", "pipeline.passes.ziplm.speedup=2"])  # an int for a float
    assert {s.name: s.pass_ for s in build_steps(cfg)}["ziplm"].speedup == 2


@case(name="CLI: +pipeline=ziplm_trim_int8 pipeline.passes.ziplm.speedup=abc", kind=1,
      expected="exit 2 with one line naming the key and the type it takes, no traceback")
def test_cli_names_the_key(cli_refusal, expect_clear) -> None:
    expect_clear(cli_refusal(lambda: cli.check_command_line(["+pipeline=ziplm_trim_int8",
                                                             "pipeline.passes.ziplm.speedup=abc"])),
                 match=r"pipeline\.passes\.ziplm\.speedup must be a number, got 'abc'")


# --- numpy scalars: taken where the Python scalar they equal is, stored as it, refused where it is --------------

NP_TYPES = {int: (np.int64, np.int32), bool: (np.bool_,), float: (np.float32, np.int64)}  # a float field takes ints
NP_WRONG = (np.bool_(True), np.float64(2.5), np.int64(1))  # each refused where its Python scalar is
# values to try where the shipped one is null or another type: the first the pass builds with is the case's
CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 0, 0.5, 0.1, 0.9, True, False, [0, 1], [2, 4, 8], [0.5, 1.0])


def _field_hint(cls: type, field: str) -> Any:
    """The annotation of the dotted ``field`` (``recovery.lr``) of ``cls``."""
    head, _, sub = field.partition(".")
    return _hints(_block_class(_hints(cls)[head]))[sub] if sub else _hints(cls)[head]


def _numeric(cls: type) -> Iterator[tuple[str, tuple[Any, ...], bool]]:
    """``(dotted field, the scalar types it or its items take, whether it is a list field)`` for each field of ``cls``
    (and of its blocks) that takes integers, numbers or flags, or lists of them."""
    for field in dict.fromkeys(f for f, _, _ in _plain(cls)):
        kinds = _kinds(_field_hint(cls, field))
        items = tuple(i for k in kinds if (i := _item_kind(k)) is not None)
        if any(k in NP_TYPES for k in items or kinds):
            yield field, items or kinds, bool(items)


NP_CASES = [pytest.param(name, field, np_type, is_list, id=f"{name}.{field}={np_type.__name__}")
            for name in available_passes() for field, kinds, is_list in _numeric(get_pass(name))
            for np_type in dict.fromkeys(t for k in kinds if k in NP_TYPES for t in NP_TYPES[k])]
NP_WRONG_CASES = [pytest.param(name, field, bad, id=f"{name}.{field}={bad!r}")
                  for name in available_passes() for field, kinds, is_list in _numeric(get_pass(name)) if not is_list
                  for bad in NP_WRONG if not any(_fits(k, bad.item()) for k in kinds)]


def _as_numpy(value: Any, np_type: type, is_list: bool) -> Any:
    """``value`` as ``np_type`` (each item, for a list field); None where ``value`` is not of the Python type
    ``np_type`` stands for (a flag for ``np.bool_``, an integer for ``np.int64``, a number for ``np.float32``)."""
    if is_list:
        items = [_as_numpy(v, np_type, False) for v in value] if isinstance(value, list) and value else [None]
        return None if any(v is None for v in items) else items
    if np_type is np.bool_:
        return np.bool_(value) if isinstance(value, bool) else None
    if np_type is np.float32:
        return np_type(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return np_type(value) if type(value) is int else None


def _python(value: Any) -> Any:
    """The Python scalar(s) a numpy value equals (``np.float32(0.1)`` -> ``0.10000000149011612``)."""
    return [v.item() for v in value] if isinstance(value, list) else value.item()


def _shape(value: Any) -> Any:
    """``value`` with each leaf replaced by its type: a stored numpy scalar shows as one."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return [_shape(v) for v in value] if isinstance(value, list) else type(value)


def _outcome(build: Any) -> Any:
    try:
        built = build()
    except ValueError as e:
        return "refused", str(e)
    return "built", pass_to_dict(built) if hasattr(built, "name") else dataclasses.asdict(built), \
        _shape(pass_to_dict(built) if hasattr(built, "name") else dataclasses.asdict(built))


@pytest.mark.parametrize("name, field, np_type, is_list", NP_CASES)
@case(name="a pass setting computed with numpy (ZipLM(latency_runs=np.int64(5)), np.bool_, np.float32), every field",
      kind=1, bad_input=False, expected="built as with the Python scalar it equals, which is what it stores")
def test_api_takes_numpy_scalars(name, field, np_type, is_list) -> None:
    head, _, sub = field.partition(".")
    shipped = _shipped(name).get(head)
    shipped = shipped.get(sub) if sub and isinstance(shipped, dict) else shipped
    values = [v for c in (shipped, *CANDIDATES) if (v := _as_numpy(c, np_type, is_list)) is not None]
    # the first the pass takes; a field no value of which is taken alone (select_examples needs select_every): the
    # first, refused as its Python value is, for what it means rather than for its type
    value = next((v for v in values if _outcome(lambda: get_pass(name)(**_with(name, field, _python(v))))[0] == "built"),
                 values[0])
    got = _outcome(lambda: get_pass(name)(**_with(name, field, value)))
    assert got == _outcome(lambda: get_pass(name)(**_with(name, field, _python(value))))  # values and their types
    allowed = " or ".join(_described(k) for k in _kinds(_field_hint(get_pass(name), field)))
    assert got[0] == "built" or f"{field} must be {allowed}, got" not in got[1], got  # never for its type
    json.dumps(got[1])  # what a manifest writes: np.int64 and np.bool_ are not JSON
    if sub:  # the block built in Python takes it as its mapping in the pass does (or refuses it as the Python value)
        block = _block_class(_hints(get_pass(name))[head])
        assert _outcome(lambda: block(**{sub: value})) == _outcome(lambda: block(**{sub: _python(value)}))


@pytest.mark.parametrize("name, field, bad", NP_WRONG_CASES)
@case(name="a numpy scalar of the wrong type (an int field given np.bool_ or np.float64(2.5)), every field",
      kind=1, expected="ValueError: <pass>.<field> must be <type>, got <the value>, as for the Python scalar")
def test_api_refuses_numpy_scalars_of_the_wrong_type(name, field, bad, expect_clear) -> None:
    allowed = " or ".join(_described(k) for k in _kinds(_field_hint(get_pass(name), field)))
    kwargs = _with(name, field, bad)
    expect_clear(lambda: get_pass(name)(**kwargs), errors=(ValueError,),
                 match=rf"^{re.escape(f'{name}.{field} must be {allowed}, got {bad.item()!r}{_note(name, field)}')}$")


# --- 1-D numpy arrays and tuples: taken by a list field as the list they hold; an n-D array refused by its shape ---

ARRAY_DTYPES = {int: (np.int64, np.int32), float: (np.float32, np.float64, np.int64), bool: (np.bool_,),
                str: (np.str_,)}
LIST_CANDIDATES = ([2, 4, 8], [0, 1], [0.5, 1.0], [True], ["ort"], ["MatMul"], ["query"])


def _lists(cls: type) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """``(dotted field, the item types it takes)`` for each list field of ``cls`` (and of its blocks)."""
    for field in dict.fromkeys(f for f, _, _ in _plain(cls)):
        items = tuple(i for k in _kinds(_field_hint(cls, field)) if (i := _item_kind(k)) is not None)
        if items:
            yield field, items


def _list_value(name: str, field: str, items: tuple[Any, ...]) -> list[Any]:
    """A Python list of ``items`` the pass builds with (its shipped value first); else the first such list (refused
    for what it means, as the array holding it must be)."""
    head, _, sub = field.partition(".")
    shipped = _shipped(name).get(head)
    shipped = shipped.get(sub) if sub and isinstance(shipped, dict) else shipped
    values = [v for v in (shipped, *LIST_CANDIDATES)
              if isinstance(v, list) and v and any(all(_fits(list[i], [x]) for x in v) for i in items)]
    return next((v for v in values if _outcome(lambda: get_pass(name)(**_with(name, field, v)))[0] == "built"),
                values[0])


def _stored(p: Any, field: str) -> Any:
    head, _, sub = field.partition(".")
    return getattr(getattr(p, head), sub) if sub else getattr(p, head)


ARRAY_CASES = [pytest.param(name, field, given, id=f"{name}.{field}={given}")
               for name in available_passes() for field, items in _lists(get_pass(name))
               for given in ["tuple", *dict.fromkeys(t.__name__ for i in items for t in ARRAY_DTYPES[i])]]
ND_CASES = [pytest.param(name, field, id=f"{name}.{field}") for name in available_passes()
            for field, _ in _lists(get_pass(name))]


@pytest.mark.parametrize("name, field, given", ARRAY_CASES)
@case(name="a list setting given as a 1-D numpy array or a tuple (Hawq(choices=np.array([2, 4, 8])), "
           "ObertPass(damp_grid=np.linspace(...))), every list field of every pass", kind=1, bad_input=False,
      expected="built as with the Python list it holds, and stored as that list of Python scalars")
def test_api_takes_a_1d_array_or_a_tuple_for_a_list_field(name, field, given) -> None:
    python = _list_value(name, field, dict(_lists(get_pass(name)))[field])
    value = tuple(python) if given == "tuple" else np.array(python, dtype=getattr(np, given))
    want = [x.item() for x in value] if given != "tuple" else python  # np.float32(0.1) is 0.10000000149011612
    got = _outcome(lambda: get_pass(name)(**_with(name, field, value)))
    assert got == _outcome(lambda: get_pass(name)(**_with(name, field, want)))  # values and their types
    json.dumps(got[1])
    if got[0] == "built":  # the field itself holds a list of Python scalars, as the Python list gives it
        stored = _stored(get_pass(name)(**_with(name, field, value)), field)
        assert _shape(stored) == _shape(_stored(get_pass(name)(**_with(name, field, want)), field)), stored


@pytest.mark.parametrize("name, field", ND_CASES)
@case(name="a list setting given as a 2-D numpy array (Hawq(choices=np.array([[2, 4], [8, 32]]))), every list field",
      kind=1, expected="ValueError: <pass>.<field> must be a list of <items>, got a 2-D numpy array of shape (r, c)")
def test_api_refuses_an_nd_array_for_a_list_field(name, field, expect_clear) -> None:
    python = _list_value(name, field, dict(_lists(get_pass(name)))[field])
    table = np.array([python, python])
    allowed = " or ".join(_described(k) for k in _kinds(_field_hint(get_pass(name), field)))
    said = (f"{name}.{field} must be {allowed}, got a 2-D numpy array of shape {table.shape} (a list setting takes a "
            f"1-D array){_note(name, field)}")
    kwargs = _with(name, field, table)
    expect_clear(lambda: get_pass(name)(**kwargs), errors=(ValueError,), match=rf"^{re.escape(said)}$")


def test_a_mapping_takes_numpy_values() -> None:
    """A mapping field's numpy values are Python's once stored (hawq's ``rules={'query': np.int64(4)}``)."""
    hawq = get_pass("hawq")(**_with("hawq", "rules", {"query": np.int64(4), "key": np.int32(8)}))
    assert hawq.rules == {"query": 4, "key": 8} and {type(w) for w in hawq.rules.values()} == {int}


def test_every_block_is_typed() -> None:
    """Each settings block a pass nests (``Recovery``, ``HessianSettings``, ``NBitsTableSettings``) checks types and
    takes numpy scalars when built in Python, as the pass does with it given as a mapping (``validate.typed_settings``,
    naming ``recovery.lr`` as the block's own checks do); a new block without the decorator fails here."""
    blocks = {b for name in available_passes() for h in _hints(get_pass(name)).values() if (b := _block_class(h))}
    assert blocks and all(getattr(b.__post_init__, "_typed", False) for b in blocks), blocks
    recovery = next(b for b in blocks if b.__name__ == "Recovery")
    with pytest.raises(ValueError, match=r"^recovery\.lr must be a number, got 'fast' \(default 5e-05\)$"):
        recovery(lr="fast")
    assert type(recovery(steps=np.int64(3)).steps) is int


# --- a value read through an interpolation: named where it is written ----------------------------------------


def _interpolated(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, interpolation)`` for each value of a raw pass config (nested blocks too) that is one."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _interpolated(value, f"{path}{key}.")
        elif isinstance(value, str) and "${" in value:
            yield f"{path}{key}", value


INTERPOLATED = [pytest.param(f.stem, field, via, id=f"{f.stem}.{field}={via}")
                for f in sorted(Path(config_dir(), "pass").glob("*.yaml"))
                for field, via in _interpolated(OmegaConf.to_container(OmegaConf.load(f), resolve=False))]


def test_the_shipped_interpolations_are_cases() -> None:
    """The pass configs read settings through interpolations (``${budget.lr}``, hawq's nbits accuracy level), and each
    reads one into a field whose type is checked: a new one is a case below, or fails here."""
    assert len(INTERPOLATED) > 20
    for name, field, via in (c.values for c in INTERPOLATED):
        assert all(_plain_kind(k) for k in _kinds(_field_hint(get_pass(name), field))), (name, field)
        assert re.fullmatch(r"\$\{(?:oc\.select:)?[\w.]+(?:,[^{}]*)?\}", via), (name, field, via)


@pytest.mark.parametrize("name, field, via", INTERPOLATED)
@case(name="a wrong-typed value a pass setting reads through an interpolation (budget.lr=fast for ${budget.lr}; "
           "pipeline.passes.nbits.accuracy_level=abc, read by hawq first), every interpolation of the pass configs",
      kind=1, expected="PipelineError naming the key the value is written at, and the setting that read it")
def test_config_names_the_key_a_value_is_read_from(name, field, via, expect_clear) -> None:
    source = re.fullmatch(r"\$\{(?:oc\.select:)?([\w.]+)(?:,[^{}]*)?\}", via).group(1)  # the key a user sets
    kinds = _kinds(_field_hint(get_pass(name), field))
    bad = _bad(kinds)[0]
    cfg = _config(name)
    _set(cfg, source, bad)
    assert OmegaConf.select(cfg, f"pipeline.passes.{name}.{field}") == bad  # the field reads it
    said = (f"{source} must be {' or '.join(_described(k) for k in kinds)}, got {bad!r} "
            f"(read by pipeline.passes.{name}.{field} through {via})")
    expect_clear(lambda: build_steps(cfg), errors=(PipelineError,), match=rf"^step '{name}': {re.escape(said)}$")


@case(name="CLI: +pipeline=hawq_mp3 pipeline.passes.nbits.accuracy_level=abc (hawq's latency table reads it first)",
      kind=1, expected="exit 2 with one line naming pipeline.passes.nbits.accuracy_level, the key the user set")
def test_cli_names_the_key_the_user_set(cli_refusal, expect_clear) -> None:
    said = ("step 'hawq': pipeline.passes.nbits.accuracy_level must be an integer, got 'abc' (read by "
            "pipeline.passes.hawq.latency.accuracy_level through ${oc.select:pipeline.passes.nbits.accuracy_level,0})")
    expect_clear(cli_refusal(lambda: cli.check_command_line(["+pipeline=hawq_mp3",
                                                             "pipeline.passes.nbits.accuracy_level=abc"])),
                 match=rf"^compresslab: error: {re.escape(said)}$")


@pytest.mark.parametrize("overrides, said", [
    (["+pipeline=hawq_mp3", "pipeline.passes.nbits.accuracy_level=7"],
     "step 'hawq': latency.accuracy_level=7 is not valid; .* \\(latency.accuracy_level is read from "
     "pipeline.passes.nbits.accuracy_level through \\$\\{oc.select:pipeline.passes.nbits.accuracy_level,0\\}\\)$"),
    (["+pipeline=ziplm_trim_int8", "budget.lr=-1"],
     r"step 'ziplm': recovery.lr must be a number > 0, got -1.* \(recovery.lr is read from budget.lr through \$\{budget.lr\}\)$"),
])
def test_a_pass_range_error_names_where_its_value_is_read_from(overrides, said, expect_clear) -> None:
    """A value of the right type the pass refuses: its own message stands, and says where an interpolated setting
    it names reads its value (the pass checks the value, it cannot know where it was written)."""
    expect_clear(lambda: build_steps(compose(overrides)), errors=(PipelineError,), match=said)


def test_a_type_error_shows_the_default_of_a_text_field() -> None:
    """The pass's own message used to list a text field's choices; the type error now gives a valid value."""
    with pytest.raises(ValueError, match=r"^ziplm\.latency_runtime must be text or a list of texts \(written \[a, b\]\), "
                                         r"got None \(default 'ort'\)$"):
        get_pass("ziplm")(latency_runtime=None)
    with pytest.raises(ValueError, match=r"^ziplm\.recovery\.lr must be a number, got 'fast'$"):  # nested: none
        get_pass("ziplm")(recovery={"lr": "fast"})
