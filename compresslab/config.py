"""Where the configs live and how they are composed: ``conf/`` inside the package.

``conf/`` ships inside the package (``compresslab/conf``) so that an installed wheel composes the
same configs as a source checkout; nothing here touches process state (that is ``cli.py``'s job).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


def config_dir() -> str:
    """The directory holding ``compress.yaml`` and the config groups (``compresslab/conf``).

    Raises FileNotFoundError when the package was installed without its configs.
    """
    cand = Path(__file__).resolve().parent / "conf"
    if (cand / "compress.yaml").is_file():
        return str(cand)
    raise FileNotFoundError(f"compresslab config directory not found: {cand} has no compress.yaml "
                            "(was the package built without its package data?)")


_ENV_READ = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)")  # ${oc.env:NAME,default} in a conf file


def config_env_vars() -> list[str]:
    """The environment variables the shipped configs read (``${oc.env:NAME,...}`` in ``conf/``: the data root
    ``COMPRESSLAB_DATA``, the cache ``COMPRESSLAB_CACHE``), sorted."""
    found = {m for p in Path(config_dir()).rglob("*.yaml") for m in _ENV_READ.findall(p.read_text())}
    return sorted(found)


def config_environment() -> dict[str, str]:
    """The variables of :func:`config_env_vars` set in this process, with their values: what a config composed now
    reads from the environment, so a command that composes it again must set them too."""
    import os

    return {name: os.environ[name] for name in config_env_vars() if name in os.environ}


class ConfigError(ValueError):
    """Command-line overrides that do not compose: an unknown group option (``debug=smok``), a key
    that does not exist, a syntax error. The message is one line naming the override."""


def composition_message(error: Exception) -> str:
    """One line saying what is wrong with the overrides, from Hydra's multi-line composition error
    (its config search path and grammar links left out, the options of a group listed)."""
    from hydra.errors import MissingConfigException, OverrideParseException

    from compresslab.validate import choice_hint, did_you_mean

    if isinstance(error, OverrideParseException):  # the parser's message does not name the override
        first = str(error).splitlines()[0] if str(error) else "syntax error"
        return (f"cannot parse the override {error.override!r}: {first} (lists are written [a, b], "
                "quote values with spaces or special characters)")
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and error.options:
        group, _, option = str(error.missing_cfg_file).rpartition("/")
        plus = "+" if group == "pipeline" else ""
        return (f"{plus}{group}={option}: no such option (no config {error.missing_cfg_file!r}); "
                f"choose one with {plus}{group}=NAME: {', '.join(error.options)}{choice_hint(option, error.options)}")
    lines = [ln.strip() for ln in str(error).splitlines()]
    keep = []
    for ln in lines:
        if ln.startswith("Config search path") or ln.startswith("See https://"):
            break
        if ln:
            keep.append(ln)
    msg = " ".join(keep) or type(error).__name__
    cause = error.__cause__
    if cause is not None and "not in struct" in str(cause):  # `x=1` for a key that does not exist
        # (Hydra's advice to append it with `+` would only meet the unknown-key check); the keys of the
        # node it was set on (OmegaConf's parent_node) give the did-you-mean in every group alike
        key = getattr(cause, "full_key", None) or msg
        parent = getattr(cause, "parent_node", None)
        siblings = [k for k in (parent.keys() if hasattr(parent, "keys") else ())
                    if isinstance(k, str) and k != "hydra" and not k.startswith("_")]
        # below the root, the keys of the blocks one level down too: a setting that moved into one (bibert's
        # `steps`, now `recovery.steps`) is named with its path
        nested: dict[str, list[str]] = {}
        if "." in str(key) and parent is not None:
            from omegaconf import OmegaConf

            plain = OmegaConf.to_container(parent, resolve=False)  # nothing resolved inside an error message
            nested = {k: [c for c in v if isinstance(c, str)] for k, v in plain.items()
                      if k in siblings and isinstance(v, dict)}
        hint = did_you_mean([getattr(cause, "key", None) or key.rpartition(".")[2]], siblings, nested)
        return (f"{key}: no such setting{hint}; check its spelling (`python -m compresslab +pipeline=NAME --cfg job` "
                "prints every setting)")
    if msg.startswith("Multiple values for "):  # `+group=option` for a group that has a default
        group = msg.split()[3].rstrip(".")
        msg += f" (on the command line: {group}=OPTION, without '+')"
    return msg


def appended_pass_settings(overrides: list[str]) -> list[str]:
    """``overrides`` with each ``+pipeline.passes.<step>.<key>=v`` read as ``++...`` (add or override). Before a
    setting was listed in its pass's YAML the ``+`` form was the only one Hydra took (obert's ``checkpoint_every``
    until 2026-12-06); once listed, Hydra refuses that form ("an item is already at ..."), which would break the
    commands and scripts written for it. A key the pass does not have is still refused, by the pass's own check
    (``plan.check_pass_keys``, with a did-you-mean)."""
    return ["+" + o if o.startswith("+pipeline.passes.") else o for o in overrides]


def compose(overrides: list[str]) -> Any:
    """Compose the config like the CLI does (for the API, tests and benchmarks); returns a DictConfig.

    Works inside a running Hydra app too (the CLI's own, when the search composes its candidates, or a user's
    ``@hydra.main`` calling :func:`compresslab.run`): Hydra's process-global state is set aside for the call
    and put back after, where ``initialize_config_dir`` alone would refuse ("GlobalHydra is already
    initialized"). Raises ConfigError (one line naming the override) when the overrides do not compose.
    """
    return _compose(overrides, with_hydra=False)


def _compose(overrides: Sequence[str], with_hydra: bool) -> Any:
    """:func:`compose`; ``with_hydra``: with Hydra's own config under ``hydra`` (its job's name, overrides...)."""
    from hydra import compose as h_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    with _own_global_hydra(), initialize_config_dir(config_dir=config_dir(), version_base="1.3",
                                                    job_name="compresslab"):
        try:
            return h_compose(config_name="compress", overrides=appended_pass_settings(list(overrides)),
                             return_hydra_config=with_hydra)
        except HydraException as e:
            raise ConfigError(composition_message(e)) from e


def reads_hydra(override: str) -> bool:
    """Whether an override's value reads Hydra's own config (``${hydra:job.num}``), as written or as Hydra's sweeper
    writes a job's override back (``$\\{hydra\\:job.num\\}``: its grammar's special characters escaped)."""
    return "hydra:" in override.partition("=")[2].replace("\\", "")


@contextmanager
def as_multirun_job(overrides: Sequence[str], num: int) -> Iterator[None]:
    """Hydra's own config of job ``num`` of a multirun (``-m``) set for the block, as Hydra sets it while that job
    runs (``hydra.job.num``, its overrides), so that a setting reading it (``run.dir='out/${hydra:job.num}'``)
    resolves in the checks made before any job starts as it will in the job. Raises ConfigError when the overrides
    do not compose.

    Only where an override reads ``${hydra:...}``: no shipped config does, and composing Hydra's config too would
    double the time each job's check takes for nothing."""
    if not any(reads_hydra(o) for o in overrides):
        yield
        return
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    cfg = _compose(overrides, with_hydra=True)
    with open_dict(cfg):  # what Hydra's launcher sets on each job (BasicLauncher.launch)
        cfg.hydra.job.id = num
        cfg.hydra.job.num = num
        cfg.hydra.mode = RunMode.MULTIRUN
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = saved


