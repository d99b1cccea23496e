"""A pass setting of the wrong type, for every field of every registered pass: a clear error naming the setting,
never the TypeError of the pass's own first comparison (``speedup=abc`` once ended in ``'<' not supported
between 'str' and 'float'`` with a traceback and exit 1).

The cases are read from the registry and the dataclasses' annotations when the tests are collected, so a new
pass or field is covered without touching this file. Each field with a plain annotation (bool, int, float, str
or a union of them with None), and each such field inside a nested settings block (``recovery``), gets a value
none of its types take, on both entries: the config (``build_steps``, what ``python -m compresslab`` runs:
``PipelineError`` naming the step and the setting) and the Python API (constructing the pass: ``ValueError``
naming the setting). Where the pass's own check refuses the value, its message (which says what the value
means) stands; where the pass crashed on it, the message is ``<pass>.<field> must be <type>, got <value>``
(``pipeline.passes.<step>.<field>`` on the config path).
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from omegaconf import OmegaConf, open_dict

from compresslab import cli
from compresslab.config import compose
from compresslab.pipeline.plan import PipelineError, build_steps
from compresslab.registry import available_passes, get_pass
from compresslab.validate import _block_class, _described, _fits, _hints, _item_kind, _kinds, _plain_kind

case = pytest.mark.case
BAD = ("abc", 3.5, ["x"])  # in turn: the first that none of a field's types take
BAD_LIST = ([True], "25")  # a list field: a wrong item, and a string (once split into characters: [2.0, 5.0])


def _bad(kinds: tuple[Any, ...]) -> list[Any]:
    """Values none of the field's types take."""
    if any(_item_kind(k) is not None for k in kinds):
        return [v for v in BAD_LIST if not any(_fits(k, v) for k in kinds)]
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
    """Every registered pass has plain-typed fields to check, so none is left out of the cases."""
    assert {c.values[0] for c in CASES} == set(available_passes())


def _kwargs(name: str) -> dict[str, Any]:
    """The pass's shipped settings, resolved, as keyword arguments (what the Python API takes)."""
    node = _config(name).pipeline.passes[name]
    return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}


def _set(node: Any, dotted: str, value: Any) -> None:
    with open_dict(node):
        OmegaConf.update(node, dotted, value, merge=False)


def _named(field: str) -> str:
    """A message naming the setting (``lr`` of ``recovery.lr``: a block's own check may leave the block out)."""
    return rf"\b{field.split('.')[-1]}\b"


@pytest.mark.parametrize("name, field, bad, allowed", CASES)
@case(name="a pass setting of the wrong type (pipeline.passes.ziplm.speedup=abc), every field of every pass",
      kind=1, expected="PipelineError naming the step and the setting, before any work")
def test_config_refuses_the_wrong_type(name, field, bad, allowed, expect_clear) -> None:
    cfg = _config(name)
    _set(cfg.pipeline.passes[name], field, bad)
    msg = expect_clear(lambda: build_steps(cfg), match=rf"(?s)step '{name}'.*{_named(field)}",
                       errors=(PipelineError,))
    if f"{field} must be {allowed}, got" in msg:  # the generic message names the full key
        assert f"pipeline.passes.{name}.{field} must be {allowed}, got" in msg


@pytest.mark.parametrize("name, field, bad, allowed", CASES)
@case(name="a pass built in Python with a setting of the wrong type (ZipLM(speedup='abc')), every field",
      kind=1, expected="ValueError naming the setting, never the TypeError of the pass's own checks")
def test_api_refuses_the_wrong_type(name, field, bad, allowed, expect_clear) -> None:
    kwargs = _kwargs(name)
    head, _, sub = field.partition(".")
    if sub:
        kwargs[head] = {**kwargs.get(head, {}), sub: bad}
    else:
        kwargs[head] = bad
    expect_clear(lambda: get_pass(name)(**kwargs), match=rf"(?s){_named(field)}", errors=(ValueError,))


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
