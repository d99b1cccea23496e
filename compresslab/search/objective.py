"""What a search optimises and how it selects: the score on the VALIDATION split, the drop vs the
teacher with a safety margin, and the objective value of the deployed artifact.

* ``drop_pt``: (teacher's validation score - the deployed file's validation score) x 100, in
  points (0.01 of the score), both from the candidate's own eval stage (``eval=validation``).
* A candidate *meets* the budget when ``drop_pt <= max_drop - margin``: the margin keeps room for
  the gap between validation and dev, so the chosen model's dev drop also stays within max_drop.
  Dev is never selected on (MEASURE.md): it is scored for the chosen model only, to report it.
* The objective: ``latency`` = the deployed file's speedup vs ``best_dense`` at the latency shape
  (``bench.speedups_best_dense.deployed``; higher is better), ``size`` = the deployed file's bytes
  (``size.deployed.total``; lower is better).

* A candidate whose deployed classifier predicts one class on validation (``one_class``: the run's
  ``eval.models.deployed.predicted_classes`` with ``eval.split=validation``; never dev) is a constant model,
  whatever its drop (an imbalanced split lets one meet max_drop): it never *meets*, like a candidate over the
  budget. Against a teacher at chance this does not apply: that verdict (``weak_teacher``) comes first, alone.

Selection: the best objective among the candidates that meet; if none meets, the closest (smallest
drop; a candidate that is not constant before one that is) with ``met=False`` and a message saying so.
:func:`excluded` gives each finished candidate's reason for not meeting. The Pareto front is over
(validation score, objective) of every finished candidate but the constant ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any, Callable, Mapping, Sequence

from compresslab.manifest import shape_key as manifest_shape_key
from compresslab.validate import SettingsError, choice_hint, coerce_enum, is_number

# drops are compared with this slack: a score read back from JSON may differ in its last bits
EPS = 1e-9


class Objective(str, Enum):
    """What the search minimises or maximises among the candidates within the drop budget."""

    LATENCY = "latency"  # speedup of the deployed file vs best_dense at the latency shape (higher is better)
    SIZE = "size"  # bytes of the deployed file (lower is better)


DEPLOY_GROUPS = ("auto", "ort", "openvino")  # conf/deploy/*.yaml


@dataclass(frozen=True)
class SearchSettings:
    """``search.*`` (conf/search/auto.yaml) other than the space, checked on construction.

    ``max_drop`` and ``margin`` are in points (0.01 of the score: 1.0 = one accuracy point);
    ``time_budget_s`` and ``unit_s`` in seconds; ``latency_shape`` is (batch, seq) or None for the
    bench shape with the largest batch. ``deploy``: the runtime every candidate deploys on
    (``conf/deploy``), unless the command line sets ``deploy`` itself; None picks by the objective
    (:attr:`deploy_group`). Raises SettingsError naming ``search.<key>``.
    """

    objective: Objective = Objective.LATENCY
    max_drop: float = 1.0
    margin: float = 0.5
    time_budget_s: float = 7200.0
    latency_shape: tuple[int, int] | None = None
    seeds_per_key: int = 2
    unit_s: float = 150.0
    retry_failed: bool = False
    dir: str | None = None
    deploy: str | None = None  # every candidate's deploy group (auto | ort | openvino); None: by the objective

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", coerce_enum(Objective, self.objective, "search.objective"))
        if self.deploy is not None and self.deploy not in DEPLOY_GROUPS:
            raise SettingsError(f"search.deploy={self.deploy!r} is not valid; allowed: {', '.join(DEPLOY_GROUPS)} "
                                "or null (by the objective: auto for latency, ort for size)"
                                f"{choice_hint(self.deploy, DEPLOY_GROUPS)}")
        for name in ("max_drop", "time_budget_s", "unit_s"):
            v = getattr(self, name)
            if not is_number(v) or not math.isfinite(v) or v <= 0:
                raise SettingsError(f"search.{name} must be a finite number > 0, got {v!r}"
                                    + (" (points: 1.0 = one point of the score)" if name == "max_drop" else ""))
        if not is_number(self.margin) or not math.isfinite(self.margin) or self.margin < 0:
            raise SettingsError(f"search.margin must be a finite number >= 0 (points), got {self.margin!r}")
        if self.margin >= self.max_drop:
            raise SettingsError(f"search.margin={self.margin} must be below search.max_drop={self.max_drop}: "
                                "a candidate meets the budget when its validation drop <= max_drop - margin")
        if not isinstance(self.seeds_per_key, int) or isinstance(self.seeds_per_key, bool) or self.seeds_per_key < 1:
            raise SettingsError(f"search.seeds_per_key must be an integer >= 1, got {self.seeds_per_key!r}")
        if not isinstance(self.retry_failed, bool):
            raise SettingsError(f"search.retry_failed must be true or false, got {self.retry_failed!r}")
        if self.dir is not None and (not isinstance(self.dir, str) or not self.dir.strip()):
            raise SettingsError(f"search.dir must be a directory path or null, got {self.dir!r}")
        shape = self.latency_shape
        if shape is not None:
            if isinstance(shape, str) or not isinstance(shape, Sequence) or len(shape) != 2 or \
                    not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in shape):
                raise SettingsError(f"search.latency_shape must be [batch, seq] (positive integers) or null, "
                                    f"got {shape!r}")
            object.__setattr__(self, "latency_shape", (int(shape[0]), int(shape[1])))

    @property
    def deploy_group(self) -> str:
        """The deploy group every candidate gets: ``deploy`` if set; else ``auto`` for the latency objective
        (each run picks ORT or OpenVINO, int8 IRs included, by validation agreement and measured latency, so
        the search compares deployments, not one runtime's files) and ``ort`` for size (the n-bit and int8
        ONNX files are the small ones; OpenVINO cannot read MatMulNBits and would ship an n-bit model as an fp32
        IR)."""
        if self.deploy is not None:
            return self.deploy
        return "auto" if self.objective is Objective.LATENCY else "ort"

    @property
    def select_drop(self) -> float:
        """The largest validation drop (points) a candidate may have to be selected."""
        return self.max_drop - self.margin

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "SearchSettings":
        """From ``search.*`` (``space`` and ``passes`` are read by the driver); unknown keys are refused."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(names) - {"space", "passes"})  # those two are the driver's
        if unknown:
            raise SettingsError(f"search: unknown setting(s) {unknown}; allowed: {', '.join(names + ['space', 'passes'])}")
        return cls(**{k: v for k, v in raw.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["objective"] = self.objective.value
        d["latency_shape"] = list(self.latency_shape) if self.latency_shape else None
        d["deploy"] = self.deploy_group  # resolved: what every candidate got
        return d


def shape_key(shape: tuple[int, int]) -> str:
    """The bench stage's key of a ``(batch, seq)`` shape (``b32xs128``): :func:`compresslab.manifest.shape_key`."""
    return manifest_shape_key(*shape)


@dataclass
class Outcome:
    """One candidate as the search saw it (``search.json`` keeps a list of these).

    ``status``: ``ok`` (its run finished and was read), ``failed`` (``error`` says why; the search
    went on), ``skipped`` (``reason``: the time budget, a milder value that already missed, no seed).
    ``ran_s``: seconds this search spent running it (0 when read back from a finished run dir);
    ``teacher_s``: of those, the teacher's fine-tuning (left out of the time estimates).
    ``speedup_shape``: the ``b<B>xs<S>`` shape ``speedup`` was timed at; ``timing_busy``: the run's bench found
    the machine busy (``bench.machine_load.busy``), so its timings, the speedup included, are void.
    ``weak_teacher``: why the run's teacher is no better than chance on validation (report/verdicts.weak_teacher),
    None for a usable one: then every drop of the run is measured against chance and "within max_drop" means nothing.
    ``one_class``: the run's deployed classifier predicts one class for every validation example
    (report/verdicts.run_one_class, in words), None otherwise: a constant model, whatever its drop, never chosen
    while a candidate that is not one finished (:func:`constant`).
    """

    name: str
    entry: str
    pipeline: str
    overrides: list[str]
    methods: list[str]
    status: str
    run_dir: str | None = None
    val_score: float | None = None
    teacher_val: float | None = None
    drop_pt: float | None = None
    agreement: float | None = None
    speedup: float | None = None
    speedup_shape: str | None = None  # the bench shape the speedup was timed at (b32xs128)
    timing_busy: bool | None = None  # other processes ran while the run's bench timed it: the speedup is void
    size_bytes: int | None = None
    weak_teacher: str | None = None  # why its teacher is no better than chance on validation; None: a usable one
    one_class: str | None = None  # its deployed classifier predicts one class on validation (verdicts.run_one_class)
    ran_s: float = 0.0
    teacher_s: float = 0.0
    error: str | None = None
    reason: str | None = None
    dev: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def single(self) -> bool:
        return len(self.methods) == 1

    def value(self, objective: Objective) -> float | None:
        """The objective's value (speedup, or bytes), None when the run did not record it."""
        v = self.speedup if objective is Objective.LATENCY else self.size_bytes
        return None if v is None else float(v)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Outcome":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def read_run(manifest: Mapping[str, Any], shape: tuple[int, int] | None) -> dict[str, Any]:
    """The search's figures of a finished run, from its manifest: validation score of the deployed
    file and of the teacher, the drop in points, agreement, speedup vs best_dense at ``shape`` (None
    when the bench stage did not run; ``shape`` None = the bench shape with the largest batch) and the
    deployed file's bytes; ``speedup_shape``, the shape the speedup was read at, and ``timing_busy``, whether the
    bench found the machine busy (None without a bench); ``weak_teacher``, why the teacher is no better than chance,
    by the report's rule (None for a usable one); ``one_class``, the report's words for a deployed classifier that
    predicts one class (None otherwise). ValueError when the run was not scored on validation (dev is never
    selected on) or lacks its eval section."""
    from compresslab.report.verdicts import run_one_class, run_weak_teacher

    ev = manifest.get("eval") or {}
    if ev.get("split") != "validation":
        raise ValueError(f"the run was scored on {ev.get('split')!r}, not on the validation split: a search selects "
                         "on validation only (eval=validation)")
    models = ev.get("models") or {}
    if "deployed" not in models or "teacher_torch" not in models:
        raise ValueError("the run's eval section has no deployed / teacher_torch score")
    val, teacher = float(models["deployed"]["score"]), float(models["teacher_torch"]["score"])
    bench = manifest.get("bench") or {}
    speedup, key = None, None
    per_shape = (bench.get("speedups_best_dense") or {}).get("deployed") or {}
    if per_shape:
        key = shape_key(shape) if shape else largest_batch(per_shape)
        if key not in per_shape:
            raise ValueError(f"the run's bench has no deployed speedup at {key} (timed: {sorted(per_shape)})")
        speedup = float(per_shape[key])
    busy = (bench.get("machine_load") or {}).get("busy") if bench else None
    size = ((manifest.get("size") or {}).get("deployed") or {}).get("total")
    return {"val_score": val, "teacher_val": teacher, "drop_pt": (teacher - val) * 100.0,
            "agreement": models["deployed"].get("agreement"), "speedup": speedup, "speedup_shape": key,
            "timing_busy": bool(busy) if busy is not None else None,
            "size_bytes": int(size) if size is not None else None,
            "weak_teacher": run_weak_teacher(manifest), "one_class": run_one_class(manifest)}


def largest_batch(per_shape: Mapping[str, Any]) -> str:
    """Of bench keys ``b<B>xs<S>``, the one with the largest batch (then sequence)."""
    def parse(k: str) -> tuple[int, int]:
        b, _, s = k[1:].partition("xs")
        return int(b), int(s)
    return max(per_shape, key=parse)


def constant(o: Outcome) -> bool:
    """``o``'s deployed classifier predicts one class for every validation example (``one_class``, read from the
    run's eval=validation record), measured against a usable teacher: never selected, whatever its drop. Against a
    teacher at chance, no: its verdict (``weak_teacher``, exit 5) is the one to act on, as before."""
    return bool(o.one_class) and not o.weak_teacher


def meets(o: Outcome, s: SearchSettings) -> bool:
    """A finished candidate within the drop budget on validation, margin included, that is not a constant model
    (:func:`constant`)."""
    return o.ok and o.drop_pt is not None and o.drop_pt <= s.select_drop + EPS and not constant(o)


def excluded(o: Outcome, s: SearchSettings) -> str | None:
    """Why a finished candidate cannot be selected, in words (None when it meets, or did not finish: a failed or
    skipped one has its ``error`` / ``reason``)."""
    if not o.ok or meets(o, s):
        return None
    if o.drop_pt is None:
        return "no validation drop recorded"
    if constant(o):
        return f"predicts one class on validation: {o.one_class} (a constant model, whatever its drop)"
    return (f"validation drop {o.drop_pt:.2f} pt > {s.select_drop:.2f} pt (max_drop {s.max_drop:g} - margin "
            f"{s.margin:g})")


def within_max_drop(o: Outcome, s: SearchSettings) -> bool:
    """A finished candidate whose validation drop is within ``max_drop`` itself (no margin): selectable only if
    it also meets the margin (:func:`meets`), but not a clear miss either. A drop on ~1,000 validation examples
    carries about sqrt(disagreements) / n of noise (0.7 pt at 95 % agreement), so a sweep goes on past such a
    value and compositions may be seeded with it; only a drop beyond ``max_drop`` stops a sweep."""
    return o.ok and o.drop_pt is not None and o.drop_pt <= s.max_drop + EPS


def _better_first(o: Outcome, objective: Objective) -> tuple[float, float]:
    """Sort key: best objective first (a missing value last), then the higher validation score."""
    v = o.value(objective)
    if v is None:
        rank = math.inf
    else:
        rank = -v if objective is Objective.LATENCY else v
    return rank, -(o.val_score or 0.0)


def rank(outcomes: Sequence[Outcome], s: SearchSettings,
         keep: Callable[[Outcome, SearchSettings], bool] = meets) -> list[Outcome]:
    """The candidates that meet the budget (or pass ``keep``), best objective first (ties: the higher
    validation score)."""
    return sorted((o for o in outcomes if keep(o, s) and o.value(s.objective) is not None),
                  key=lambda o: _better_first(o, s.objective))


def closest(outcomes: Sequence[Outcome], s: SearchSettings) -> Outcome | None:
    """The finished candidate with the smallest validation drop (ties: the better objective); a constant one
    (:func:`constant`) only when every finished candidate is: a model over the budget still predicts something."""
    done = [o for o in outcomes if o.ok and o.drop_pt is not None]
    pool = [o for o in done if not constant(o)] or done
    return min(pool, key=lambda o: (o.drop_pt, _better_first(o, s.objective)), default=None)


@dataclass
class Selection:
    """The search's answer: ``chosen`` (None when no candidate finished), whether it meets the drop
    budget, a message for people, the best single-method candidate chosen by the same rule, and the
    Pareto front over (validation score, objective); ``excluded``: each finished candidate that does not meet, with
    why (:func:`excluded`)."""

    chosen: Outcome | None
    met: bool
    message: str
    best_single: Outcome | None
    best_single_met: bool
    front: list[Outcome]
    excluded: dict[str, str] = field(default_factory=dict)


def pick(outcomes: Sequence[Outcome], s: SearchSettings) -> tuple[Outcome | None, bool]:
    """(the best candidate within budget, True), else (the closest, False), else (None, False)."""
    ranked = rank(outcomes, s)
    if ranked:
        return ranked[0], True
    return closest(outcomes, s), False


def select(outcomes: Sequence[Outcome], s: SearchSettings) -> Selection:
    """Choose among ``outcomes`` (see the module docstring); never looks at dev scores."""
    chosen, met = pick(outcomes, s)
    single, single_met = pick([o for o in outcomes if o.single], s)
    at = shape_key(s.latency_shape) if s.latency_shape else "the largest bench batch"
    what = f"speedup vs best_dense at {at}" if s.objective is Objective.LATENCY else "deployed bytes"
    out = {o.name: why for o in outcomes if (why := excluded(o, s)) is not None}
    flat = [o.name for o in outcomes if o.ok and constant(o)]  # one class on validation: never selected
    if chosen is None:
        msg = "no candidate finished: nothing to choose (see each candidate's error or reason)"
    elif met:
        msg = (f"chose {chosen.name}: validation drop {chosen.drop_pt:.2f} pt <= {s.select_drop:.2f} pt "
               f"(max_drop {s.max_drop} - margin {s.margin}), best {what} among those within budget")
    elif constant(chosen):  # every finished candidate is a constant model: the closest of them, said plainly
        msg = (f"NO candidate met the drop budget: every finished candidate predicts one class on validation "
               f"({', '.join(flat)}); returning the closest, {chosen.name}, at {chosen.drop_pt:.2f} pt")
    else:
        msg = (f"NO candidate met the drop budget: every validation drop exceeds {s.select_drop:.2f} pt "
               f"(max_drop {s.max_drop} - margin {s.margin})" + (" or the model predicts one class" if flat else "")
               + f"; returning the closest, {chosen.name}, at {chosen.drop_pt:.2f} pt")
    if flat and not (chosen is not None and constant(chosen)):
        # a constant model within the drop budget was the best: people must see why it was passed over
        msg += (f" ({len(flat)} candidate(s) excluded for predicting one class on validation: {', '.join(flat)}; "
                "search.json: excluded)")
    if chosen is not None and constant(chosen):  # a weak teacher's verdict says it first (constant() is False)
        # the run logged it at eval; "returning the closest" alone would ship a constant model
        msg = (f"THE CHOSEN MODEL PREDICTS ONE CLASS ({chosen.one_class}): a constant model, whatever its drop; "
               f"try milder settings or more recovery. {msg}")
    if chosen is not None and chosen.weak_teacher:
        from compresslab.report.verdicts import teacher_fix

        # the run logged it when it scored the teacher, minutes before; the verdict is what people and scripts read
        msg = (f"TEACHER NO BETTER THAN CHANCE on validation ({chosen.weak_teacher}): every drop below is measured "
               f"against it, so no verdict of this search says anything about the compression; "
               f"{teacher_fix(given=None, api=False)}. "
               f"{msg}")
    front = pareto_front([o for o in outcomes if not constant(o)], s.objective)  # a constant model trades nothing
    return Selection(chosen, met, msg, single, single_met, front, out)


def pareto_front(outcomes: Sequence[Outcome], objective: Objective) -> list[Outcome]:
    """The finished candidates no other beats on both validation score and objective (at least as
    good on both, better on one), sorted by objective, best first."""
    pts = [o for o in outcomes if o.ok and o.val_score is not None and o.value(objective) is not None]

    def good(o: Outcome) -> float:  # the objective as "higher is better"
        v = o.value(objective)
        assert v is not None
        return v if objective is Objective.LATENCY else -v

    front = []
    for o in pts:
        dominated = any(p is not o and p.val_score >= o.val_score and good(p) >= good(o)  # type: ignore[operator]
                        and (p.val_score > o.val_score or good(p) > good(o)) for p in pts)  # type: ignore[operator]
        if not dominated:
            front.append(o)
    return sorted(front, key=lambda o: -good(o))