@contextmanager
def _own_global_hydra() -> Iterator[None]:
    """Set an initialized ``GlobalHydra`` (a running Hydra app's) aside for the block and restore it after."""
    from hydra.core.global_hydra import GlobalHydra

    saved = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    if saved is not None:
        GlobalHydra.instance().clear()
    try:
        yield
    finally:
        if saved is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(saved)


def pipelines_dir() -> Path:
    """``conf/pipeline``: one YAML per shipped pipeline."""
    return Path(config_dir()) / "pipeline"


def available_pipelines() -> list[str]:
    """Names of the shipped pipelines, sorted (``+pipeline=NAME``)."""
    return sorted(p.stem for p in pipelines_dir().glob("*.yaml"))


# Appended to a shipped pipeline's name when ``pipeline.steps`` was overridden (run_pipeline_name)
CUSTOM_STEPS = "+custom"


def run_pipeline_name(cfg: Any) -> str:
    """The pipeline's name as the run records it (its directory, ``manifest.pipeline``, the report's title, compare):
    ``pipeline.name``, with :data:`CUSTOM_STEPS` appended when that names a shipped pipeline whose ``steps`` differ
    from the run's (a ``pipeline.steps=[...]`` override): such a run is not the named pipeline, and filed under its
    name it would read as one (trial 47's ``[finetune,layer_drop,obert,int8]`` under layer_drop_ziplm_obert_int8). A
    ``pipeline.name`` set to a name of one's own is kept as it is."""
    name = str(cfg.pipeline.name)
    shipped = shipped_steps(name)
    if shipped is None or list(cfg.pipeline.get("steps") or []) == shipped:
        return name
    return name + CUSTOM_STEPS


