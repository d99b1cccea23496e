"""The optional pass capabilities are declared in one place (``compresslab.types``: ``PASS_FLAGS`` with their
defaults, ``PASS_HOOKS``): every registered pass declares only those, every reader goes through
``capability()`` / ``hook()``, which refuse an undeclared name, and the defaults are the ones the readers
used before. A misspelt flag (``keep_zeros``) or hook (``check_modle``) on a pass fails here instead of
silently getting the default."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from compresslab.config import config_dir
from compresslab.registry import available_passes, get_pass
from compresslab.types import (PASS_FLAGS, PASS_HOOKS, PASS_OWN_METHODS, Pass, Stage, UnknownCapabilityError,
                               capability, hook)

ROOT = Path(__file__).resolve().parents[2]
CONF = Path(config_dir())
REQUIRED = {"name", "stage", "makes_teacher", "check", "apply"}  # the Protocol's own members
DECLARED = [*PASS_FLAGS, *PASS_HOOKS, *PASS_OWN_METHODS]
HOOK_LIKE = re.compile(r"check_\w+|\w+_settings|\w+_lengths")  # the naming patterns of the declared hooks

# What each reader used as the default before the declaration (``getattr(pass, name, default)``), by reader:
# pipeline/state.py (keeps_structure, model_types), pipeline/plan.py (makes_sparse, keeps_zeros, needs_teacher),
# pipeline/deploy.py (binarizes), pipeline/preflight.py (writes_nbits), passes/ort_matmul_nbits.py (quantizes_weights)
DEFAULTS_BEFORE = {"keeps_structure": False, "makes_sparse": False, "keeps_zeros": False, "needs_teacher": False,
                   "binarizes": False, "writes_nbits": False, "quantizes_weights": False, "model_types": None,
                   # since session 40: pipeline/plan.py's table keyed by `_target_` strings, now declared by the pass
                   "identity_defaults": {}}
# The hooks read before (``getattr(pass, name, None)`` / ``hasattr``): absent means "no such check / nothing own".
HOOKS_BEFORE = {"check_model", "check_after", "check_deployable", "sequence_lengths", "own_settings",
                "identity_settings",  # plan.py's ZipLM-only `_runtime_identity` before session 40
                # new in session 40, each for a read of another pass's field by name (absent: the field was absent):
                # preflight's int8 `outliers`/`optimize`, plan.py's `recovery`, speedup.py's `ffn_grid`,
                # ort_matmul_nbits' hawq `latency`/`latency_limit`
                "check_deploy_settings", "recovery_settings", "ffn_width_multiple", "check_accuracy_level",
                # new with the preflight's planned checks, each for a check moved from a pass's apply into the preflight (absent: the pass
                # checks in its apply, as before; a structure-changing step without planned_config ends the plan)
                "check_planned", "planned_config"}

# Which registered pass (built from its YAML under the smoke budget) declares which flag (other than its default)
# and which hook (since session 39 the length settings of ziplm, structured_l1 and bibert are declared through
# sequence_lengths, which preflight asks, instead of preflight reading their `seq` / `max_length` fields by name).
# New in session 40: recovery_settings (every pass with a KD recovery), ffn_width_multiple (ziplm, structured_l1),
# check_deploy_settings (ort_int8_dynamic's outlier split), check_accuracy_level (hawq's latency budget).
RECOVERS = {"recovery_settings"}
DECLARES = {
    # identity_settings: its recovery block's settings seen at their flat keys of before (design review item 7)
    "bibert": {"binarizes", "needs_teacher", "check_model", "sequence_lengths", "identity_settings"},
    "finetune": {"identity_defaults"},  # its recipe fields, listed in its YAML since 2026-12-06
    "hawq": {"quantizes_weights", "check_model", "check_planned", "check_deployable", "sequence_lengths", "check_accuracy_level",
             "identity_defaults", *RECOVERS},
    "int8_qat": {"keeps_zeros", "check_model", *RECOVERS},
    "layer_drop": {"check_model", "planned_config", *RECOVERS},  # keeps_zeros is a property: true only with recovery.steps=0
    "magnitude": {"keeps_structure", "keeps_zeros", "makes_sparse", "check_model", "identity_defaults", *RECOVERS},
    "obert": {"keeps_structure", "keeps_zeros", "makes_sparse", "check_model", "check_after", "identity_defaults",
              *RECOVERS},
    "ort_int8_dynamic": {"keeps_zeros", "own_settings", "sequence_lengths", "identity_defaults",
                         "check_deploy_settings"},
    "ort_int8_static": {"keeps_zeros"},
    "ort_matmul_nbits": {"writes_nbits", "check_after"},
    "structured_l1": {"model_types", "check_after", "check_planned", "sequence_lengths", "identity_defaults", "identity_settings",
                      "ffn_width_multiple", *RECOVERS},
    "ziplm": {"model_types", "check_after", "check_planned", "sequence_lengths", "identity_defaults", "identity_settings",
              "ffn_width_multiple", *RECOVERS},
}


def undeclared(cls: type) -> list[str]:
    """Public class attributes of pass class ``cls`` (its bases included, dataclass fields and the Protocol's
    members left out) that look like a capability but are not declared in ``compresslab.types``: a class-level
    bool, a name with a hook's pattern (``check_*``, ``*_settings``, ``*_lengths``), or a name close to a declared
    one (a typo)."""
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    seen: set[str] = set()
    out = []
    for klass in cls.__mro__[:-1]:  # object left out
        for attr, value in vars(klass).items():
            if attr.startswith("_") or attr in seen or attr in fields or attr in REQUIRED:
                continue
            seen.add(attr)
            if attr in DECLARED:
                continue
            if isinstance(value, bool) or HOOK_LIKE.fullmatch(attr) or difflib.get_close_matches(attr, DECLARED,
                                                                                                  n=1, cutoff=0.8):
                out.append(attr)
    return out


def misdeclared(cls: type) -> list[str]:
    """Declared names that ``cls`` gives the wrong kind: a flag defined as a method, a hook that is not one."""
    out = []
    for attr in PASS_FLAGS:
        value = getattr(cls, attr, None)
        if callable(value) and not isinstance(value, type):
            out.append(f"{attr} is a method, and a flag is a ClassVar or a property")
    for attr in PASS_HOOKS:
        if hasattr(cls, attr) and not callable(getattr(cls, attr)):
            out.append(f"{attr} is not a method")
    return out


def built(name: str) -> Any:
    """The registered pass ``name`` built from its ``conf/pass`` YAML under the smoke budget."""
    node = OmegaConf.merge({"budget": OmegaConf.load(CONF / "budget" / "smoke.yaml")},
                           {"p": OmegaConf.load(CONF / "pass" / f"{name}.yaml")})
    return instantiate(node.p, _convert_="all")


@dataclass
class _Fake:
    """A minimal pass that meets the Protocol and declares nothing optional."""

    name: ClassVar[str] = "fake"
    stage: ClassVar[Stage] = Stage.TORCH
    makes_teacher: ClassVar[bool] = False
    sparsity: float = 0.5
    check_parity: bool = True  # a setting (dataclass field) named like a hook: not a capability

    def check(self, task: Any) -> None:
        """Nothing to check."""

    def apply(self, model: Any, ctx: Any) -> Any:
        """Nothing to do."""


@dataclass
class _Good(_Fake):
    keeps_zeros: ClassVar[bool] = True

    @property
    def makes_sparse(self) -> bool:
        return self.sparsity > 0

    def check_model(self, model: Any) -> None:
        """Accepts any model."""


@dataclass
class _FlagTypo(_Fake):
    keep_zeros: ClassVar[bool] = True


@dataclass
class _HookTypo(_Fake):
    def check_modle(self, model: Any) -> None:
        """A misspelt check_model: the pipeline would never call it."""


@dataclass
class _SettingsTypo(_Fake):
    def own_setting(self) -> list[str]:
        return ["sparsity=0.5"]


@dataclass
class _PropertyTypo(_Fake):
    @property
    def keep_structure(self) -> bool:
        return True


@dataclass
class _FlagAsMethod(_Fake):
    def keeps_zeros(self) -> bool:
        return True


@pytest.mark.parametrize("name", available_passes())
def test_every_registered_pass_declares_only_declared_capabilities(name):
    cls = get_pass(name)
    assert undeclared(cls) == [], (f"{name} has capability-like attributes that compresslab.types does not declare "
                                   "(a typo, or a new capability: add it to PASS_FLAGS / PASS_HOOKS)")
    assert misdeclared(cls) == []


@pytest.mark.parametrize("name", available_passes())
def test_registered_pass_capabilities_have_the_declared_kind(name):
    p = built(name)
    assert isinstance(p, Pass)
    for flag, default in PASS_FLAGS.items():
        value = capability(p, flag)
        if isinstance(default, bool):
            assert isinstance(value, bool), f"{name}.{flag}={value!r} must be a bool"
        elif flag == "identity_defaults":  # settings of this pass, each with the value runs had before it existed
            fields = {f.name for f in dataclasses.fields(p)}
            assert set(value) <= fields, f"{name}.identity_defaults names no setting: {sorted(set(value) - fields)}"
        else:  # model_types
            assert value is None or (isinstance(value, tuple) and value and all(isinstance(v, str) for v in value))
    for h in PASS_HOOKS:
        assert hook(p, h) is None or callable(hook(p, h))
    declares = {f for f, d in PASS_FLAGS.items() if capability(p, f) != d} | {h for h in PASS_HOOKS if hook(p, h)}
    assert declares == DECLARES[name]


def test_the_check_catches_a_misspelt_capability():
    assert undeclared(_Fake) == [] and undeclared(_Good) == [] and misdeclared(_Good) == []
    assert isinstance(_Good(), Pass) and capability(_Good(), "keeps_zeros") is True
    assert capability(_Good(), "makes_sparse") is True and hook(_Good(), "check_model") is not None
    assert undeclared(_FlagTypo) == ["keep_zeros"]
    assert capability(_FlagTypo(), "keeps_zeros") is False  # what the pipeline would silently read
    assert undeclared(_HookTypo) == ["check_modle"] and hook(_HookTypo(), "check_model") is None
    assert undeclared(_SettingsTypo) == ["own_setting"]
    assert undeclared(_PropertyTypo) == ["keep_structure"]
    assert misdeclared(_FlagAsMethod) == ["keeps_zeros is a method, and a flag is a ClassVar or a property"]


def test_the_accessors_refuse_an_undeclared_name():
    p = _Good()
    with pytest.raises(UnknownCapabilityError, match="keeps_zeros") as e:
        capability(p, "keep_zeros")
    assert isinstance(e.value, KeyError) and "PASS_FLAGS" in str(e.value)
    with pytest.raises(UnknownCapabilityError, match="check_model"):
        hook(p, "check_modle")
    with pytest.raises(UnknownCapabilityError):
        capability(p, "check_model")  # a hook is not a flag
    with pytest.raises(UnknownCapabilityError):
        hook(p, "keeps_zeros")  # nor a flag a hook
    with pytest.raises(UnknownCapabilityError):
        hook(get_pass("hawq"), "check_feasible")  # a pass's own method is no hook


def test_declared_defaults_are_what_the_readers_used_before():
    assert dict(PASS_FLAGS) == DEFAULTS_BEFORE
    assert set(PASS_HOOKS) == HOOKS_BEFORE
    assert not set(PASS_OWN_METHODS) & (set(PASS_FLAGS) | set(PASS_HOOKS))
    bare = _Fake()
    assert all(capability(bare, f) == d for f, d in DEFAULTS_BEFORE.items())
    assert all(hook(bare, h) is None for h in HOOKS_BEFORE)
    assert capability(_Fake, "keeps_zeros") is False  # a class works too (the peer suite reads classes)
    # ... except for a flag that depends on the settings: the class holds a property object, which reads as True
    with pytest.raises(TypeError, match="ask an instance"):
        capability(get_pass("layer_drop"), "keeps_zeros")


def _reads() -> tuple[list[str], list[str]]:
    """Over compresslab/ and benchmarks/ (types.py aside): ``getattr``/``hasattr`` calls that read a declared
    capability by name, and ``capability``/``hook`` calls whose literal name is not declared as that kind."""
    raw, typos = [], []
    kinds = {"capability": PASS_FLAGS, "hook": PASS_HOOKS}
    for path in sorted([*(ROOT / "compresslab").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        if path == ROOT / "compresslab" / "types.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2):
                continue
            arg = node.args[1]
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno} {node.func.id}(..., {arg.value!r})"
            if node.func.id in ("getattr", "hasattr") and arg.value in {*PASS_FLAGS, *PASS_HOOKS}:
                raw.append(where)
            elif node.func.id in kinds and arg.value not in kinds[node.func.id]:
                typos.append(where)
    return raw, typos


def test_readers_go_through_the_accessors_with_declared_names():
    raw, typos = _reads()
    assert raw == [], "read a pass capability with compresslab.types.capability() / hook(), not getattr/hasattr"
    assert typos == [], "an undeclared capability name"


# The passes other than the reader's own, as code sees them: a step's ``pass_``, a parameter annotated ``Pass``, and
# an element of ``earlier`` (what ``check_after`` is given: the passes before the step) or of a list filtered from it.
# Reading one of their fields by name checks a pass under the rules of whichever pass first had a field so called.
PASS_LISTS = frozenset({"earlier"})


def _is_pass_annotation(ann: ast.expr | None) -> bool:
    """``Pass`` or ``"Pass"``: the contract's type."""
    return (isinstance(ann, ast.Name) and ann.id == "Pass") or (isinstance(ann, ast.Constant) and ann.value == "Pass")


