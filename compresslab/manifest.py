"""Run manifests: what was done, with which config, versions and hardware; written atomically."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # 2: DeepSparse latency keyed runner -> shape; PassResult.formats; pass.json per step


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temp file in the same directory and ``os.replace``: readers see the old file or
    the new one, never a mix. Keeps an existing file's mode (mkstemp would make it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
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


def stable_hash(obj: Any, n: int = 12) -> str:
    """Short content hash of a JSON-able object (sorted keys), used for run dirs and caches."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_version() -> str:
    """compresslab's installed version (from the package metadata, so no import of the package face)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("compresslab")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for lib in ("compresslab", "torch", "transformers", "onnx", "onnxruntime", "accelerate", "hydra-core",
                "numpy", "scipy", "safetensors"):
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            pass
    return out


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

    @classmethod
    def create(cls, run_dir: Path, **fields: Any) -> "RunManifest":
        data = {"schema_version": SCHEMA_VERSION, "status": "running", "compresslab_version": package_version(),
                "git_sha": git_sha(), "created": now(), "updated": now(), "versions": library_versions(),
                "steps": []}
        data.update(fields)
        return cls(Path(run_dir) / "manifest.json", data)

    @classmethod
    def load(cls, run_dir: Path) -> "RunManifest":
        path = Path(run_dir) / "manifest.json"
        return cls(path, read_json(path))

    @property
    def steps(self) -> list[StepRecord]:
        return [StepRecord.from_dict(s) for s in self.data.get("steps", [])]

    def set_step(self, rec: StepRecord) -> None:
        steps = self.data.setdefault("steps", [])
        steps[:] = [s for s in steps if s["index"] != rec.index] + [rec.to_dict()]
        steps.sort(key=lambda s: s["index"])

    def save(self) -> None:
        self.data["updated"] = now()
        atomic_write_json(self.path, self.data)
