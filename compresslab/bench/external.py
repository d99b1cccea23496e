"""Run a tool in its own virtualenv: create or reuse the venv, install pinned requirements, run a worker
script with JSON in and out over files, and say exactly what failed (the DeepSparse worker protocol,
generalized; issue 14).

Some tools cannot share our virtualenv: DeepSparse pins numpy<2 and an old onnx, optimum-onnx pins
transformers<4.58. Each gets a venv of its own under a cache directory,
``<cache>/venvs/<name>-<hash>``, where the hash covers the requirements, the constraints and the
Python version: change a pin and a new venv is made, the old one is left as it was. A venv is ready
when its ``ready.json`` (written last, after the install and the import check) exists; a venv without
it (an install stopped midway) is removed and made again. A file lock keeps two processes from
building the same venv at once.

torch, where a tool needs it, is always the CPU build our own venv runs (``torch==<our version>``,
found on local disk through pip's configured find-links as ``make install-test`` finds it, or on the
CPU index): the constraint written for the install pins it, and the import check refuses a venv whose
torch was built with CUDA.

A worker is a plain script run by the venv's interpreter with one argument, the path of a JSON spec;
it writes ``spec["out"]`` (JSON) and may write other files the spec names. It imports nothing from
compresslab (``PYTHONPATH`` is cleared): the venv's packages are all it sees. Whatever fails is raised
as :class:`ExternalError` with its ``stage`` (``venv``, ``install``, ``import``, ``runtime``,
``timeout``) and the tool's own last words (pip's or the worker's stderr tail), so a benchmark can
record the exact error instead of a silence.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

CACHE_ENV = "COMPRESSLAB_VENV_CACHE"
DEFAULT_CACHE = Path(".cache") / "compresslab" / "venvs"
READY = "ready.json"
STAGES = ("venv", "install", "import", "runtime", "timeout")
TAIL_CHARS = 2000  # how much of a tool's stderr an error carries
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


class ExternalError(RuntimeError):
    """A tool in its own venv failed. ``stage``: where (one of :data:`STAGES`); the message carries the
    command and the tool's stderr tail. ``str(e)`` reads ``"<stage> failure: <what happened>"``."""

    def __init__(self, stage: str, message: str, *, log_file: Path | None = None) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {list(STAGES)}, got {stage!r}")
        self.stage, self.detail, self.log_file = stage, message, log_file
        super().__init__(f"{stage} failure: {message}")


