"""The plan of a search, made and checked before any work: its settings, its space, the overrides
every candidate gets, and its directory.

``plan_search`` refuses bad input with one line naming what to change (SettingsError, a ValueError
the CLI prints and exits 2 on): an unknown objective, ``max_drop`` <= 0 or not finite, a time budget
<= 0, an empty space, a task without a train split to carve the validation split from, overrides a
search decides itself, and any candidate config that would not compose or pass a normal run's
preflight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from compresslab.config import keep_pass_overrides, override_key, pass_step
from compresslab.manifest import stable_hash
from compresslab.search.objective import Objective, SearchSettings
from compresslab.search.space import Candidate, Entry, first_candidates, parse_space
from compresslab.validate import SettingsError

if TYPE_CHECKING:
    from compresslab.pipeline.settings import DeploySettings

# what a candidate's run gets on top of the command's overrides: it is scored on validation
EVAL_OVERRIDE = "eval=validation"


@dataclass
class SearchPlan:
    """Everything a search needs, checked before any work (:func:`plan_search`)."""

    settings: SearchSettings
    entries: list[Entry]
    base_overrides: list[str]  # the command's overrides for every candidate (pass settings filtered per pipeline)
    search_dir: Path
    threads: int | None = None
    seed: int = 42
    command: list[str] = field(default_factory=list)
    deploy: "DeploySettings | None" = None  # every candidate's (candidates_deploy): None until a deploy.* needs it

    def candidate_args(self, c: Candidate) -> list[str]:
        """The overrides that compose ``c``'s run, as a command line would give them: the command's pass settings
        for ``c``'s steps, and its ``deploy.*`` settings that ``c``'s run reads (preflight's rule)."""
        base = keep_pass_overrides(self.base_overrides, pipeline_steps(c.pipeline))
        if any(override_key(o).startswith("deploy.") for o in base):
            if self.deploy is None:
                self.deploy = candidates_deploy(self.base_overrides)
            base = [o for o in base if override_key(o) not in unread_deploy_keys(c.pipeline, self.deploy)]
        return [f"+pipeline={c.pipeline}", *base, *c.overrides, EVAL_OVERRIDE]


def compose_candidate(args: Sequence[str]) -> Any:
    """``config.compose(args)`` (which also runs inside the CLI's Hydra app)."""
    from compresslab.config import compose

    return compose(list(args))


def pipeline_steps(name: str) -> list[str]:
    """The step names of a shipped pipeline (``conf/pipeline/<name>.yaml``), read without composing
    (config.shipped_steps); FileNotFoundError for a name no pipeline has."""
    from compresslab.config import pipelines_dir, shipped_steps

    steps = shipped_steps(name)
    if steps is None:
        raise FileNotFoundError(pipelines_dir() / f"{name}.yaml")
    return steps


def pipeline_step_passes(name: str) -> list[tuple[str, str]]:
    """``(step, registered pass name)`` of a shipped pipeline in step order, read without composing (its defaults
    list: ``/pass@passes.<step>: <pass>``)."""
    from omegaconf import OmegaConf

    from compresslab.config import pipelines_dir

    raw = OmegaConf.load(pipelines_dir() / f"{name}.yaml")
    passes = {str(k).split("passes.", 1)[1]: str(v) for d in raw.get("defaults") or []
              if isinstance(d, Mapping) or OmegaConf.is_dict(d) for k, v in d.items() if str(k).startswith("/pass@")}
    return [(step, passes[step]) for step in pipeline_steps(name) if step in passes]


def unread_deploy_keys(pipeline: str, deploy: "DeploySettings") -> dict[str, str]:
    """``{deploy.<key>: why}`` for the deploy settings a run of the shipped ``pipeline`` deployed per ``deploy``
    never reads: preflight's rule (:func:`~compresslab.pipeline.deploy_reads.unread_deploy_settings`, which refuses
    them on a run) on the pipeline's passes. A search passes a deploy setting on to the candidates that read it
    only, as it does a pass's settings."""
    from compresslab.pipeline.deploy_reads import DeployedFile, unread_deploy_settings
    from compresslab.registry import get_pass

    f = DeployedFile.of((step, get_pass(name)) for step, name in pipeline_step_passes(pipeline))
    return {f"deploy.{k}": why for k, why in unread_deploy_settings(f, deploy).items()}


def candidates_deploy(base: Sequence[str]) -> "DeploySettings":
    """The deploy settings every candidate runs with: the deploy group and ``deploy.*`` settings of ``base`` (no
    pipeline sets any), composed once. SettingsError for a bad one (every candidate would be refused for it)."""
    from compresslab.config import compose
    from compresslab.pipeline.settings import deploy_settings

    return deploy_settings(compose([o for o in base if override_key(o).split(".")[0] == "deploy"]))


def requests_search(overrides: Sequence[str]) -> bool:
    """Whether a command line selects a search (``+search=NAME``)."""
    return any(o.startswith("+") and override_key(o) == "search" for o in overrides)


def base_overrides(overrides: Sequence[str]) -> list[str]:
    """The command's overrides every candidate gets: ``search`` ones removed; SettingsError for those a
    search decides itself (the pipeline, the eval split, one run dir for all, stopping runs early)."""
    out = []
    for o in overrides:
        key = override_key(o)
        if key == "search" or key.startswith("search."):
            continue
        if key == "pipeline" or key.startswith("pipeline."):
            raise SettingsError(f"{o}: a search chooses the pipelines itself (search.space); remove it. A pass setting "
                                "for every candidate having that step is +search.passes.<step>.<key>=VALUE")
        if key in ("eval", "eval.split", "eval.enabled"):
            raise SettingsError(f"{o}: a search scores every candidate on the validation split (eval=validation) and "
                                "reports dev for the chosen one itself; remove it")
        if key in ("run.dir", "run.stop_after", "run.overwrite") and o.partition("=")[2] not in ("null", "false", ""):
            raise SettingsError(f"{o}: every candidate is its own run in its own dir; a search cannot use {key} "
                                "(search.dir sets where the search itself writes)")
        out.append(o)
    return out


def pass_overrides(passes: Any) -> list[str]:
    """``search.passes`` ({step: {key: value}}) as ``pipeline.passes.<step>.<key>=<value>`` overrides;
    each reaches only the candidates whose pipeline has that step (:meth:`SearchPlan.candidate_args`)."""
    if passes is None:
        return []
    if not isinstance(passes, Mapping) or not all(isinstance(v, Mapping) for v in passes.values()):
        raise SettingsError(f"search.passes must map a step name to its settings ({{obert: {{grad_batch_size: 4}}}}; "
                            f"on the command line +search.passes.obert.grad_batch_size=4), got {passes!r}")

    def flat(prefix: str, node: Any) -> list[str]:
        if isinstance(node, Mapping) and node:
            return [o for k, v in node.items() for o in flat(f"{prefix}.{k}", v)]
        return [f"{prefix}={override_value(node)}"]

    return [o for step, node in passes.items() for o in flat(f"pipeline.passes.{step}", node)]


def check_pass_settings(base: Sequence[str], entries: Sequence[Entry], deploy: "DeploySettings | None" = None) -> None:
    """SettingsError for a pass setting of the command or ``search.passes`` that no candidate would run with: its
    step is in none of the space's pipelines (each candidate keeps only its own steps' settings, so a misspelt
    step would vanish from all), a ``deploy.*`` setting no candidate's run reads (deployed per ``deploy``, the
    candidates' deploy settings; :func:`candidates_deploy` of ``base`` when None), or an entry sets the same key
    per candidate (its value would win)."""
    given = {override_key(o): o for o in base if pass_step(o) is not None}
    have = {step for e in entries for step in pipeline_steps(e.pipeline)}
    unknown = sorted({pass_step(o) for o in given.values()} - have)
    if unknown:
        named = ", ".join(o for o in given.values() if pass_step(o) == unknown[0])
        raise SettingsError(f"pass setting(s) of step {unknown[0]!r} ({named}): no pipeline of this search has that "
                            f"step, so no candidate would run with it; the search's steps: {', '.join(sorted(have))}")
    given_deploy = sorted({override_key(o) for o in base if override_key(o).startswith("deploy.")})
    if given_deploy and entries:
        deploy = deploy or candidates_deploy(base)
        why = {e.pipeline: unread_deploy_keys(e.pipeline, deploy) for e in entries}
        unread = [k for k in given_deploy if all(k in w for w in why.values())]
        if unread:
            reasons = "; ".join(f"{p}: {w[unread[0]]}" for p, w in why.items())
            raise SettingsError(f"{unread[0]}: no candidate of this search would read it, so none would run with it "
                                f"(preflight refuses it on a run that ignores it; {reasons})")
    for e in entries:
        own = ({e.key} if e.key else set()) | {override_key(o) for o in e.overrides}
        clash = sorted(own & given.keys())
        if clash:
            raise SettingsError(f"{given[clash[0]]}: search.space.{e.name} sets {clash[0]} per candidate, and its value "
                                f"would win; change that entry (search.space.{e.name}) instead, or remove it "
                                f"(~search.space.{e.name})")


def _check_task(cfg: Any) -> None:
    """SettingsError unless the task has a train split to carve a non-empty validation split from."""
    from compresslab.data.tasks import get_task

    t = cfg.task
    if t.get("val_size") == 0:
        raise SettingsError("task.val_size=0 leaves no validation split, and a search selects on validation only "
                            "(never on dev): leave task.val_size unset (min(1000, 5% of train)) or give a size")
    if t.get("generic") is not None or t.name == "generic":
        if not (t.get("generic") or {}).get("train"):
            raise SettingsError("task.generic.train is not set: a search selects on a validation split carved from "
                                "train, so it needs a train file (task.generic.train=PATH)")
        return
    spec = get_task(str(t.name))
    if spec.train_file is None:
        raise SettingsError(f"task {spec.name!r} has no train split to carve a validation split from (it ships dev "
                            "only), and a search never selects on dev: pick a task with a train split")


def _check_objective(settings: SearchSettings, run_settings: Any) -> None:
    b = run_settings.bench
    if settings.objective is not Objective.LATENCY:
        return
    if not b.enabled:
        raise SettingsError("search.objective=latency reads each candidate's bench stage, but bench.enabled=false; "
                            "enable the bench (or search.objective=size)")
    shapes = [tuple(s) for s in b.shapes]
    if settings.latency_shape is not None and settings.latency_shape not in shapes:
        raise SettingsError(f"search.latency_shape={list(settings.latency_shape)} is not among bench.shapes "
                            f"{[list(s) for s in shapes]}: add it there or pick one of them")


def plan_search(cfg: Any, overrides: Sequence[str]) -> SearchPlan:
    """Check a ``+search=NAME`` config before any work and return the plan.

    Checks: the search settings (objective, max_drop > 0 and finite, margin, time budget > 0), the
    space (not empty, every entry's pipeline and keys), the command's overrides, the task (a train
    split to carve validation from), and every candidate config known before any result (each
    composed and preflighted as a normal run). Raises SettingsError / ConfigError / PipelineError /
    FileNotFoundError naming what to change; nothing is written.
    """
    from omegaconf import OmegaConf

    from compresslab.config import available_pipelines
    from compresslab.pipeline.plan import config_identity
    from compresslab.pipeline.preflight import preflight
    from compresslab.pipeline.settings import RunSettings

    raw = OmegaConf.to_container(cfg.search, resolve=True)
    if not isinstance(raw, dict):
        raise SettingsError(f"search must be a mapping (conf/search/*.yaml), got {raw!r}")
    settings = SearchSettings.from_mapping(raw)
    entries = parse_space(raw.get("space"), available_pipelines())
    base = base_overrides(list(overrides)) + pass_overrides(raw.get("passes"))
    if not any(override_key(o) == "deploy" for o in overrides):
        # the command's own deploy group wins; a deploy.* setting alone refines the search's (deploy.precision=f32
        # on the default ORT group would be refused: ORT never reads it)
        base.append(f"deploy={settings.deploy_group}")
    deploy = candidates_deploy(base) if any(override_key(o).startswith("deploy.") for o in base) else None
    check_pass_settings(base, entries, deploy)
    plan = SearchPlan(settings, entries, base, Path("."), command=list(overrides), deploy=deploy)
    first = None
    left_out: list[str] = []
    for entry in entries:
        for c in first_candidates(entry, entries):
            args = plan.candidate_args(c)
            try:
                ccfg = compose_candidate(args)
            except ValueError as e:
                raise candidate_error(c, e) from None
            if first is None:  # the task is every candidate's: checked once, before the slower checks
                _check_task(ccfg)
                first = ccfg
            if _nbits_on_openvino(ccfg):  # its n-bit file has no OpenVINO form: not a candidate of this search
                left_out.append(entry.name)
                break
            try:
                preflight(ccfg)
            except ValueError as e:
                raise candidate_error(c, e) from None
    assert first is not None  # parse_space refuses an empty space
    if left_out:
        plan.entries = _without(entries, left_out)
    rs = RunSettings.from_config(first)
    _check_objective(settings, rs)
    identity = {k: v for k, v in config_identity(first).items() if k != "pipeline"}
    what = {"space": raw.get("space"), "identity": identity,
            "pass_overrides": sorted(o for o in base if pass_step(o) is not None),
            "settings": {k: v for k, v in settings.to_dict().items()
                         if k not in ("time_budget_s", "retry_failed", "dir", "unit_s")}}
    plan.search_dir = Path(settings.dir) if settings.dir else Path(first.paths.output_dir) / "search" / stable_hash(what)
    plan.threads, plan.seed = rs.threads, rs.seed
    return plan


def _nbits_on_openvino(ccfg: Any) -> bool:
    """Whether a candidate deploys on OpenVINO a pipeline that writes n-bit weights (the rule
    ``preflight.check_nbits_deploy`` refuses a run by). A config that fails to read answers False: its preflight
    names the fault."""
    from compresslab.pipeline.plan import build_steps
    from compresslab.pipeline.preflight import nbits_step_on_openvino
    from compresslab.pipeline.settings import RunSettings

    try:
        return nbits_step_on_openvino(RunSettings.from_config(ccfg), build_steps(ccfg)) is not None
    except ValueError:
        return False


def _without(entries: list[Entry], left_out: list[str]) -> list[Entry]:
    """``entries`` less those whose n-bit files cannot deploy on OpenVINO, said in a warning; SettingsError when
    nothing is left or a kept entry takes its seeds from a left-out one."""
    import logging

    kept = [e for e in entries if e.name not in left_out]
    why = (f"search.space entries {', '.join(left_out)} write n-bit weights (MatMulNBits), which OpenVINO cannot "
           "read, and every candidate deploys on OpenVINO (deploy.runtime=openvino)")
    seeded = [f"{e.name} (seeds from {s.source})" for e in kept for s in e.seeds if s.source in left_out]
    if not kept or seeded:
        raise SettingsError(f"{why}: {'no entry is left' if not kept else 'needed by ' + ', '.join(seeded)}; "
                            "use search.deploy=auto (n-bit files stay on ORT) or remove them (~search.space.<name>)")
    logging.getLogger(__name__).warning("%s: left out of this search (search.deploy=auto keeps them, on ORT)", why)
    return kept


def candidate_error(c: Candidate, e: BaseException) -> SettingsError:
    """A candidate's config error as the search's: a normal run's advice to set ``pipeline.passes.<step>.<key>``
    becomes the search's way to set it (``+search.passes.<step>.<key>=VALUE``: ``pipeline.*`` is refused here),
    and a setting of the space entry itself is named as such."""
    msg = " ".join(str(e).split())
    if "pipeline.passes." in msg:
        msg += (" (in a search, a pass setting for every candidate having that step is "
                "+search.passes.<step>.<key>=VALUE, e.g. " + _search_form(msg) + ")")
    return SettingsError(f"search candidate {c.name} (+pipeline={c.pipeline}, search.space.{c.entry}): {msg}")


def _search_form(msg: str) -> str:
    """The first ``pipeline.passes.<step>.<key>`` named in ``msg``, written as the search's override."""
    import re

    m = re.search(r"pipeline\.passes\.([A-Za-z0-9_]+)\.([A-Za-z0-9_.]*[A-Za-z0-9_])", msg)
    return f"+search.passes.{m.group(1)}.{m.group(2)}=VALUE" if m else "+search.passes.obert.grad_batch_size=4"


def override_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(override_value(x) for x in v) + "]"
    return str(v.value if isinstance(v, Objective) else v)
