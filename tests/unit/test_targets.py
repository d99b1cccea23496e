"""Module selection: one vocabulary (exact, suffix, glob, role, regex), loud on no match."""

from __future__ import annotations

import pytest
from torch import nn

from compresslab.models.tiny import tiny_model
from compresslab.targets import layer_keys, select_modules

ENC = "bert.encoder.layer"


def test_default_targets_are_encoder_linears_only():
    mods = select_modules(tiny_model("bert"))
    assert len(mods) == 12  # 2 layers x (q, k, v, o, ffn_in, ffn_out)
    assert all(n.startswith(ENC) for n in mods)
    assert all(isinstance(m, nn.Linear) for m in mods.values())
    assert list(mods)[:2] == [f"{ENC}.0.attention.self.query", f"{ENC}.0.attention.self.key"]  # model order


@pytest.mark.parametrize("pattern,count", [
    (f"{ENC}.1.output.dense", 1),     # exact
    ("attention.self.query", 2),      # dotted suffix
    ("*.query", 2),                   # glob
    ("layer.1.*", 6),                 # glob on a dotted suffix
    ("ffn_in", 2),                    # adapter role
    (r"re:layer\.0\.", 6),            # regex
    ("classifier", 1),                # heads are selectable when named
])
def test_pattern_kinds(pattern, count):
    assert len(select_modules(tiny_model("bert"), [pattern])) == count


def test_roles_work_across_architectures():
    mods = select_modules(tiny_model("distilbert"), ["q", "ffn_out"])
    assert sorted(n.rsplit(".", 1)[-1] for n in mods) == ["lin2", "lin2", "q_lin", "q_lin"]


def test_ignore_removes_and_order_is_kept():
    mods = select_modules(tiny_model("bert"), None, ["layer.0.*", "k"])
    assert len(mods) == 5 and all(".layer.1." in n and not n.endswith(".key") for n in mods)


@pytest.mark.parametrize("targets,ignore,match", [
    (["attention.self.quey"], None, "'attention.self.quey' matches no nn.Linear"),
    (None, ["nonexistent"], "ignore pattern 'nonexistent'"),
    (["bert.embeddings"], None, "matches no nn.Linear"),  # not a Linear
    ([], None, "non-empty list"),
    ("q", None, "must be a list"),
    (["re:("], None, "bad regex"),
    (["q"], ["q"], "leaves no module"),
])
def test_bad_patterns_raise(targets, ignore, match):
    with pytest.raises(ValueError, match=match):
        select_modules(tiny_model("bert"), targets, ignore)


def test_error_names_available_modules():
    with pytest.raises(ValueError, match=r"available e\.g\.: bert\.encoder\.layer\.0\.attention\.self\.query"):
        select_modules(tiny_model("bert"), ["nope"])


def test_models_without_adapter_need_explicit_targets():
    toy = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert list(select_modules(toy, ["0", "re:^2$"])) == ["0", "2"]
    with pytest.raises(ValueError, match="no architecture adapter"):
        select_modules(toy)


def test_layer_keys():
    model = tiny_model("bert")
    keys = layer_keys(model, [f"{ENC}.1.attention.self.query", "classifier"])
    assert keys == {f"{ENC}.1.attention.self.query": "layer.1", "classifier": "classifier"}
