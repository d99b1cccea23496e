"""Run manifests: what was done, with which config, versions and hardware; written atomically.

The file helpers, content hashes and host facts a manifest records live in :mod:`compresslab.fileio`,
:mod:`compresslab.hashing` and :mod:`compresslab.host`; they are re-exported here for the modules that import them
from here."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from compresslab.failure import clipped, error_behind, error_text, note_summary, stop_cause, stop_summary
from compresslab.fileio import (atomic_write_bytes, atomic_write_json, atomic_write_safetensors,  # noqa: F401
                                process_umask, publish_mode, read_json, safetensors_bytes)
from compresslab.hashing import (examples_sha256, model_files, model_files_sha256, sha256_dir,  # noqa: F401
                                 sha256_file, stable_hash, state_dict_sha256, tokenizer_sha256)
from compresslab.host import (RUN_LIBRARIES, cpu_flags, installed_versions, library_versions,  # noqa: F401
                              parse_cpuinfo, process_alive, process_record, read_cpuinfo)
from compresslab.provenance import (code_version, edited_since, git_dirty, git_sha, package_version,  # noqa: F401
                                    same_code)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: DeepSparse latency keyed runner -> shape; PassResult.formats; pass.json per step


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def live_status(data: dict[str, Any]) -> str:
    """A manifest's status as it stands now: ``crashed`` for a ``running`` run whose process is gone
    (killed: kill -9, out of memory, SIGTERM), which could not record it itself; else ``status``."""
    status = str(data.get("status") or "unknown")
    if status == "running" and process_alive(data.get("process")) is False:
        return "crashed"
    return status


def shape_key(batch: int, seq: int) -> str:
    """The key of one input shape in a manifest's latency sections, e.g. ``b32xs128``. Here, on the ground
    floor, so that bench (which writes the keys), the report and the search (which read them) share it."""
    return f"b{batch}xs{seq}"


def find_records(tree: Any) -> list[dict[str, Any]]:
    """Every ``machine_load`` record inside a manifest (or any JSON tree): the bench stage's, a
    latency table's, ``deploy=auto``'s, guided int8's, in document order. Here, on the ground floor,
    so that the report reads them too (:mod:`compresslab.bench.machine_load` writes them)."""
    found: list[dict[str, Any]] = []
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            if k == "machine_load" and isinstance(v, Mapping) and "busy" in v:
                found.append(dict(v))
            else:
                found.extend(find_records(v))
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            found.extend(find_records(v))
    return found


@dataclass
class StepRecord:
    index: int
    name: str
    stage: str
    dir: str
    status: str = "running"
    started: str = field(default_factory=now)
    finished: str | None = None
    wall_s: float | None = None
    metrics_before: dict[str, Any] = field(default_factory=dict)
    metrics_after: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    pass_config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pass"] = d.pop("pass_config")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepRecord":
        d = dict(d)
        d["pass_config"] = d.pop("pass", {})
        return cls(**d)


@dataclass
class RunManifest:
    """The manifest of one run; ``save`` rewrites ``manifest.json`` atomically."""

    path: Path
    data: dict[str, Any]
    # What runs now outside a step (set by the pipeline through at_stage, read by mark_failed; not saved):
    # export before the first ONNX pass, the restore of a finished step, or a stage after all the steps
    stage: str | None = field(default=None, compare=False)
    after_steps: bool = field(default=False, compare=False)  # the stage runs after every step finished
    created_here: bool = field(default=False, compare=False)  # made by create() in this process, not loaded

    @classmethod
    def create(cls, run_dir: Path, **fields: Any) -> "RunManifest":
        code = code_version()  # the creating process's; every later one's is in sessions (mark_running)
        data = {"schema_version": SCHEMA_VERSION, "status": "running", "created": now(), "updated": now(),
                **code, "versions": library_versions(), "steps": []}
        data.update(fields)
        return cls(Path(run_dir) / "manifest.json", data, created_here=True)

    @classmethod
    def load(cls, run_dir: Path) -> "RunManifest":
        path = Path(run_dir) / "manifest.json"
        return cls(path, read_json(path))

    @property
    def steps(self) -> list[StepRecord]:
        return [StepRecord.from_dict(s) for s in self.data.get("steps", [])]

    def set_step(self, rec: StepRecord) -> None:
        if rec.status == "running":
            self._ran(f"step {rec.name}")
        steps = self.data.setdefault("steps", [])
        steps[:] = [s for s in steps if s["index"] != rec.index] + [rec.to_dict()]
        steps.sort(key=lambda s: s["index"])

    def save(self) -> None:
        self.data["updated"] = now()
        atomic_write_json(self.path, self.data)

    def mark_running(self) -> None:
        """Status ``running`` with this process recorded (pid, host), the last error cleared, and a session
        opened for it (:meth:`open_session`); saved."""
        self.end_gone_session()  # before "process" names this one: the killed process's session is ended first
        self.data["status"] = "running"
        self.data.pop("error", None)
        self.data["process"] = process_record()
        self.open_session()
        self.save()

    def open_session(self) -> dict[str, Any]:
        """The record of this process's work on the run, appended to ``sessions`` once per process: ``started``,
        ``resumed`` (False for the process that created the run), pid, the code it runs (:func:`code_version`:
        git sha, uncommitted changes, compresslab's version) and ``ran``, the steps and stages it works on
        (filled by :meth:`set_step` and :meth:`at_stage`). A run resumed after a commit or an edit then shows
        that its later steps ran on other code than its first ones (``git_sha`` at the top level is the
        creating process's). Not saved here."""
        sessions = self.data.setdefault("sessions", [])
        proc = process_record()
        if sessions and all(sessions[-1].get(k) == proc[k] for k in ("pid", "host", "pid_started")):
            return sessions[-1]  # this process opened it already (a resume in the same process)
        sessions.append({"started": now(), "resumed": not self.created_here or bool(sessions),
                         **proc, **code_version(), "ran": []})
        return sessions[-1]

    def end_gone_session(self) -> dict[str, Any] | None:
        """End, as ``crashed``, the session of the process a ``running`` manifest names when that process is gone
        (killed outright: kill -9, out of memory, a power cut), which could record nothing itself: its ``ended``
        says when it was found gone (``found_at``), when it last wrote the manifest (``last_saved``) and the
        steps it left running or had finished, so the report, compare and the manifest itself show a killed
        session as crashed rather than not recorded. Returns that record (None: nothing to end); not saved."""
        proc = self.data.get("process") or {}
        me = process_record()
        if self.data.get("status") != "running" or all(proc.get(k) == me[k] for k in ("pid", "host", "pid_started")):
            return None
        if process_alive(proc) is not False:  # alive, or unknown (another host): not ours to call crashed
            return None
        sessions = self.data.get("sessions") or []
        s = sessions[-1] if sessions and isinstance(sessions[-1], dict) else None
        if s is None or "ended" in s or any(s.get(k) != proc.get(k) for k in ("pid", "host", "pid_started")):
            return None  # an older manifest without this process's session: nothing to end
        steps = [x for x in self.data.get("steps", []) if isinstance(x, dict)]
        running = [str(x.get("name")) for x in steps if x.get("status") == "running"]
        done = [str(x.get("name")) for x in steps if x.get("status") == "done"]
        cause = (f"process {proc.get('pid')} was gone (killed outright?) when the next session started"
                 + (f", in step {running[-1]}" if running else "")
                 + (f", after step {done[-1]} had finished" if done else ", before any step had finished"))
        s["ended"] = {"status": "crashed", "found_at": now(), "last_saved": self.data.get("updated"),
                      "cause": cause}
        return s["ended"]

    def _this_session(self) -> dict[str, Any] | None:
        """This process's session record (:meth:`open_session`), or None where it opened none."""
        sessions = self.data.get("sessions") or []
        if not sessions or not isinstance(sessions[-1], dict) or sessions[-1].get("pid") != os.getpid():
            return None
        return sessions[-1]

    def end_session(self, status: str, cause: str | None = None) -> None:
        """Note in this process's session record how its work on the run ended, as ``ended``: ``status``
        (finished, stopped, interrupted, failed), when, and a stop's ``cause`` (:func:`~compresslab.failure.
        stop_cause`), for the report's sessions table; not saved here (the callers save with the status)."""
        s = self._this_session()
        if s is not None:
            s["ended"] = {"status": status, "at": now(), **({"cause": cause} if cause else {})}

    def mark_ended(self, status: str = "finished") -> None:
        """Status ``finished`` (with its time) or ``stopped`` (run.stop_after), the session ended so; saved."""
        self.data["status"] = status
        if status == "finished":
            self.data["finished"] = now()
        self.end_session(status)
        self.save()

    def _ran(self, what: str) -> None:
        """Note ``what`` (a step or stage) in this process's session, when one is open; and, the first time the
        package's code files are found edited since the process started, ``code_changed`` (where it was noticed,
        the files), with a warning: ``git_sha`` names the code the process started on, and modules it imports
        from then on may be the edited ones."""
        s = self._this_session()
        if s is None:
            return
        if what not in s.setdefault("ran", []):
            s["ran"].append(what)
        started = s.get("pid_started")
        if "code_changed" not in s and isinstance(started, (int, float)) and (files := edited_since(float(started))):
            s["code_changed"] = {"noticed_at": what, "files": files[:10], "n_files": len(files)}
            log.warning("compresslab's code changed while this run runs (%d file(s) edited since the process "
                        "started, e.g. %s): %s and later may run the edited code, not %s", len(files),
                        ", ".join(files[:3]), what, str(s.get("git_sha") or "the recorded commit")[:12])

    def at_stage(self, stage: str | None, after_steps: bool = False) -> None:
        """Name what runs from now on outside a step (None: nothing, or a step, which names itself), so
        that a failure or Ctrl-C there is recorded at it; the stage is noted in this process's session
        (restores of finished steps are not: they run nothing)."""
        self.stage, self.after_steps = stage, after_steps
        if stage is not None and not stage.startswith("the restore of"):
            self._ran(stage)

    def mark_failed(self, e: BaseException) -> None:
        """Status ``failed`` (``interrupted`` for Ctrl-C and SIGTERM) with the error's type and message,
        the step that was running (marked the same) or else the stage (:meth:`at_stage`), ``error``: the
        error a held signal's interrupt was raised over (:func:`~compresslab.failure.held_over`), and
        ``summary``: the sentence that says all this and how to resume (also kept on ``e``, for the CLI's
        line); saved atomically."""
        interrupted = isinstance(e, KeyboardInterrupt)
        status = "interrupted" if interrupted else "failed"
        running = [s for s in self.data.get("steps", []) if s.get("status") == "running"]
        for s in running:
            s["status"] = status
        self.data["status"] = status
        err: dict[str, Any] = {"type": type(e).__name__, "message": clipped(str(e), 2000),
                               "step": running[-1]["name"] if running else None,
                               "stage": None if running else self.stage,
                               "after_steps": self.after_steps and not running, "interrupted": interrupted}
        behind = error_behind(e)
        if behind is not None:  # a held signal raised as the work failed: stopped as asked, the error kept
            err["error"] = error_text(behind, limit=2000)
        err["summary"] = stop_summary(err, api=self.data.get("pipeline") == "compress")
        self.end_session(status, stop_cause(err))
        note_summary(e, err["summary"])  # the CLI's line on stderr is this sentence
        self.data["error"] = {**err, "at": now()}
        self.save()
