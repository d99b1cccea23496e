"""The "did you mean" hints every refused key or choice gives (:mod:`difflib`'s close matches)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping


def did_you_mean(unknown: Iterable[str], allowed: Iterable[str],
                 nested: Mapping[str, Iterable[str]] | None = None) -> str:
    """``" ('sorce': did you mean 'source'?)"`` for each unknown key with a close allowed one
    (:func:`difflib.get_close_matches`), or ``""``: the one hint every unknown-key error gives.

    ``nested``: the keys of the settings blocks one level down (``{"recovery": ["steps", ...]}``); an unknown
    key that is (close to) one of them is suggested with its path (``'steps': did you mean 'recovery.steps'?``),
    the hint a setting that moved into a block needs (BiBERT's flat ``steps``)."""
    import difflib

    options = {str(a): str(a) for a in allowed}
    for block, keys in (nested or {}).items():
        for k in keys:
            options.setdefault(str(k), f"{block}.{k}")  # a key of this level wins over a block's key of the name
    hints = [f"{k!r}: did you mean {options[close[0]]!r}?" for k in unknown
             if (close := difflib.get_close_matches(str(k), sorted(options), n=1))]
    return f" ({'; '.join(hints)})" if hints else ""


def choice_hint(value: Any, allowed: Iterable[Any]) -> str:
    """``" ('matmulint': did you mean 'matmulinteger'?)"`` when text ``value`` is close to one of the text
    choices in ``allowed``, else ``""``: the hint every refused choice gives after its list of allowed values."""
    if not isinstance(value, str):
        return ""
    return did_you_mean([value], [a for a in allowed if isinstance(a, str)])
