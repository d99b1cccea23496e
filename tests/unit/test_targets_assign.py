"""``targets.assign``: {pattern: value} rules in the selection vocabulary; conflicts, misses and
matches outside the selection are errors, never silent precedence."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from torch import nn

from compresslab.models.tiny import tiny_model
from compresslab.targets import assign, check_rules, select_modules

ENC = "bert.encoder.layer"


@pytest.fixture(scope="module")
def bert() -> nn.Module:
    return tiny_model("bert", seed=0)


def test_roles_and_regexes_map_to_values_in_model_order(bert):
    out = assign(bert, {"ffn_out": 8, r"re:layer\.1\.attention\.self\.(query|key)$": 4})
    assert out == {f"{ENC}.0.output.dense": 8, f"{ENC}.1.attention.self.query": 4,
                   f"{ENC}.1.attention.self.key": 4, f"{ENC}.1.output.dense": 8}
    assert list(out) == [n for n in dict(bert.named_modules()) if n in out]  # model order


def test_suffix_glob_exact_and_classifier(bert):
    assert assign(bert, {"attention.self.value": "v"}) == {f"{ENC}.0.attention.self.value": "v",
                                                           f"{ENC}.1.attention.self.value": "v"}
    assert list(assign(bert, {"layer.0.*": 1})) == [n for n in select_modules(bert) if ".layer.0." in n]
    assert assign(bert, {"classifier": 32}) == {"classifier": 32}


def test_overlapping_patterns_with_equal_values_are_fine(bert):
    out = assign(bert, {"ffn_out": 8, r"re:layer\.0\.output\.dense": 8})
    assert out == {f"{ENC}.0.output.dense": 8, f"{ENC}.1.output.dense": 8}


def test_conflict_names_both_patterns_and_the_module(bert):
    with pytest.raises(ValueError, match=r"rules: patterns 'ffn_out' \(8\) and 're:layer\\\\.0\\\\.' \(4\) both "
                                         rf"match {ENC}\.0\.output\.dense"):
        assign(bert, {"ffn_out": 8, r"re:layer\.0\.": 4})


def test_unknown_pattern_raises_with_help(bert):
    with pytest.raises(ValueError, match=r"widths pattern 'ffn_outt' matches no nn.Linear.*roles \(q, k, v"):
        assign(bert, {"ffn_outt": 8}, field_name="widths")


def test_among_restricts_and_refuses_patterns_only_outside(bert):
    enc = select_modules(bert)
    out = assign(bert, {"re:dense$": 4}, among=enc)  # the pooler's dense is outside: left out
    assert out and all(n in enc for n in out) and "bert.pooler.dense" not in out
    assert "bert.pooler.dense" in assign(bert, {"re:dense$": 4})
    with pytest.raises(ValueError, match=r"'classifier' matches only modules outside the selected ones "
                                         r"\(e\.g\. classifier\)"):
        assign(bert, {"classifier": 8}, among=enc)
    assert assign(bert, {"q": 2}, among=list(enc)[:1]) == {f"{ENC}.0.attention.self.query": 2}


def test_check_rules_shapes():
    assert check_rules(None, "rules") is None
    omega = OmegaConf.to_container(OmegaConf.create({"ffn_out": 8, "q": 4}))
    assert check_rules(omega, "rules") == {"ffn_out": 8, "q": 4}
    for bad, match in [(["q"], "must be a mapping"), ("q", "must be a mapping"), ({}, "empty mapping"),
                       ({"": 8}, "non-empty pattern strings"), ({3: 8}, "non-empty pattern strings"),
                       ({"re:(": 8}, "bad regex")]:
        with pytest.raises(ValueError, match=match):
            check_rules(bad, "rules")


def test_assign_refuses_none(bert):
    with pytest.raises(ValueError, match="rules is None"):
        assign(bert, None)  # type: ignore[arg-type]
