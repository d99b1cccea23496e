"""The search space as data: which runs an accuracy-aware search may try, and in which order.

A space is ``search.space`` of ``conf/search/<name>.yaml``: a mapping of entry name -> entry, tried
in the order written (cheapest / most promising first: single methods, then compositions seeded
from the best singles). Each entry names a shipped pipeline and how its candidates differ:

* nothing: one candidate, the pipeline as shipped (``int8``);
* ``key`` + ``values``: one candidate per value of one setting, written mild -> aggressive
  (``pipeline.passes.ziplm.speedup: [1.5, 2.0, 3.0]``); with ``stop_on_miss`` (the default) the
  rest of the entry is skipped once a value loses more than max_drop on validation (a harsher one
  would too; a drop between max_drop - margin and max_drop is not selected but does not stop the sweep:
  on ~1,000 validation examples it is within noise);
* ``seeds``: values taken from the candidates of an earlier entry within max_drop on validation, best
  objective first (``{key: pipeline.passes.ziplm.speedup, from: ziplm}``): a composition tries
  the settings its parts were good at alone. Several seeds combine as a product.

Every candidate is a normal run: ``+pipeline=<pipeline>`` plus its overrides (resumable by config
hash, the teacher cached). This module is pure data: no config is composed and nothing is run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from compresslab.validate import SettingsError, is_number

# the keys an entry may have (anything else is a typo: refused with this list)
ENTRY_KEYS = ("pipeline", "methods", "cost", "key", "values", "seeds", "overrides", "stop_on_miss")
_PASS_PREFIX = "pipeline.passes."


@dataclass(frozen=True)
class Candidate:
    """One run a search may start: ``+pipeline=<pipeline>`` with ``overrides``.

    ``name`` is unique within a search (``ziplm_2x[ziplm.speedup=1.5]``); ``entry`` is the space
    entry it came from; ``methods`` the compression methods it composes (one = a single method);
    ``cost`` its relative price (the driver turns it into seconds, see ``driver.estimate_s``).
    """

    name: str
    entry: str
    pipeline: str
    overrides: tuple[str, ...]
    methods: tuple[str, ...]
    cost: float

    @property
    def single(self) -> bool:
        """One compression method (the best of these is the search's point of comparison)."""
        return len(self.methods) == 1

    def value(self, key: str) -> str | None:
        """The value this candidate sets for ``key`` (as written on the command line), or None."""
        for o in self.overrides:
            k, _, v = o.partition("=")
            if k == key:
                return v
        return None


@dataclass(frozen=True)
class Seed:
    """``key`` takes its values from the candidates of entry ``source`` within max_drop on validation."""

    key: str
    source: str


@dataclass(frozen=True)
class Entry:
    """One entry of a space (see the module docstring); built by :func:`parse_space`."""

    name: str
    pipeline: str
    methods: tuple[str, ...]
    cost: float
    key: str | None = None
    values: tuple[Any, ...] = ()
    seeds: tuple[Seed, ...] = ()
    overrides: tuple[str, ...] = ()
    stop_on_miss: bool = True


def _where(name: str, key: str | None = None) -> str:
    return f"search.space.{name}" + (f".{key}" if key else "")


def _setting_key(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or "=" in value or " " in value:
        raise SettingsError(f"{where} must be a dotted setting such as pipeline.passes.ziplm.speedup, got {value!r}")
    return value


def _entry(name: str, raw: Any, pipelines: Sequence[str]) -> Entry:
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{_where(name)} must be a mapping with keys {list(ENTRY_KEYS)}, got {raw!r}")
    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        raise SettingsError(f"{_where(name)}: unknown key(s) {unknown}; an entry has: {', '.join(ENTRY_KEYS)}")
    pipeline = raw.get("pipeline")
    if pipeline not in pipelines:
        raise SettingsError(f"{_where(name, 'pipeline')}={pipeline!r} is not a shipped pipeline; available: "
                            f"{', '.join(pipelines)}")
    methods = raw.get("methods")
    if not isinstance(methods, Sequence) or isinstance(methods, str) or not methods or \
            not all(isinstance(m, str) and m for m in methods):
        raise SettingsError(f"{_where(name, 'methods')} must be a non-empty list of method names (one for a "
                            f"single method, e.g. [ziplm]; several for a composition), got {methods!r}")
    cost = raw.get("cost", 1.0)
    if not is_number(cost) or not 0 < cost < float("inf"):
        raise SettingsError(f"{_where(name, 'cost')} must be a finite number > 0 (relative price), got {cost!r}")
    key = raw.get("key")
    values = raw.get("values")
    if (key is None) != (values is None):
        raise SettingsError(f"{_where(name)}: 'key' and 'values' go together (one setting and the values it "
                            f"takes, mild -> aggressive), got key={key!r} values={values!r}")
    if key is not None:
        _setting_key(key, _where(name, "key"))
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise SettingsError(f"{_where(name, 'values')} must be a non-empty list, got {values!r}")
    seeds = []
    for i, s in enumerate(raw.get("seeds") or ()):
        if not isinstance(s, Mapping) or set(s) != {"key", "from"}:
            raise SettingsError(f"{_where(name, f'seeds[{i}]')} must be {{key: <setting>, from: <entry>}}, got {s!r}")
        seeds.append(Seed(_setting_key(s["key"], _where(name, f"seeds[{i}].key")), str(s["from"])))
    overrides = raw.get("overrides") or ()
    if isinstance(overrides, str) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise SettingsError(f"{_where(name, 'overrides')} must be a list of key=value strings, got {overrides!r}")
    stop = raw.get("stop_on_miss", True)
    if not isinstance(stop, bool):
        raise SettingsError(f"{_where(name, 'stop_on_miss')} must be true or false, got {stop!r}")
    return Entry(name, str(pipeline), tuple(methods), float(cost), key, tuple(values or ()), tuple(seeds),
                 tuple(overrides), stop)


def parse_space(raw: Any, pipelines: Sequence[str]) -> list[Entry]:
    """The entries of ``search.space`` in order, each checked; ``pipelines`` are the shipped ones.

    Raises SettingsError naming the entry and key: an empty space, an unknown key, a pipeline that
    does not exist, a seed from an entry that is not written before it.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise SettingsError("search.space is empty: a search needs at least one entry (a pipeline to try); "
                            "see conf/search/auto.yaml")
    entries: list[Entry] = []
    for name, value in raw.items():
        e = _entry(str(name), value, pipelines)
        before = {x.name for x in entries}
        for s in e.seeds:
            if s.source not in before:
                raise SettingsError(f"{_where(e.name, 'seeds')}: from={s.source!r} must name an entry written "
                                    f"before it (its candidates run first); earlier entries: {sorted(before) or 'none'}")
        entries.append(e)
    return entries


def _label(key: str) -> str:
    return key[len(_PASS_PREFIX):] if key.startswith(_PASS_PREFIX) else key


def _text(value: Any) -> str:
    """A value as a command-line override writes it (YAML's spelling of booleans and null)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def candidate(entry: Entry, settings: Sequence[tuple[str, str]]) -> Candidate:
    """The candidate of ``entry`` that sets ``settings`` (key, value-as-text) on top of its overrides."""
    overrides = (*entry.overrides, *(f"{k}={v}" for k, v in settings))
    label = ",".join(f"{_label(k)}={v}" for k, v in settings)
    name = f"{entry.name}[{label}]" if label else entry.name
    return Candidate(name, entry.name, entry.pipeline, overrides, entry.methods, entry.cost)


@dataclass(frozen=True)
class SourceEnd:
    """How the candidates of an earlier entry ended in this pass: what a seed's skip reason reports, since "none came
    within max_drop" is only true of candidates that ran (trial 47b: every ZipLM candidate was kept from starting by
    the time budget, yet ziplm_int8 was "skipped: no candidate of 'ziplm' came within max_drop")."""

    finished: int = 0  # ran (or were read back) and were scored, within max_drop or not
    failed: int = 0  # their run raised
    not_run: tuple[str, ...] = ()  # why each of the others never started ("time budget", a skip of its own)


def no_seed_reason(entry: Entry, seed: Seed, end: SourceEnd | None) -> str:
    """Why ``entry`` has no value for ``seed``: its source's candidates ran and none came within max_drop with the
    key set, or they never ran / never finished (then the bar was never tried, and the reason says why)."""
    tail = f", so there is no value to seed {entry.name!r} with"
    causes = ", ".join(dict.fromkeys(end.not_run)) if end else ""
    if end is None or end.finished:
        others = [f"{end.failed} failed"] if end and end.failed else []
        others += [f"{len(end.not_run)} did not start: {causes}"] if end and end.not_run else []
        also = f" ({end.finished} finished; {'; '.join(others)})" if end and others else ""
        return f"no candidate of {seed.source!r} came within max_drop with {seed.key} set{also}{tail}"
    if not end.failed:
        return f"no {seed.source} candidate ran ({causes or 'none was tried'}){tail}"
    started = f"; {len(end.not_run)} did not start: {causes}" if end.not_run else ""
    return (f"no {seed.source} candidate finished ({end.failed} failed: their errors are in search.json{started})"
            f"{tail}")


def expand(entry: Entry, passing: Mapping[str, Sequence[Candidate]], per_seed: int,
           ended: Mapping[str, SourceEnd] | None = None) -> tuple[list[Candidate], str | None]:
    """The candidates of ``entry`` in the order to try them, and why there are none (else None).

    ``passing`` maps an entry name to its candidates within max_drop on validation, best objective first;
    each seed takes the distinct values of its key among the first of them, at most ``per_seed``. ``ended`` says
    how each earlier entry's candidates ended (:class:`SourceEnd`), for the reason (:func:`no_seed_reason`).
    """
    axes: list[list[tuple[str, str]]] = []
    if entry.key is not None:
        axes.append([(entry.key, _text(v)) for v in entry.values])
    for s in entry.seeds:
        values: list[str] = []
        for c in passing.get(s.source, ()):
            v = c.value(s.key)
            if v is not None and v not in values:
                values.append(v)
        if not values:
            return [], no_seed_reason(entry, s, (ended or {}).get(s.source))
        axes.append([(s.key, v) for v in values[:per_seed]])
    return [candidate(entry, combo) for combo in itertools.product(*axes)], None


def first_candidates(entry: Entry, entries: Sequence[Entry]) -> list[Candidate]:
    """Representative candidates of ``entry`` before any result: its sweep, a seed taking the first
    value of its source's sweep (or none). Used to compose and check each config before any work."""
    by_name = {e.name: e for e in entries}
    passing: dict[str, list[Candidate]] = {}
    for s in entry.seeds:
        src = by_name[s.source]
        if src.key == s.key and src.values:
            passing[s.source] = [candidate(src, [(s.key, _text(src.values[0]))])]
    cands, _ = expand(entry, passing, 1)
    return cands or [candidate(entry, [])]  # a seed from an unswept key: the pipeline as shipped
