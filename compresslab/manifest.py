"""Run manifests: what was done, with which config, versions and hardware; written atomically."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from compresslab.failure import error_behind, error_text, note_summary, stop_cause, stop_summary
from compresslab.provenance import (code_version, edited_since, git_dirty, git_sha, package_version,  # noqa: F401
                                    same_code)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: DeepSparse latency keyed runner -> shape; PassResult.formats; pass.json per step


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def process_umask() -> int:
    """The process's umask. Linux shows it in /proc/self/status; elsewhere it is read by setting and restoring it
    (``os.umask`` has no getter), which another thread creating a file at that instant could see."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    m = os.umask(0o077)
    os.umask(m)
    return m


def publish_mode(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a directory alone) the mode a plain ``open``/``mkdir`` gives under the umask
    (0644 / 0755 at the usual 022). Temp files and dirs are private (``mkstemp`` 0600, ``mkdtemp`` 0700), and
    safetensors writes its files 0600: moved into place as they are, a checkpoint or export would be unreadable
    to the service account that loads it. A symlink is left alone (chmod would change its target)."""
    p = Path(path)
    if p.is_symlink():  # chmod would change the target's mode, not the link's
        return
    os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~process_umask())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temp file in the same directory and ``os.replace``: readers see the old file or
    the new one, never a mix. Keeps an existing file's mode; a new file gets :func:`publish_mode`'s (mkstemp
    would leave it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            publish_mode(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "value"):
        return o.value
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def sha256_dir(path: str | os.PathLike) -> dict[str, str]:
    """sha256 of every regular file in a directory (non-recursive), for manifests."""
    return {p.name: sha256_file(p) for p in sorted(Path(path).iterdir()) if p.is_file() and not p.name.startswith(".")}


# What transformers (and compresslab.load) read from a model directory: config, tokenizer and weight
# files. Other frameworks' weights (tf_model.h5, flax_model.msgpack, rust_model.ot, ONNX) and docs are
# never loaded, so their bytes are not part of a model's identity (and a README edit changes nothing).
_MODEL_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin", ".pt", ".pth")


def model_files(path: str | os.PathLike) -> list[Path]:
    """The files of a local model directory that define the model as loaded, sorted by name.

    Top-level regular files named ``*.json`` (config, tokenizer, shard index), ``*.txt`` (vocab,
    merges), ``*.model`` (SentencePiece) and weights (every ``*.safetensors`` shard; ``*.bin`` /
    ``*.pt`` only when no ``model.safetensors[.index.json]`` is there, since transformers then loads
    the safetensors and never reads the pickle). Hidden files are skipped.
    """
    d = Path(path)
    files = [p for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")
             and p.suffix in _MODEL_SUFFIXES]
    if (d / "model.safetensors").is_file() or (d / "model.safetensors.index.json").is_file():
        files = [p for p in files if p.suffix not in (".bin", ".pt", ".pth")]
    return files


def model_files_sha256(path: str | os.PathLike) -> dict[str, str]:
    """``{file name: sha256}`` of :func:`model_files` (every byte read: size and mtime are not identity)."""
    return {p.name: sha256_file(p) for p in model_files(path)}


def examples_sha256(*splits: Any) -> str:
    """sha256 over the examples of one or more splits (text_a, text_b, label per example, in order).

    The identity of data as a pass sees it: files, in-memory lists and data sets alike, after
    parsing, label mapping, the validation carve and any subset. ``1`` and ``1.0`` differ.
    """
    h = hashlib.sha256()
    for i, split in enumerate(splits):
        h.update(f"split {i}\n".encode())
        try:
            rows = list(split or [])
        except (TypeError, ValueError):  # a split the task does not have (MissingSplit refuses iteration)
            rows = []
        for ex in rows:
            h.update(json.dumps([ex.text_a, ex.text_b, ex.label], ensure_ascii=False).encode())
            h.update(b"\n")
    return h.hexdigest()


def state_dict_sha256(model: Any) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in order): an in-memory model's identity."""
    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # bytes as stored (bf16/bool too), no copy
    return h.hexdigest()