def shipped_steps(pipeline: str) -> list[str] | None:
    """The ``steps`` of the shipped pipeline ``conf/pipeline/<pipeline>.yaml``; None when none is shipped by that
    name."""
    from omegaconf import OmegaConf

    path = pipelines_dir() / f"{pipeline}.yaml"
    if not path.is_file():
        return None
    return [str(s) for s in OmegaConf.load(path).get("steps") or []]


def pipelines_hint() -> str:
    """One line telling the user how to choose a pipeline and which exist."""
    return "choose one with +pipeline=NAME; available: " + ", ".join(available_pipelines())


def sweep_lists(overrides: list[str]) -> list[list[str]]:
    """A multirun's (``-m``) overrides as Hydra's basic sweeper reads them: one list per key of the
    ``key=value`` strings its jobs take, a sweep expanded (``seed=1,2``, ``range(1,4)``,
    ``glob(*)`` over a group's options), a plain override as a list of one. Every job is one pick
    from each list (their product, in order).

    Raises ConfigError (one line) for an override that does not parse or a sweep the basic sweeper
    refuses (``interval(...)``).
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    # the parser and the expansion Hydra's multirun uses (the loader lists a group's options for glob)
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(config_dir()))
    try:
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(list(overrides))
        keyed: dict[str, list[str]] = {}
        for o in parsed:
            if o.is_sweep_override() and not o.is_discrete_sweep():
                raise ConfigError(f"{o.input_line}: a multirun (-m) sweeps lists (a=1,2), range(start,stop) and "
                                  "glob(pattern) over a group's options; interval() needs a sweeper plugin (Optuna, "
                                  "Nevergrad): give the values as a list instead")
            if o.is_sweep_override():
                jobs = BasicSweeper.split_arguments([o], None)[0]  # [[k=v1], [k=v2], ...]
                keyed[o.get_key_element()] = [job[0] for job in jobs]
            else:
                keyed[o.get_key_element()] = [f"{o.get_key_element()}={o.get_value_element_as_str()}"]
    except HydraException as e:
        raise ConfigError(composition_message(e)) from e
    return list(keyed.values())


# Hydra's override prefixes: ``++`` adds or sets, ``+`` adds, ``~`` deletes (``~key`` or ``~key=value``).
_OVERRIDE_PREFIXES = ("++", "+", "~")


def override_key(override: str) -> str:
    """The key an override sets, adds or deletes: ``++a.b=1``, ``+a.b=1``, ``~a.b``, ``~a.b=1``, ``a.b=1``
    -> ``a.b``; a group choice keeps its package (``+pass@pipeline.passes.x=y`` -> ``pass@pipeline.passes.x``).
    A value's own ``=`` or ``.`` never reaches the key (the key ends at the first ``=``)."""
    key = override.partition("=")[0].strip()
    for prefix in _OVERRIDE_PREFIXES:  # "++" before "+": one prefix only, as Hydra's grammar has it
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def pass_step(override: str) -> str | None:
    """The step a pass setting belongs to: ``[+|++|~]pipeline.passes.<step>[.<key>...][=value]`` -> ``<step>``;
    None for any other override (a group choice such as ``+pass@pipeline.passes.<step>=NAME`` adds a pass, it
    sets nothing of one, so it is not a pass setting either)."""
    key = override_key(override)
    if "@" in key:
        return None
    parts = key.split(".")
    return parts[2] if len(parts) >= 3 and parts[:2] == ["pipeline", "passes"] and parts[2] else None


def keep_pass_overrides(overrides: Sequence[str], steps: Iterable[str]) -> list[str]:
    """``overrides`` (order kept) less the pass settings (:func:`pass_step`) of steps not in ``steps``, the
    step names of the pipeline they go to: one command line can then serve several pipelines, and the
    config refuses a setting of a pass its pipeline does not run (Hydra: deleting it fails). Every other
    override is kept as given."""
    have = set(steps)
    return [o for o in overrides if (step := pass_step(o)) is None or step in have]