def _iterated(node: ast.For | ast.comprehension) -> str | None:
    """The name a loop or comprehension iterates over, where it is a plain name."""
    return node.iter.id if isinstance(node.iter, ast.Name) else None


def _other_passes(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Names in ``fn`` that hold another pass (see above)."""
    a = fn.args
    names = {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if _is_pass_annotation(x.annotation)}
    lists, grown = set(PASS_LISTS), True
    made = [n for n in ast.walk(fn) if isinstance(n, ast.Assign)
            and isinstance(n.value, (ast.ListComp, ast.SetComp, ast.GeneratorExp))]
    while grown:  # a list filtered from a list filtered from ``earlier``
        before = len(lists)
        lists |= {t.id for n in made if any(_iterated(g) in lists for g in n.value.generators)
                  for t in n.targets if isinstance(t, ast.Name)}
        grown = len(lists) > before
    return names | {n.target.id for n in ast.walk(fn) if isinstance(n, (ast.For, ast.comprehension))
                    and _iterated(n) in lists and isinstance(n.target, ast.Name)}


def _is_other_pass(node: ast.expr, names: set[str]) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "pass_") or (
        isinstance(node, ast.Name) and node.id in names | {"pass_"})


def _field_read(node: ast.AST, names: set[str]) -> str | None:
    """``node`` as a read of another pass's attribute by name (``getattr``/``hasattr`` with a literal, or
    ``p.field``), the Protocol's own members and dunders aside; else None."""
    if isinstance(node, ast.Attribute) and _is_other_pass(node.value, names):
        field = node.attr
        shown = f".{field}"
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
          and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
          and _is_other_pass(node.args[0], names)):
        field = node.args[1].value
        shown = f"{node.func.id}(..., {field!r})"
    else:
        return None
    return None if field in REQUIRED or field.startswith("__") else shown


