"""The keys and values a composed config may hold, checked as a whole before a run starts.

Which keys exist is read from the shipped YAML (``conf/``), the one source of defaults: a
section's keys are those any option of its config group defines (``conf/task/*.yaml`` for
``task``), so a key added to a YAML file is known here without a second list to keep in step.
Subtrees with an owner of their own are left to it: each pass's settings (``pipeline.passes``,
checked when ``build_steps`` instantiates the pass) and the generic data reader's options
(``task.generic``, :class:`compresslab.data.generic.GenericConfig`); the stage sections
(``export``, ``eval``, ``bench``, ``deploy``) are typed by the dataclasses in ``settings.py``.

What each value may be is :data:`VALUE_CHECKS`: one validator per dotted key, so ``seed=abc``,
``run.threads=0`` or ``run.overwrite=yes`` (a truthy string) fail at start with the key's name.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from compresslab.config import config_dir
from compresslab.validate import (  # noqa: F401 - SettingsError: pipeline.settings and callers import it from here
    SettingsError, check_bool, check_int, check_list, check_positive, check_positive_int, check_text, did_you_mean)


# subtrees whose keys their owners check (see the module docstring)
OWNED_SUBTREES = ("pipeline.passes", "task.generic")
# sections typed by a dataclass of settings.py, which rejects unknown keys itself
TYPED_SECTIONS = ("export", "eval", "bench", "deploy")
# how to give a value that the shipped config leaves as ??? (mandatory, no default)
MISSING_HINTS = {
    "model.source": "model=local reads a local Hugging Face model directory: add "
                    "model.source=/path/to/model_dir (the folder holding config.json)",
}
SEED_MAX = 2**64 - 1  # torch.manual_seed's range; the data splits and numpy generators take any int


def _optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """``check``, or nothing for ``null`` (the YAML's "not set")."""
    return lambda v, n: None if v is None else check(v, n)


def _count0(value: Any, name: str) -> int:
    return check_int(value, name, minimum=0)


def _seed(value: Any, name: str) -> int:
    check_int(value, name, minimum=0)
    if value > SEED_MAX:
        raise ValueError(f"{name} must be an integer in [0, 2**64-1], got {value!r}")
    return int(value)


def _step_names(value: Any, name: str) -> list[str]:
    names = check_list(value, name, "step names, e.g. [finetune, int8]")
    return [check_text(x, f"{name} entry") for x in names]


# One validator per dotted key outside the typed sections. A key the YAML defines but this table
# does not is only checked for existence; a key here that the config lacks is checked as None.
VALUE_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "seed": _seed,
    "device": check_text,  # its values and CUDA's presence: state.resolve_device, before any model loads
    "report": check_bool,
    "paths.output_dir": check_text,
    "paths.cache_dir": check_text,
    "run.dir": _optional(check_text),
    "run.overwrite": check_bool,
    "run.stop_after": _optional(_count0),
    "run.threads": _optional(check_positive_int),
    "model.source": check_text,
    "model.name": check_text,
    "model.finetuned": _optional(check_bool),
    "data.root": _optional(check_text),
    "task.name": check_text,
    "task.max_length": check_positive_int,
    "task.max_train": _optional(check_positive_int),
    "task.max_dev": _optional(check_positive_int),
    "budget.name": check_text,
    "budget.teacher": check_text,
    "budget.batch_size": check_positive_int,
    "budget.recovery_steps": _count0,  # 0 = post-training (no recovery)
    "budget.lr": check_positive,
    "budget.bibert_lr": _optional(check_positive),
    "budget.fisher_grads": _optional(check_positive_int),
    "budget.fisher_block": _optional(check_positive_int),  # obert block_size (budget=smoke: 8)
    "budget.prune_events": _optional(check_positive_int),
    "budget.bibert_steps": _optional(check_positive_int),
    "budget.bibert_eval_every": _optional(check_positive_int),
    "budget.hessian_batches": _optional(check_positive_int),
    "budget.hessian_min_probes": _optional(check_positive_int),
    "budget.eigen_batches": _optional(check_positive_int),
    "budget.eigen_iters": _optional(check_positive_int),
    "budget.latency_batch": _optional(check_positive_int),  # ZipLM / structured L1: latency table and checks shape
    "budget.latency_seq": _optional(check_positive_int),
    "budget.latency_runs": _optional(check_positive_int),
    "budget.check_runs": _optional(check_positive_int),
    "pipeline.name": check_text,
    "pipeline.steps": _step_names,
}