@dataclass(frozen=True)
class VenvSpec:
    """What a tool's venv holds.

    ``name``: a short label (``[a-z0-9_-]``), the first part of the directory name.
    ``requirements``: pip requirement strings, each pinned (``pkg==1.2``): an unpinned tool would
    change under a benchmark between runs. ``torch``: pin torch to the CPU build our venv runs (the
    tool needs torch). ``imports``: modules that must import once installed (the import check).
    ``pip_args``: extra arguments for ``pip install`` (an index URL, ``--no-deps``...).
    Raises ValueError for an unpinned requirement or a bad name."""

    name: str
    requirements: tuple[str, ...]
    torch: bool = False
    imports: tuple[str, ...] = ()
    pip_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(f"venv name must be letters, digits, '-' or '_', got {self.name!r}")
        loose = [r for r in self.requirements if "==" not in r and " @ " not in r]
        if loose:
            raise ValueError(f"venv {self.name}: requirements must be pinned (pkg==version): {loose}")

    def constraints(self) -> list[str]:
        """The constraint lines of the install: torch pinned to our CPU build when the tool needs torch."""
        return [f"torch=={our_torch_version()}"] if self.torch else []

    def key(self) -> str:
        """Hash of everything the venv's contents depend on (12 hex digits)."""
        data = {"requirements": sorted(self.requirements), "constraints": self.constraints(),
                "pip_args": list(self.pip_args), "python": list(sys.version_info[:3]), "imports": list(self.imports)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def our_torch_version() -> str:
    """The torch version of THIS venv (``2.13.0+cpu``): an external tool gets the same CPU build.
    Raises ExternalError when torch is not installed here."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError as e:
        raise ExternalError("venv", "torch is not installed in this venv; cannot pin a tool's torch to it") from e


def cache_root(setting: str | os.PathLike | None = None) -> Path:
    """``setting``, else ``$COMPRESSLAB_VENV_CACHE``, else ``.cache/compresslab/venvs`` (absolute)."""
    return Path(setting or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).absolute()


def venv_dir(spec: VenvSpec, cache: str | os.PathLike | None = None) -> Path:
    return cache_root(cache) / f"{spec.name}-{spec.key()}"


def python_of(venv: Path) -> Path:
    # not resolve(): a venv's python is a symlink out of the venv, and must be called by its venv path
    return Path(venv) / "bin" / "python"


def base_python() -> str:
    """The interpreter our venv was made from (a venv made by a venv's python nests oddly)."""
    return getattr(sys, "_base_executable", None) or sys.executable


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# pip's complaint about this machine's configured local index, once per package: noise in an error's tail
_NOISE = ("is ignored: it is neither a file nor a directory",)


def _tail(text: str | None, n: int = TAIL_CHARS) -> str:
    """The last ``n`` characters of a tool's stderr, without pip's configuration noise."""
    text = "\n".join(ln for ln in (text or "").splitlines() if not any(x in ln for x in _NOISE)).strip()
    return text if len(text) <= n else "..." + text[-n:]


def _run(cmd: Sequence[str], *, stage: str, timeout: float, log_file: Path, env: Mapping[str, str] | None = None,
         capture: bool = False) -> subprocess.CompletedProcess:
    """Run ``cmd`` with stdout (unless ``capture``: then returned) and stderr appended to ``log_file``;
    ExternalError(stage) on a non-zero exit, ExternalError("timeout") past ``timeout`` seconds. Niced:
    installs and workers share the machine."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as lf:
        lf.write(f"$ {' '.join(cmd)}\n")
        lf.flush()
        try:
            proc = subprocess.run(list(cmd), stdout=subprocess.PIPE if capture else lf, stderr=subprocess.PIPE,
                                  text=True, timeout=timeout, env=dict(env) if env is not None else None,
                                  preexec_fn=_nice)
        except subprocess.TimeoutExpired as e:
            raise ExternalError("timeout", f"{' '.join(cmd[:4])} ... ran past {timeout:.0f} s; stderr: "
                                           f"{_tail(e.stderr if isinstance(e.stderr, str) else '')}",
                                log_file=log_file) from None
        lf.write(proc.stderr or "")
    if proc.returncode != 0:
        raise ExternalError(stage, f"{_last_line(proc.stderr)} ({_shown(cmd)} exited {proc.returncode}; stderr: "
                                   f"{_tail(proc.stderr)})", log_file=log_file)
    return proc


def _last_line(text: str | None) -> str:
    """The tool's last word: the last non-blank stderr line (a traceback's exception, pip's ERROR line)."""
    lines = [ln.strip() for ln in _tail(text, 10**9).splitlines() if ln.strip()]
    return lines[-1] if lines else "(no stderr)"


def _shown(cmd: Sequence[str]) -> str:
    """A command as an error names it: a worker by its script's name, pip by what it installs."""
    cmd = list(cmd)
    if len(cmd) >= 2 and cmd[1].endswith(".py"):
        return f"worker {Path(cmd[1]).name}"
    text = " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd))
    return f"`{text if len(text) <= 300 else text[:300] + ' ...'}`"


def _nice() -> None:  # pragma: no cover - runs in the child
    try:
        os.nice(10)
    except OSError:
        pass


def ensure_venv(spec: VenvSpec, cache: str | os.PathLike | None = None, *, timeout: float = 3600.0) -> Path:
    """The python of ``spec``'s venv, made (venv, pip install, import check) unless ready already.

    Raises ExternalError: ``venv`` (python -m venv failed), ``install`` (pip failed: its stderr tail),
    ``import`` (a module of ``spec.imports`` does not import, or torch is a CUDA build), ``timeout``."""
    d = venv_dir(spec, cache)
    py = python_of(d)
    if (d / READY).is_file():
        return py
    with _locked(d.with_name(d.name + ".lock")):
        if (d / READY).is_file():  # made by another process while this one waited
            return py
        if d.exists():  # an install stopped midway: start over
            shutil.rmtree(d)
        t0 = time.perf_counter()
        log_file = d.with_name(d.name + ".install.log")
        log_file.unlink(missing_ok=True)
        log.info("external: making venv %s (%s)", d, ", ".join(spec.requirements))
        # nothing to install: no pip in the venv either (seconds instead of ensurepip's ten)
        _run([base_python(), "-m", "venv", *([] if spec.requirements or spec.torch else ["--without-pip"]), str(d)],
             stage="venv", timeout=600, log_file=log_file)
        cons = d / "constraints.txt"
        cons.write_text("".join(f"{c}\n" for c in spec.constraints()))
        reqs = [*spec.requirements, *spec.constraints()[:1 if spec.torch and not _names_torch(spec) else 0]]
        cmd = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(cons),
               *spec.pip_args, *reqs]
        if spec.torch and not _local_torch_wheel():  # no local CPU wheel: the CPU index, never PyPI's CUDA build
            cmd[5:5] = ["--extra-index-url", CPU_TORCH_INDEX]
        if reqs:
            _run(cmd, stage="install", timeout=timeout, log_file=log_file, env=_clean_env())
        facts = check_imports(py, spec.imports, torch=spec.torch, log_file=log_file)
        freeze = _freeze(py) if reqs else []
        tmp = d / (READY + ".tmp")
        tmp.write_text(json.dumps({"spec": {"name": spec.name, "requirements": list(spec.requirements),
                                            "constraints": spec.constraints(), "pip_args": list(spec.pip_args)},
                                   "imports": facts, "freeze": freeze, "install_s": round(time.perf_counter() - t0, 1)},
                                  indent=2))
        tmp.replace(d / READY)
    return py


def _names_torch(spec: VenvSpec) -> bool:
    return any(r.split("==")[0].strip().lower() == "torch" for r in spec.requirements)


def _local_torch_wheel() -> bool:
    """Whether pip's find-links (``$PIP_FIND_LINKS`` or the pip config) hold our exact torch wheel."""
    want = our_torch_version().replace("+", "%2B")
    links = os.environ.get("PIP_FIND_LINKS", "")
    for link in [*links.split(), "/opt/wheels"]:
        p = Path(link.removeprefix("file://"))
        if p.is_dir() and any(f.name.startswith(f"torch-{our_torch_version()}-") or f.name.startswith(f"torch-{want}-")
                              for f in p.glob("torch-*.whl")):
            return True
    return False


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment minus what would leak our venv into the tool's (PYTHONPATH, VIRTUAL_ENV)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(extra or {})
    return env


def _freeze(py: Path) -> list[str]:
    proc = subprocess.run([str(py), "-m", "pip", "freeze", "--disable-pip-version-check"], capture_output=True,
                          text=True, timeout=300, env=_clean_env())
    return proc.stdout.split() if proc.returncode == 0 else [f"pip freeze failed: {_tail(proc.stderr, 300)}"]


_CHECK = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    m = importlib.import_module(name)
    out[name] = getattr(m, "__version__", "imported")
if "torch" in out:
    import torch
    out["torch_cuda"] = torch.version.cuda
print(json.dumps(out))
"""


def check_imports(python: Path, modules: Sequence[str], *, torch: bool = False,
                  log_file: Path | None = None) -> dict[str, Any]:
    """Import ``modules`` (and torch when ``torch``) in ``python``; their versions. ExternalError("import")
    with the traceback's tail when one fails, or when torch there is a CUDA build."""
    mods = [*modules, *(["torch"] if torch and "torch" not in modules else [])]
    if not mods:
        return {}
    lf = log_file or Path(tempfile.mkdtemp(prefix="compresslab-import-")) / "import.log"
    proc = _run([str(python), "-c", _CHECK, *mods], stage="import", timeout=600, log_file=lf, env=_clean_env(),
                capture=True)
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    if facts.get("torch_cuda"):
        raise ExternalError("import", f"{python}: torch {facts.get('torch')} is a CUDA {facts['torch_cuda']} build; "
                                      "the benchmark needs the CPU build (torch==<ours>, local find-links or "
                                      f"{CPU_TORCH_INDEX})", log_file=lf)
    return facts


@dataclass
class WorkerRun:
    """One worker call's result: ``out`` (the worker's JSON), ``work`` (the directory holding the spec, the
    out file, the log and any file the worker wrote), ``wall_s``."""

    out: dict[str, Any]
    work: Path
    wall_s: float
    log_file: Path = field(default=Path())


def run_worker(python: str | os.PathLike, script: str | os.PathLike, spec: Mapping[str, Any], *,
               work: str | os.PathLike | None = None, timeout: float = 3600.0,
               env: Mapping[str, str] | None = None) -> WorkerRun:
    """Run ``python script spec.json`` and return what it wrote to ``spec["out"]``.

    ``spec`` is written to ``<work>/spec.json`` with ``out`` (``<work>/out.json``) and ``work`` added;
    ``work`` defaults to a fresh temporary directory (kept: the caller reads its files, then removes it).
    stderr goes to ``<work>/worker.log`` (its tail into any error). ``env``: extra variables (threads).
    Raises ExternalError: ``runtime`` (non-zero exit, or no out file), ``timeout``."""
    python, script = Path(python), Path(script)
    if not python.is_file():
        raise ExternalError("venv", f"no interpreter at {python}")
    if not script.is_file():
        raise FileNotFoundError(f"no worker script at {script}")
    wd = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="compresslab-worker-"))
    wd.mkdir(parents=True, exist_ok=True)
    full = {**spec, "out": str(wd / "out.json"), "work": str(wd)}
    (wd / "out.json").unlink(missing_ok=True)
    (wd / "spec.json").write_text(json.dumps(full))
    log_file = wd / "worker.log"
    t0 = time.perf_counter()
    _run([str(python), str(script), str(wd / "spec.json")], stage="runtime", timeout=timeout, log_file=log_file,
         env=_clean_env(env))
    wall = time.perf_counter() - t0
    out_file = wd / "out.json"
    if not out_file.is_file():
        raise ExternalError("runtime", f"{script.name} exited 0 but wrote no {out_file.name}; log: {log_file}",
                            log_file=log_file)
    return WorkerRun(json.loads(out_file.read_text()), wd, wall, log_file)
