"""One module-selection vocabulary for every pass: ``targets`` / ``ignore`` lists of patterns.

A pattern is one of

* an exact qualified name: ``bert.encoder.layer.0.attention.self.query``;
* a dotted suffix: ``attention.self.query`` (every layer's query), ``layer.3.output.dense``;
* a glob, matched against the full name or any dotted suffix: ``*.query``, ``layer.1?.*``;
* an adapter role, architecture-independent: ``q``, ``k``, ``v``, ``o``, ``ffn_in``, ``ffn_out``;
* ``re:<regex>``, searched anywhere in the qualified name: ``re:layer\\.[0-2]\\.``.

Only ``nn.Linear`` modules are selectable. A pattern that matches nothing raises ``ValueError``
naming it (a misspelt target silently pruning nothing is the failure this module exists to stop).
The default targets are the adapter's encoder linears: q, k, v, o, ffn_in and ffn_out of every
layer, not embeddings, pooler or classifier (ALGORITHMS.md §2.3).

Per-module settings use the same patterns as ``rules``: a mapping ``{pattern: value}``
(:func:`assign`), e.g. hawq's ``rules: {ffn_out: 8, "re:layer\\.0\\.": 32}``. Two patterns that give
one module different values are an error naming both (no silent precedence by order or
specificity); equal values from overlapping patterns are fine.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Iterable, Mapping, TypeVar

from torch import nn

V = TypeVar("V")

ROLES = ("q", "k", "v", "o", "ffn_in", "ffn_out")
_GLOB_CHARS = set("*?[")
_HELP = ("patterns are exact names, dotted suffixes ('attention.self.query'), globs ('*.query'), "
         "roles (q, k, v, o, ffn_in, ffn_out) or 're:<regex>'")


def check_patterns(value: object, field_name: str) -> list[str] | None:
    """Validate a ``targets``/``ignore`` option: None or a non-empty list of strings (YAML lists too)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{field_name} must be a list of patterns or null, got {value!r}")
    out = list(value)
    if not out or not all(isinstance(p, str) and p for p in out):
        raise ValueError(f"{field_name} must be a non-empty list of non-empty strings (or null), got {out!r}; "
                         + _HELP)
    for p in out:
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as e:
                raise ValueError(f"{field_name}: bad regex in {p!r}: {e}") from None
    return out


def _role_names(model: nn.Module) -> dict[str, list[str]]:
    """role -> qualified names, or {} for models without an adapter (toy modules in tests)."""
    from compresslab.models.adapters import UnsupportedArchitectureError, get_adapter

    try:
        ad = get_adapter(model)
    except UnsupportedArchitectureError:
        return {}
    out: dict[str, list[str]] = {r: [] for r in ROLES}
    for lv in ad.layers():
        for r in ROLES:
            if getattr(lv, r) is not None:
                out[r].append(lv.names[r])
    return out


def matches(pattern: str, name: str) -> bool:
    """Whether a non-role ``pattern`` selects the qualified module ``name``."""
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    if _GLOB_CHARS & set(pattern):
        return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, "*." + pattern)
    return name == pattern or name.endswith("." + pattern)