def _load(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return data if isinstance(data, dict) else {}


def _is_global(group_dir: Path) -> bool:
    """A group whose options merge into the root (``# @package _global_``, e.g. ``debug``)."""
    return any("@package _global_" in p.read_text().split("\n", 1)[0] for p in group_dir.glob("*.yaml"))


@functools.lru_cache(maxsize=1)
def config_schema() -> dict[str, frozenset[str]]:
    """``""`` -> the root keys; each checked section -> its keys (from the shipped YAML).

    The root has compress.yaml's keys, its config groups (``debug`` merges into the root, so it is
    none) and ``pipeline``. A group's keys are the union over its options; ``run`` and ``paths``
    are compress.yaml's; ``budget`` also has the keys passes read with ``${oc.select:budget.X,..}``.
    """
    conf = Path(config_dir())
    root_yaml = _load(conf / "compress.yaml")
    groups = []
    for entry in root_yaml.get("defaults", []):
        if isinstance(entry, Mapping):
            for key in entry:
                group = str(key).split()[-1]  # "optional debug" -> debug
                if (conf / group).is_dir() and not _is_global(conf / group):
                    groups.append(group)
    groups.append("pipeline")  # selected with +pipeline=NAME
    schema: dict[str, frozenset[str]] = {}
    root = {k for k in root_yaml if k not in ("defaults", "hydra")} | set(groups)
    schema[""] = frozenset(root)
    for key, value in root_yaml.items():
        if isinstance(value, Mapping) and key not in ("defaults", "hydra"):
            schema[key] = frozenset(value)
    for group in groups:
        if group in TYPED_SECTIONS:
            continue
        keys: set[str] = set()
        for option in sorted((conf / group).glob("*.yaml")):
            keys |= {k for k in _load(option) if k != "defaults"}
        schema[group] = frozenset(keys)
    read_by_passes = set()
    for p in (conf / "pass").glob("*.yaml"):
        read_by_passes |= set(re.findall(r"\bbudget\.([A-Za-z_]\w*)", p.read_text()))
    schema["budget"] = schema.get("budget", frozenset()) | read_by_passes
    return schema


def _unknown_message(where: str, unknown: list[str], allowed: frozenset[str], source: str) -> str:
    verb = "define" if "*" in source or " and " in source else "defines"  # one file or several
    return (f"{where}: unknown setting(s) {unknown}{did_you_mean(unknown, allowed)}; allowed: "
            f"{', '.join(sorted(allowed))} (the keys {source} {verb})")


def check_keys(c: Mapping[str, Any]) -> None:
    """SettingsError for a key no shipped config defines (a typo added with ``+``, or a user YAML)."""
    schema = config_schema()
    unknown = sorted(set(c) - schema[""] - {"hydra"})
    if unknown:
        raise SettingsError(_unknown_message("the config", unknown, schema[""], "conf/compress.yaml and its groups"))
    lacking = sorted(schema[""] - set(c) - {"pipeline"})  # the pipeline's absence has its own message
    if lacking:
        raise SettingsError(f"the config lacks {lacking} (removed with ~KEY?); they are needed to run")
    for section, allowed in schema.items():
        node = c.get(section) if section else None
        if node is None:
            continue
        if not isinstance(node, Mapping):
            raise SettingsError(f"{section} must be a mapping of {sorted(allowed)}, got {node!r}")
        unknown = sorted(set(node) - allowed)
        if unknown:
            source = f"conf/{section}/*.yaml" if (Path(config_dir()) / section).is_dir() else "conf/compress.yaml"
            raise SettingsError(_unknown_message(section, unknown, allowed, source))
    generic = (c.get("task") or {}).get("generic")
    if isinstance(generic, Mapping):  # its owner's fields, checked here too: before Hydra starts a (multi)run
        from compresslab.data.generic import GenericConfig

        fields = frozenset(f.name for f in dataclasses.fields(GenericConfig))
        unknown = sorted(set(generic) - fields)
        if unknown:
            raise SettingsError(_unknown_message("task.generic", unknown, fields, "conf/task/generic.yaml"))


def _get(c: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = c
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_values(c: Mapping[str, Any]) -> None:
    """Every :data:`VALUE_CHECKS` key of the sections the config has; SettingsError naming the key."""
    for key, check in VALUE_CHECKS.items():
        section = key.split(".")[0] if "." in key else ""
        if section and section not in c:
            continue  # a section the config lacks (e.g. no pipeline yet): its own error elsewhere
        _, value = _get(c, key)
        try:
            check(value, key)
        except ValueError as e:
            raise SettingsError(str(e)) from None


def missing_values(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???`` (OmegaConf's mandatory marker) in an unresolved container."""
    if isinstance(data, Mapping):
        return [k for key, v in data.items() for k in missing_values(v, f"{prefix}{key}.")]
    if isinstance(data, list):
        return [k for i, v in enumerate(data) for k in missing_values(v, f"{prefix}{i}.")]
    return [prefix[:-1]] if data == "???" else []


def _missing_message(keys: list[str]) -> str:
    parts = [f"{k} is not set: {MISSING_HINTS.get(k, f'set {k}=VALUE')}" for k in keys]
    return "; ".join(parts)


def resolve(cfg: Any) -> dict[str, Any]:
    """The config as plain data with every ``${...}`` resolved; SettingsError for a mandatory value
    left unset (``???``) outside the owned subtrees, or an interpolation that cannot be resolved."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    owned = tuple(p + "." for p in OWNED_SUBTREES)
    # OmegaConf.missing_keys resolves interpolations, and fails on the first one that reads a ??? value
    # (model.name: ${model.source}); the unresolved container shows ??? as is
    raw = OmegaConf.to_container(cfg, resolve=False)
    missing = sorted(k for k in missing_values(raw) if not k.startswith(owned))
    if missing:
        raise SettingsError(_missing_message(missing))
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:  # e.g. ${budget.nope} or ${oc.env:...} without a default
        key = getattr(e, "full_key", None) or "the config"
        raise SettingsError(f"{key}: {getattr(e, 'msg', None) or e}") from None
    assert isinstance(data, dict)
    return data


def check_config(cfg: Any) -> dict[str, Any]:
    """Resolve a composed config and check its keys and plain values; returns the resolved data.

    Raises SettingsError naming the key to change. The stage sections are typed afterwards by
    ``RunSettings.from_config``, the passes by ``build_steps``.
    """
    from omegaconf import DictConfig, OmegaConf

    # keys first, on the unresolved config: a misspelled key (+model.sorce=DIR) is named with its
    # did-you-mean, not reported as the mandatory value it failed to set (model.source is not set)
    check_keys(OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg)
    c = resolve(cfg)
    check_values(c)
    return c
