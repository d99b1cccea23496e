"""Every sequence length a pass uses is checked against the model's position table before any work
(pipeline/preflight.py). Preflight asks each pass through its declared ``sequence_lengths`` hook and reads no
field by name, so a pass with a length-like setting must declare the hook (a new ``max_seq`` field would
otherwise be missed, or a field that happened to be called ``seq`` checked under another pass's meaning)."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from compresslab.config import config_dir
from compresslab.pipeline.preflight import pass_lengths
from compresslab.registry import available_passes, get_pass
from compresslab.types import hook

LENGTH_LIKE = re.compile(r"(^|_)seq(_len)?$|(^|_)max_length$|_length$")
# always used, so always reported (the mode-only ones, guided int8's latency_seq, are reported in their mode)
ALWAYS = {"seq", "max_length"}


def pass_yaml(name: str):
    """The registered pass's ``conf/pass`` YAML under the smoke budget (as the CLI composes it)."""
    conf = config_dir()
    node = OmegaConf.merge({"budget": OmegaConf.load(f"{conf}/budget/smoke.yaml")},
                           {"p": OmegaConf.load(f"{conf}/pass/{name}.yaml")})
    return node.p


@pytest.mark.parametrize("name", available_passes())
def test_a_pass_with_a_length_setting_declares_it(name):
    fields = [f.name for f in dataclasses.fields(get_pass(name)) if LENGTH_LIKE.search(f.name)]
    if not fields:
        return
    p = instantiate(pass_yaml(name), _convert_="all")
    assert hook(p, "sequence_lengths") is not None, f"{name} has {fields} but no sequence_lengths()"
    for f in set(fields) & ALWAYS:
        value = getattr(p, f)
        if isinstance(value, int):
            assert pass_lengths(p).get(f) == value, (name, f)


def test_fields_are_not_read_by_name():
    """A pass that does not declare the hook is not checked on a field that happens to be called ``seq``."""

    @dataclasses.dataclass
    class Other:
        seq: int = 10_000  # means something else in this pass (not a token count)

    assert pass_lengths(Other()) == {}