def check_rules(value: object, field_name: str) -> dict[str, object] | None:
    """Validate a ``rules`` option: None, or a non-empty mapping of non-empty pattern strings to values
    (YAML/OmegaConf dicts arrive as plain dicts after ``_convert_="all"``). Returns a plain ``dict`` in
    the given order; the values are the caller's to check (widths, ratios, ...). ValueError naming
    ``field_name`` for another shape, an empty mapping, a non-string or empty key, or a bad ``re:`` regex."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{field_name} must be a mapping {{pattern: value}} or null, got {value!r}; {_HELP}")
    out = dict(value)
    if not out:
        raise ValueError(f"{field_name} is an empty mapping: give {{pattern: value}} entries, or null for none")
    bad = [k for k in out if not (isinstance(k, str) and k)]
    if bad:
        raise ValueError(f"{field_name} keys must be non-empty pattern strings, got {bad!r}; {_HELP}")
    check_patterns(list(out), field_name)  # the regexes compile
    return out


def _hits(p: str, linears: Mapping[str, nn.Linear], roles: Mapping[str, list[str]], what: str) -> set[str]:
    """The Linears one pattern selects; ValueError naming it (and ``what`` it is) when there are none."""
    hit = ({n for n in roles.get(p, []) if n in linears} if p in ROLES and roles
           else {n for n in linears if matches(p, n)})
    if not hit:
        examples = ", ".join(list(linears)[:4]) or "(the model has no nn.Linear)"
        raise ValueError(f"{what} {p!r} matches no nn.Linear module; available e.g.: {examples}; {_HELP}")
    return hit


def _select(patterns: list[str], linears: dict[str, nn.Linear], roles: dict[str, list[str]],
            what: str) -> set[str]:
    chosen: set[str] = set()
    for p in patterns:
        chosen |= _hits(p, linears, roles, what)
    return chosen


def select_modules(model: nn.Module, targets: list[str] | None = None,
                   ignore: list[str] | None = None) -> dict[str, nn.Linear]:
    """Qualified name -> ``nn.Linear`` for ``targets`` minus ``ignore``, in model order.

    ``targets=None`` means the encoder linears of the model's adapter. Every pattern in
    ``targets`` and ``ignore`` must match at least one Linear; an empty selection is an error.
    """
    targets = check_patterns(targets, "targets")
    ignore = check_patterns(ignore, "ignore")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    roles = _role_names(model)
    if targets is None:
        if not roles:
            raise ValueError(f"{type(model).__name__} has no architecture adapter, so there are no default "
                             f"targets; pass targets explicitly; {_HELP}")
        chosen = {n for r in ROLES for n in roles[r] if n in linears}
    else:
        chosen = _select(targets, linears, roles, "target")
    if ignore:
        chosen -= _select(ignore, linears, roles, "ignore pattern")
    if not chosen:
        raise ValueError(f"targets={targets} minus ignore={ignore} leaves no module to compress")
    return {n: m for n, m in linears.items() if n in chosen}


def assign(model: nn.Module, rules: Mapping[str, V], *, among: Iterable[str] | None = None,
           field_name: str = "rules") -> dict[str, V]:
    """Qualified Linear name -> value, in model order, from ``rules`` = ``{pattern: value}`` (patterns as
    :func:`select_modules` reads them). Modules no pattern matches are absent.

    ``among`` (e.g. a pass's selected modules, names or a name -> module mapping): the rules apply to
    these only; a pattern's matches outside them are left out, and a pattern matching none of them
    is an error. Errors (ValueError, naming ``field_name``): the option's shape (:func:`check_rules`;
    None is refused here), a pattern matching no ``nn.Linear`` (with the pattern help), a pattern
    whose every match lies outside ``among``, and two patterns giving one module different values
    (naming the module, both patterns and both values: which should win is the user's to say, by
    narrowing one pattern).
    """
    if check_rules(rules, field_name) is None:
        raise ValueError(f"{field_name} is None: nothing to assign")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    roles = _role_names(model)
    allowed = None if among is None else set(among)
    order = {n: i for i, n in enumerate(linears)}
    given: dict[str, tuple[str, V]] = {}  # name -> (pattern, value)
    for p, v in rules.items():
        hit = _hits(p, linears, roles, f"{field_name} pattern")
        if allowed is not None:
            outside = sorted(hit - allowed, key=order.__getitem__)
            hit &= allowed
            if not hit:
                raise ValueError(f"{field_name} pattern {p!r} matches only modules outside the selected ones "
                                 f"(e.g. {', '.join(outside[:3])}); the rules apply to the modules the targets/"
                                 "ignore patterns select: add these to targets, or narrow the pattern")
        for n in sorted(hit, key=order.__getitem__):  # model order: the first conflict is named
            if n in given and given[n][1] != v:
                q, w = given[n]
                raise ValueError(f"{field_name}: patterns {q!r} ({w!r}) and {p!r} ({v!r}) both match {n} with "
                                 "different values; narrow one so that each module gets one value")
            given.setdefault(n, (p, v))
    return {n: given[n][1] for n in linears if n in given}


def layer_keys(model: nn.Module, names: Iterable[str]) -> dict[str, str]:
    """Qualified module name -> ``"layer.<i>"`` (its encoder layer), or the name itself outside layers.

    Per-layer results (sparsity, kept structure) are keyed like this in ``PassResult.structure``.
    """
    from compresslab.models.adapters import UnsupportedArchitectureError, get_adapter

    try:
        prefixes = [(lv.prefix + ".", f"layer.{lv.index}") for lv in get_adapter(model).layers()]
    except UnsupportedArchitectureError:
        prefixes = []
    out = {}
    for n in names:
        out[n] = next((key for pre, key in prefixes if n.startswith(pre)), n)
    return out


__all__ = ["ROLES", "assign", "check_patterns", "check_rules", "layer_keys", "matches", "select_modules"]