def tokenizer_sha256(tokenizer: Any) -> str:
    """sha256 of what a tokenizer does: a fast tokenizer's full definition (normalizer, pre-tokenizer,
    model and vocabulary, post-processor), else its class, vocabulary and settings. For tokenizers
    held in memory; a model directory's tokenizer files are covered by :func:`model_files_sha256`."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        kwargs = {k: v for k, v in (getattr(tokenizer, "init_kwargs", None) or {}).items()
                  if isinstance(v, (str, int, float, bool, type(None)))}
        text = json.dumps([type(tokenizer).__name__, tokenizer.get_vocab(), kwargs], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def safetensors_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors serialization of ``tensors`` with the header's ``__metadata__`` keys sorted.

    safetensors (0.8, upstream issue #584) writes metadata in a Rust HashMap's random order, so two
    saves of the same tensors differed in their header bytes and artifact hashes were not
    reproducible. The header is re-encoded with sorted keys and re-padded to 8 bytes; tensor data
    offsets are relative to the end of the header, so the data part is unchanged.
    """
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]


def atomic_write_safetensors(path: str | os.PathLike, tensors: dict[str, Any],
                             metadata: dict[str, str] | None = None) -> Path:
    """Write :func:`safetensors_bytes` atomically (identical tensors and metadata -> identical bytes)."""
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata))
    return Path(path)


def stable_hash(obj: Any, n: int = 12) -> str:
    """Short content hash of a JSON-able object (sorted keys), used for run dirs and caches."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


# what a run's figures can depend on; the optional runtimes (OpenVINO, NNCF, DeepSparse) only where installed
RUN_LIBRARIES: tuple[str, ...] = ("compresslab", "torch", "transformers", "onnx", "onnxruntime", "accelerate",
                                  "hydra-core", "numpy", "scipy", "safetensors", "openvino", "nncf", "deepsparse")


def installed_versions(names: Sequence[str], keep_missing: bool = False) -> dict[str, str | None]:
    """The installed version of each distribution in ``names`` (package metadata: nothing is imported, so torch
    and ONNX Runtime stay unloaded). A missing one is left out, or recorded as None with ``keep_missing``.
    ``onnxruntime`` falls back to the GPU wheel's distribution name, ``onnxruntime-gpu``."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            try:
                if name != "onnxruntime":
                    raise
                out[name] = version("onnxruntime-gpu")
            except PackageNotFoundError:
                if keep_missing:
                    out[name] = None
    return out


def library_versions() -> dict[str, str]:
    """Python and the installed version of each of :data:`RUN_LIBRARIES` (:func:`installed_versions`); a library
    that is not installed is left out."""
    return {"python": platform.python_version(), **installed_versions(RUN_LIBRARIES)}  # type: ignore[dict-item]


def process_record() -> dict[str, Any]:
    """This process, as a manifest records who is running it: pid, host and the pid's start time
    (so a pid the OS reused later is not mistaken for the run's process)."""
    import psutil

    return {"pid": os.getpid(), "host": platform.node(), "pid_started": psutil.Process().create_time()}


def process_alive(rec: dict[str, Any] | None) -> bool | None:
    """Whether the process a manifest names still runs: None when unknown (no record, another host)."""
    import psutil

    if not isinstance(rec, dict) or rec.get("host") != platform.node() or not isinstance(rec.get("pid"), int):
        return None
    try:
        p = psutil.Process(rec["pid"])
        started = p.create_time()
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.AccessDenied:  # another user's live process
        return True
    except psutil.Error:
        return False
    return rec.get("pid_started") is None or abs(started - float(rec["pid_started"])) < 1.0


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


def read_cpuinfo(path: str = "/proc/cpuinfo") -> str:
    """/proc/cpuinfo's text, or "" where it does not exist (macOS, Windows)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(model name, flag set) from the first processor block of /proc/cpuinfo text."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # "Features" on aarch64
            flags = set(value.split())
        if model and flags:
            break
    return model, flags


def cpu_flags() -> set[str]:
    """The CPU's ISA flags as /proc/cpuinfo spells them (empty where it does not exist). Here, on the ground
    floor, so that export (int8 parity) and bench (fingerprints, OpenVINO precisions) read them the same way."""
    return parse_cpuinfo(read_cpuinfo())[1]


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
        err: dict[str, Any] = {"type": type(e).__name__, "message": str(e)[:2000],
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
