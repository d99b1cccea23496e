"""``config.value_source``: the key a value is written at when the key asked about reads it through an
interpolation, for each form OmegaConf resolves (absolute and relative keys, ``oc.select`` with and without its
default taken, chains), and the key itself for interpolations that name no one setting; and the messages built on it
(``setting_message``, ``sources_named``)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from compresslab.config import setting_message, sources_named, value_source

CFG = {"a": {"x": 1, "sibling": "${.x}", "up": "${..b.w}", "env": "${oc.env:HOME}", "unset": "${oc.select:b.none,3}",
             "select": "${oc.select:b.w,3}", "text": "p_${a.x}", "block": {"q": "${..x}"}, "chain": "${a.sibling}"},
       "b": {"w": "${c}"}, "c": "abc", "d": {"k": "???", "r": "${d.k}"}}


@pytest.mark.parametrize("key, source", [
    ("a.x", None),  # its own value
    ("a.sibling", ("a.x", "${.x}")),
    ("a.block.q", ("a.x", "${..x}")),
    ("a.up", ("c", "${..b.w}")),  # b.w reads c in turn: the chain is followed to the value
    ("a.chain", ("a.x", "${a.sibling}")),
    ("a.select", ("c", "${oc.select:b.w,3}")),
    ("a.unset", ("a.unset", "${oc.select:b.none,3}")),  # b.none is not set: the default written at a.unset is used
    ("a.env", ("a.env", "${oc.env:HOME}")),  # no setting: an environment variable
    ("a.text", ("a.text", "p_${a.x}")),  # text around it: no one setting holds the value
    ("d.r", ("d.r", "${d.k}")),  # a source with no value (???) holds none
    ("nowhere.x", None),
])
def test_value_source(key, source) -> None:
    assert value_source(OmegaConf.create(CFG), key) == source


def test_messages() -> None:
    cfg = OmegaConf.create(CFG)
    assert setting_message(cfg, "a.x", "must be text, got 1") == "a.x must be text, got 1"
    assert setting_message(cfg, "a.up", "must be a number, got 'abc'") == \
        "c must be a number, got 'abc' (read by a.up through ${..b.w})"
    assert setting_message(cfg, "a.env", "must be a number, got '/root'") == \
        "a.env must be a number, got '/root' (its value is ${oc.env:HOME})"
    # only the settings the message names by their keys under the prefix ('q' alone is not block.q)
    assert sources_named(cfg, "a", "up=abc is wrong; block.q too") == \
        " (up is read from c through ${..b.w}; block.q is read from a.x through ${..x})"
    assert sources_named(cfg, "a", "q is wrong") == ""
    assert sources_named(cfg, "nowhere", "up") == ""