def _field_reads(tree: ast.AST, where: str) -> list[str]:
    """The reads of :func:`_field_read` in ``tree``: a field of another pass read by name, where a declared flag or
    hook belongs."""
    scopes = [(tree, set())] + [(fn, _other_passes(fn)) for fn in ast.walk(tree)
                                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))]
    out: set[tuple[int, int, str]] = set()  # a read inside a function is met in the module's walk too
    for scope, names in scopes:
        for node in ast.walk(scope):
            shown = _field_read(node, names)
            if shown is not None:
                out.add((node.lineno, node.col_offset, f"{where}:{node.lineno} {shown}"))
    return [text for *_, text in sorted(out)]


def test_no_code_reads_another_pass_field_by_name():
    # found 6 reads before session 40: int8's outliers/optimize (preflight), recovery (plan), ffn_grid (speedup),
    # hawq's latency/latency_limit (ort_matmul_nbits)
    found = []
    for path in sorted([*(ROOT / "compresslab").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        if path != ROOT / "compresslab" / "types.py":
            found += _field_reads(ast.parse(path.read_text()), str(path.relative_to(ROOT)))
    assert found == [], "declare what another step needs to know as a flag or hook in compresslab.types"


def test_the_field_read_check_catches_the_shapes_it_replaced():
    # the four reads declared in session 40, as they were written (pipeline/preflight.py, pipeline/plan.py,
    # pruning/speedup.py, passes/ort_matmul_nbits.py), and reads that are not of another pass
    src = '''
def check_outlier_split(settings, steps):
    for step in steps:
        if getattr(step.pass_, "outliers", "none") != "split":
            continue
def needs_teacher(p: Pass) -> bool:
    return getattr(p, "recovery", None)
def off_grid(earlier, divisor):
    return [p.name for p in earlier if isinstance(getattr(p, "ffn_grid", None), int) and p.ffn_grid % divisor]
def check_after(self, earlier):
    quant = [p for p in earlier if capability(p, "quantizes_weights")]
    for p in quant:
        table = getattr(p, "latency", None)
def fine(self, d, k, step, earlier):
    return (getattr(self, "recovery"), self.ffn_grid, getattr(d, k), getattr(d, "runtime"), step.pass_.name,
            getattr(step.pass_, "stage"), [p.name for p in earlier], hook(step.pass_, "recovery_settings"))
'''
    assert [r.split(" ", 1)[1] for r in _field_reads(ast.parse(src), "x")] == [
        "getattr(..., 'outliers')", "getattr(..., 'recovery')", "getattr(..., 'ffn_grid')", ".ffn_grid",
        "getattr(..., 'latency')"]
