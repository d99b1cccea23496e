"""A partial nested settings block (``{"recovery": {"lr": ...}}`` in ``compress()``'s passes, ``pass_from_dict``)
changes the keys it names and keeps the pass's own defaults for the rest: obert's ``recovery.steps`` stays 300,
not ``Recovery``'s 0 (a recovery silently skipped). Every registered pass, every nested block, every key."""

import dataclasses

import pytest

from compresslab.registry import available_passes, build_pass, get_pass
from compresslab.validate import nested_settings


def _blocks():
    for name in available_passes():
        for block, keys in nested_settings(get_pass(name)).items():
            yield name, block, keys


def _other_value(v):
    """A valid value unlike ``v`` for a one-key override (None stays None: an optional key)."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v * 0.5 if v else 0.5
    return v


BLOCKS = list(_blocks())
REQUIRED = {"layer_drop": {"num_layers": 4}}  # a pass's settings without a default


def _build(name, **kw):
    return build_pass(name, **REQUIRED.get(name, {}), **kw)


def test_the_passes_with_nested_blocks_are_found():
    names = {(n, b) for n, b, _ in BLOCKS}
    assert {("obert", "recovery"), ("bibert", "recovery"), ("hawq", "hessian")} <= names


@pytest.mark.parametrize("name,block,keys", BLOCKS, ids=[f"{n}.{b}" for n, b, _ in BLOCKS])
def test_a_partial_block_keeps_the_passes_own_defaults(name, block, keys):
    default = getattr(_build(name), block)
    changed = 0
    for key in keys:
        value = _other_value(getattr(default, key))
        try:
            got = getattr(_build(name, **{block: {key: value}}), block)
        except ValueError:
            continue  # a value this pass refuses (bibert's hardness must stay 1): the other keys still count
        changed += 1
        want = dataclasses.replace(default, **{key: value})
        assert got == want, f"{name}.{block}={{{key!r}: {value!r}}} moved other keys off the pass's defaults"
    assert changed, f"no key of {name}.{block} could be overridden alone"
