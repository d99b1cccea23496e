"""The suite's planning half (issue 14, ``benchmarks/suite.py`` runs it): what a task's suite will do,
decided before any work, so a bad setting is refused with the allowed values before a teacher is trained.

Reads ``benchmarks/suite.yaml`` (tasks, budgets, pipelines, peers, backends, timing), resolves one task's
:class:`TaskPlan` from it, the budget and the command line, and lists the task's cells with the settings each
is cached under (``cell_specs``: what :func:`benchmarks.store.cell_key` hashes, so a changed setting builds
that cell anew). Nothing here trains, builds, scores or times.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from compresslab.export.openvino_int8 import RECIPE
from compresslab.failure import error_text

from .suite_method import OURS, method_of_config, model_method_of_config, pipeline_model_method
from .suite_openvino import cell_name, nncf_cell_name, pipeline_of

CONFIG = Path(__file__).resolve().parent / "suite.yaml"
BACKENDS = ("ort", "openvino")
KEYS = ("threads", "pipelines", "pipeline_overrides", "peers", "backends", "openvino_keep_fp32",
        "openvino_smooth_alpha", "calibration_examples", "timing", "budgets", "tasks")  # suite.yaml's top level


class SuiteError(ValueError):
    """A bad suite setting (unknown task, budget or cell), raised before any work."""


@dataclass(frozen=True)
class TaskPlan:
    """What one task's suite runs: resolved from suite.yaml, the budget and the command line."""

    task: str
    budget: str
    overrides: tuple[str, ...]  # compresslab overrides of the teacher and every pipeline
    pipelines: tuple[str, ...]
    peers: tuple[str, ...]
    threads: int
    calibration_examples: int
    timing: Mapping[str, Any]
    cell_cpu_hours: float | None
    teacher_cpu_hours: float | None
    openvino: bool = True  # backends holds openvino: each pipeline also gets its OpenVINO cell
    openvino_keep_fp32: tuple[str, ...] = ()  # Linear patterns our QDQ for OpenVINO keeps fp32 (suite_openvino)
    openvino_smooth_alpha: tuple[float | None, ...] = (None,)  # SmoothQuant grid of our int8 IR (suite_openvino)
    # one pipeline's own overrides, after every other (the last wins): suite.yaml ``pipeline_overrides``
    pipeline_extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # the suite config's pipelines before --cells chose some: whose OpenVINO twin another's duplicates
    # (:func:`teacher_twins`) does not depend on which cells this command builds
    config_pipelines: tuple[str, ...] = ()
    config_peers: tuple[str, ...] = ()  # the config's peers before --cells chose some

    def whole(self) -> "TaskPlan":
        """The same task with every cell of the suite config: what its results file describes. ``--cells``
        chooses what is built; the file keeps every other cell already finished (:func:`suite.build_cells`)."""
        return replace(self, pipelines=self.config_pipelines or self.pipelines,
                       peers=self.config_peers or self.peers)

    def twin_of(self) -> dict[str, str]:
        """:func:`teacher_twins` over the config's pipelines (each one's torch model's method, composed)."""
        every = self.config_pipelines or self.pipelines
        return teacher_twins(every, {pl: self.model_method(pl) for pl in every})

    def model_method(self, pipeline: str) -> str:
        """Whose torch model ``pipeline``'s run leaves (``suite_method.pipeline_model_method``; composed once per
        command line in this process: the plan, its checks and the cell listing all ask)."""
        return _model_method(tuple(self.args(pipeline)))

    def args(self, pipeline: str) -> list[str]:
        """The compresslab command line of ``pipeline``'s run (:func:`pipeline_overrides`)."""
        return pipeline_overrides(pipeline, [*self.overrides, *self.pipeline_extra.get(pipeline, ())])


@lru_cache(maxsize=None)
def _model_method(args: tuple[str, ...]) -> str:
    return pipeline_model_method(args)


