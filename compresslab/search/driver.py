"""The accuracy-aware search: ``python -m compresslab +search=auto search.max_drop=1.0
search.objective=latency search.time_budget_s=7200 [task=... budget=... ...]``.

It tries the candidates of ``search.space`` (:mod:`compresslab.search.space`) in order, each as a
normal run (``+pipeline=<p>`` + the command's other overrides + the candidate's, scored with
``eval=validation``): a finished run dir is read back, not rerun, and the teacher comes from its
cache. After every candidate it writes ``search.json`` atomically and keeps a copy of the best
model so far under ``<search dir>/best/``; a failed candidate is recorded with its error and the
search goes on. A candidate whose time estimate does not fit in what is left of
``search.time_budget_s`` is not started. At the end it reports the choice
(:mod:`compresslab.search.objective`), the Pareto front, and the dev scores of the chosen model and
of the best single-method candidate (:mod:`compresslab.search.dev_score`).

Rerunning the same command resumes: finished and failed candidates are read from ``search.json``
(failed ones are retried only with ``search.retry_failed=true``), and the time already spent counts
against the budget. The search dir is ``<paths.output_dir>/search/<hash>`` (or ``search.dir``),
the hash of everything that decides which runs it makes, the time budget excepted.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from compresslab.config import config_environment
from compresslab.failure import error_text
from compresslab.manifest import atomic_write_json, now, read_json
from compresslab.search.objective import (Outcome, constant, meets, pick, rank, read_run, select, shape_key,
                                          within_max_drop)
from compresslab.search.plan import SearchPlan, override_value, compose_candidate, plan_search
from compresslab.search.space import Candidate, Entry, SourceEnd, expand
from compresslab.validate import SettingsError

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
BEST_DIR = "best"
SCHEMA = 1


# --------------------------------------------------------------------------------------------- running

Runner = Callable[[Candidate], Outcome]
DevScorer = Callable[[str], dict]


def _outcome(c: Candidate, status: str, **kw: Any) -> Outcome:
    return Outcome(name=c.name, entry=c.entry, pipeline=c.pipeline, overrides=list(c.overrides),
                   methods=list(c.methods), status=status, extra={"cost": c.cost}, **kw)


def _teacher_s(manifest: Mapping[str, Any]) -> float:
    """Seconds the run's teacher-making step took (fine-tuning: not part of the candidate's own price)."""
    from compresslab.registry import UnknownPassError, get_pass

    for s in manifest.get("steps") or ():
        try:
            if getattr(get_pass(str((s.get("pass_config") or {}).get("name"))), "makes_teacher", False):
                return float(s.get("wall_s") or 0.0)
        except UnknownPassError:
            continue
    return 0.0


def run_candidate(plan: SearchPlan, c: Candidate) -> Outcome:
    """Run ``c`` as a normal run (or read back its finished run dir) and read its figures.

    A finished run dir is run too: the run checks its files (a few seconds of hashing) and redoes what changed
    since, so no figure is read from a run whose files are no longer the ones it measured; it counts as ran only
    then. Raises whatever the run raises (the driver records it as the candidate's error).
    """
    from compresslab.pipeline import run
    from compresslab.pipeline.plan import resolve_run_dir

    args = plan.candidate_args(c)
    cfg = compose_candidate(args)
    run_dir = resolve_run_dir(cfg)
    mpath = run_dir / "manifest.json"
    t0 = time.perf_counter()
    old = read_json(mpath) if mpath.is_file() else {}
    run_dir = run(cfg, overrides=args)
    ran = old.get("status") != "finished" or \
        len(read_json(run_dir / "manifest.json").get("redone") or []) > len(old.get("redone") or [])
    ran_s = time.perf_counter() - t0 if ran else 0.0
    m = read_json(run_dir / "manifest.json")
    if m.get("status") != "finished":
        raise RuntimeError(f"the run ended {m.get('status')!r}, not finished ({run_dir})")
    figures = read_run(m, plan.settings.latency_shape)
    return _outcome(c, "ok", run_dir=str(run_dir), ran_s=round(ran_s, 2), teacher_s=_teacher_s(m) if ran else 0.0,
                    **figures)


def estimate_s(c: Candidate, done: Sequence[Outcome], prior_unit_s: float) -> float:
    """Seconds ``c`` is expected to take: its cost x the seconds per cost unit, the largest seen on
    the candidates this search ran (teacher fine-tuning left out), else ``prior_unit_s``. The largest,
    not the mean: a candidate is not started when its estimate does not fit."""
    ratios = [(o.ran_s - o.teacher_s) / float(o.extra.get("cost") or 1.0) for o in done if o.ran_s > 0]
    unit = max(ratios) if ratios else prior_unit_s
    return c.cost * max(unit, 0.0)


def _budget_skip(o: Outcome) -> bool:
    """``o`` was not started because its time estimate did not fit in what was left of the budget."""
    return o.status == "skipped" and (o.reason or "").startswith("time budget")


def _as_candidate(o: Outcome) -> Candidate:
    return Candidate(o.name, o.entry, o.pipeline, tuple(o.overrides), tuple(o.methods), float(o.extra.get("cost", 1)))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def save_best(search_dir: Path, o: Outcome, met: bool) -> dict[str, Any] | None:
    """Copy (hard-link where possible) the directory of ``o``'s deployed file to ``<search_dir>/best``,
    replacing the previous best whole (built beside it, then renamed in). Returns the record for
    ``search.json``; None when ``o`` has no run dir (nothing to copy)."""
    if not o.run_dir:
        return None
    run_dir = Path(o.run_dir)
    rel = (read_json(run_dir / "manifest.json").get("eval") or {}).get("deployed_path")
    if not rel:
        return None
    src = (run_dir / rel).parent
    tmp, best, old = search_dir / f".{BEST_DIR}.tmp", search_dir / BEST_DIR, search_dir / f".{BEST_DIR}.old"
    for d in (tmp, old):
        shutil.rmtree(d, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "pass.json":
            _link_or_copy(f, tmp / f.name)
    record = {"name": o.name, "met": met, "run_dir": o.run_dir, "file": f"{BEST_DIR}/{Path(rel).name}",
              "source": str(src), "saved": now(),
              # a teacher at chance makes ``met`` meaningless: the copy says so beside the model it describes
              **({"weak_teacher": o.weak_teacher} if o.weak_teacher else {}),
              **({"one_class": o.one_class} if o.one_class else {})}
    atomic_write_json(tmp / "choice.json", record)
    if best.exists():
        best.rename(old)
    tmp.rename(best)
    shutil.rmtree(old, ignore_errors=True)
    return record


class Search:
    """One search's loop over the space (see the module docstring). ``runner`` runs a candidate
    (default :func:`run_candidate`), ``dev_scorer`` scores a run dir on dev (default
    :func:`compresslab.search.dev_score.dev_scores`), ``clock`` gives seconds (monotonic)."""

    def __init__(self, plan: SearchPlan, *, runner: Runner | None = None, dev_scorer: DevScorer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plan, self.s = plan, plan.settings
        self.runner = runner or (lambda c: run_candidate(plan, c))
        self.dev_scorer = dev_scorer
        self.clock = clock
        self.path = plan.search_dir / SEARCH_FILE
        self.recorded: dict[str, Outcome] = {}
        self.spent_before = 0.0
        self.best: dict[str, Any] | None = None
        self.outcomes: list[Outcome] = []  # this pass over the space, in order
        self.t0 = clock()

    def _load(self) -> None:
        """What an earlier invocation recorded in ``search.json`` (read under the search dir's lock).
        SettingsError naming the file when it cannot be read (it is written atomically: damaged from outside)."""
        if not self.path.is_file():
            return
        try:
            data = read_json(self.path)
            self.recorded = {d["name"]: Outcome.from_dict(d) for d in data.get("candidates", [])}
            self.spent_before = float(data.get("spent_s") or 0.0)
            self.best = data.get("best")
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise SettingsError(f"{self.path} cannot be read as a search record ({error_text(e)}); move it "
                                "aside or delete it to start the search over (finished candidates are read back from "
                                "their run dirs, not run again)") from None

    # ------------------------------------------------------------------ time
    def spent_s(self) -> float:
        return self.spent_before + (self.clock() - self.t0)

    # ------------------------------------------------------------------ loop
    def run(self) -> dict[str, Any]:
        """Try the space, then report; returns what ``search.json`` holds. KeyboardInterrupt is
        recorded (status ``interrupted``) and re-raised: the same command resumes. Raises
        DirectoryBusyError, doing nothing, while another process runs the same search (its dir is locked)."""
        from compresslab.dirlock import exclusive

        with exclusive(self.plan.search_dir, "the search"):
            self._load()
            self.t0 = self.clock()
            return self._run()

    def _run(self) -> dict[str, Any]:
        log.info("search: %s, max_drop %.2f pt (selection on validation at <= %.2f pt), budget %.0f s (%.0f spent "
                 "before), dir %s", self.s.objective.value, self.s.max_drop, self.s.select_drop, self.s.time_budget_s,
                 self.spent_before, self.plan.search_dir)
        status = "finished"
        try:
            for entry in self.plan.entries:
                if self._entry(entry):
                    status = "budget_spent"
        except KeyboardInterrupt:
            self._save("interrupted")
            raise
        return self._finish(status)

    def _passing(self) -> dict[str, list[Candidate]]:
        names = {o.entry for o in self.outcomes}
        # seeds: every candidate within max_drop (a drop between the margin and max_drop is noise-level)
        return {e: [_as_candidate(o) for o in rank([o for o in self.outcomes if o.entry == e], self.s,
                                                   within_max_drop)] for e in names}

    def _ended(self) -> dict[str, SourceEnd]:
        """Per entry tried in this pass, how its candidates ended (what a seed's skip reason says)."""
        out: dict[str, SourceEnd] = {}
        for e in dict.fromkeys(o.entry for o in self.outcomes):
            mine = [o for o in self.outcomes if o.entry == e]
            out[e] = SourceEnd(finished=sum(o.ok for o in mine), failed=sum(o.status == "failed" for o in mine),
                               not_run=tuple("time budget" if _budget_skip(o) else f"{o.name} skipped: {o.reason}"
                                             for o in mine if o.status == "skipped"))
        return out

    def _entry(self, entry: Entry) -> bool:
        """Try ``entry``'s candidates; True when the time budget kept one from starting."""
        cands, why = expand(entry, self._passing(), self.s.seeds_per_key, self._ended())
        if not cands:
            log.info("search: %s skipped: %s", entry.name, why)
            self._add(Outcome(name=entry.name, entry=entry.name, pipeline=entry.pipeline, overrides=[],
                              methods=list(entry.methods), status="skipped", reason=why))
            return False
        missed, budget_hit = None, False
        seen = {o.name for o in self.outcomes}
        for c in cands:
            if c.name in seen:
                continue
            if missed is not None:
                self._add(_outcome(c, "skipped", reason=f"{missed} already lost more than max_drop "
                                                        f"({self.s.max_drop:g} pt) on validation "
                                                        f"(search.space.{entry.name}.stop_on_miss)"))
                continue
            o = self._reuse(c)
            if o is None:
                est, left = estimate_s(c, self._ran(), self.s.unit_s), self.s.time_budget_s - self.spent_s()
                if est > left:
                    budget_hit = True
                    o = _outcome(c, "skipped", reason=f"time budget: estimated {est:.0f} s, {max(left, 0):.0f} s "
                                                      f"left of search.time_budget_s={self.s.time_budget_s:g}")
                    log.info("search: %s not started (%s)", c.name, o.reason)
                else:
                    o = self._try(c, est, left)
            self._add(o)
            if entry.stop_on_miss and entry.key is not None and o.ok and not within_max_drop(o, self.s):
                missed = c.name
        return budget_hit

    def _ran(self) -> list[Outcome]:
        return [o for o in [*self.outcomes, *self.recorded.values()] if o.ran_s > 0]

    def _reuse(self, c: Candidate) -> Outcome | None:
        """The recorded outcome of ``c`` from an earlier invocation: finished, or failed (unless
        ``search.retry_failed``); None when it must run."""
        o = self.recorded.get(c.name)
        if o is None or o.overrides != list(c.overrides) or o.pipeline != c.pipeline:
            return None
        if o.ok and (o.run_dir is None or (Path(o.run_dir) / "manifest.json").is_file()):
            log.info("search: %s finished earlier (read from %s)", c.name, SEARCH_FILE)
            return o
        if o.status == "failed" and not self.s.retry_failed:
            log.info("search: %s failed earlier, not retried (search.retry_failed=true retries): %s", c.name, o.error)
            return o
        return None

    def _try(self, c: Candidate, est: float, left: float) -> Outcome:
        log.info("search: starting %s (estimated %.0f s, %.0f s left)", c.name, est, left)
        t0 = self.clock()
        try:
            o = self.runner(c)
        except Exception as e:  # a failed candidate is recorded and the search goes on
            msg = " ".join(error_text(e).split())
            log.warning("search: %s FAILED: %s", c.name, msg)
            o = _outcome(c, "failed", error=msg, ran_s=round(self.clock() - t0, 2))
            return o
        what = (f"{o.speedup:.2f}x vs best_dense at {o.speedup_shape}" + (" (MACHINE BUSY: void)" if o.timing_busy else "")
                if o.speedup is not None else "no speedup") + \
            (f", {o.size_bytes / 1e6:.1f} MB" if o.size_bytes is not None else "")
        log.info("search: %s: validation %.4f (drop %.2f pt, %s%s), %s, %.0f s", c.name, o.val_score or 0.0,
                 o.drop_pt or 0.0, "within budget" if meets(o, self.s) else
                 "EXCLUDED: predicts one class on validation" if constant(o) else "OUTSIDE budget",
                 (", against a teacher no better than chance" if o.weak_teacher else "")
                 + (", predicting one class" if o.one_class and not constant(o) else ""), what, o.ran_s)
        return o

    def _add(self, o: Outcome) -> None:
        self.outcomes.append(o)
        if o.status != "skipped":
            self.recorded[o.name] = o
        chosen, met = pick(self.outcomes, self.s)
        if chosen is not None and (self.best is None or self.best.get("name") != chosen.name
                                   or self.best.get("met") != met):
            self.best = save_best(self.plan.search_dir, chosen, met) or {"name": chosen.name, "met": met}
            log.info("search: best so far: %s%s", chosen.name, "" if met else " (closest; none within budget yet)")
        self._save("running")

    # ------------------------------------------------------------------ report
    def _dev(self, o: Outcome | None) -> None:
        if o is None or o.dev is not None or not o.run_dir:
            return
        scorer = self.dev_scorer
        if scorer is None:
            from compresslab.search.dev_score import dev_scores as scorer
        try:
            o.dev = scorer(o.run_dir)
        except Exception as e:  # the choice stands; the report says why its dev score is missing
            o.dev = {"error": " ".join(error_text(e).split())}
            log.warning("search: dev score of %s failed: %s", o.name, o.dev["error"])

    def _finish(self, status: str) -> dict[str, Any]:
        sel = select(self.outcomes, self.s)
        for o in (sel.chosen, sel.best_single):
            self._dev(o)
        data = self._save(status, sel)
        log.info("search: %s", data["message"])
        return data

    def _save(self, status: str, sel: Any = None) -> dict[str, Any]:
        sel = sel or select(self.outcomes, self.s)
        skipped_budget = [o.name for o in self.outcomes if _budget_skip(o)]
        msg = sel.message
        if status == "budget_spent":
            msg += (f". The time budget ({self.s.time_budget_s:g} s) kept {len(skipped_budget)} candidate(s) from "
                    f"starting: {', '.join(skipped_budget)} (a larger search.time_budget_s resumes with them)")
        teacher_dev = next((o.dev.get("teacher_dev") for o in (sel.chosen, sel.best_single)
                            if o is not None and o.dev and "teacher_dev" in o.dev), None)
        busy = [o.name for o in self.outcomes if o.ok and o.timing_busy]
        if busy and self.s.objective.value == "latency":
            msg += (f". MACHINE BUSY while the runs of {', '.join(busy)} timed their files: their speedups are void, "
                    "and so is a choice among them (rerun on a quiet machine)")
        from compresslab.pipeline.driver import rerun_command

        env = config_environment()  # what the candidates' configs read from the environment ($COMPRESSLAB_DATA)
        data = {"schema": SCHEMA, "status": status, "message": msg, "updated": now(),
                "search_dir": str(self.plan.search_dir), "settings": self.s.to_dict(),
                "space": [e.name for e in self.plan.entries], "base_overrides": self.plan.base_overrides,
                "command": self.plan.command, "environment": env, "shell_command": rerun_command(self.plan.command, env),
                "time_budget_s": self.s.time_budget_s, "spent_s": round(self.spent_s(), 2),
                **self._objective_shape(sel), "timing_busy": busy,
                "met": sel.met, "weak_teacher": sel.chosen.weak_teacher if sel.chosen is not None else None,
                "one_class": sel.chosen.one_class if sel.chosen is not None else None,
                "chosen": _report(sel.chosen), "best_single": _report(sel.best_single),
                "best_single_met": sel.best_single_met, "front": [_report(o) for o in sel.front],
                # every finished candidate that cannot be chosen, with why (over the budget, or one class)
                "excluded": [{"name": n, "reason": why} for n, why in sel.excluded.items()],
                "teacher_val": next((o.teacher_val for o in self.outcomes if o.teacher_val is not None), None),
                "teacher_dev": teacher_dev, "best": self.best,
                "candidates": [o.to_dict() for o in self._all()]}
        atomic_write_json(self.path, data)
        return data

    def _objective_shape(self, sel: Any) -> dict[str, Any]:
        """``objective_shape``: the shape the speedups were timed at (``search.latency_shape``, else each run's
        bench shape with the largest batch: the chosen candidate's), and ``objective_shape_from``, which rule."""
        if self.s.latency_shape:
            return {"objective_shape": shape_key(self.s.latency_shape), "objective_shape_from": "search.latency_shape"}
        shapes = sorted({o.speedup_shape for o in self.outcomes if o.ok and o.speedup_shape})
        chosen = sel.chosen.speedup_shape if sel.chosen is not None else None
        return {"objective_shape": chosen or (shapes[0] if len(shapes) == 1 else None),
                "objective_shape_from": "the bench shape with the largest batch (search.latency_shape=null)",
                **({"objective_shapes": shapes} if len(shapes) > 1 else {})}

    def _all(self) -> list[Outcome]:
        """This pass's outcomes, then recorded ones this pass has not reached (kept for resuming)."""
        names = {o.name for o in self.outcomes}
        return [*self.outcomes, *(o for n, o in self.recorded.items() if n not in names)]


def _report(o: Outcome | None) -> dict[str, Any] | None:
    """One candidate as the report shows it (``pipeline``, ``val_score``, ``dev_score``, speed and size)."""
    if o is None:
        return None
    dev = o.dev or {}
    return {"name": o.name, "pipeline": o.pipeline, "overrides": o.overrides, "methods": o.methods,
            "val_score": o.val_score, "val_drop_pt": o.drop_pt, "dev_score": dev.get("dev_score"),
            "dev_drop_pt": dev.get("dev_drop_pt"), "speedup_vs_best_dense": o.speedup,
            "speedup_shape": o.speedup_shape, "timing_busy": o.timing_busy, "size_bytes": o.size_bytes,
            "weak_teacher": o.weak_teacher, "one_class": o.one_class,
            "run_dir": o.run_dir, **({"dev_error": dev["error"]} if "error" in dev else {})}


def run_search(plan: SearchPlan, **kw: Any) -> dict[str, Any]:
    """Run a planned search (see :class:`Search` for the keyword arguments); returns ``search.json``'s data."""
    return Search(plan, **kw).run()


# --------------------------------------------------------------------------------------------- entry points

def search_from_config(cfg: Any, overrides: Sequence[str]) -> dict[str, Any]:
    """Plan (every check first) and run the search a composed ``+search=NAME`` config describes."""
    return run_search(plan_search(cfg, overrides))


def search(overrides: Sequence[str] | None = None, *, space: str = "auto", **settings: Any) -> dict[str, Any]:
    """The search from Python: ``compresslab.search.run(["task=sst2"], max_drop=1.0, objective="latency",
    time_budget_s=3600)`` composes ``+search=<space>`` with ``overrides`` and ``search.<key>=<value>`` per
    keyword, and returns what ``search.json`` holds (``chosen``, ``best_single``, ``front``, ...).
    Bad input raises (SettingsError, ConfigError, ...) before any run starts."""
    from compresslab.config import compose

    args = [f"+search={space}", *(overrides or []), *(f"search.{k}={override_value(v)}" for k, v in settings.items())]
    return search_from_config(compose(args), args)


# exit status of a search that ran but has no model to give (no candidate finished in the budget, or none scored)
EXIT_NO_MODEL = 3
# exit status of a search whose candidates finished but none met the drop budget: best/ holds the closest, which a
# script gating on the status must not ship as if it met the budget (search.json: met=false)
EXIT_NOT_MET = 4
# exit status of a search whose chosen model was measured against a teacher no better than chance (search.json:
# weak_teacher): its drop, met or not, is a comparison with chance, so neither "met" (0) nor "not met" (4) is true.
# The chosen model is then itself about as good as chance: a script gating on 0 must not ship it.
EXIT_WEAK_TEACHER = 5
# exit status of a search whose every finished candidate predicts one class on validation, so best/ holds the closest
# of them (search.json: one_class, met=false): a constant model, whatever its drop (an imbalanced split lets one meet
# max_drop). A one-class candidate is never chosen while another finished (objective.constant): 4 would send the user
# to a larger budget, where the fix is milder settings or more recovery
EXIT_ONE_CLASS = 6


def main(cfg: Any, overrides: Sequence[str] | None, setup: Callable[[int | None, int], Any]) -> None:
    """The CLI's ``+search=NAME``: plan, pin threads and seed (``setup``, the CLI's), run, print the answer.
    SystemExit(:data:`EXIT_NO_MODEL`) when it chose no model, SystemExit(:data:`EXIT_WEAK_TEACHER`) when the teacher
    it measured against is no better than chance (whether or not the drop met the budget: the drop means nothing),
    SystemExit(:data:`EXIT_ONE_CLASS`) when every candidate predicts one class (it returned the closest of them),
    SystemExit(:data:`EXIT_NOT_MET`) when it chose the closest because none met the drop budget; a rerun with a
    larger budget resumes it."""
    plan = plan_search(cfg, list(overrides or []))
    setup(plan.threads, plan.seed)
    logging.getLogger("compresslab").setLevel(logging.INFO)
    data = run_search(plan)
    print(f"search: {data['message']}")
    best = data.get("best") or {}
    met, weak, flat = bool(data.get("met")), data.get("weak_teacher"), data.get("one_class")
    if best.get("file"):
        where = plan.search_dir / best["file"]
        if weak:
            print(f"model chosen against a teacher no better than chance, its drop says nothing: {where}")
        elif flat:  # every finished candidate did (one that does is chosen only then): the closest of them
            print(f"closest model, predicting one class for every validation example as every candidate did "
                  f"(a constant model, NOT within the drop budget): {where}")
        else:
            print(f"best model: {where}" if met else
                  f"closest model, NOT within the drop budget (search.max_drop={plan.settings.max_drop:g} pt): {where}")
    print(f"search.json: {plan.search_dir / SEARCH_FILE}")
    if data.get("chosen") is None:  # nothing to deploy: a script must not read this as success
        raise SystemExit(EXIT_NO_MODEL)
    if weak:  # before "not met": a better teacher comes first, whatever the drop said
        raise SystemExit(EXIT_WEAK_TEACHER)
    if flat:  # before "not met": a milder compression than a constant model comes first
        raise SystemExit(EXIT_ONE_CLASS)
    if not met:  # a model, but not one the budget allows: nor is this success
        raise SystemExit(EXIT_NOT_MET)