# ``${key}`` or ``${oc.select:key[,default]}``: a value read from one other setting (the forms the shipped configs use;
# a relative key starts with dots). Any other interpolation (``${oc.env:X}``, ``a_${b}``) names no one setting.
_READS = re.compile(r"\$\{\s*(?:oc\.select\s*:\s*)?(\.*[\w\-]+(?:\.[\w\-]+)*)\s*(?:,[^${}]*)?\}")


def _node(cfg: Any, key: str) -> tuple[Any, str]:
    """The container holding ``key`` of ``cfg`` (None when there is none) and ``key``'s last part."""
    from omegaconf import DictConfig, OmegaConf

    parent_key, _, last = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, throw_on_resolution_failure=False) if parent_key else cfg
    return (parent if isinstance(parent, DictConfig) else None), last


def _read_key(text: str, parent_key: str) -> str | None:
    """The full key the interpolation ``text`` (the whole value of a key under ``parent_key``) reads, or None."""
    m = _READS.fullmatch(text.strip())
    if m is None:
        return None
    key = m.group(1)
    dots = len(key) - len(key.lstrip("."))
    if not dots:
        return key
    base = parent_key.split(".") if parent_key else []  # ``${.x}``: a sibling; each further dot: one level up
    if dots - 1 > len(base):
        return None
    return ".".join(base[:len(base) - (dots - 1)] + [key[dots:]])


def value_source(cfg: Any, key: str) -> tuple[str, str] | None:
    """Where the value ``key`` of config ``cfg`` has is written, when ``key`` reads it through an interpolation
    (hawq's ``latency.accuracy_level: ${oc.select:pipeline.passes.nbits.accuracy_level,0}``): the full key of the
    setting that holds it (a chain followed to its end) and ``key``'s own interpolation. ``key`` itself is the
    holder where the interpolation names no one setting, or where ``oc.select`` found none and took its default
    (that default is written at ``key``). None when ``key`` holds its own value."""
    from omegaconf import OmegaConf

    via = None
    for _ in range(32):  # a chain; OmegaConf refuses a cycle before any value is read
        parent, last = _node(cfg, key)
        if parent is None or last not in parent or not OmegaConf.is_interpolation(parent, last):
            break
        text = str(OmegaConf.to_container(parent, resolve=False)[last])
        via = via or text
        source = _read_key(text, key.rpartition(".")[0])
        holder, source_last = _node(cfg, source) if source else (None, "")
        if holder is None or source_last not in holder:
            break
        key = source
    return (key, via) if via is not None else None


def setting_message(cfg: Any, key: str, reason: str, note: str = "") -> str:
    """``<key> <reason><note>`` (``reason``: ``must be a number, got 'abc'``; ``note``: `` (default 2.0)``), naming
    the setting the value is written at when ``key`` reads it through an interpolation (:func:`value_source`): the
    user set that one, and another setting that reads it may be checked first. ``note`` is about ``key``'s own
    field, so it is dropped then."""
    found = value_source(cfg, key)
    if found is None:
        return f"{key} {reason}{note}"
    source, via = found
    if source == key:
        return f"{key} {reason} (its value is {via})"
    return f"{source} {reason} (read by {key} through {via})"


def sources_named(cfg: Any, prefix: str, message: str) -> str:
    """For a check's ``message`` about the settings under ``prefix`` (a pass's, ``pipeline.passes.hawq``), which
    names them by their keys there (``latency.accuracy_level``, ``recovery.lr``, ``speedup``): ``" (X is read from
    Y through ${...})"`` for each named one that reads its value from another setting, or ``""``. A pass checks the
    values it was given and cannot say where a value was written."""
    from omegaconf import DictConfig, OmegaConf

    def interpolated(node: Any, path: str) -> Iterator[str]:
        for k in node:
            if OmegaConf.is_interpolation(node, k):
                yield f"{path}{k}"
            elif isinstance(child := OmegaConf.select(node, str(k), throw_on_missing=False), DictConfig):
                yield from interpolated(child, f"{path}{k}.")  # a nested block (recovery)

    node = OmegaConf.select(cfg, prefix, throw_on_resolution_failure=False)
    notes = []
    for field in interpolated(node, "") if isinstance(node, DictConfig) else ():
        found = value_source(cfg, f"{prefix}.{field}")
        if found and found[0] != f"{prefix}.{field}" and re.search(rf"(?<![\w.]){re.escape(field)}\b", message):
            notes.append(f"{field} is read from {found[0]} through {found[1]}")
    return f" ({'; '.join(notes)})" if notes else ""