def load_config(path: str | Path) -> dict[str, Any]:
    """suite.yaml as a dict; SuiteError when a section is missing, a key is unknown (a typo would otherwise
    leave its default in force, silently) or a setting is malformed, before any work."""
    import difflib

    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(str(path)), resolve=True)
    missing = [k for k in ("tasks", "budgets", "pipelines", "timing") if k not in cfg]
    if missing:
        raise SuiteError(f"{path}: missing section(s) {missing}")
    for k in cfg:
        if k not in KEYS:
            near = difflib.get_close_matches(str(k), KEYS, n=1)
            raise SuiteError(f"{path}: unknown key {k!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                             + f"; allowed: {', '.join(KEYS)}")
    backends(cfg)
    keep_fp32(cfg)
    smooth_grid(cfg)
    return cfg


def backends(cfg: Mapping[str, Any]) -> list[str]:
    """The runtimes our pipelines' files run on (``backends``, default both); SuiteError for an unknown one
    or a list without ort (every pipeline deploys on ORT: ``deploy=ort``)."""
    raw = cfg.get("backends", BACKENDS)
    if not isinstance(raw, (list, tuple)):  # a string would be split into characters
        raise SuiteError(f"backends must be a list of runtimes (e.g. [ort, openvino]), got {raw!r}")
    got = list(raw)
    unknown = [b for b in got if b not in BACKENDS]
    if unknown:
        raise SuiteError(f"unknown backend(s) {unknown} in the suite config; allowed: {list(BACKENDS)}")
    if "ort" not in got:
        raise SuiteError(f"backends {got} must include ort (every pipeline deploys its file on ORT)")
    return got


def peer_names(cfg: Mapping[str, Any]) -> list[str]:
    """The config's peers (``peers``: ``all`` or a list), in registry order for ``all``; SuiteError naming
    the registered ones for a name the registry does not hold."""
    from .peers import PEERS

    want = cfg.get("peers", "all")
    names = list(PEERS) if want == "all" else list(want)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise SuiteError(f"unknown peer(s) {unknown} in the suite config; known: {list(PEERS)}")
    return names


def pipeline_extra(cfg: Mapping[str, Any], task: str | None = None) -> dict[str, tuple[str, ...]]:
    """suite.yaml ``pipeline_overrides`` (pipeline -> overrides applied after the task's and the budget's), then
    the task's own ``tasks.<task>.pipeline_overrides`` (a lever chosen on that task's validation split; the last
    wins); SuiteError for a pipeline the config does not run or a value that is not a list of ``key=value``."""
    layers = [("pipeline_overrides", cfg.get("pipeline_overrides") or {})]
    if task is not None:
        layers.append((f"tasks.{task}.pipeline_overrides", cfg["tasks"][task].get("pipeline_overrides") or {}))
    out: dict[str, tuple[str, ...]] = {}
    for where, extra in layers:
        unknown = [p for p in extra if p not in cfg["pipelines"]]
        if unknown:
            raise SuiteError(f"{where} names pipeline(s) {unknown} the suite config does not run; "
                             f"pipelines: {list(cfg['pipelines'])}")
        bad = {p: v for p, v in extra.items()
               if not isinstance(v, list) or not all(isinstance(o, str) and "=" in o for o in v)}
        if bad:
            raise SuiteError(f"{where} must map each pipeline to a list of key=value overrides, got {bad}")
        for p, v in extra.items():
            out[p] = (*out.get(p, ()), *v)
    return out


def plan(cfg: Mapping[str, Any], task: str, budget: str, cells: Sequence[str] | None,
         extra: Sequence[str] = ()) -> TaskPlan:
    """Resolve one task's plan; SuiteError naming the allowed values for an unknown task, budget or cell."""
    if task not in cfg["tasks"]:
        raise SuiteError(f"unknown task {task!r}; the suite config has {list(cfg['tasks'])}")
    if budget not in cfg["budgets"]:
        raise SuiteError(f"unknown budget {budget!r}; the suite config has {list(cfg['budgets'])}")
    t, b = cfg["tasks"][task], cfg["budgets"][budget]
    pipelines, peers = list(cfg["pipelines"]), peer_names(cfg)
    teacher = b.get("teacher") or t.get("teacher")
    threads = int(cfg.get("threads", 2))
    overrides = (*t.get("overrides", []), *b.get("overrides", []), *([f"budget.teacher={teacher}"] if teacher else []),
                 f"run.threads={threads}", *extra)
    from compresslab.passes.finetune import PRESETS

    named = [o.split("=", 1)[1] for o in overrides if o.startswith("budget.teacher=")]
    if named and named[-1] not in PRESETS:  # the last one wins, as in the runs; refused before a teacher trains
        raise SuiteError(f"teacher preset {named[-1]!r} (budget.teacher) is not a finetune preset; allowed: "
                         f"{', '.join(PRESETS)}")
    tp = TaskPlan(task, budget, tuple(overrides), tuple(pipelines), tuple(peers), threads,
                  int(cfg.get("calibration_examples", 300)), {**cfg["timing"], **b.get("timing", {})},
                  b.get("cell_cpu_hours"), t.get("teacher_cpu_hours"), "openvino" in backends(cfg),
                  keep_fp32(cfg), smooth_grid(cfg), pipeline_extra(cfg, task), tuple(cfg["pipelines"]),
                  tuple(peers))
    return tp if cells is None else _choose_cells(tp, cells)


def _choose_cells(p: TaskPlan, cells: Sequence[str]) -> TaskPlan:
    """``p`` with the pipelines and peers ``--cells`` asks for (a pipeline's OpenVINO cells come with it: they
    are made from its run); SuiteError for an empty list or a name that is no cell of the task, listing every
    cell the task has (:func:`cell_names`, each accepted here) and the nearest names."""
    if not cells:  # `--cells ""` or `--cells ,`: never "every cell" by accident
        raise SuiteError(f"--cells names no cell; give comma-separated names of {_listing(p)}, or leave --cells out "
                         "for every cell")
    of = {c: pipeline_of(c) for c in cells}
    unknown = [c for c in cells if c not in p.pipelines and c not in p.peers and of[c] not in p.pipelines]
    if unknown:
        import difflib

        every = [n for names in cell_names(p).values() for n in names]
        near = {u: m[0] for u in unknown if (m := difflib.get_close_matches(u, every, n=1))}
        guesses = [repr(m) if len(unknown) == 1 else f"{m!r} for {u!r}" for u, m in near.items()]
        hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
        raise SuiteError(f"unknown cell(s) {unknown}{hint}; {_listing(p)}")
    _check_openvino_cells(p, [c for c in cells if of[c] in p.pipelines])
    chosen = {of[c] if of[c] in p.pipelines else c for c in cells}
    return replace(p, pipelines=tuple(pl for pl in p.pipelines if pl in chosen),
                   peers=tuple(n for n in p.peers if n in chosen))


def cell_names(p: TaskPlan) -> dict[str, list[str]]:
    """Every cell of ``p``'s task that ``--cells`` accepts, grouped: our pipelines, their OpenVINO cells, NNCF's int8
    of their models and the peers (the cells :func:`cell_specs` builds, by the same rules)."""
    twins, nncf = openvino_twins(p, {pl: p.model_method(pl) for pl in p.pipelines})
    return {"pipelines (ours)": list(p.pipelines), "their OpenVINO cells": [cell_name(pl) for pl in twins],
            "NNCF's int8 of their models": [nncf_cell_name(pl) for pl in nncf], "peers": list(p.peers)}


def _listing(p: TaskPlan) -> str:
    groups = "; ".join(f"{g}: {', '.join(names)}" for g, names in cell_names(p).items() if names)
    return f"the cells of task {p.task}: {groups}"


def openvino_twins(p: TaskPlan, model_method: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The pipelines that get an OpenVINO cell and those that get an NNCF cell (none without the openvino backend):
    every pipeline but one whose twin would duplicate another's (:func:`teacher_twins`); NNCF only where a pass of
    ours changed the torch model (on the teacher, NNCF's int8 is the ``nncf_ptq_int8`` peer)."""
    if not p.openvino:
        return [], []
    shared = p.twin_of()
    return [pl for pl in p.pipelines if pl not in shared], [pl for pl in p.pipelines if model_method[pl] == OURS]


def _check_openvino_cells(p: TaskPlan, asked: Sequence[str]) -> None:
    """SuiteError for an asked ``<pipeline>_openvino[_nncf]`` cell the plan would not build: its pipeline
    would run but the cell itself never would (no openvino backend; NNCF's int8 of a pipeline that only
    runs another tool on the teacher: on ``int8`` that is the ``nncf_ptq_int8`` peer)."""
    bad = {}
    for c in asked:
        pl = pipeline_of(c)
        if not p.openvino:
            bad[c] = "the suite config's backends do not include openvino"
        elif c == nncf_cell_name(pl) and p.model_method(pl) != OURS:
            bad[c] = (f"no pass of ours changes {pl}'s torch model (it is the shared teacher): NNCF's int8 of the "
                      "teacher is the nncf_ptq_int8 peer")
        elif c == cell_name(pl) and pl in (shared := p.twin_of()):
            bad[c] = (f"{pl}'s torch model is the shared teacher, as {shared[pl]}'s: its OpenVINO twin would be the "
                      f"same IR as {cell_name(shared[pl])} (our IR recipe reads the plain fp32 export, not {pl}'s "
                      "ORT-file rewrites)")
    if bad:
        raise SuiteError("no such cell: " + "; ".join(f"{c}: {why}" for c, why in bad.items()) + f". {_listing(p)}")


def teacher_twins(pipelines: Sequence[str], model_method: Mapping[str, str]) -> dict[str, str]:
    """Pipeline -> the earlier pipeline whose OpenVINO twin it would duplicate. A twin is made from the run's
    torch model by our IR recipe (``suite_openvino``), which reads the plain fp32 export and none of the ORT
    file's rewrites (block-wise tables, the outlier split, guided fallbacks): so every pipeline whose torch
    model is the shared teacher (``int8``, ``int8_outlier_split``) would give the same IR, and only the first
    in suite order gets the cell."""
    first = next((pl for pl in pipelines if model_method[pl] != OURS), None)
    return {pl: first for pl in pipelines if model_method[pl] != OURS and pl != first}


def pipeline_overrides(pipeline: str, overrides: Sequence[str]) -> list[str]:
    """The run's command line: a pass setting (``pipeline.passes.<step>.<key>=``) only where the pipeline has
    that step (the config refuses settings of passes it does not run); deploy on ORT, no bench stage (the
    suite times every cell itself, together)."""
    from compresslab.config import keep_pass_overrides

    kept = keep_pass_overrides(overrides, _steps_of(pipeline))
    return [f"+pipeline={pipeline}", *kept, "deploy=ort", "bench=off"]


@lru_cache(maxsize=None)
def _steps_of(pipeline: str) -> tuple[str, ...]:
    """The step names of ``conf/pipeline/<pipeline>.yaml`` (composed once per process: every plan asks)."""
    from compresslab.config import compose

    return tuple(compose([f"+pipeline={pipeline}"]).pipeline.steps)


def cell_specs(p: TaskPlan, *, teacher_sha: str, dev: Sequence[Any], max_length: int,
               validation: Sequence[Any] = ()) -> list[tuple[str, str, dict[str, Any]]]:
    """Every cell of the task in build order, as ``(name, method, spec)``: the pipelines, then their OpenVINO
    cells (each is made from its pipeline's finished run), then the peers. ``spec`` is what the cell is
    cached under: its settings plus the task, budget, overrides, teacher hash, dev examples' hash and
    sequence length, so any change to what the cell is built from builds it again. ``validation``: the split
    our OpenVINO cells choose their SmoothQuant strength on (its hash keys them)."""
    from compresslab.manifest import examples_sha256

    from .peers import PEERS

    data = {"task": p.task, "budget": p.budget, "overrides": list(p.overrides), "teacher": teacher_sha,
            "dev": examples_sha256(dev), "max_length": max_length}
    todo: list[tuple[str, str, dict[str, Any]]] = []
    from compresslab.config import compose
    from compresslab.pipeline import config_hash

    args = {pl: p.args(pl) for pl in p.pipelines}
    cfg = {pl: compose(list(args[pl])) for pl in p.pipelines}  # once per pipeline: the three below read it
    # the run's config identity, not only its command line: a pass default that changes (the int8 pass's
    # embeddings, 2026-12-05) changes what the same command makes, so the cell is built anew
    run_hash = {pl: config_hash(c) for pl, c in cfg.items()}
    # ours unless it only runs another tool on the shared teacher (suite_method: the issue's "peer" rule); the
    # OpenVINO cells are made from the pipeline's torch model, so theirs is whose model that is
    method = {pl: method_of_config(c.pipeline) for pl, c in cfg.items()}
    model_method = {pl: model_method_of_config(c.pipeline) for pl, c in cfg.items()}
    todo += [(pl, method[pl], {"kind": "pipeline", "args": args[pl], "config_hash": run_hash[pl], **data})
             for pl in p.pipelines]
    twins, nncf = openvino_twins(p, model_method)  # after every pipeline: each is made from its finished run
    todo += [(cell_name(pl), model_method[pl], {"kind": "pipeline_openvino", "of": pl, "args": args[pl],
                                                "config_hash": run_hash[pl],
                                                "calibration_examples": p.calibration_examples,
                                                "keep_fp32": list(p.openvino_keep_fp32),
                                                "smooth_alpha": list(p.openvino_smooth_alpha), "recipe": RECIPE,
                                                "validation": examples_sha256(validation), **data})
             for pl in twins]
    # NNCF's int8 beside ours; the model's method, as ORT's quantizer in ziplm_int8 (suite_openvino)
    todo += [(nncf_cell_name(pl), model_method[pl], {"kind": "pipeline_openvino", "int8": "nncf", "of": pl,
                                                     "args": args[pl], "config_hash": run_hash[pl],
                                                     "calibration_examples": p.calibration_examples, **data})
             for pl in nncf]
    for name in p.peers:
        peer = PEERS[name]
        try:
            settings = peer.settings()
        except Exception as e:  # the tool is not importable: the cell records why, with its exact error
            settings = {"settings_error": error_text(e)}
        todo.append((name, "peer", {"kind": "peer", "peer": name, "settings": settings,
                                    "calibration_examples": p.calibration_examples, **data}))
    return todo


def smooth_grid(cfg: Mapping[str, Any]) -> tuple[float | None, ...]:
    """suite.yaml ``openvino_smooth_alpha`` (a strength, null, or a list of them) as a grid; absent: deploy's
    default grid (``deploy.smooth_alpha``). SuiteError for an empty list, a strength outside (0, 1] or a
    repeated entry."""
    from compresslab.pipeline.settings import DEFAULT_SMOOTH_GRID, smooth_grid as parse

    try:  # deploy.smooth_alpha's own rules, so the suite and a run accept the same grids
        return parse(cfg.get("openvino_smooth_alpha", list(DEFAULT_SMOOTH_GRID)))
    except ValueError as e:
        raise SuiteError(f"openvino_smooth_alpha: {str(e).removeprefix('smooth_alpha: ')}") from e


def keep_fp32(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """suite.yaml ``openvino_keep_fp32``: a list of ``deploy.keep_fp32`` patterns (``[]`` or null: none).
    SuiteError for a string, a non-string entry or a bad ``re:`` pattern; whether a pattern selects a Linear
    is only known once a model is loaded (the OpenVINO cell's error then names the available ones)."""
    from compresslab.targets import check_patterns

    raw = cfg.get("openvino_keep_fp32")
    if raw is None or (isinstance(raw, (list, tuple)) and not raw):
        return ()
    try:
        return tuple(check_patterns(raw, "openvino_keep_fp32"))
    except ValueError as e:
        raise SuiteError(str(e)) from e


def list_suite(cfg: Mapping[str, Any]) -> str:
    """``--list``: the config's tasks, budgets, our pipelines and the peers with their tools, one per line."""
    from .peers import PEERS

    lines = ["tasks (teacher preset, teacher CPU h):"]
    for n, t in cfg["tasks"].items():
        preset = t.get("teacher") or "none named (the budget's, else the config's budget.teacher)"
        lines.append(f"  {n}: {preset}, {t.get('teacher_cpu_hours', 'no budget')}")
        for p, v in pipeline_extra({**cfg, "pipeline_overrides": {}}, n).items():
            lines.append(f"    {p} on {n} (then {' '.join(v)})")
    lines += ["budgets: " + ", ".join(cfg["budgets"]), "pipelines (ours):"]
    extra = pipeline_extra(cfg)
    lines += [f"  {p}" + (f" (then {' '.join(extra[p])})" if p in extra else "") for p in cfg["pipelines"]]
    if "openvino" in backends(cfg):
        grid = smooth_grid(cfg)
        smooth = "no SmoothQuant" if grid == (None,) else f"SmoothQuant grid {list(grid)}"
        lines.append(f"  each also on OpenVINO (<pipeline>{cell_name('')}: an ORT int8 file as our int8 IR keeping "
                     f"{list(keep_fp32(cfg)) or 'nothing'} fp32, {smooth}; a file OpenVINO cannot read, such as "
                     "MatMulNBits, records why; one twin for the pipelines whose torch model is the teacher) and, "
                     f"for our int8 pipelines, NNCF's int8 of the same model (<pipeline>{nncf_cell_name('')})")
    lines.append("peers:")
    lines += [f"  {n}: {PEERS[n].tool}" for n in peer_names(cfg)]
    return "\n".join(lines)
